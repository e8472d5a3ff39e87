#!/usr/bin/env bash
# Benchmark of the gateway cluster: builds in release mode, starts a register, gateways and
# business workers (app = "echo") on loopback ports chosen by the OS, runs every gw-bench scenario
# and writes the figures to BENCHMARKS.md.
#
#   scripts/bench.sh              full run (about 10 minutes), writes BENCHMARKS.md
#   scripts/bench.sh --quick      small and short (CI): proves every scenario runs end to end,
#                                 exits non-zero if one errors or loses a message; writes
#                                 target/bench/BENCHMARKS.quick.md unless --out is given
#   options: --out FILE  --workers N (business worker processes, default 1)  --only "echo storm …"
#   environment: GATEWAY_BIN=path runs that gateway binary instead of the one built here
#
# Cluster A (one register, one gateway, N workers) serves idle, echo, broadcast, group and storm,
# in that order, so the idle memory figure is taken on a fresh gateway. Cluster D (the same shape,
# fresh) serves idle-deflate (idle clients that negotiated permessage-deflate) and deflate (bytes
# on the wire and gateway CPU per delivery with and without compression, alternating in one run).
# Cluster B (one register, three gateways, N workers) serves idle-3gw. Cluster R (one register,
# two gateways with [recovery] on and a cluster secret, N workers) serves idle-plain and
# idle-recovery (idle clients without and with gw_recover=1, each on a fresh gateway of the same
# run); a second such cluster serves handover (clients dropped on one gateway resume on the
# other, relayed to their home). Every process is stopped on exit, failure included.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=full
OUT=""
WORKERS=1
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --out) OUT="$2"; shift ;;
        --workers) WORKERS="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
    shift
done
if [ -z "$OUT" ]; then
    if [ "$MODE" = quick ]; then OUT=target/bench/BENCHMARKS.quick.md; else OUT=BENCHMARKS.md; fi
fi
mkdir -p "$(dirname "$OUT")"

echo "== building (release)" >&2
cargo build --release -q -p gw-register -p gw-gateway -p gw-business-worker -p gw-chat-demo -p gw-http-api -p gw-bench
BIN="${CARGO_TARGET_DIR:-target}/release"
BENCH="$BIN/gw-bench"
# GATEWAY_BIN: another gateway binary to measure (A/B runs of two builds with everything else equal).
GATEWAY_BIN="${GATEWAY_BIN:-$BIN/gateway}"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gw-bench.XXXXXX")
STATUS=0
# shellcheck source=scripts/lib/procs.sh
. scripts/lib/procs.sh
cleanup() {
    local rc=$?
    stop_all
    if [ "$rc" -ne 0 ] || [ "$STATUS" -ne 0 ]; then
        echo "== server logs kept in $TMP" >&2
        tail -n 5 "$TMP"/*.log >&2 2>/dev/null || true
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_cluster NAME GATEWAYS: one register, GATEWAYS gateways and $WORKERS workers; sets URLS
# (comma-separated), GW_PIDS (comma-separated) and SERVER_PIDS, and waits for an echo round trip
# through every gateway.
PUSHER_APP_ID=1001 PUSHER_KEY=bench-pusher-key PUSHER_SECRET=bench-pusher-secret-0123456789
PUSHER_APP="[pusher]
[[pusher.apps]]
id = \"$PUSHER_APP_ID\"
key = \"$PUSHER_KEY\"
secret = \"$PUSHER_SECRET\""

# start_cluster NAME GATEWAYS [APP] [recovery] [pusher]: with `pusher`, every gateway also has a
# Pusher listener (PUSHER_URLS, same order as URLS) for the app above.
start_cluster() {
    local name=$1 ngw=$2 app=${3:-echo} recovery=${4:-} pusher=${5:-} i
    local pusher_urls=()
    local ports
    read -r -a ports <<<"$("$BENCH" ports $((1 + 2 * ngw)))"
    local reg="127.0.0.1:${ports[0]}"
    mkdir -p "$TMP/$name-run"
    local common="[log]
level = \"warn\"
[process]
run_dir = \"$TMP/$name-run\""
    local gateway_extra=""
    if [ -n "$recovery" ]; then
        # Recovery on every gateway, with the cluster secret that signs and checks the tokens.
        common="secret = \"bench-cluster-secret-0123456789abcdef\"
$common"
        gateway_extra="[recovery]
enabled = true"
    fi
    cat >"$TMP/$name-register.toml" <<EOF
name = "register"
listen = "$reg"
$common
EOF
    "$BIN/register" --config "$TMP/$name-register.toml" >"$TMP/$name-register.log" 2>&1 &
    PIDS+=($!)
    local server=($!) gws=() urls=()
    for i in $(seq 1 "$ngw"); do
        local ws="127.0.0.1:${ports[$((2 * i - 1))]}" internal="127.0.0.1:${ports[$((2 * i))]}"
        local listeners=""
        if [ -n "$pusher" ]; then
            local pp
            pp="127.0.0.1:$("$BENCH" ports 1)"
            listeners="[[listeners]]
url = \"websocket://$ws\"
[[listeners]]
url = \"websocket://$pp\"
pusher = true
$PUSHER_APP"
            pusher_urls+=("ws://$pp/app/$PUSHER_KEY?protocol=7")
        fi
        cat >"$TMP/$name-gateway-$i.toml" <<EOF
name = "gateway-$i"
listen = "$ws"
internal_listen = "$internal"
registers = ["$reg"]
$common
$gateway_extra
$listeners
EOF
        "$GATEWAY_BIN" --config "$TMP/$name-gateway-$i.toml" >"$TMP/$name-gateway-$i.log" 2>&1 &
        PIDS+=($!)
        server+=($!)
        gws+=($!)
        urls+=("ws://$ws/")
    done
    # One business-worker master running $WORKERS worker processes (its children are measured
    # with it).
    local app_section=""
    if [ "$app" = http ]; then
        # The http application posts every event to gw-bench's echo endpoint.
        local ep
        ep="127.0.0.1:$("$BENCH" ports 1)"
        "$BENCH" endpoint --listen "$ep" >"$TMP/$name-endpoint.log" 2>&1 &
        PIDS+=($!)
        server+=($!)
        app_section="[http_app]
url = \"http://$ep/events\""
    fi
    cat >"$TMP/$name-worker.toml" <<EOF
name = "worker"
app = "$app"
count = $WORKERS
registers = ["$reg"]
$common
$app_section
EOF
    "$BIN/business-worker" --config "$TMP/$name-worker.toml" >"$TMP/$name-worker.log" 2>&1 &
    PIDS+=($!)
    server+=($!)
    REG=$reg
    URLS=$(IFS=,; echo "${urls[*]}")
    PUSHER_URLS=$(IFS=,; echo "${pusher_urls[*]}")
    GW_PIDS=$(IFS=,; echo "${gws[*]}")
    SERVER_PIDS=$(IFS=,; echo "${server[*]}")
    "$BENCH" wait --url "$URLS" --timeout 60
    echo "== cluster $name: register, $ngw gateway(s), $WORKERS worker(s); server pids $SERVER_PIDS" >&2
}

# start_api NAME: an HTTP push API (bin/http-api) on the cluster's register; sets API (ip:port)
# and adds its pid to SERVER_PIDS.
API_KEY=bench-api-key-0123456789abcdef
start_api() {
    local name=$1 pusher=${2:-} port
    port=$("$BENCH" ports 1)
    API="127.0.0.1:$port"
    cat >"$TMP/$name-http-api.toml" <<EOF
name = "http-api"
listen = "$API"
registers = ["$REG"]
[[keys]]
name = "bench"
key = "$API_KEY"
[log]
level = "warn"
[process]
run_dir = "$TMP/$name-run"
$([ -n "$pusher" ] && echo "$PUSHER_APP")
EOF
    "$BIN/http-api" --config "$TMP/$name-http-api.toml" >"$TMP/$name-http-api.log" 2>&1 &
    PIDS+=($!)
    SERVER_PIDS="$SERVER_PIDS,$!"
}

RESULTS="$TMP/results.txt"
: >"$RESULTS"
wanted() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

# run NAME gw-bench-args…: runs one scenario, keeps its RESULT line (or an ERROR line).
run() {
    local name=$1
    shift
    wanted "$name" || return 0
    echo "== $name: gw-bench $*" >&2
    local out="$TMP/$name.out"
    if "$BENCH" "$@" --server-pids "$SERVER_PIDS" >"$out"; then
        grep '^RESULT' "$out" | sed "s/^RESULT /RESULT name=$name /" | tee -a "$RESULTS"
    else
        STATUS=1
        grep '^RESULT' "$out" | sed "s/^RESULT /RESULT name=$name /" | tee -a "$RESULTS" || true
        echo "ERROR name=$name" | tee -a "$RESULTS"
    fi
    grep '^STEP' "$out" >>"$TMP/steps.txt" || true
}

if [ "$MODE" = quick ]; then
    IDLE_N=500; IDLE3_N=1500; ECHO="--conns 20 --inflight 4 --warmup 0.5 --duration 2"
    FAN="--conns 50 --senders 2 --rate 40 --step-secs 1"; STORM_N=500
    PUSH="--concurrency 8 --duration 1"
    DEFL="--conns 20 --messages 20 --rounds 1"; HANDOVER_N=200; RESTART_N=200
    PUSHER_LOAD="--idle 300 --subscribers 600 --rate 10 --duration 1"
else
    IDLE_N=19000; IDLE3_N=50000; ECHO="--conns 200 --inflight 8 --warmup 3 --duration 15"
    FAN="--conns 1000 --senders 4 --start-rate 100 --growth 1.5 --refine 3 --step-secs 5"; STORM_N=15000
    PUSH="--concurrency 32 --duration 10"
    DEFL="--conns 500 --messages 200 --rounds 3"; HANDOVER_N=10000; RESTART_N=${RESTART_N:-19000}
    PUSHER_LOAD=${PUSHER_LOAD:-"--idle 5000 --subscribers 10000 --rate 20 --duration 5"}
fi

start_cluster a 1
# Source addresses: a different 127.0.N.0/24 per scenario, so no scenario meets another's sockets.
run idle idle --url "$URLS" --conns "$IDLE_N" --procs 2 --gateway-pid "$GW_PIDS" --source-net 1
run echo echo --url "$URLS" $ECHO --size 64 --source-net 2
# shellcheck disable=SC2086
run broadcast broadcast --url "$URLS" $FAN --source-net 3
# shellcheck disable=SC2086
run group group --url "$URLS" $FAN --source-net 4
run storm storm --url "$URLS" --conns "$STORM_N" --procs 1 --source-net 5
if wanted push; then
    start_api a
    # shellcheck disable=SC2086
    run push push --url "$URLS" --register "$REG" --api "http://$API" --key "$API_KEY" $PUSH
fi
stop_all

if wanted idle-deflate || wanted deflate; then
    start_cluster d 1
    run idle-deflate idle --url "$URLS" --conns "$IDLE_N" --procs 2 --gateway-pid "$GW_PIDS" --source-net 8 --deflate
    # shellcheck disable=SC2086
    run deflate deflate --url "$URLS" $DEFL --source-net 9
    stop_all
fi

if wanted echo-http; then
    start_cluster h 1 http
    run echo-http echo --url "$URLS" $ECHO --size 64 --source-net 7
    stop_all
fi

if wanted handover || wanted idle-recovery || wanted idle-plain; then
    start_cluster r 2 echo recovery
    IFS=, read -r -a R_URLS <<<"$URLS"
    IFS=, read -r -a R_PIDS <<<"$GW_PIDS"
    run idle-plain idle --url "${R_URLS[1]}" --conns "$IDLE_N" --procs 2 --gateway-pid "${R_PIDS[1]}" --source-net 10
    run idle-recovery idle --url "${R_URLS[0]}?gw_recover=1" --conns "$IDLE_N" --procs 2 --gateway-pid "${R_PIDS[0]}" --source-net 11
    stop_all
    start_cluster r2 2 echo recovery
    run handover handover --url "$URLS" --conns "$HANDOVER_N" --gateway-pid "$GW_PIDS"
    stop_all
fi

if wanted restart; then
    # The first gateway is stopped gracefully (SIGTERM) with its clients connected: it hands
    # them to the second, where they come back with their tokens (issue 25 §5).
    start_cluster r3 2 echo recovery
    IFS=, read -r -a R_PIDS <<<"$GW_PIDS"
    run restart restart --url "$URLS" --conns "$RESTART_N" --stop-pid "${R_PIDS[0]}" --server-pids "$GW_PIDS"
    stop_all
fi

if wanted pusher; then
    start_cluster p 3 echo "" pusher
    start_api p pusher
    # shellcheck disable=SC2086
    run pusher pusher --url "$PUSHER_URLS" --plain-url "$URLS" --gateway-pids "$GW_PIDS" --api "http://$API" \
        --app-id "$PUSHER_APP_ID" --key "$PUSHER_KEY" --secret "$PUSHER_SECRET" $PUSHER_LOAD
    stop_all
fi

if wanted idle-3gw; then
    start_cluster b 3
    run idle-3gw idle --url "$URLS" --conns "$IDLE3_N" --procs 4 --gateway-pid "$GW_PIDS" --source-net 6
    stop_all
fi

# ---- BENCHMARKS.md ------------------------------------------------------------------------------
field() { # field KEY LINE
    local kv
    for kv in $2; do [ "${kv%%=*}" = "$1" ] && { echo "${kv#*=}"; return; }; done
    echo "-"
}
line_of() { grep "^RESULT name=$1 " "$RESULTS" | tail -n 1 || true; }
ms() { [ "$1" = - ] && echo - || awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
lat() { echo "$(ms "$(field p50_us "$1")") / $(ms "$(field p99_us "$1")") / $(ms "$(field p999_us "$1")")"; }
met() { if [ "$1" = 1 ]; then echo "yes"; else echo "**no**"; fi; }
cmp() { awk -v a="$1" -v b="$2" -v op="$3" 'BEGIN { if (a == "-") { print 0; exit } if (op == ">=") print (a >= b) ? 1 : 0; else print (a < b) ? 1 : 0 }'; }

row() { # row NAME
    local l
    l=$(line_of "$1")
    if [ -z "$l" ]; then
        if grep -q "^ERROR name=$1\$" "$RESULTS"; then echo "| $1 | | **error** | | | | |"; fi
        return
    fi
    local cpu
    cpu="$(field server_cores "$l") / $(field gen_cores "$l") / $(field machine_cores "$l")"
    case "$1" in
        echo-http)
            echo "| echo through app = \"http\" | the same load; every event POSTed to gw-bench's echo endpoint (Rust, keep-alive) | $(field rtt_per_sec "$l") round trips/s | - | - | $(lat "$l") | $cpu |" ;;
        echo)
            local v; v=$(field rtt_per_sec "$l")
            echo "| echo | $(field conns "$l") conns × $(field inflight "$l") in flight, $(field size "$l") B | $v round trips/s | ≥ 100000 | $(met "$(cmp "$v" 100000 '>=')") | $(lat "$l") | $cpu |" ;;
        broadcast|group)
            local v; v=$(field deliveries_per_sec "$l")
            echo "| $1 | $(field conns "$l") conns, $(field senders "$l") senders, $(field msg_rate "$l") msg/s; missing $(field missing "$l"); confirmed $(field confirmed "$l"), next step up failed at $(field lowest_failing_msg_rate "$l") msg/s | $v deliveries/s sustained | ≥ 600000 | $(met "$(cmp "$v" 600000 '>=')") | $(lat "$l") | $cpu |" ;;
        deflate)
            echo "| deflate: the chat's messages | welcome, login (10 members), history (10), say short and 300 chars, logout, ping, echoed | $(field chat_deflate_bytes "$l") B on the wire compressed, $(field chat_plain_bytes "$l") B plain | - | - | - | - |"
            echo "| deflate: 1 KB JSON broadcast | $(field conns "$l") receivers × $(field messages "$l") messages, $(field rounds "$l") plain/compressed round pairs | $(field json1k_deflate_wire "$l") B per delivery compressed, $(field json1k_plain_wire "$l") B plain | - | - | - | - |"
            echo "| deflate: gateway CPU per delivery | the same broadcasts (median of the rounds; compressed/plain ratio of each pair: $(field cpu_ratios "$l")) | $(field server_us_per_delivery_deflate "$l") µs compressed, $(field server_us_per_delivery_plain "$l") µs plain | - | - | - | - |" ;;
        handover)
            local ok=1; [ "$(field resumed "$l")" = "$(field conns "$l")" ] || ok=0
            [ "$(cmp "$(field p99_us "$l")" 50000 '<')" = 1 ] || ok=0
            echo "| handover | $(field conns "$l") clients reset on gateway 1, resumed on gateway 2 (relayed to their home), $(field concurrency "$l") at once; $(field resumed "$l") resumed, $(field not_recovered "$l") not recovered, $(field failed "$l") failed | all resumed in $(field all_resumed_secs "$l") s; gateway 1 RSS per client: live $(field home_live_bytes_per_client "$l") B, held plus a plain client reusing the freed memory $(field home_held_plus_plain_bytes_per_client "$l") B, relayed $(field home_relayed_extra_bytes_per_client "$l") B more than held; gateway 2 per relayed socket: $(field edge_relay_bytes_per_client "$l") B | p99 < 50 ms | $(met "$ok") | $(lat "$l") | - |" ;;
        restart)
            local ok=1; [ "$(field resumed "$l")" = "$(field conns "$l")" ] || ok=0
            echo "| restart | $(field conns "$l") recovery clients on gateway 1, stopped gracefully (SIGTERM) while gateway 2 runs; $(field closed_1012 "$l") closed with 1012, $(field resumed "$l") resumed on gateway 2 under their ids and answered there, $(field not_recovered "$l") not recovered, $(field failed "$l") failed; $(field concurrency "$l") reconnects at once | all resumed $(field all_resumed_secs "$l") s after the SIGTERM; gateway 1 exited after $(field stopped_gateway_exit_secs "$l") s | every client | $(met "$ok") | $(lat "$l") (SIGTERM to resumed) | $(field server_cores "$l") / - / - |" ;;
        pusher)
            local ok; ok=$(cmp "$(field pusher_over_plain_pct "$l")" 10.0001 '<')
            [ "$(field missing "$l")" = 0 ] || ok=0
            echo "| pusher: HTTP publish | \`POST /apps/{id}/events\` to one channel with $(field subscribers "$l") subscribers over $(field gateways "$l") gateways, $(field rate "$l") events/s for $(field events "$l") events (HTTP API daemon); missing $(field missing "$l") | $(field deliveries_per_sec "$l") deliveries/s | - | - | $(lat "$l") | $(field server_cores "$l") / - / - |"
            echo "| pusher: at rest | $(field idle "$l") Pusher clients each subscribed to a channel, against as many plain WebSocket clients, on two alike gateways | $(field pusher_bytes_per_conn "$l") B vs $(field plain_bytes_per_conn "$l") B gateway RSS per client ($(field pusher_over_plain_pct "$l") %) | ≤ +10 % | $(met "$ok") | - | - |" ;;
        idle|idle-3gw|idle-deflate|idle-plain|idle-recovery)
            local v ok; v=$(field rss_per_conn_bytes "$l")
            ok=$(cmp "$v" 4097 '<')
            [ "$(field alive "$l")" = "$(field conns "$l")" ] || ok=0
            echo "| $1 | $(field conns "$l") conns on $(field gateways "$l") gateway(s), $(field procs "$l") generator processes; $(field alive "$l") alive | $v B gateway RSS per conn; $(field conn_per_sec "$l") conns/s | ≤ 4096 B | $(met "$ok") | - | - |" ;;
        storm)
            local v ok; v=$(field all_answered_secs "$l")
            ok=$(cmp "$v" 5 '<')
            [ "$(field answered "$l")" = "$(field conns "$l")" ] || ok=0
            echo "| storm | $(field conns "$l") clients at once; $(field answered "$l") answered | $v s until all answered | < 5 s | $(met "$ok") | $(lat "$l") | $cpu |" ;;
        push)
            local ok=1; [ "$(field missing "$l")" = 0 ] || ok=0
            echo "| push (gateway-client) | send_to_uid, $(field concurrency "$l") pushers, each waiting for its push to arrive (end to end) | $(field direct_per_sec "$l") calls/s | - | $(met "$ok") | $(ms "$(field direct_p50_us "$l")") / $(ms "$(field direct_p99_us "$l")") / - | - |"
            echo "| push (HTTP API) | the same calls as POST /v1/send_to_uid over $(field concurrency "$l") keep-alive connections; missing $(field missing "$l") of $(field sent "$l") | $(field http_per_sec "$l") requests/s (direct/HTTP = $(field overhead "$l")) | - | $(met "$ok") | $(ms "$(field http_p50_us "$l")") / $(ms "$(field http_p99_us "$l")") / - | $cpu |" ;;
    esac
}

{
    cores=$(nproc)
    mem=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
    echo "<!-- generated by scripts/bench.sh ($MODE mode); the notes after the marker below are kept -->"
    echo "# Benchmarks"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), mode: $MODE, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "- Machine: $cores cores ($cpu), $mem RAM, kernel $(uname -r); open-file limit $(ulimit -n)"
    echo "- Cluster A (idle, echo, broadcast, group, storm): 1 register, 1 gateway, 1 business-worker master running"
    echo "  $WORKERS worker process(es) with app = \"echo\". Cluster D (idle-deflate, deflate): the same, fresh."
    echo "  Cluster B (idle-3gw): 1 register, 3 gateways, the same workers. Clusters R (idle-plain, idle-recovery)"
    echo "  and R2 (handover): 1 register, 2 gateways with [recovery] on and a cluster secret, the same workers."
    echo "  P (pusher): 1 register, 3 gateways each with a plain and a Pusher listener (one app), 1 worker, the HTTP API daemon with the same app."
    echo "  All on 127.0.0.1 with ports the OS picked, log level warn, every other setting at its default"
    echo "  (send_queue 1024, heartbeat 25 s, tokio runtime with one worker thread per core)."
    echo "- Generator: gw-bench on the same machine, one current-thread tokio runtime per process; client sockets"
    echo "  bound to 127.0.N.x source addresses (at most 800 connections per address)."
    echo "- CPU column: cores busy during the measurement (1.00 = one core): the server processes (gateway(s),"
    echo "  register, worker master and workers), the generator, and the whole machine; the machine is shared,"
    echo "  so machine minus server minus generator is other tenants' load."
    echo
    echo "| scenario | load | result | target | met | latency p50 / p99 / p99.9 (ms) | CPU cores: server / generator / machine |"
    echo "|---|---|---|---|---|---|---|"
    for s in idle idle-deflate echo echo-http broadcast group storm push deflate idle-3gw idle-plain idle-recovery handover restart pusher; do row "$s"; done
    echo
    echo "Raw results:"
    echo
    echo '```'
    cat "$RESULTS"
    echo '```'
    if [ -s "$TMP/steps.txt" ]; then
        echo
        echo "<details><summary>Rate search steps (broadcast, group)</summary>"
        echo
        echo '```'
        cat "$TMP/steps.txt"
        echo '```'
        echo
        echo "</details>"
    fi
    echo
    echo "<!-- notes -->"
    if [ -f "$OUT" ] && grep -q '^<!-- notes -->$' "$OUT"; then
        sed '1,/^<!-- notes -->$/d' "$OUT"
    else
        echo "## Notes"
        echo
        echo "(What limits each figure: see the notes of the last full run.)"
    fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "== wrote $OUT" >&2
cat "$RESULTS"
if [ "$STATUS" -ne 0 ]; then
    echo "== some scenarios failed" >&2
fi
exit "$STATUS"
