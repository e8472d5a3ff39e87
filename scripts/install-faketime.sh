#!/usr/bin/env bash
# Installs Debian's libfaketime for the clock-jump test (integration-tests/tests/clock_jump.rs).
# Idempotent. Exits non-zero when it could not be installed.
set -euo pipefail

LIB=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
if [ -f "$LIB" ]; then
  echo "install-faketime: libfaketime already installed, nothing to do"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-faketime: $LIB missing and apt-get not available" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-faketime: need root (or sudo) to install libfaketime" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends libfaketime >/dev/null
if [ ! -f "$LIB" ]; then
  echo "install-faketime: $LIB still missing after installing libfaketime" >&2
  exit 1
fi
echo "install-faketime: installed libfaketime"
