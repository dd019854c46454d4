#!/usr/bin/env bash
# Set up a development/CI machine: system packages, a virtual env in .venv, edged in it.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus the test and lint tools, mosquitto, systemd-analyze, and
#                             debootstrap + systemd-nspawn for the boot test
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

apt_install() {
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    fi
}

if [ "$dev" = 1 ]; then
    missing=()
    [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || missing+=(mosquitto)
    command -v mosquitto_passwd >/dev/null || missing+=(mosquitto)
    command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    # an MQTT 3.1.1-only broker for the protocol = "auto" fallback test
    [ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null || missing+=(nats-server)
    # The tests' RTSP server (tests/support/gst_rtsp_server.py): GStreamer's gst-rtsp-server for
    # the system python3; plugins-good demuxes and payloads, plugins-bad parses H.264/H.265.
    for package in python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good \
        gstreamer1.0-plugins-bad; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
            || missing+=("$package")
    done
    # The boot test (tests/systemd/test_boot.py): a Debian root filesystem booted in a container.
    command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
    command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing system packages: ${missing[*]}"
        apt_install "${missing[@]}"
    fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "$dev" = 1 ]; then
    .venv/bin/python -m pip install -q -e '.[dev]'
else
    .venv/bin/python -m pip install -q -e .
fi
