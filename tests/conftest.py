"""Shared fixtures: small run configs and the Flower environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.flwr_cli import copy_app_files, free_ports
from common.flwr_cli import flwr_env as flwr_env_for

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True, scope="session")
def _isolated_data_cache(tmp_path_factory):
    """Dataset and partition caches of the test session live in a temporary folder.

    One folder for the whole session, shared by the pytest-xdist workers and every
    process a test starts (Ray workers, SuperNodes, ClientApps): the caches are
    keyed by content and written atomically, so sharing is safe, and a partition
    (the flwr-datasets import and its hashing, seconds of CPU) is computed once a
    session instead of once a process.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above the workers' own
    cache = base / "data-cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HYPERFLOWER_DATA", str(cache))


@pytest.fixture(scope="session")
def app_copy(tmp_path_factory) -> Path:
    """The app's files (what git tracks or would track) copied to a folder of their
    own, for ``flwr run`` to build its FAB from (``HYPERFLOWER_APP_DIR``): run from
    the repository, it walks the virtual environment's files too, seconds of CPU a
    run. The FAB built from the copy holds the same files."""
    return copy_app_files(ROOT, tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="session")
def colour_set(tmp_path_factory) -> dict:
    """Run-config keys for a learnable 3-channel 32×32 set in CIFAR-10's official
    files (600 images: a random prototype per class plus noise), read through the
    same code as a user's CIFAR-10 folder; the end-to-end runs use it so that
    every method runs through Flower on the papers' image shape."""
    from bench.sample_sets import cifar_folder

    root, _, _ = cifar_folder(
        tmp_path_factory.mktemp("cifar"), per_batch=100, learnable=True
    )
    return {"dataset": "cifar10", "data-dir": str(root)}


def fresh_process_imports(code: str, module: str) -> bool:
    """Whether running ``code`` in a fresh interpreter (the repository as working
    directory, this environment) leaves ``module`` imported: a SuperNode starts a
    fresh ClientApp process for every message, so what it imports costs each one."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print({module!r} in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return out.stdout.split()[-1] == "True"


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
def flwr_env(tmp_path: Path, app_copy: Path) -> dict:
    """Environment for `flwr` commands: own FLWR_HOME and ports, no installs.

    Writes the project's connections with deploy/flwr-env.sh, and on teardown stops
    the background local SuperLink that `flwr run` leaves behind. Simulations get
    one Ray CPU (``HYPERFLOWER_SIM_CPUS``): the test workers already share this
    machine's cores, and each Ray worker imports torch. ``flwr run`` builds the app
    from :func:`app_copy` (``HYPERFLOWER_APP_DIR``).
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
            "HYPERFLOWER_SIM_CPUS": env.get("HYPERFLOWER_SIM_CPUS", "1"),
            "HYPERFLOWER_APP_DIR": str(app_copy),
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

#: Seconds the longest tests took in a whole run (fresh clone, 3 workers on this
#: 2-core machine, 2026-12-07). Only the order uses them: with ``--dist load
#: --maxschedchunk 1`` each worker takes the next test when it is free, so starting
#: the longest first ends the workers within a few seconds of each other.
LONGEST = {
    "test_tls_auth_refuses_an_unregistered_node_and_a_late_node_joins": 232,
    "test_second_batch_supernodes_started_later_join_the_next_batch": 225,
    "test_loopback_deployment_completes_zero_shot_rounds": 186,
    "test_dead_node_restarted_node_and_killed_server_do_not_lose_the_run": 170,
    "test_loopback_supernodes_with_different_architectures": 154,
    "test_federated_run_across_network_namespaces": 142,
    "test_server_killed_mid_run_resumes_to_identical_result": 126,
    "test_pfedhn_and_fedavg_learn_in_simulation": 76,
    "test_cli_run_then_a_failed_rerun_never_shows_the_old_result": 74,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the collected tests slowest kind first, the longest known first within
    it (stable otherwise)."""

    def rank(item: pytest.Item) -> tuple[int, int]:
        path = Path(str(item.fspath)).relative_to(ROOT).as_posix()
        known = -LONGEST.get(getattr(item, "originalname", item.name), 0)
        for i, prefix in enumerate(SLOW_FIRST):
            if path.startswith(prefix):
                return i, known
        return len(SLOW_FIRST), known

    items.sort(key=rank)
