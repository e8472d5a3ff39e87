# Shared by the scripts/install-*.sh scripts: `apt_install TAG PACKAGE…` installs Debian packages
# quietly, with sudo when not root. Returns non-zero (with a message prefixed by TAG) when apt-get
# or root access is missing.
apt_install() {
  local tag="$1"
  shift
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$tag: apt-get not available to install $*" >&2
    return 1
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "$tag: need root (or sudo) to install $*" >&2
      return 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
