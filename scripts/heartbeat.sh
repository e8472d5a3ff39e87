#!/usr/bin/env bash
# The heartbeat's cost per client (issue 29): one register, one business worker (app = "echo")
# and one gateway with a short `ping_interval`, N idle WebSocket clients from `gw-bench heartbeat`;
# prints the gateway's CPU µs per client per interval for the gateway's own pings (mode server)
# and with every client pinging too (mode client), one fresh cluster per run.
#
#   scripts/heartbeat.sh                       19,000 clients, ping every 2 s, both modes
#   scripts/heartbeat.sh --ab A B --rounds 3   A/B: gateway binaries A and B alternating
#                                              (A, B, A, B, …), the rest of the cluster the same
#   scripts/heartbeat.sh --callgrind           the gateway under callgrind (default 1,000 clients,
#                                              ping every 5 s): instructions per client per interval
#   options: --gateway BINARY (instead of the one built)  --conns N  --interval SECS  --intervals N (window length)  --mode server|client|both
#            --threads N (the gateway's `[process] threads`: 0, the default, one per core; 1 one thread)
#            --out FILE (RESULT lines appended, default target/heartbeat/results.txt)
#            --no-build (use the release binaries as they are)
#
# Every process it starts is stopped on exit, failure included.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=""
INTERVAL=""
INTERVALS=5
MODES="server client"
ROUNDS=1
CALLGRIND=0
BUILD=1
OUT=target/heartbeat/results.txt
GATEWAYS=()
THREADS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --conns) CONNS="$2"; shift ;;
        --interval) INTERVAL="$2"; shift ;;
        --intervals) INTERVALS="$2"; shift ;;
        --mode) [ "$2" = both ] && MODES="server client" || MODES="$2"; shift ;;
        --rounds) ROUNDS="$2"; shift ;;
        --ab) GATEWAYS=("$2" "$3"); shift 2 ;;
        --gateway) GATEWAYS=("$2"); shift ;;
        --callgrind) CALLGRIND=1 ;;
        --no-build) BUILD=0 ;;
        --threads) THREADS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
    shift
done
if [ "$CALLGRIND" = 1 ]; then
    CONNS=${CONNS:-1000}
    INTERVAL=${INTERVAL:-5}
else
    CONNS=${CONNS:-19000}
    INTERVAL=${INTERVAL:-2}
fi
mkdir -p "$(dirname "$OUT")"

if [ "$BUILD" = 1 ]; then
    echo "== building (release)" >&2
    cargo build --release -q -p gw-register -p gw-gateway -p gw-business-worker -p gw-chat-demo -p gw-bench
fi
BIN="${CARGO_TARGET_DIR:-target}/release"
BENCH="$BIN/gw-bench"
if [ "${#GATEWAYS[@]}" -eq 0 ]; then
    GATEWAYS=("$BIN/gateway")
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gw-heartbeat.XXXXXX")
# shellcheck source=scripts/lib/procs.sh
. scripts/lib/procs.sh
cleanup() {
    local rc=$?
    stop_all
    if [ "$rc" -ne 0 ]; then
        echo "== logs kept in $TMP" >&2
        tail -n 5 "$TMP"/*.log >&2 2>/dev/null || true
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run LABEL GATEWAY_BINARY MODE: one fresh cluster, one `gw-bench heartbeat`, one RESULT line.
run() {
    local label=$1 gateway=$2 mode=$3
    local ports
    read -r -a ports <<<"$("$BENCH" ports 3)"
    local reg="127.0.0.1:${ports[0]}" ws="127.0.0.1:${ports[1]}" internal="127.0.0.1:${ports[2]}"
    local dir="$TMP/$label-$mode"
    mkdir -p "$dir/run"
    local common="[log]
level = \"warn\"
[process]
run_dir = \"$dir/run\""
    printf 'name = "register"\nlisten = "%s"\n%s\n' "$reg" "$common" >"$dir/register.toml"
    cat >"$dir/gateway.toml" <<EOF
name = "gateway"
listen = "$ws"
internal_listen = "$internal"
registers = ["$reg"]
ping_interval = "${INTERVAL}s"
$common
threads = $THREADS
EOF
    printf 'name = "worker"\napp = "echo"\nregisters = ["%s"]\n%s\n' "$reg" "$common" >"$dir/worker.toml"
    "$BIN/register" --config "$dir/register.toml" >"$dir/register.log" 2>&1 &
    PIDS+=($!)
    local extra=()
    if [ "$CALLGRIND" = 1 ]; then
        valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
            "$gateway" --config "$dir/gateway.toml" >"$dir/gateway.log" 2>&1 &
        extra=(--callgrind --connect-limit 16)
    else
        "$gateway" --config "$dir/gateway.toml" >"$dir/gateway.log" 2>&1 &
    fi
    local gw=$!
    PIDS+=($gw)
    "$BIN/business-worker" --config "$dir/worker.toml" >"$dir/worker.log" 2>&1 &
    PIDS+=($!)
    "$BENCH" wait --url "ws://$ws/" --timeout 120 >/dev/null 2>&1
    local line
    line=$("$BENCH" heartbeat --url "ws://$ws/" --conns "$CONNS" --gateway-pid "$gw" --interval "$INTERVAL" \
        --intervals "$INTERVALS" --mode "$mode" "${extra[@]}" | grep '^RESULT')
    if [ "$CALLGRIND" = 1 ]; then
        # The window's dump (counters zeroed when it started): instructions per client per interval.
        local ir window
        ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$dir/callgrind.out.1")
        window=$(sed -E 's/.* window_s=([0-9.]+).*/\1/' <<<"$line")
        line="$line ir=$ir ir_per_client_interval=$(awk -v i="$ir" -v w="$window" -v n="$CONNS" -v t="$INTERVAL" \
            'BEGIN { printf "%.0f", i / (n * w / t) }')"
        mkdir -p target/heartbeat
        cp "$dir/callgrind.out.1" "target/heartbeat/callgrind.$label-$mode.out"
    fi
    stop_all
    line="$line label=$label gateway=$gateway load=$(cut -d' ' -f1 /proc/loadavg) at=$(date -u +%H:%M:%S)"
    echo "$line" | tee -a "$OUT"
}

for round in $(seq 1 "$ROUNDS"); do
    for i in "${!GATEWAYS[@]}"; do
        label=run
        [ "${#GATEWAYS[@]}" -gt 1 ] && label=$([ "$i" = 0 ] && echo A || echo B)
        for mode in $MODES; do
            run "$label$round" "${GATEWAYS[$i]}" "$mode"
        done
    done
done
