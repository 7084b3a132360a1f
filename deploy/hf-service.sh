#!/usr/bin/env bash
# One deployment service of hyperflower, configured by environment variables. The
# compose services (deploy/docker-compose.yml), the network-namespace hosts
# (deploy/run-netns.sh) and the loopback run (deploy/run-loopback.sh) all start their
# processes through this script, so every topology runs the same commands.
#
#   deploy/hf-service.sh superlink   the SuperLink (Fleet, Control and Runtime APIs on
#                                    one port), TLS + SuperNode authentication
#   deploy/hf-service.sh serverapp   the SuperExec that runs the ServerApp (process
#                                    isolation: its own process or container)
#   deploy/hf-service.sh supernode   one SuperNode (its own key, partition, client id)
#   deploy/hf-service.sh clientapp   the SuperExec that runs that SuperNode's ClientApps
#   deploy/hf-service.sh register    `flwr supernode register` every public key given
#   deploy/hf-service.sh connect     write a `flwr` connection "hf" to $HF_SUPERLINK in
#                                    $FLWR_HOME/config.toml (then `flwr run . hf`)
#   deploy/hf-service.sh print ROLE  print the command ROLE would run, and exit
#
# Environment (defaults are the compose ones):
#   HF_CERTS=/certs          ca.crt server.crt server.key superexec.secret nodes/*.key
#   HF_INSECURE=0            1: no TLS, no node authentication (local experiments only)
#   HF_BIND=0.0.0.0          address the SuperLink / SuperNode listen on
#   HF_LINK_PORT=9093        the SuperLink port
#   HF_SUPERLINK=superlink:9093   where SuperNodes, the serverapp and `flwr` dial it
#   HF_STATE=/state          the SuperLink database folder
#   HF_NODE=0 HF_NUM_NODES=2 this SuperNode's partition id and the number of partitions
#   HF_CLIENT_ID=node-$HF_NODE   stable client id (embeddings are keyed by it)
#   HF_NODE_KEY=$HF_CERTS/nodes/node-$HF_NODE.key
#   HF_NODE_PORT=9094        the SuperNode's runtime API port (its clientapp dials it)
#   HF_RUNTIME=supernode-$HF_NODE:$HF_NODE_PORT  what the clientapp SuperExec dials
#   HF_REGISTER_KEYS         space-separated .pub files (default: $HF_CERTS/nodes/*.pub)
#   HF_DATA_DIR              this SuperNode's own data-dir (node config; overrides the
#                            run config's data-dir on this host only)
#   HF_ARCH                  this SuperNode's own model architecture (node config
#                            'arch'; MH-pFedHN: never sent, only its parameter count)
#   HYPERFLOWER_DATA         this host's cache folder (decoded datasets, partitions)
set -euo pipefail

certs="${HF_CERTS:-/certs}"
insecure="${HF_INSECURE:-0}"
bind="${HF_BIND:-0.0.0.0}"
link_port="${HF_LINK_PORT:-9093}"
superlink="${HF_SUPERLINK:-superlink:9093}"
state="${HF_STATE:-/state}"
node="${HF_NODE:-0}"
num_nodes="${HF_NUM_NODES:-2}"
client_id="${HF_CLIENT_ID:-node-$node}"
node_key="${HF_NODE_KEY:-$certs/nodes/node-$node.key}"
node_port="${HF_NODE_PORT:-9094}"
runtime="${HF_RUNTIME:-supernode-$node:$node_port}"
data_dir="${HF_DATA_DIR:-}"
arch="${HF_ARCH:-}"

export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_HOME="${FLWR_HOME:-${HOME:-/tmp}/.flwr}"

printing=0
need() {  # fail early, naming the file, when a secret is missing
  [ "$printing" = 1 ] && return 0
  for f in "$@"; do
    [ -r "$f" ] || { echo "hf-service: $f is missing or unreadable (run deploy/gen-certs.sh)" >&2; exit 1; }
  done
}

# The command of each role, in the array `cmd`.
build() {
  local role="$1" secret=()
  if [ "$insecure" != 1 ] && [ -r "$certs/superexec.secret" ]; then
    secret=(--superexec-auth-secret-file "$certs/superexec.secret")
  fi
  case "$role" in
    superlink)
      [ "$printing" = 1 ] || mkdir -p "$state"
      cmd=(flower-superlink --isolation process --host "$bind" --port "$link_port"
           --database "$state/state.db" "${secret[@]}")
      if [ "$insecure" = 1 ]; then
        cmd+=(--insecure)
      else
        need "$certs/ca.crt" "$certs/server.crt" "$certs/server.key"
        cmd+=(--ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.crt"
              --ssl-keyfile "$certs/server.key" --enable-supernode-auth)
      fi ;;
    serverapp)
      cmd=(flower-superexec --runtime-api-address "$superlink" "${secret[@]}")
      if [ "$insecure" = 1 ]; then cmd+=(--insecure)
      else need "$certs/ca.crt"; cmd+=(--root-certificates "$certs/ca.crt"); fi ;;
    supernode)
      cmd=(flower-supernode --superlink "$superlink" --isolation process
           --host "$bind" --port "$node_port" "${secret[@]}"
           --node-config "partition-id=$node num-partitions=$num_nodes client-id=\"$client_id\"${data_dir:+ data-dir=\"$data_dir\"}${arch:+ arch=\"$arch\"}")
      if [ "$insecure" = 1 ]; then
        cmd+=(--insecure)
      else
        need "$certs/ca.crt" "$node_key"
        cmd+=(--root-certificates "$certs/ca.crt" --auth-supernode-private-key "$node_key")
      fi ;;
    clientapp)
      # The SuperNode's runtime API is plain HTTP on the node's own network; with a
      # secret only SuperExecs holding it may take tasks from it.
      cmd=(flower-superexec --insecure --runtime-api-address "$runtime" "${secret[@]}") ;;
    *) echo "hf-service: unknown role '$role'" >&2; exit 2 ;;
  esac
}

write_connection() {  # a `flwr` connection named "hf" to $HF_SUPERLINK
  mkdir -p "$FLWR_HOME"
  {
    printf '[superlink]\ndefault = "hf"\n\n[superlink.hf]\naddress = "%s"\n' "$superlink"
    if [ "$insecure" = 1 ]; then echo "insecure = true"
    else echo "root-certificates = \"$certs/ca.crt\""; fi
  } > "$FLWR_HOME/config.toml"
}

register() {  # register every key; a key already registered is fine
  [ "$insecure" = 1 ] && { echo "hf-service: insecure mode, nothing to register"; return 0; }
  need "$certs/ca.crt"
  write_connection
  local keys=()
  if [ -n "${HF_REGISTER_KEYS:-}" ]; then read -r -a keys <<< "$HF_REGISTER_KEYS"
  else keys=("$certs"/nodes/*.pub); fi
  local key out tries
  for key in "${keys[@]}"; do
    need "$key"
    for tries in $(seq 1 60); do  # the SuperLink may still be starting
      if out=$(flwr supernode register "$key" hf --format json 2>&1); then
        echo "hf-service: registered $(basename "$key"): $(echo "$out" | tr -d '\n ')"
        break
      fi
      if echo "$out" | grep -qi "already"; then
        echo "hf-service: $(basename "$key") was already registered"; break
      fi
      [ "$tries" = 60 ] && { echo "hf-service: cannot register $key: $out" >&2; exit 1; }
      sleep 1
    done
  done
}

role="${1:-}"
case "$role" in
  register) register ;;
  connect) write_connection; echo "hf-service: connection 'hf' -> $superlink in $FLWR_HOME/config.toml" ;;
  print) printing=1; build "${2:?print needs a role}"; printf '%q ' "${cmd[@]}"; echo ;;
  superlink|serverapp|supernode|clientapp)
    build "$role"
    echo "hf-service: $role: ${cmd[*]}"
    exec "${cmd[@]}" ;;
  *) sed -n 2,30p "$0"; exit 2 ;;
esac
