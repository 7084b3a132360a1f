#!/usr/bin/env bash
# Set everything up, then check the code (ruff lint and format, mypy) and run the
# whole test suite (unit, simulation, deployment).
# Extra arguments go to pytest, e.g. `bash deploy/test.sh -k partition`.
# Tests run in HF_TEST_WORKERS pytest-xdist workers (default 4 on this 2-core
# machine: end-to-end tests spend much of their time waiting on Flower's start-up
# and polling, so extra workers fill those waits); each worker takes the next test
# when it is free, the longest first (tests/conftest.py; docs/testing.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/deploy/setup.sh"
cd "$root"
source deploy/flwr-env.sh
echo "checks: ruff lint, ruff format, mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=20 \
  -n "${HF_TEST_WORKERS:-4}" --dist load --maxschedchunk 1 "$@" tests
