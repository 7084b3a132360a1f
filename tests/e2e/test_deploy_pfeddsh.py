"""pFedDSH on a real loopback deployment: batch 2's SuperNodes are started only after
batch 1 has trained its round; they register with client ids the run has never seen
and are admitted into the next batch, which then trains (BN statistics travel as
reply extras across real processes). Replay is left to the simulation tests: here
every extra exchange costs a deployment round-trip (~10 s). Real SuperLink,
SuperNodes and ClientApp processes on 127.0.0.1; no mocks."""

from __future__ import annotations

import pytest

from common.methods.pfeddsh import batch_partitions
from tests.e2e.deploy_cluster import LoopbackCluster, wait_for

pytestmark = pytest.mark.e2e


def test_second_batch_supernodes_started_later_join_the_next_batch(tmp_path, flwr_env):
    first, second = batch_partitions(4, 0.0, 2, 42)
    cluster = LoopbackCluster(tmp_path / "cluster", flwr_env, 4, insecure=True)
    try:
        cluster.start_link()
        for i in first:
            cluster.start_node(i)
        cfg = {
            "method": "pfeddsh",
            "model": "cnn-bn",
            "dataset": "synthetic",
            "holdout": 0.0,
            "client-batches": 2,
            "num-rounds": 2,
            "eval-every": 1,
            "clients-per-round": 2,
            "local-steps": 5,
            "replay": False,
            "pa-reference": False,
            "round-timeout": 120.0,
        }
        run = cluster.flwr_run(cfg, "dsh")
        wait_for(lambda: len(cluster.metrics("dsh")) >= 1, 420, "batch 1's round")
        for i in second:
            cluster.service(
                f"supernode-{i}",
                "supernode",
                HF_NODE=str(i),
                HF_NODE_PORT=str(cluster.node_ports[i]),
                HF_CLIENT_ID=f"late-{i}",
            )
            cluster.service(
                f"clientapp-{i}",
                "clientapp",
                HF_NODE=str(i),
                HF_RUNTIME=f"127.0.0.1:{cluster.node_ports[i]}",
            )
        summary = cluster.finish(run, "dsh", timeout=480)
    finally:
        cluster.close()
    rows = cluster.metrics("dsh")
    assert [r["valid"] for r in rows] == [2, 2]  # each reply's BN extras were valid
    batches = summary["batches"]
    assert batches[0]["clients"] == [f"node-{i}" for i in first]
    assert sorted(batches[1]["clients"]) == sorted(f"late-{i}" for i in second)
    assert summary["faults"].get("joined") == 2
    assert rows[0]["batch-closed"] == 0 and rows[1]["batch-closed"] == 1
    assert "batch-1-test-acc" in rows[1] and "batch-1-test-acc" not in rows[0]
    assert batches[1]["ri"] == 0.0  # masks: batch 1 left batch 0's models as they were
    log = cluster.log("run-dsh")
    assert all(f"client late-{i} joined on node" in log for i in second)
