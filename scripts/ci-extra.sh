#!/usr/bin/env bash
# The heavier suites in their short modes, run by .ci/run after the README's test command.
# Each one says plainly when it has to skip (no Docker, no Python 2.7, ...) and fails CI when it
# runs and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=()
suite() {
  local name=$1
  shift
  if [ ! -f "$2" ]; then
    echo "-- $name: not present ($2), skipped"
    return
  fi
  echo "-- $name: $*"
  local start=$SECONDS
  if "$@"; then
    echo "-- $name: passed in $((SECONDS - start))s"
  else
    echo "-- $name: FAILED after $((SECONDS - start))s"
    failed+=("$name")
  fi
}

# Release binaries shared by the benchmark, the soak, the compose and the swarm tests.
cargo build --release -q -p gw-register -p gw-gateway -p gw-business-worker -p gw-chat-demo

suite "benchmark (quick)" bash scripts/bench.sh --quick
suite "chaos soak (short)" bash scripts/soak.sh --short
suite "scale (short)" bash scripts/scale.sh --short
# Quick mode (every case of 1.* to 7.* and a sample of the compression cases, ~3 min): the full
# suite's 216 compression cases took 11 of CI's 37 minutes; run `bash scripts/autobahn.sh` for them.
suite "autobahn conformance (quick)" bash scripts/autobahn.sh --quick
suite "docker compose cluster" bash scripts/compose-test.sh
# The same file as a swarm stack (initialises a single-node swarm and leaves it again when this
# Docker is in none); about a minute on the binaries built above.
SWARM_TEST_SKIP_BUILD=1 suite "docker swarm stack" bash scripts/swarm-test.sh

if [ ${#failed[@]} -gt 0 ]; then
  echo "extra suites failed: ${failed[*]}"
  exit 1
fi
echo "extra suites: all passed or skipped as stated above"
