#!/usr/bin/env bash
# PHP GatewayWorker against our register + gateway with the same PHP Events.php behind it, under the
# same load generator (gw-bench) on the same machine, one run each:
#
#   A. all PHP: Register, Gateway (2 processes) and BusinessWorker (2 processes), GatewayWorker's
#      unmodified sources from ../shared/peers/php (PEERS=… to point elsewhere);
#   B. ours: register + gateway (with [gatewayworker] listeners), PHP BusinessWorker (2 processes)
#      running the same Events.php.
#
#   C. ours throughout: register + gateway + our business-worker (2 processes) running the
#      stock `echo` app, which implements the same contract.
#
# Events.php implements the benchmark contract of stock-apps/src/echo.rs (echo; `b:` to
# everyone; `j` joins group g). Scenarios: idle (gateway RSS per connection), echo (round trips/s),
# broadcast (deliveries/s sustained with nothing missing), pingpong (one client, one message in
# flight: the round trip's latency). Prints the RESULT lines of all three.
#
#   scripts/bench-php.sh [--quick] [--only "SCENARIO ..."]
#       --quick: tiny sizes, proves it runs (about a minute); --only: these scenarios alone
#   environment: OUR_THREADS=N runs our daemons with `[process] threads = N` (default 0: one
#   per core); GATEWAY_BIN=path runs that gateway binary as ours (B and C) instead of the one
#   built here (A/B runs of two builds with everything else equal); GATEWAY_TOML="lines" appends
#   those lines to our gateway's config (A/B of a setting, e.g. "[link]\nwrite_delay = \"100us\"");
#   SYSTEMS="php ours" runs only those of the three systems (php, ours, rust); BENCH_SESSION=1
#   gives every client a session on connect in Events.php (php and ours; our stock echo app in
#   rust sets none), which every event then carries; BENCH_SESSION=2 also changes it with every
#   echoed message
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
ONLY="idle echo broadcast pingpong"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --only) ONLY="$2"; shift 2 ;;
        *) echo "bench-php: unknown argument $1 (--quick, --only \"idle echo broadcast pingpong\")" >&2; exit 2 ;;
    esac
done
wanted() { [[ " $ONLY " == *" $1 "* ]]; }
SYSTEMS="${SYSTEMS:-php ours rust}"
system_wanted() { [[ " $SYSTEMS " == *" $1 "* ]]; }
PEERS=$(cd "${PEERS:-../shared/peers/php}" && pwd)
command -v php >/dev/null || { echo "bench-php: php not found (scripts/install-php.sh)" >&2; exit 1; }

echo "== building (release)" >&2
cargo build --release -q -p gw-register -p gw-gateway -p gw-business-worker -p gw-bench
BIN="${CARGO_TARGET_DIR:-target}/release"
BENCH="$BIN/gw-bench"
GATEWAY_BIN="${GATEWAY_BIN:-$BIN/gateway}"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gw-bench-php.XXXXXX")
PHP_MASTERS=()
OUR_PIDS=()

stop_all() {
    local pid
    # Workerman's Ctrl+C: the master stops its worker processes.
    for pid in "${PHP_MASTERS[@]:-}"; do [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${OUR_PIDS[@]:-}"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PHP_MASTERS[@]:-}" "${OUR_PIDS[@]:-}"; do
        [ -z "$pid" ] && continue
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        wait "$pid" 2>/dev/null || true
    done
    PHP_MASTERS=()
    OUR_PIDS=()
}
trap 'stop_all; rm -rf "$TMP"' EXIT

if [ "$QUICK" = 1 ]; then
    IDLE_N=200; ECHO="--conns 20 --inflight 4 --warmup 0.5 --duration 2"
    PINGPONG="--conns 1 --inflight 1 --warmup 0.5 --duration 2"
    FAN="--conns 50 --senders 2 --rate 20 --step-secs 1"
else
    IDLE_N=900; ECHO="--conns 100 --inflight 8 --warmup 2 --duration 10"
    PINGPONG="--conns 1 --inflight 1 --warmup 2 --duration 10"
    FAN="--conns 500 --senders 4 --start-rate 20 --growth 1.5 --refine 2 --step-secs 4 --retries 1"
fi

read -r -a P <<<"$("$BENCH" ports 8)"
APP="$TMP/app"
mkdir -p "$APP/vendor"
cat >"$APP/vendor/autoload.php" <<PHP
<?php
spl_autoload_register(function (\$class) {
    foreach (['Workerman\\\\' => '$PEERS/workerman/', 'GatewayWorker\\\\' => '$PEERS/gateway-worker/src/'] as \$prefix => \$dir) {
        if (strncmp(\$class, \$prefix, strlen(\$prefix)) === 0) {
            \$file = \$dir . str_replace('\\\\', '/', substr(\$class, strlen(\$prefix))) . '.php';
            if (is_file(\$file)) { require \$file; }
            return;
        }
    }
});
PHP
cat >"$APP/Events.php" <<'PHP'
<?php
use GatewayWorker\Lib\Gateway;

class Events
{
    // BENCH_SESSION=1: every client gets a session on connect, as a chat room's would (name,
    // room, time joined), and every event then carries it (PHP's gateway sends it each time).
    // BENCH_SESSION=2: the same, and every echoed message also counts itself in the session, so
    // every message changes it (written back by the worker, sent with the next event).
    private static $session = '';

    public static function onWorkerStart($worker)
    {
        self::$session = (string) getenv('BENCH_SESSION');
    }

    public static function onConnect($client_id)
    {
        if (self::$session !== '') {
            $_SESSION = self::guest($client_id);
        }
    }

    private static function guest($client_id)
    {
        return ['client_name' => 'guest-' . $client_id, 'room_id' => 'lobby', 'joined' => 1765000000, 'muted' => false];
    }

    public static function onMessage($client_id, $message)
    {
        if (strncmp($message, 'b:', 2) === 0) {
            Gateway::sendToAll($message);
        } elseif (strncmp($message, 'g:', 2) === 0) {
            Gateway::sendToGroup('g', $message);
        } elseif ($message === 'j') {
            Gateway::joinGroup($client_id, 'g');
            Gateway::sendToCurrentClient('joined');
        } else {
            if (self::$session === '2') {
                // A message sent before onConnect's session reached the gateway carries none
                // (see BENCHMARKS.md): both systems then count in a session of the same size.
                $_SESSION = $_SESSION ?? self::guest($client_id);
                $_SESSION['echoed'] = ($_SESSION['echoed'] ?? 0) + 1;
            }
            Gateway::sendToCurrentClient($message);
        }
    }
}
PHP
# $1: file, $2: register address, $3: 1 to run Register and Gateway too.
write_start() {
    cat >"$1" <<PHP
<?php
use Workerman\Worker;
require_once __DIR__ . '/vendor/autoload.php';
require_once __DIR__ . '/Events.php';
Worker::\$pidFile = __FILE__ . '.pid';
Worker::\$logFile = __FILE__ . '.log';
if ($3) {
    new GatewayWorker\Register('text://$2');
    \$gateway = new GatewayWorker\Gateway('websocket://127.0.0.1:${P[1]}');
    \$gateway->name = 'BenchGateway';
    \$gateway->count = 2;
    \$gateway->lanIp = '127.0.0.1';
    \$gateway->startPort = ${P[2]};
    \$gateway->registerAddress = '$2';
}
\$worker = new GatewayWorker\BusinessWorker();
\$worker->name = 'BenchWorker';
\$worker->count = 2;
\$worker->registerAddress = '$2';
Worker::runAll();
PHP
}

RESULTS="$TMP/results.txt"
: >"$RESULTS"
# run SYSTEM NAME gw-bench-args…
run() {
    local system="$1" name="$2"
    shift 2
    echo "== $system $name: gw-bench $*" >&2
    if "$BENCH" "$@" --server-pids "$SERVER_PIDS" >"$TMP/out"; then :; else echo "ERROR system=$system name=$name" >>"$RESULTS"; fi
    grep '^RESULT' "$TMP/out" | sed "s/^RESULT /RESULT system=$system name=$name /" | tee -a "$RESULTS" || true
}
children() { pgrep -P "$1" | paste -sd, -; }
gateway_children() {
    local c out=""
    for c in $(pgrep -P "$1"); do grep -q BenchGateway "/proc/$c/cmdline" 2>/dev/null && out="$out${out:+,}$c"; done
    echo "$out"
}
scenarios() {
    local system="$1" url="$2" gw_pids="$3"
    "$BENCH" wait --url "$url" --timeout 60
    if wanted idle; then run "$system" idle idle --url "$url" --conns "$IDLE_N" --gateway-pid "$gw_pids" --source-net 11; fi
    # shellcheck disable=SC2086
    if wanted echo; then run "$system" echo echo --url "$url" $ECHO --size 64 --source-net 12; fi
    # shellcheck disable=SC2086
    if wanted broadcast; then run "$system" broadcast broadcast --url "$url" $FAN --source-net 13; fi
    # shellcheck disable=SC2086
    if wanted pingpong; then run "$system" pingpong echo --url "$url" $PINGPONG --size 64 --source-net 14; fi
}

# Quiet logs, run files in $TMP, no admin listener: shared by both daemons' files.
common_toml() {
    printf '[log]\nlevel = "warn"\n[process]\nrun_dir = "%s"\nadmin = ""\nthreads = %s\n' "$TMP/run" "${OUR_THREADS:-0}"
}

# start_ours BINARY NAME: starts one of our daemons with $TMP/NAME.toml, its output in $TMP/NAME.out.
start_ours() {
    "$1" start --config "$TMP/$2.toml" >"$TMP/$2.out" 2>&1 &
    OUR_PIDS+=($!)
}

# GATEWAY_TOML's lines, at the end of our gateways' configs.
gateway_extra() {
    if [ -n "${GATEWAY_TOML:-}" ]; then printf '%b\n' "$GATEWAY_TOML"; fi
}

# ---- A: all PHP ----
system_php() {
    write_start "$APP/all.php" "127.0.0.1:${P[0]}" 1
    (cd "$APP" && exec php all.php start >"$TMP/php-all.out" 2>&1) &
    PHP_MASTERS+=($!)
    sleep 2
    SERVER_PIDS="${PHP_MASTERS[0]},$(children "${PHP_MASTERS[0]}")"
    scenarios php "ws://127.0.0.1:${P[1]}/" "$(gateway_children "${PHP_MASTERS[0]}")"
    stop_all
}

# ---- B: our register + gateway, PHP business workers ----
system_ours() {
    {
        echo "listen = \"127.0.0.1:${P[3]}\""
        common_toml
        printf '[gatewayworker]\nlisten = "127.0.0.1:%s"\n' "${P[4]}"
    } >"$TMP/register.toml"
    {
        printf 'listen = "127.0.0.1:%s"\ninternal_listen = "127.0.0.1:%s"\nregisters = ["127.0.0.1:%s"]\n' "${P[5]}" "${P[6]}" "${P[3]}"
        common_toml
        printf '[gatewayworker]\nlisten = "127.0.0.1:%s"\nregisters = ["127.0.0.1:%s"]\n' "${P[7]}" "${P[4]}"
        gateway_extra
    } >"$TMP/gateway.toml"
    start_ours "$BIN/register" register
    start_ours "$GATEWAY_BIN" gateway
    write_start "$APP/workers.php" "127.0.0.1:${P[4]}" 0
    (cd "$APP" && exec php workers.php start >"$TMP/php-workers.out" 2>&1) &
    PHP_MASTERS+=($!)
    sleep 2
    SERVER_PIDS="${OUR_PIDS[0]},${OUR_PIDS[1]},${PHP_MASTERS[0]},$(children "${PHP_MASTERS[0]}")"
    scenarios ours "ws://127.0.0.1:${P[5]}/" "${OUR_PIDS[1]}"
    stop_all
}

# ---- C: ours throughout (our business-worker, 2 processes, the stock echo app) ----
system_rust() {
    read -r -a Q <<<"$("$BENCH" ports 3)"
    {
        echo "listen = \"127.0.0.1:${Q[0]}\""
        common_toml
    } >"$TMP/register-c.toml"
    {
        printf 'listen = "127.0.0.1:%s"\ninternal_listen = "127.0.0.1:%s"\nregisters = ["127.0.0.1:%s"]\n' "${Q[1]}" "${Q[2]}" "${Q[0]}"
        common_toml
        gateway_extra
    } >"$TMP/gateway-c.toml"
    {
        printf 'name = "bench-worker"\napp = "echo"\ncount = 2\nregisters = ["127.0.0.1:%s"]\n' "${Q[0]}"
        common_toml
    } >"$TMP/worker-c.toml"
    start_ours "$BIN/register" register-c
    start_ours "$GATEWAY_BIN" gateway-c
    start_ours "$BIN/business-worker" worker-c
    sleep 2
    SERVER_PIDS="${OUR_PIDS[0]},${OUR_PIDS[1]},${OUR_PIDS[2]},$(children "${OUR_PIDS[2]}")"
    SERVER_PIDS="${SERVER_PIDS%,}"
    scenarios rust "ws://127.0.0.1:${Q[1]}/" "${OUR_PIDS[1]}"
    stop_all
}

for system in php ours rust; do
    if system_wanted "$system"; then "system_$system"; fi
done

echo "== results" >&2
cat "$RESULTS"
