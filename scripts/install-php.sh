#!/usr/bin/env bash
# Installs Debian's php-cli (PHP 8.2 with pcntl and posix) for the tests that run the unmodified
# PHP GatewayWorker against our register and gateways (integration-tests/tests/php_*.rs).
# Idempotent. Exits non-zero when it could not be installed.
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"

php_ready() {
  command -v php >/dev/null 2>&1 && php -r 'exit(function_exists("pcntl_fork") && function_exists("posix_getppid") ? 0 : 1);'
}
if php_ready; then
  echo "install-php: PHP $(php -r 'echo PHP_VERSION;') with pcntl and posix already installed, nothing to do"
  exit 0
fi
apt_install install-php php-cli
if ! php_ready; then
  echo "install-php: php-cli installed but php, pcntl or posix is missing" >&2
  exit 1
fi
echo "install-php: installed PHP $(php -r 'echo PHP_VERSION;')"
