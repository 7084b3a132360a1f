#!/usr/bin/env bash
# Set up everything hyperflower needs on a fresh Debian/Ubuntu machine, idempotently:
# system packages (Fashion-MNIST, openssl, iproute2, docker-compose v1 for validating
# the compose file) when running as root, a virtual environment in .venv, and the
# project with its test tools. Re-running it is cheap: it reinstalls only when
# pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

want=(dataset-fashion-mnist openssl iproute2 docker-compose)
missing=()
for pkg in "${want[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install these system packages: ${missing[*]}" >&2
    echo "       (Fashion-MNIST can also be downloaded by torchvision when online)" >&2
  fi
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.hyperflower-installed
digest=$(cat pyproject.toml deploy/constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "setup: installing hyperflower and its dependencies into .venv (a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c deploy/constraints.txt -e ".[dev]"
  echo "$digest" > "$stamp"
fi
echo "setup: ready ($(.venv/bin/python -c 'import flwr, torch; print("flwr", flwr.__version__, "torch", torch.__version__)'))"
