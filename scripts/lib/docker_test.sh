# Shared by the scripts that test the cluster in Docker (compose-test.sh, swarm-test.sh): the
# prerequisites, the Python websockets package for the clients, the local image FROM scratch built
# from the release binaries, and what the compose files interpolate. Source it from the repository
# root after `set -euo pipefail`; it sets T0 (the start, for `step`).
T0=$(date +%s)

# `step TEXT…`: one progress line with the seconds since T0.
step() { printf '%s [%3ss] %s\n' "==" "$(($(date +%s) - T0))" "$*"; }

# Exits 0 with "SKIP: docker not available" unless the docker CLI works and its daemon answers.
skip_without_docker() {
    if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
        echo "SKIP: docker not available"
        exit 0
    fi
}

# Exits 1 unless python3 is on the PATH (the WebSocket clients are Python).
need_python3() {
    if ! command -v python3 >/dev/null 2>&1; then
        echo "FAIL: python3 is needed for the WebSocket clients" >&2
        exit 1
    fi
}

# `on_exit FUNCTION`: runs FUNCTION on exit, also after Ctrl-C (exit code 130) or a TERM (143).
on_exit() {
    # shellcheck disable=SC2064 # the function's name is fixed now
    trap "$1" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# `use_websockets WORK`: sets PYTHON to a python3 that imports websockets >= 13, installing it
# (into a venv under WORK, else with pip --user) when the system's python3 lacks it. The checks
# import scripts/cluster_clients.py: no __pycache__ is written into the tree.
use_websockets() {
    local work="$1"
    export PYTHONDONTWRITEBYTECODE=1
    PYTHON=python3
    if ! python3 -c 'import websockets, sys; sys.exit(int(websockets.__version__.split(".")[0]) < 13)' 2>/dev/null; then
        step "installing the Python websockets package"
        if python3 -m venv "$work/venv" >/dev/null 2>&1 && "$work/venv/bin/pip" install -q 'websockets>=13' >/dev/null; then
            PYTHON="$work/venv/bin/python"
        else
            python3 -m pip install -q --user 'websockets>=13' \
                || python3 -m pip install -q --user --break-system-packages 'websockets>=13'
        fi
    fi
}

# `local_image IMAGE EXISTING SKIP_BUILD WORK [LIBRARY…]`: with EXISTING=1, checks that IMAGE
# exists. Otherwise builds the release binaries (unless SKIP_BUILD=1) and imports IMAGE: FROM
# scratch, the binaries (debug info stripped), every library `ldd` lists for them with the dynamic
# loader, each extra LIBRARY that exists on this machine, the docker/*.toml configs, a passwd with
# the gatewayrs user (10001) it runs as, and `gateway start` as the command. Staged under WORK.
local_image() {
    local image="$1" existing="$2" skip_build="$3" work="$4"
    shift 4
    if [[ "$existing" == 1 ]]; then
        docker image inspect "$image" >/dev/null 2>&1 || { echo "FAIL: no image $image" >&2; exit 1; }
        step "using the existing image $image"
        return
    fi
    local bins=(register gateway business-worker chat-web) target_dir rootfs bin src lib
    if [[ "$skip_build" != 1 ]]; then
        step "cargo build --release (${bins[*]})"
        # shellcheck disable=SC2046 # one word per --bin
        cargo build --release --locked --quiet -p gw-register -p gw-gateway -p gw-business-worker -p gw-chat-demo \
            $(printf -- '--bin %s ' "${bins[@]}")
    fi
    target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo "$PWD/target")

    step "image $image (FROM scratch: the binaries and the libraries ldd lists)"
    rootfs="$work/rootfs"
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/gatewayrs" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    for bin in "${bins[@]}"; do
        src="$target_dir/release/$bin"
        [[ -x "$src" ]] || { echo "FAIL: $src was not built" >&2; exit 1; }
        if command -v objcopy >/dev/null 2>&1; then
            objcopy --strip-debug "$src" "$rootfs/usr/local/bin/$bin"
        else
            cp "$src" "$rootfs/usr/local/bin/$bin"
        fi
        # Every absolute path ldd names: the libraries and the dynamic loader.
        for lib in $(ldd "$src" | grep -o '/[^ ]*'); do
            [[ -e "$rootfs$lib" ]] || { mkdir -p "$rootfs$(dirname "$lib")"; cp -L "$lib" "$rootfs$lib"; }
        done
    done
    for lib in "$@"; do
        if [[ -e "$lib" && ! -e "$rootfs$lib" ]]; then
            mkdir -p "$rootfs$(dirname "$lib")"
            cp -L "$lib" "$rootfs$lib"
        fi
    done
    cp docker/register.toml docker/gateway.toml docker/business-worker.toml "$rootfs/etc/gatewayrs/"
    printf 'root:x:0:0:root:/root:/sbin/nologin\ngatewayrs:x:10001:10001::/nonexistent:/sbin/nologin\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\ngatewayrs:x:10001:\n' >"$rootfs/etc/group"
    printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
    tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -cf - . \
        | docker import --change 'USER 10001:10001' \
            --change 'CMD ["/usr/local/bin/gateway", "--config", "/etc/gatewayrs/gateway.toml", "start"]' \
            - "$image" >/dev/null
}

# `export_cluster_env IMAGE GATEWAY_1_PORT GATEWAY_2_PORT CHAT_WEB_PORT`: exports what the compose
# files interpolate, with a fresh random GW_SECRET, and unsets what would override the test's image
# or the chat page's WebSocket URL.
export_cluster_env() {
    GW_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    export GW_SECRET GATEWAYRS_TEST_IMAGE="$1" GATEWAY_1_PORT="$2" GATEWAY_2_PORT="$3" CHAT_WEB_PORT="$4"
    export GW_REGISTERS="register:1236" GW_LOG_LEVEL="info" GW_LOG_FORMAT="plain"
    unset GATEWAYRS_IMAGE CHAT_WS_URL
}
