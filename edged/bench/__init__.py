"""`edged bench`: measures the parts, computes the machine's limit, runs the real daemon."""
