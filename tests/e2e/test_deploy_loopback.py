"""Deployment on loopback through the real Flower runtime (no mocks): a SuperNode
whose data is missing is named by the server at registration.

TLS + node authentication and a late joiner: tests/e2e/test_deploy_joiner.py; a
SuperNode restarted mid-run (client identity across node ids), a dead one and a
killed ServerApp: tests/faults/test_deploy_faults.py.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.deploy_cluster import LoopbackCluster, wait_for

pytestmark = pytest.mark.e2e

TINY = {
    "dataset": "synthetic",
    "model": "mlp",
    "local-steps": 5,
    "holdout": 0.0,
    "clients-per-round": 2,
}


@pytest.fixture
def cluster_factory(tmp_path, flwr_env):
    made: list[LoopbackCluster] = []

    def make(num_nodes: int, insecure: bool = False) -> LoopbackCluster:
        cluster = LoopbackCluster(tmp_path / "cluster", flwr_env, num_nodes, insecure)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


def test_supernode_with_missing_data_is_named_by_the_server(cluster_factory, tmp_path):
    import json

    from tests.byo_data import npz_file

    data = npz_file(tmp_path / "data" / "shared.npz", n=400, classes=4)
    cluster = cluster_factory(2, insecure=True)
    cluster.start_link()
    cluster.start_node(0)
    cluster.start_node(1, HF_DATA_DIR="/nonexistent")  # this host's data is missing
    cfg = {
        **TINY,
        "dataset": "npz",
        "data-dir": str(data),
        "num-rounds": 1,
        "eval-every": 1,
        "min-clients": 2,
        "classes-per-client": 2,
    }
    run = cluster.flwr_run(cfg, "nodata")
    wait_for(
        lambda: (
            (cluster.outputs("nodata") / "status.json").exists()
            and "failed" in (cluster.outputs("nodata") / "status.json").read_text()
        ),
        300,
        "the run to fail at registration",
    )
    status = json.loads((cluster.outputs("nodata") / "status.json").read_text())
    cause = (
        "DatasetNotFoundError: data-dir '/nonexistent' is not a readable "
        "folder; give an .npz file or a folder holding one"
    )
    assert status["error"].startswith(
        "RegistrationError: registration: 1 participating clients registered"
    ), status
    assert "1 of 2 clients (node " in status["error"] and cause in status["error"]
    run.wait(60)
    log = cluster.log("run-nodata")
    assert re.search(
        r"registration: 1 of 2 clients \(node \d+\): " + re.escape(cause), log
    ), log[-3000:]
    assert not (cluster.outputs("nodata") / "summary.json").exists()
