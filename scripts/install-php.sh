#!/usr/bin/env bash
# Installs Debian's php-cli (PHP 8.2 with pcntl and posix) for the tests that run the unmodified
# PHP GatewayWorker against our register and gateways (integration-tests/tests/php_*.rs).
# Idempotent. Exits non-zero when it could not be installed.
set -euo pipefail

if command -v php >/dev/null 2>&1 && php -r 'exit(function_exists("pcntl_fork") && function_exists("posix_getppid") ? 0 : 1);'; then
  echo "install-php: $(php -r 'echo PHP_VERSION;') with pcntl and posix already installed, nothing to do"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-php: php missing and apt-get not available" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-php: need root (or sudo) to install php-cli" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends php-cli >/dev/null
if ! php -r 'exit(function_exists("pcntl_fork") && function_exists("posix_getppid") ? 0 : 1);'; then
  echo "install-php: php-cli installed but pcntl/posix are missing" >&2
  exit 1
fi
echo "install-php: installed PHP $(php -r 'echo PHP_VERSION;')"
