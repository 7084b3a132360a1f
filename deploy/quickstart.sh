#!/usr/bin/env bash
# Set everything up, then run the default job: pFedHN on Fashion-MNIST (50 clients,
# 2 classes each, 10 held out) in Flower's simulation, ending with its accuracy table.
# Outputs: outputs/quickstart/ (config, metrics.jsonl, summary.json, plots, checkpoint).
# Extra arguments are run-config overrides, e.g. num-rounds=10.
# Exit code: 0 done, 1 run failed, 2 bad config or usage, 3 stopped for resume.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/deploy/setup.sh"
cd "$root"
# presets and key=value overrides are merged by `hyperflower run` (flwr takes one or
# the other), then handed to `flwr run . local` with num-clients simulated SuperNodes
exec .venv/bin/hyperflower run --preset conf/quickstart.toml "$@"
