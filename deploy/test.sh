#!/usr/bin/env bash
# Set everything up, then check the code (ruff lint and format, mypy) and run the
# whole test suite (unit, simulation, deployment).
# Extra arguments go to pytest, e.g. `bash deploy/test.sh -k partition`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/deploy/setup.sh"
cd "$root"
source deploy/flwr-env.sh
echo "checks: ruff lint, ruff format, mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=20 "$@" tests
