#!/usr/bin/env bash
# Move the pins: write deploy/constraints.txt from what .venv has installed now.
# Use it after upgrading on purpose, e.g.
#   .venv/bin/pip install -U "flwr[simulation]==1.43.*"
#   bash deploy/pin.sh && bash deploy/test.sh     # the suite must pass on the new pins
# and commit constraints.txt with the figures the new versions give. CUDA runtime
# wheels (nvidia-*, triton, cuda-*) are left out: they follow whichever torch build a
# machine installs (CPU or CUDA), and the project never pins a CUDA-specific build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
{
  echo "# Exact versions the test suite passes with; deploy/setup.sh installs with them."
  echo "# Regenerate with: bash deploy/pin.sh (see docs/testing.md, 'Pinned installs')."
  .venv/bin/python -m pip freeze --exclude-editable --all \
    | grep -viE '^(nvidia-|triton==|cuda-|pip==|setuptools==|wheel==|hyperflower)' \
    | LC_ALL=C sort -f
} > deploy/constraints.txt
echo "pin: wrote deploy/constraints.txt ($(grep -vc '^#' deploy/constraints.txt) packages)"
