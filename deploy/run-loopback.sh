#!/usr/bin/env bash
# Real deployment on this machine: a SuperLink, its ServerApp SuperExec, and N
# SuperNodes each with its own ClientApp SuperExec, as separate processes on
# 127.0.0.1 (the same commands as the compose services: deploy/hf-service.sh); then
# `flwr run` against them, wait for the end, and stop every process this script
# started (also on Ctrl-C or failure).
#
#   deploy/run-loopback.sh [--nodes N] [--workdir DIR] [--insecure]
#                          [--run-config "k=v ..."]...
#
# TLS and SuperNode authentication are on by default: a CA, a server certificate and
# one key per SuperNode are made with deploy/gen-certs.sh in $HYPERFLOWER_CERTS
# (default <workdir>/certs), every node key is registered with `flwr supernode
# register`, and the run goes through the `local-tls` connection. --insecure turns
# both off (plain gRPC/HTTP, any SuperNode accepted) for local experiments only.
#
# Ports: the SuperLink serves Fleet, Control and Runtime APIs on $HYPERFLOWER_LINK_PORT
# (default 9093); SuperNode i's runtime API is on $HYPERFLOWER_LINK_PORT + 10 + i.
# Outputs: <workdir>/outputs/loopback; logs: <workdir>/*.log. Exit code: 0 done,
# 1 run failed, 2 bad usage, 3 stopped for resume (as `hyperflower run`).
# $HYPERFLOWER_APP_DIR: build the app from this copy of its files instead of the
# repository (flwr run walks every file under it, the virtual environment's too).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

nodes=2
workdir=""
insecure=0
run_configs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --insecure) insecure=1; shift ;;
    --run-config) run_configs+=(--run-config "$2"); shift 2 ;;
    -h|--help) sed -n 2,19p "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
workdir="${workdir:-$(mktemp -d -t hyperflower-loopback-XXXX)}"
mkdir -p "$workdir"
workdir="$(cd "$workdir" && pwd)"
export HYPERFLOWER_CERTS="${HYPERFLOWER_CERTS:-$workdir/certs}"
# shellcheck source=deploy/flwr-env.sh
source "$here/flwr-env.sh"
port=$HYPERFLOWER_LINK_PORT

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 20); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {  # wait until 127.0.0.1:$1 accepts connections
  for _ in $(seq 1 120); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.5
  done
  echo "nothing listens on 127.0.0.1:$1; see $workdir/superlink.log" >&2
  return 1
}

# Every service of this "host" shares these; each gets its own FLWR_HOME (apps are
# installed there), as each container or machine would have.
export HF_INSECURE=$insecure HF_CERTS="$HYPERFLOWER_CERTS" HF_BIND=127.0.0.1 \
  HF_LINK_PORT="$port" HF_SUPERLINK="127.0.0.1:$port" HF_STATE="$workdir" \
  HF_NUM_NODES="$nodes"
service() {  # service NAME ROLE [VAR=value...]: start deploy/hf-service.sh ROLE
  local name="$1" role="$2"; shift 2
  env FLWR_HOME="$workdir/hosts/$name" "$@" bash "$here/hf-service.sh" "$role" \
    > "$workdir/$name.log" 2>&1 &
  pids+=($!)
}

if [ "$insecure" = 1 ]; then
  connection=local-deploy
  echo "loopback: --insecure: no TLS, no SuperNode authentication"
else
  connection=local-tls
  bash "$here/gen-certs.sh" --out "$HYPERFLOWER_CERTS" --nodes "$nodes" >/dev/null
fi

service superlink superlink
wait_port "$port"
service serverapp serverapp
if [ "$insecure" = 0 ]; then
  keys=()
  for i in $(seq 0 $((nodes - 1))); do keys+=("$HYPERFLOWER_CERTS/nodes/node-$i.pub"); done
  FLWR_HOME="$workdir/hosts/operator" HF_REGISTER_KEYS="${keys[*]}" \
    bash "$here/hf-service.sh" register > "$workdir/register.log" 2>&1 \
    || { cat "$workdir/register.log" >&2; exit 1; }
fi
for i in $(seq 0 $((nodes - 1))); do
  node_port=$((port + 10 + i))
  service "supernode-$i" supernode HF_NODE="$i" HF_NODE_PORT="$node_port"
  service "clientapp-$i" clientapp HF_NODE="$i" HF_RUNTIME="127.0.0.1:$node_port"
done

run_name="loopback"
flwr run "${HYPERFLOWER_APP_DIR:-$root}" "$connection" --stream \
  --run-config "num-clients=$nodes output-dir=\"$workdir/outputs\" run-name=\"$run_name\"" \
  "${run_configs[@]}" 2>&1 | tee "$workdir/run.log" || true  # the record decides

# The run's own record decides (never a summary an older run left): exit 0 done,
# 1 failed, 3 stopped for resume (docs/running.md, "Exit codes").
code=0
(cd "$root" && python -m server.cli report "$workdir/outputs/$run_name") || code=$?
if [ "$code" = 0 ]; then
  echo "loopback deployment finished: $workdir/outputs/$run_name/summary.json"
else
  echo "the run did not finish (exit $code; see $workdir/*.log)" >&2
fi
exit "$code"
