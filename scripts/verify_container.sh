#!/usr/bin/env bash
# Build the Dockerfile's image without docker (debootstrap + chroot) and start it: see the
# docstring of scripts/verify_container.py. Needs root and network access to a Debian mirror and
# PyPI; caches the base rootfs under /var/cache/meshota. Options: --refresh-base --keep --compose.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "verify_container: run as root (debootstrap, chroot, mount, unshare)" >&2
    exit 2
fi
missing=()
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
/usr/bin/python3 -c 'import yaml' >/dev/null 2>&1 || missing+=(python3-yaml)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
exec /usr/bin/python3 scripts/verify_container.py "$@"
