#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian packages `chromium` and `chromium-driver`)
# for the chat page's browser test (chat-demo/tests/browser.rs). Idempotent: does nothing when both
# are already installed. Exits non-zero when they could not be installed.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

find_browser() { have chromium || have chromium-browser || have google-chrome; }
find_driver() { have chromedriver; }

if find_browser && find_driver; then
  echo "install-browser: chromium and chromedriver already installed, nothing to do"
else
  if ! have apt-get; then
    echo "install-browser: chromium/chromedriver missing and apt-get not available" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if have sudo; then SUDO="sudo"; else
      echo "install-browser: need root (or sudo) to install chromium chromium-driver" >&2
      exit 1
    fi
  fi
  echo "install-browser: installing chromium chromium-driver with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  echo "install-browser: installed chromium chromium-driver"
  # Nice to have for the screenshot (emoji shortcodes render as emoji); not required.
  if $SUDO apt-get install -y -qq --no-install-recommends fonts-noto-color-emoji >/dev/null 2>&1; then
    echo "install-browser: installed fonts-noto-color-emoji"
  fi
fi

if ! find_browser || ! find_driver; then
  echo "install-browser: chromium/chromedriver still not found after installing" >&2
  exit 1
fi
for b in chromium chromium-browser google-chrome; do
  if have "$b"; then echo "install-browser: browser: $(command -v "$b") ($("$b" --version 2>/dev/null || echo 'version unknown'))"; break; fi
done
echo "install-browser: driver:  $(command -v chromedriver) ($(chromedriver --version 2>/dev/null || echo 'version unknown'))"
