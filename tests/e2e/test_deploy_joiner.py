"""The deployment default on loopback, TLS + SuperNode authentication, with a late
joiner (one cluster for both: each loopback cluster costs about a minute of CPU):

- a SuperNode whose key was never registered is refused; registered ones run;
- a SuperNode that connects to the running deployment with a client id the run has
  never seen is registered at the next round and trains from then on (pFedHN
  accepts joiners: the joiner gets its own embedding row).

Real SuperLink, SuperNodes and ClientApp processes on 127.0.0.1; no mocks."""

from __future__ import annotations

import pytest
import torch

from tests.e2e.deploy_cluster import LoopbackCluster, wait_for

pytestmark = pytest.mark.e2e


def test_tls_auth_refuses_an_unregistered_node_and_a_late_node_joins(
    tmp_path, flwr_env
):
    cluster = LoopbackCluster(tmp_path / "cluster", flwr_env, 3)
    try:
        cluster.start_link()
        out = cluster.register([0, 1, 2])
        assert out.count("registered node-") == 3, out
        # node-3's key exists (gen-certs made it) but was never registered
        intruder = cluster.service(
            "supernode-3",
            "supernode",
            HF_NODE="3",
            HF_NODE_PORT=str(cluster.node_ports[3]),
        )
        for i in (0, 1):
            cluster.start_node(i)
        cfg = {
            "dataset": "synthetic",
            "model": "mlp",
            "local-steps": 5,
            "holdout": 0.0,
            "clients-per-round": 3,
            "num-rounds": 4,
            "eval-every": 4,
            "round-timeout": 90.0,
        }
        run = cluster.flwr_run(cfg, "joiner")
        wait_for(
            lambda: intruder.poll() is not None,
            120,
            "the unregistered SuperNode to be refused",
        )
        assert intruder.returncode != 0
        assert "Failed to activate SuperNode" in cluster.log("supernode-3")
        wait_for(lambda: len(cluster.metrics("joiner")) >= 1, 360, "round 1")
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
    # the SuperLink really served TLS and required node authentication
    link_cmd = cluster.log("superlink").splitlines()[0]
    assert "--enable-supernode-auth" in link_cmd and "--ssl-certfile" in link_cmd
    assert "--insecure" not in link_cmd
    rows = cluster.metrics("joiner")
    assert rows[0]["valid"] == 2  # before the joiner connected
    assert rows[-1]["valid"] == 3, [r["valid"] for r in rows]
    assert "client late-joiner joined on node" in cluster.log("run-joiner")
    assert summary["faults"].get("joined") == 1
    assert summary["num_participants"] == 3  # the joiner included
    state = torch.load(
        cluster.outputs("joiner") / "checkpoint" / "state.pt", weights_only=False
    )
    index = state["strategy"]["store"]["_extra_state"]["index"]
    assert index == {"node-0": 0, "node-1": 1, "late-joiner": 2}
