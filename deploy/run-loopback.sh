#!/usr/bin/env bash
# Real deployment on this machine: one flower-superlink and N flower-supernode
# processes on 127.0.0.1 talking gRPC, each SuperNode with its own partition and a
# stable client id in --node-config; then `flwr run` against them, wait for the end,
# and stop every process this script started (also on Ctrl-C or failure).
#
#   deploy/run-loopback.sh [--nodes N] [--workdir DIR] [--run-config "k=v ..."]...
#
# Ports: the SuperLink serves its Fleet, Control and Runtime APIs on one port,
# $HYPERFLOWER_LINK_PORT (default 9093); SuperNode i uses $HYPERFLOWER_LINK_PORT + 10 + i.
# The run's outputs go to <workdir>/outputs/<run-name>; logs to <workdir>/*.log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=deploy/flwr-env.sh
source "$here/flwr-env.sh"

nodes=2
workdir=""
run_configs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --run-config) run_configs+=(--run-config "$2"); shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
workdir="${workdir:-$(mktemp -d -t hyperflower-loopback-XXXX)}"
mkdir -p "$workdir"
port=$HYPERFLOWER_LINK_PORT

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

wait_port() {  # wait until 127.0.0.1:$1 accepts connections
  for _ in $(seq 1 60); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.5
  done
  echo "nothing listens on 127.0.0.1:$1; see $workdir/superlink.log" >&2
  return 1
}

flower-superlink --insecure --database "$workdir/state.db" \
  --host 127.0.0.1 --port "$port" > "$workdir/superlink.log" 2>&1 &
pids+=($!)
wait_port "$port"

for i in $(seq 0 $((nodes - 1))); do
  flower-supernode --insecure --superlink "127.0.0.1:$port" \
    --host 127.0.0.1 --port $((port + 10 + i)) \
    --node-config "partition-id=$i num-partitions=$nodes client-id=\"node-$i\"" \
    > "$workdir/supernode-$i.log" 2>&1 &
  pids+=($!)
done

run_name="loopback"
flwr run "$root" local-deploy --stream \
  --run-config "num-clients=$nodes output-dir=\"$workdir/outputs\" run-name=\"$run_name\"" \
  "${run_configs[@]}" 2>&1 | tee "$workdir/run.log"

summary="$workdir/outputs/$run_name/summary.json"
if [ -f "$summary" ]; then
  echo "loopback deployment finished: $summary"
else
  echo "the run did not finish: no $summary (see $workdir/*.log)" >&2
  exit 1
fi
