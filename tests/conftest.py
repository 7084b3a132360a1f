"""Shared fixtures: small run configs and the Flower environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.flwr_cli import flwr_env as flwr_env_for
from common.flwr_cli import free_ports

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True, scope="session")
def _isolated_data_cache(tmp_path_factory):
    """Dataset and partition caches of the test session live in a temporary folder."""
    os.environ.setdefault("HYPERFLOWER_DATA", str(tmp_path_factory.mktemp("data")))


def small_config(tmp_path: Path, **overrides) -> dict:
    """A run config that trains in seconds on the synthetic set."""
    cfg = {
        "dataset": "synthetic",
        "model": "mlp",
        "num-clients": 10,
        "holdout": 0.2,
        "num-rounds": 4,
        "eval-every": 2,
        "local-steps": 10,
        "clients-per-round": 4,
        "novel-rounds": 2,
        "run-name": "test",
        "output-dir": str(tmp_path / "outputs"),
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture
def flwr_env(tmp_path: Path) -> dict:
    """Environment for `flwr` commands: own FLWR_HOME and ports, no installs.

    Writes the project's connections with deploy/flwr-env.sh, and on teardown stops
    the background local SuperLink that `flwr run` leaves behind.
    """
    home = tmp_path / "flwr-home"
    env = dict(os.environ)
    link, http, control = free_ports(3)
    env.update(
        {
            "FLWR_HOME": str(home),
            "HYPERFLOWER_LINK_PORT": str(link),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http),
            "FLWR_LOCAL_CONTROL_API_PORT": str(control),
            "HYPERFLOWER_DATA": str(tmp_path / "data-cache"),
            "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
        }
    )
    env = flwr_env_for(env)
    yield env
    stop_local_superlink(env)


def stop_local_superlink(env: dict) -> None:
    """Stop the local SuperLink started for this FLWR_HOME (found by its port)."""
    port = env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]
    found = subprocess.run(
        ["pgrep", "-f", f"flower-superlink.*--port {port}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    for pid in found:
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass


#: Test files that take the longest (Flower start-up, deployments, whole runs) go
#: first, so that pytest-xdist's workers end together instead of one finishing a
#: long end-to-end test alone after the quick ones are done.
SLOW_FIRST = ("tests/e2e/", "tests/faults/", "tests/test_regression.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the collected tests slowest kind first (stable within a kind)."""

    def rank(item: pytest.Item) -> int:
        path = Path(str(item.fspath)).relative_to(ROOT).as_posix()
        for i, prefix in enumerate(SLOW_FIRST):
            if path.startswith(prefix):
                return i
        return len(SLOW_FIRST)

    items.sort(key=rank)
