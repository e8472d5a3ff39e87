#!/usr/bin/env bash
# The scale scenario of issue 16 part 2: one register, as many gateways as the open-files limit
# per process requires, one business worker (app = "echo"), and gw-bench generator processes
# holding idle WebSocket clients with heartbeats, spread over 127.0.0.0/8 source addresses.
# gw-bench scale reports connections held and connect rate, memory per connection (gateway RSS,
# kernel socket memory, generators separately), idle CPU with heartbeats, send_to_all to every
# client, send_to_uid at the highest rate with nothing missing with the routing index off (every
# uid send to every gateway) and on (only to the gateway holding the uid), both in the same run
# by default, with the ratio on/off, and the resource that limited the run.
#
#   scripts/scale.sh --short      3 gateways, 20,000 clients, about a minute (CI): fails unless
#                                 all are held, none dropped while idle, send_to_all and both
#                                 send_to_uid searches miss nothing, and the index-on client's
#                                 index is complete with no miss for a bound uid
#   scripts/scale.sh              full: 1,000,000 clients (goes as far as the machine allows and
#                                 names the limit; the invariants hold for what was held). On
#                                 2 cores CPU gives out first; the largest run that held there:
#                                 --conns 600000 --ping 60 --raise-conntrack (BENCHMARKS.md)
#   scripts/scale.sh --conns 120000 --gateways 60
#                                 60 gateways with 2,000 clients each: the index on/off ratio at
#                                 60 gateways without a million clients
#   scripts/scale.sh --conns 17000 --gateways 1
#                                 the one-gateway baseline of the same scenario
#   options: --conns N  --per-gateway N (clients per gateway, default 17,000 full / 7,000 short)
#            --gateways N (gateway count; overrides --per-gateway, which becomes conns / N: each
#                gateway may open 20,000 files, so at most about 19,000 clients each)
#            --workers N (business worker processes, default 4 full / 1 short: one worker process
#                cannot take the connect events of a million clients on this machine)
#            --ping SECS  --idle SECS  --step SECS  --out FILE (default target/scale/<mode>.txt)
#            --index off|on|both|none (default both: one send_to_uid search with a gateway client
#                whose routing index is off, then one with a second client whose index is on and
#                complete, over the same cluster and clients; prints both and the ratio on/off;
#                none: no search)
#            -- ARGS (the rest goes to `gw-bench scale` after the script's own options, and wins over
#                them: e.g. -- --start-rate 16000 --max-rate 16000 --refine 0 for one fixed rate)
#            --debug (debug binaries: for trying the script itself at a small scale)
#            --raise-conntrack (root only: raise net.netfilter.nf_conntrack_max to fit the run, since
#                loopback connections are tracked too, and put the old value back on exit; without
#                it the generators stop at 95 % of the table and report it as the limit)
#            --link-timeout SECS (internal links' heartbeat and handshake timeout, and the gateways'
#                worker_wait is 4x it; default 30 full / library default 5 short)
#            --threads N (`[process] threads` of the register, gateways and workers: 1 runs each on
#                one thread, 0 one per core; default 1 full (dozens of processes on few cores)
#                / 0 short)
#            --gateway-bin PATH (run this gateway binary instead of the one just built: an A/B of
#                two gateway builds over the same bench, e.g. with `--index none -- --broadcasts 10`,
#                which times ten `send_to_all` rounds and skips the uid searches)
#
# Scale-run setting (full mode only; config/ defaults are unchanged): with ~115 processes on
# 2 cores a process can go 5 s without CPU while clients connect, and the default 5 s
# `[link] heartbeat_timeout` then cuts worker and gateway links; a gateway without a worker closes
# its clients after `worker_wait`. So the full mode writes `[link] heartbeat_timeout` and
# `handshake_timeout` = 30 s into every config (register, gateways, worker, and the bench's own
# gateway clients) and `worker_wait` = 120 s into the gateways'.
#
# Builds the release binaries first. Every process it starts is stopped on exit, failure included.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=full
CONNS=""
PER_GW=""
PING=""
IDLE=""
STEP=""
WORKERS=""
INDEX=both
PASS=()
GATEWAYS=""
LINK_TIMEOUT=""
THREADS=""
OUT=""
PROFILE=release
RAISE_CONNTRACK=0
GATEWAY_BIN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --short) MODE=short ;;
        --conns) CONNS="$2"; shift ;;
        --per-gateway) PER_GW="$2"; shift ;;
        --ping) PING="$2"; shift ;;
        --idle) IDLE="$2"; shift ;;
        --step) STEP="$2"; shift ;;
        --workers) WORKERS="$2"; shift ;;
        --index) INDEX="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --debug) PROFILE=debug ;;
        --raise-conntrack) RAISE_CONNTRACK=1 ;;
        --gateways) GATEWAYS="$2"; shift ;;
        --link-timeout) LINK_TIMEOUT="$2"; shift ;;
        --threads) THREADS="$2"; shift ;;
        --gateway-bin) GATEWAY_BIN="$2"; shift ;;
        --) shift; PASS=("$@"); break ;;
        -h|--help) sed -n '2,56p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
    shift
done
if [ "$MODE" = short ]; then
    : "${CONNS:=20000}" "${PER_GW:=7000}" "${PING:=5}" "${IDLE:=12}" "${STEP:=2}" "${WORKERS:=1}" "${THREADS:=0}"
    # Two searches (index off, then on) in about the time one took: rates ×4 per step.
    EXTRA=(--start-rate 1000 --growth 4 --refine 1 --latency-retries 1)
else
    : "${CONNS:=1000000}" "${PER_GW:=17000}" "${PING:=25}" "${IDLE:=60}" "${STEP:=5}" "${WORKERS:=4}" "${THREADS:=1}"
    : "${LINK_TIMEOUT:=30}"
    # 16 handshakes in flight per generator process (848 for 53): a gentler storm the workers
    # can follow.
    EXTRA=(--start-rate 250 --refine 3 --allow-short --connect-limit 16)
fi
: "${OUT:=target/scale/$MODE.txt}"
mkdir -p "$(dirname "$OUT")"

# Every process may raise its soft open-files limit to the hard one; the gateways and generators
# do so themselves, the shell does it for everything else it starts.
HARD=$(ulimit -Hn)
ulimit -Sn "$HARD"
if [ -n "$GATEWAYS" ]; then
    [ "$GATEWAYS" -ge 1 ] || { echo "--gateways must be at least 1" >&2; exit 64; }
    NGW=$GATEWAYS
    PER_GW=$(( (CONNS + NGW - 1) / NGW ))
else
    NGW=$(( (CONNS + PER_GW - 1) / PER_GW ))
fi
FD_RESERVE=256
# Clients per gateway, with room for uneven spreading; must fit the descriptors left after the
# reserve for internal links.
MAX_CONNS=$(( PER_GW + PER_GW / 20 + 100 ))
if [ "$HARD" != unlimited ] && [ "$MAX_CONNS" -gt $(( HARD - FD_RESERVE - 64 )) ]; then
    echo "$PER_GW clients per gateway do not fit the open-files limit $HARD (reserve $FD_RESERVE): more gateways" >&2
    exit 64
fi

echo "== building ($PROFILE)" >&2
BUILD=(-q -p gw-register -p gw-gateway -p gw-business-worker -p gw-chat-demo -p gw-bench)
if [ "$PROFILE" = release ]; then cargo build --release "${BUILD[@]}"; else cargo build "${BUILD[@]}"; fi
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE"
BENCH="$BIN/gw-bench"
: "${GATEWAY_BIN:=$BIN/gateway}"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gw-scale.XXXXXX")
# shellcheck source=scripts/lib/procs.sh
. scripts/lib/procs.sh
CONNTRACK_MAX=/proc/sys/net/netfilter/nf_conntrack_max
CONNTRACK_OLD=""
cleanup() {
    local rc=$?
    stop_all
    if [ -n "$CONNTRACK_OLD" ]; then
        echo "$CONNTRACK_OLD" >"$CONNTRACK_MAX" && echo "== nf_conntrack_max back to $CONNTRACK_OLD" >&2
    fi
    if [ "$rc" -ne 0 ]; then
        echo "== server logs kept in $TMP" >&2
        tail -n 3 "$TMP"/*.log >&2 2>/dev/null || true
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$RAISE_CONNTRACK" = 1 ] && [ -w "$CONNTRACK_MAX" ]; then
    want=$(( $(cat /proc/sys/net/netfilter/nf_conntrack_count) + CONNS + CONNS / 10 + 10000 ))
    if [ "$(cat "$CONNTRACK_MAX")" -lt "$want" ]; then
        CONNTRACK_OLD=$(cat "$CONNTRACK_MAX")
        echo "$want" >"$CONNTRACK_MAX"
        echo "== nf_conntrack_max raised from $CONNTRACK_OLD to $want for this run" >&2
    fi
fi

# ---- the cluster ----------------------------------------------------------------------------
# Below the ephemeral range: the gateways and workers connecting meanwhile cannot take them.
read -r -a PORTS <<<"$("$BENCH" ports --outside-ephemeral $((1 + 2 * NGW)))"
REG="127.0.0.1:${PORTS[0]}"
mkdir -p "$TMP/run"
COMMON="[log]
level = \"warn\"
[process]
run_dir = \"$TMP/run\"
threads = $THREADS"
GW_EXTRA=""
BENCH_LINK=()
if [ -n "$LINK_TIMEOUT" ]; then
    # The scale-run setting above: links survive a process starved of CPU for LINK_TIMEOUT s.
    COMMON="$COMMON
[link]
heartbeat_timeout = \"${LINK_TIMEOUT}s\"
handshake_timeout = \"${LINK_TIMEOUT}s\""
    GW_EXTRA="worker_wait = \"$(( 4 * LINK_TIMEOUT ))s\""
    BENCH_LINK=(--link-timeout-secs "$LINK_TIMEOUT")
fi
cat >"$TMP/register.toml" <<EOF
name = "register"
listen = "$REG"
$COMMON
EOF
"$BIN/register" --config "$TMP/register.toml" >"$TMP/register.log" 2>&1 &
PIDS+=($!)
SERVERS=($!)
GWS=()
URLS=()
for i in $(seq 1 "$NGW"); do
    ws="127.0.0.1:${PORTS[$((2 * i - 1))]}"
    internal="127.0.0.1:${PORTS[$((2 * i))]}"
    cat >"$TMP/gateway-$i.toml" <<EOF
name = "gateway-$i"
listen = "$ws"
internal_listen = "$internal"
registers = ["$REG"]
max_connections = $MAX_CONNS
max_connections_per_ip = 1000
fd_reserve = $FD_RESERVE
ping_interval = "${PING}s"
ping_not_response_limit = 2
grace_period = "3s"
$GW_EXTRA
$COMMON
EOF
    "$GATEWAY_BIN" --config "$TMP/gateway-$i.toml" >"$TMP/gateway-$i.log" 2>&1 &
    PIDS+=($!)
    SERVERS+=($!)
    GWS+=($!)
    URLS+=("ws://$ws/")
done
cat >"$TMP/worker.toml" <<EOF
name = "worker"
app = "echo"
count = $WORKERS
registers = ["$REG"]
$COMMON
EOF
"$BIN/business-worker" --config "$TMP/worker.toml" >"$TMP/worker.log" 2>&1 &
PIDS+=($!)
SERVERS+=($!)
URL_LIST=$(IFS=,; echo "${URLS[*]}")
GW_PIDS=$(IFS=,; echo "${GWS[*]}")
SERVER_PIDS=$(IFS=,; echo "${SERVERS[*]}")
"$BENCH" wait --url "$URL_LIST" --timeout 120 2>/dev/null
echo "== $MODE: $CONNS clients, register + $NGW gateways (max_connections $MAX_CONNS, fd_reserve $FD_RESERVE," \
     "open-files limit $HARD, ping every ${PING}s) + $WORKERS worker process(es), index $INDEX," \
     "link timeout ${LINK_TIMEOUT:-default}, threads $THREADS; server pids $SERVER_PIDS" >&2

# ---- the scenario ---------------------------------------------------------------------------
STATUS=0
"$BENCH" scale --url "$URL_LIST" --register "$REG" --conns "$CONNS" --gateway-pid "$GW_PIDS" \
    --server-pids "$SERVER_PIDS" --ping-secs "$PING" --idle-secs "$IDLE" --step-secs "$STEP" --index "$INDEX" \
    "${BENCH_LINK[@]}" "${EXTRA[@]}" "${PASS[@]}" >"$TMP/scale.out" 2>"$TMP/scale.err" || STATUS=$?
{
    echo "# scripts/scale.sh --$MODE (conns $CONNS, gateways $NGW, index $INDEX, link timeout ${LINK_TIMEOUT:-default}, threads $THREADS), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "# machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), open files $HARD"
    grep -E '^PHASE' "$TMP/scale.err" || true
    cat "$TMP/scale.out"
} >"$OUT"
grep -vE '^(PHASE|STEP)' "$TMP/scale.err" | tail -n 20 >&2 || true
grep -E '^(PHASE|RESULT|LIMIT)' "$OUT"
echo "== wrote $OUT" >&2
exit "$STATUS"
