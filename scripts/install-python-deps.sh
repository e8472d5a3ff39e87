#!/usr/bin/env bash
# Installs the Python modules the tests use: requests (HTTP client) and websocket-client (module
# `websocket`) for the HTTP API's tests, and websockets (asyncio client, compresses by default)
# for the compressed WebSocket test, from Debian (python3-requests, python3-websocket,
# python3-websockets), or from PyPI with pip when apt-get is not available or the `python3` on
# PATH is not Debian's; and the official Pusher server SDK (`pusher`) and the pysher client for
# the Pusher tests, from PyPI (Debian has neither). Idempotent. Exits non-zero when it could not.
set -euo pipefail

have() { python3 -c 'import requests, websocket, websockets, pusher, pysher' >/dev/null 2>&1; }
pip_install() {
  python3 -m pip install --quiet "$@" || python3 -m pip install --quiet --break-system-packages "$@"
}
if ! command -v python3 >/dev/null 2>&1; then
  echo "install-python-deps: python3 not found" >&2
  exit 1
fi
if have; then
  echo "install-python-deps: requests, websocket-client, websockets, pusher and pysher already installed, nothing to do"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq --no-install-recommends python3-requests python3-websocket python3-websockets >/dev/null || true
fi
if ! python3 -c 'import requests, websocket, websockets' >/dev/null 2>&1; then
  pip_install requests websocket-client websockets
fi
if ! python3 -c 'import pusher, pysher' >/dev/null 2>&1; then
  pip_install pusher pysher
fi
if ! have; then
  echo "install-python-deps: requests / websocket-client / websockets / pusher / pysher still missing" >&2
  exit 1
fi
echo "install-python-deps: installed requests, websocket-client, websockets, pusher and pysher"
