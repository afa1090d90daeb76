#!/usr/bin/env bash
# One-time (idempotent) setup: Debian packages the tests talk to, and a venv with meshota in it.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# Mender's own tools are the conformance peers of the device-management server.
command -v mender-artifact >/dev/null 2>&1 || need_apt+=(mender-artifact)
command -v mender-cli >/dev/null 2>&1 || need_apt+=(mender-cli)
command -v mender >/dev/null 2>&1 || [ -x /usr/bin/mender ] || need_apt+=(mender-client)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import mqttsn, bridge, aiomqtt, hypothesis, mqttsn12, mbedtls, sqlalchemy"
