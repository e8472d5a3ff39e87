#!/usr/bin/env bash
# Installs Debian's libfaketime for the clock-jump test (integration-tests/tests/clock_jump.rs).
# Idempotent. Exits non-zero when it could not be installed.
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"

LIB=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
if [ -f "$LIB" ]; then
  echo "install-faketime: libfaketime already installed, nothing to do"
  exit 0
fi
apt_install install-faketime libfaketime
if [ ! -f "$LIB" ]; then
  echo "install-faketime: $LIB still missing after installing libfaketime" >&2
  exit 1
fi
echo "install-faketime: installed libfaketime"
