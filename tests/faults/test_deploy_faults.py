"""Faults in a real loopback deployment, in one cluster (a loopback cluster costs
about a minute of CPU; these faults do not interfere):

- a SuperNode dies for good: the rounds go on without it, counting it;
- a SuperNode is killed and started again with the same client id: without node
  authentication Flower gives it a new node id, ``refresh_nodes`` re-maps it and it
  trains with its own embedding (no new row);
- then the ServerApp is SIGKILLed: the run resumes from its checkpoint and the dead
  node no longer registers.
"""

from __future__ import annotations

import re
import signal

import pytest
import torch

from tests.e2e.deploy_cluster import LoopbackCluster, wait_for

pytestmark = pytest.mark.e2e


def test_dead_node_restarted_node_and_killed_server_do_not_lose_the_run(
    tmp_path, flwr_env
):
    cluster = LoopbackCluster(tmp_path / "cluster", flwr_env, 3, insecure=True)
    try:
        cluster.start_link()
        for i in range(3):
            cluster.start_node(i)
        cfg = {
            "dataset": "synthetic",
            "model": "mlp",
            "local-steps": 5,
            "holdout": 0.0,
            "clients-per-round": 3,
            "num-rounds": 4,
            "eval-every": 4,
            "round-timeout": 30.0,
        }
        run = cluster.flwr_run(cfg, "faults")
        wait_for(lambda: len(cluster.metrics("faults")) >= 1, 300, "round 1")
        first_id = re.findall(r"SuperNode ID: (\d+)", cluster.log("supernode-0"))[-1]
        cluster.stop("supernode-2", signal.SIGKILL)  # gone for good
        cluster.stop("clientapp-2", signal.SIGKILL)
        cluster.stop("supernode-0", signal.SIGKILL)  # back in a moment
        cluster.stop("clientapp-0", signal.SIGKILL)
        cluster.start_node(0, tag="-restarted")
        # round 2 waits round-timeout for the killed nodes' replies: the restarted
        # SuperNode connects meanwhile and is re-mapped when round 3 starts
        wait_for(
            lambda: "SuperNode ID" in cluster.log("supernode-0-restarted"),
            60,
            "the restarted SuperNode to connect",
        )
        new_id = re.findall(
            r"SuperNode ID: (\d+)", cluster.log("supernode-0-restarted")
        )[-1]
        assert new_id != first_id  # without node auth the runtime gives a new id
        wait_for(lambda: len(cluster.metrics("faults")) >= 3, 400, "round 3")
        cluster.stop("serverapp", signal.SIGKILL)  # the ServerApp and its SuperExec
        run.kill()
        assert not (cluster.outputs("faults") / "summary.json").exists()
        assert len(cluster.metrics("faults")) < 4
        log = cluster.log("run-faults")

        cluster.service("serverapp-restarted", "serverapp")
        resumed = cluster.flwr_run({**cfg, "resume": True}, "faults")
        summary = cluster.finish(resumed, "faults", timeout=480)
    finally:
        cluster.close()
    assert re.search(
        rf"client node-0 is back on node {new_id} \(was {first_id}\)", log
    ), log[-3000:]
    rows = cluster.metrics("faults")
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["valid"] == 3
    assert lost(rows[1]) >= 1, rows  # the dead node (and maybe the restarting one)
    assert rows[2]["valid"] == 2 and lost(rows[2]) == 1, rows  # node-0 back
    assert rows[3]["valid"] == 2, rows  # after the restart the dead node is gone
    assert summary["faults"].get("missing", 0) + summary["faults"].get("error", 0) >= 1
    assert "resume: continuing after round" in cluster.log("run-faults")
    state = torch.load(
        cluster.outputs("faults") / "checkpoint" / "state.pt", weights_only=False
    )
    # no new row was allocated: node-0 kept its embedding row (index 0)
    index = state["strategy"]["store"]["_extra_state"]["index"]
    assert index == {"node-0": 0, "node-1": 1, "node-2": 2}


def lost(row: dict) -> int:
    """Replies a round counted as missing or failed."""
    return row["faults"]["missing"] + row["faults"]["error"]
