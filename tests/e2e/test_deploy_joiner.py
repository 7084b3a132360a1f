"""A SuperNode that connects to a running loopback deployment with a client id the
run has never seen is registered at the next round and trains from then on (pFedHN
accepts joiners: the joiner gets its own embedding row). Real SuperLink, SuperNodes
and ClientApp processes on 127.0.0.1; no mocks."""

from __future__ import annotations

import pytest
import torch

from tests.e2e.deploy_cluster import LoopbackCluster, wait_for

pytestmark = pytest.mark.e2e


def test_late_supernode_joins_and_trains(tmp_path, flwr_env):
    cluster = LoopbackCluster(tmp_path / "cluster", flwr_env, 3, insecure=True)
    try:
        cluster.start_link()
        for i in (0, 1):
            cluster.start_node(i)
        cfg = {
            "dataset": "synthetic",
            "model": "mlp",
            "local-steps": 5,
            "holdout": 0.0,
            "clients-per-round": 3,
            "num-rounds": 5,
            "eval-every": 5,
            "round-timeout": 90.0,
        }
        run = cluster.flwr_run(cfg, "joiner")
        wait_for(lambda: len(cluster.metrics("joiner")) >= 2, 360, "round 2")
        node = cluster.service(
            "supernode-2",
            "supernode",
            HF_NODE="2",
            HF_NODE_PORT=str(cluster.node_ports[2]),
            HF_CLIENT_ID="late-joiner",
        )
        cluster.service(
            "clientapp-2",
            "clientapp",
            HF_NODE="2",
            HF_RUNTIME=f"127.0.0.1:{cluster.node_ports[2]}",
        )
        summary = cluster.finish(run, "joiner", timeout=480)
        assert node.poll() is None
    finally:
        cluster.close()
    rows = cluster.metrics("joiner")
    assert [r["valid"] for r in rows[:2]] == [2, 2]
    assert rows[-1]["valid"] == 3, [r["valid"] for r in rows]
    assert "client late-joiner joined on node" in cluster.log("run-joiner")
    assert summary["faults"].get("joined") == 1
    assert summary["num_participants"] == 3  # the joiner included
    state = torch.load(
        cluster.outputs("joiner") / "checkpoint" / "state.pt", weights_only=False
    )
    index = state["strategy"]["store"]["_extra_state"]["index"]
    assert index == {"node-0": 0, "node-1": 1, "late-joiner": 2}
