#!/usr/bin/env bash
# Installs the real servers pinpipe's tests start (on 127.0.0.1, free ports) into a cache
# outside the clone, so a rerun on the same machine is a no-op. Only package registries
# are used (PyPI here; Debian, npm and crates.io as later servers arrive).
#
#   TOOLS=${PINPIPE_TOOLS:-$HOME/.cache/pinpipe-tools}
#   S3 API:   moto server in $TOOLS/venv (bin/moto_server)
set -euo pipefail

TOOLS=${PINPIPE_TOOLS:-$HOME/.cache/pinpipe-tools}
mkdir -p "$TOOLS"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- S3 API: moto ---------------------------------------------------------------------
if [ ! -x "$TOOLS/venv/bin/moto_server" ]; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "install-servers: installing python3-venv (Debian)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv
  fi
  rm -rf "$TOOLS/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
"$TOOLS/venv/bin/moto_server" --help >/dev/null

echo "install-servers: ready in $TOOLS"
echo "PINPIPE_MOTO_SERVER=$TOOLS/venv/bin/moto_server"
