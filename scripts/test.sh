#!/usr/bin/env bash
# The test command: set up (system packages, .venv), then lint, type-check and run the tests.
# Tests read the model and videos from $EDGED_TEST_ASSETS (default ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
.venv/bin/ruff check edged tests
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
