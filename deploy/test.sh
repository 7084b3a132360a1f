#!/usr/bin/env bash
# Set everything up, then run the whole test suite (unit, simulation, deployment).
# Extra arguments go to pytest, e.g. `bash deploy/test.sh -k partition`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/deploy/setup.sh"
cd "$root"
source deploy/flwr-env.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=20 "$@" tests
