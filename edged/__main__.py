"""`python -m edged`: the same entry point as the `edged` console script."""

from edged.cli import main

# The guard matters: spawned workers import the parent's __main__ module as __mp_main__.
if __name__ == "__main__":
    raise SystemExit(main())
