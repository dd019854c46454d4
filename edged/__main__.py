"""`python -m edged`: the same entry point as the `edged` console script."""

from edged.cli import main

raise SystemExit(main())
