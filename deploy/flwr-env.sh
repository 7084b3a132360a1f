#!/usr/bin/env bash
# Source this file before any `flwr` command: it sets the environment Flower needs on
# this project's machines and writes the project's connections to $FLWR_HOME/config.toml
# (never into pyproject.toml, which `flwr run` would rewrite).
#   local          simulation on this host (Ray), the default
#   local-deploy   a SuperLink on 127.0.0.1:$HYPERFLOWER_LINK_PORT (default 9093)
#                  without TLS (deploy/run-loopback.sh --insecure)
#   local-tls      the same with TLS, trusting $HYPERFLOWER_CERTS/ca.crt (default
#                  deploy/certs; deploy/run-loopback.sh, the default)
#   docker         the compose SuperLink published on 127.0.0.1:9093, TLS, trusting
#                  deploy/certs/ca.crt (deploy/docker-compose.yml)
_hf_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$_hf_root/.venv/bin/flwr" ]; then export PATH="$_hf_root/.venv/bin:$PATH"; fi
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_HOME="${FLWR_HOME:-$_hf_root/.flwr-home}"
export HYPERFLOWER_LINK_PORT="${HYPERFLOWER_LINK_PORT:-9093}"
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "local"

[superlink.local]
address = ":local:"

[superlink.local.options]
num-supernodes = 50

[superlink.local.options.backend.client-resources]
num-cpus = 1
num-gpus = 0.0

[superlink.local-deploy]
address = "127.0.0.1:${HYPERFLOWER_LINK_PORT}"
insecure = true

[superlink.local-tls]
address = "127.0.0.1:${HYPERFLOWER_LINK_PORT}"
root-certificates = "${HYPERFLOWER_CERTS:-$_hf_root/deploy/certs}/ca.crt"

[superlink.docker]
address = "127.0.0.1:9093"
root-certificates = "$_hf_root/deploy/certs/ca.crt"
TOML
unset _hf_root
