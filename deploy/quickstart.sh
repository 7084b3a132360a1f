#!/usr/bin/env bash
# Set everything up, then run the default job: pFedHN on Fashion-MNIST (50 clients,
# 2 classes each, 10 held out) in Flower's simulation, ending with its accuracy table.
# Outputs: outputs/quickstart/ (config, metrics.jsonl, summary.json, plots, checkpoint).
# Extra arguments are passed to `flwr run`, e.g. --run-config "num-rounds=10".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/deploy/setup.sh"
cd "$root"
source deploy/flwr-env.sh
source .venv/bin/activate
flwr run . local --stream --run-config conf/quickstart.toml \
  --run-config "output-dir=\"$root/outputs\"" \
  --federation-config "num-supernodes=50 client-resources-num-cpus=1" "$@"
.venv/bin/python -m common.report "$root/outputs/quickstart"
