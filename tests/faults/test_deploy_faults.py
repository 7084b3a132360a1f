"""Faults in a real loopback deployment: a SuperNode dies for good, then the ServerApp
is SIGKILLed; the run goes on without the node and resumes from its checkpoint."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.deploy_cluster import LoopbackCluster, wait_for

pytestmark = pytest.mark.e2e


def test_dead_node_and_killed_server_do_not_lose_the_run(tmp_path, flwr_env):
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
            "num-rounds": 3,
            "eval-every": 3,
            "round-timeout": 30.0,
        }
        run = cluster.flwr_run(cfg, "faults")
        wait_for(lambda: len(cluster.metrics("faults")) >= 1, 300, "round 1")
        cluster.stop("supernode-2", signal.SIGKILL)  # gone for good
        cluster.stop("clientapp-2", signal.SIGKILL)
        wait_for(
            lambda: any(lost(r) for r in cluster.metrics("faults")),
            400,
            "a round that counts the dead node",
        )
        cluster.stop("serverapp", signal.SIGKILL)  # the ServerApp and its SuperExec
        run.kill()
        assert not (cluster.outputs("faults") / "summary.json").exists()
        assert len(cluster.metrics("faults")) < 3

        cluster.service("serverapp-restarted", "serverapp")
        resumed = cluster.flwr_run({**cfg, "resume": True}, "faults")
        summary = cluster.finish(resumed, "faults", timeout=480)
    finally:
        cluster.close()
    rows = cluster.metrics("faults")
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert rows[0]["valid"] == 3
    assert all(r["valid"] == 2 for r in rows[1:]), rows  # the others carried on
    # the round that waited for the dead node counted it (and survived the kill in
    # the checkpoint); after the restart the dead node no longer registers
    assert any(lost(r) == 1 for r in rows[1:]), rows
    assert summary["faults"].get("missing", 0) + summary["faults"].get("error", 0) >= 1
    assert "resume: continuing after round" in cluster.log("run-faults")


def lost(row: dict) -> int:
    """Replies a round counted as missing or failed."""
    return row["faults"]["missing"] + row["faults"]["error"]
