#!/usr/bin/env bash
# The main job for a newcomer: install, fetch the YOLOX-nano model (sha256-checked), check the
# example config and run edged on it, printing every message it publishes. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
assets=${EDGED_TEST_ASSETS:-../shared}
if ! .venv/bin/edged models fetch yolox-nano; then
    # No internet: the same file, from the project's assets, still checked against the pin.
    echo "download failed; using $assets/models/yolox_nano.onnx instead" >&2
    .venv/bin/edged models fetch yolox-nano --from "$assets/models/yolox_nano.onnx"
fi
.venv/bin/edged check-config config.toml
exec .venv/bin/edged run --config config.toml --print
