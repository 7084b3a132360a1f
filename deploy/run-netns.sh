#!/usr/bin/env bash
# Separate hosts on one machine: network namespaces joined by a bridge, each with its
# own address, running the same services (deploy/hf-service.sh ROLE) as the compose
# file, then a federated run driven from an operator host. Needs root (ip netns).
#
#   deploy/run-netns.sh [--nodes N] [--workdir DIR] [--insecure] [--subnet 10.77.0]
#                       [--run-config "k=v ..."]...
#
# Hosts (namespaces named hf<pid>-*; a bridge in hf<pid>-sw joins them):
#   link      <subnet>.1    flower-superlink            (compose: superlink)
#   server    <subnet>.2    ServerApp SuperExec         (compose: serverapp)
#   operator  <subnet>.3    flwr supernode register, flwr run (your laptop)
#   node-i    <subnet>.1x   flower-supernode + ClientApp SuperExec
#                                                        (compose: supernode-i, clientapp-i)
# Only these namespaces talk to each other: the bridge is not connected to the
# host's network and nothing outside is ever contacted. TLS + SuperNode auth are on
# (certificates from deploy/gen-certs.sh with the SuperLink's address in the SAN)
# unless --insecure. Every namespace and process is removed on exit, also on failure.
# Exit code 77: this machine cannot create network namespaces (not root, or no
# CAP_SYS_ADMIN in a container).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

nodes=2
workdir=""
insecure=0
subnet=10.77.0
run_configs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --insecure) insecure=1; shift ;;
    --subnet) subnet="$2"; shift 2 ;;
    --run-config) run_configs+=(--run-config "$2"); shift 2 ;;
    -h|--help) sed -n 2,24p "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$nodes" -lt 1 ] || [ "$nodes" -gt 80 ]; then
  echo "run-netns: --nodes must be in 1..80" >&2; exit 2
fi
workdir="${workdir:-$(mktemp -d -t hyperflower-netns-XXXX)}"
mkdir -p "$workdir"
workdir="$(cd "$workdir" && pwd)"
export FLWR_HOME="$workdir/hosts/local"
# shellcheck source=deploy/flwr-env.sh
source "$here/flwr-env.sh"  # PATH to the venv's flwr, FLWR_* environment

tag="hf$$"
link_ip="$subnet.1" server_ip="$subnet.2" operator_ip="$subnet.3"
port=9093 node_port=9094
namespaces=()
pids=()

cleanup() {
  local pid ns
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 20); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for ns in "${namespaces[@]}"; do  # whatever still runs inside our namespaces
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! ip netns add "$tag-sw" 2>"$workdir/netns-error.log"; then
  echo "run-netns: cannot create network namespaces here: $(cat "$workdir/netns-error.log")" >&2
  echo "run-netns: run as root (or with CAP_SYS_ADMIN and CAP_NET_ADMIN)" >&2
  exit 77
fi
namespaces+=("$tag-sw")
ip -n "$tag-sw" link add br0 type bridge
ip -n "$tag-sw" link set br0 up

port_index=0
add_host() {  # add_host NAME ADDRESS: a namespace with eth0 on the bridge
  local ns="$tag-$1" ip="$2" peer="p$port_index"
  port_index=$((port_index + 1))
  ip netns add "$ns"
  namespaces+=("$ns")
  ip link add eth0 netns "$ns" type veth peer name "$peer" netns "$tag-sw"
  ip -n "$tag-sw" link set "$peer" master br0 up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
}

add_host link "$link_ip"
add_host server "$server_ip"
add_host operator "$operator_ip"
for i in $(seq 0 $((nodes - 1))); do add_host "node-$i" "$subnet.$((11 + i))"; done
echo "run-netns: hosts: link $link_ip, server $server_ip, operator $operator_ip," \
  "nodes $subnet.11..$subnet.$((10 + nodes)) (namespaces $tag-*)"

certs="${HYPERFLOWER_CERTS:-$workdir/certs}"
if [ "$insecure" = 0 ]; then
  bash "$here/gen-certs.sh" --out "$certs" --nodes "$nodes" --ip "$link_ip" >/dev/null
fi
# The compose services' environment, with this network's addresses.
export HF_INSECURE=$insecure HF_CERTS="$certs" HF_BIND=0.0.0.0 HF_LINK_PORT=$port \
  HF_SUPERLINK="$link_ip:$port" HF_STATE="$workdir/hosts/link/state" \
  HF_NUM_NODES="$nodes" HF_NODE_PORT=$node_port

on() {  # on HOST ROLE [VAR=value...]: start hf-service.sh ROLE inside that host
  local host="$1" role="$2"; shift 2
  mkdir -p "$workdir/hosts/$host"
  ip netns exec "$tag-$host" env FLWR_HOME="$workdir/hosts/$host/flwr" \
    HYPERFLOWER_DATA="$workdir/hosts/$host/data" "$@" \
    bash "$here/hf-service.sh" "$role" >> "$workdir/$host-$role.log" 2>&1 &
  pids+=($!)
}
in_operator() {  # run a command on the operator host, in the foreground
  ip netns exec "$tag-operator" env FLWR_HOME="$workdir/hosts/operator/flwr" "$@"
}

on link superlink
for _ in $(seq 1 120); do  # the SuperLink answers from the operator host
  in_operator bash -c "exec 3<>/dev/tcp/$link_ip/$port" 2>/dev/null && break
  sleep 0.5
done
in_operator bash -c "exec 3<>/dev/tcp/$link_ip/$port" 2>/dev/null \
  || { echo "run-netns: the SuperLink does not answer; see $workdir/link-superlink.log" >&2; exit 1; }
on server serverapp
in_operator bash "$here/hf-service.sh" connect > "$workdir/operator.log" 2>&1
if [ "$insecure" = 0 ]; then
  keys=()
  for i in $(seq 0 $((nodes - 1))); do keys+=("$certs/nodes/node-$i.pub"); done
  in_operator HF_REGISTER_KEYS="${keys[*]}" bash "$here/hf-service.sh" register \
    >> "$workdir/operator.log" 2>&1 || { cat "$workdir/operator.log" >&2; exit 1; }
fi
for i in $(seq 0 $((nodes - 1))); do
  on "node-$i" supernode HF_NODE="$i"
  on "node-$i" clientapp HF_NODE="$i" HF_RUNTIME="$subnet.$((11 + i)):$node_port"
done

run_name="netns"
in_operator flwr run "${HYPERFLOWER_APP_DIR:-$root}" hf --stream \
  --run-config "num-clients=$nodes output-dir=\"$workdir/outputs\" run-name=\"$run_name\"" \
  "${run_configs[@]}" 2>&1 | tee "$workdir/run.log" || true  # the record decides

# The run's own record decides (never a summary an older run left): exit 0 done,
# 1 failed, 3 stopped for resume (docs/running.md, "Exit codes").
code=0
(cd "$root" && python -m server.cli report "$workdir/outputs/$run_name") || code=$?
if [ "$code" = 0 ]; then
  echo "netns deployment finished: $workdir/outputs/$run_name/summary.json"
else
  echo "the run did not finish (exit $code; see $workdir/*.log)" >&2
fi
exit "$code"
