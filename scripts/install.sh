#!/usr/bin/env bash
# The install steps scripts/setup.sh (a development machine, CI) and the Dockerfile share, so the
# two cannot drift (scripts/verify_container.sh runs the Dockerfile's steps in a fresh Debian
# bookworm rootfs):
#
#   scripts/install.sh packages            the Debian packages meshota runs on, those missing only
#                                          (root, or through sudo); nothing for tests
#   scripts/install.sh venv VENV [PIP...]  a venv at VENV with meshota installed by pip (PIP... are
#                                          pip install arguments, default "."; setup.sh passes
#                                          -e '.[test]'), then checks the runtime imports
set -euo pipefail

# Runtime: python3 + venv (python3 -m venv needs ensurepip), mosquitto (the private broker `meshota
# up` runs, and mosquitto_passwd for `meshota broker-config`), openssl, CA certificates (pip, TLS
# to an external broker or PostgreSQL), tzdata (time zones of install windows).
packages() {
    local need=()
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    [ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
    # install windows name IANA time zones (zoneinfo reads the system's database)
    [ -e /usr/share/zoneinfo/Europe/Berlin ] || need+=(tzdata)
    if [ ${#need[@]} -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${need[@]}" >/dev/null
    fi
}

venv() {
    local dir=$1
    shift
    [ $# -gt 0 ] || set -- .
    if [ ! -x "$dir/bin/python" ]; then
        python3 -m venv "$dir"
    fi
    "$dir/bin/python" -m pip install -q --upgrade pip 2>/dev/null || true
    # pip's own exit status counts; only its "WARNING: Location" noise is filtered out
    "$dir/bin/python" -m pip install -q "$@" 2> >(grep -v '^WARNING: Location' >&2)
    "$dir/bin/python" -c "import mqttsn, wire, bridge, meshota, aiomqtt, mbedtls, sqlalchemy, uvicorn"
    "$dir/bin/meshota" --version >/dev/null
}

case "${1:-}" in
    packages) shift; packages "$@" ;;
    venv) shift; [ $# -ge 1 ] || { echo "usage: $0 venv VENV [PIP ARGS...]" >&2; exit 2; }; venv "$@" ;;
    *) echo "usage: $0 packages | venv VENV [PIP ARGS...]" >&2; exit 2 ;;
esac
