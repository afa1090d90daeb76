#!/usr/bin/env bash
# One-time (idempotent) setup: Debian packages the code and the tests talk to, and a venv with
# meshota and its test extras in it. The runtime steps are scripts/install.sh, which the Dockerfile
# runs too; only the test extras are here.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh packages

# Test extras. Mender's own tools are the conformance peers of the device-management server.
need_apt=()
command -v mender-artifact >/dev/null 2>&1 || need_apt+=(mender-artifact)
command -v mender-cli >/dev/null 2>&1 || need_apt+=(mender-cli)
command -v mender >/dev/null 2>&1 || [ -x /usr/bin/mender ] || need_apt+=(mender-client)
# the admin UI's browser tests drive Debian's chromium through Playwright (no browser download)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# remote access: the real mender-connect 2.1 (deviceconnect), on a private D-Bus system bus
command -v mender-connect >/dev/null 2>&1 || need_apt+=(mender-connect)
command -v dbus-daemon >/dev/null 2>&1 || need_apt+=(dbus-daemon)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

scripts/install.sh venv .venv -e '.[test]'
.venv/bin/python -c "import hypothesis, mqttsn12"
