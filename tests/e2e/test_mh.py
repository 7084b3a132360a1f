"""MH-pFedHN end to end: the GD two-phase round through `flwr run` (Ray simulation),
and a loopback deployment whose SuperNodes hold different architectures (node config
``arch``), each known to the server only by its parameter count."""

from __future__ import annotations

import json

import pytest

from common.flwr_cli import flwr_run
from common.models import build_model, count_params
from tests.conftest import small_config
from tests.e2e.deploy_cluster import LoopbackCluster

pytestmark = pytest.mark.e2e

TINY = {
    "server-optimizer": "adam",
    "server-lr": 1e-3,
    "mh-chunk-size": 1024,
    "mh-novel-rounds": 1,
    "local-steps": 5,
}


def test_gd_two_phase_round_in_simulation(tmp_path, flwr_env, colour_set):
    cfg = small_config(
        tmp_path,
        method="mh-pfedhngd",
        **TINY,
        **colour_set,
        **{
            "run-name": "mhgd",
            "num-clients": 5,
            "clients-per-round": 2,
            "num-rounds": 2,
            "eval-every": 2,
            "mh-global-arch": "mlp-s",
        },
    )
    proc = flwr_run(cfg, flwr_env, num_supernodes=cfg["num-clients"])
    out = tmp_path / "outputs" / "mhgd"
    summary = out / "summary.json"
    assert summary.exists(), f"failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    s = json.loads(summary.read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    for r in rows:  # both exchanges of every round answered and moved the hypernet
        assert r["global-valid"] == 2 and r["personal-valid"] == 2, r
        assert r["global-grad-norm"] > 0 and r["grad-norm"] > 0
        assert r["bytes-down"] > 0 and r["bytes-up"] > 0
    assert "global-test-acc" in rows[-1]
    assert s["hypernet_params"] > 0 and s["participant_acc"] is not None


def test_loopback_supernodes_with_different_architectures(
    tmp_path, flwr_env, colour_set
):
    archs = ["mlp-s", "bncnn", "lenet5"]
    cluster = LoopbackCluster(tmp_path / "cluster", flwr_env, len(archs), insecure=True)
    try:
        cluster.start_link()
        for i, arch in enumerate(archs):
            cluster.start_node(i, HF_ARCH=arch)
        cfg = {
            "method": "mh-pfedhn",
            **colour_set,  # every SuperNode reads the same CIFAR-10 folder
            "holdout": 0.0,
            "clients-per-round": 3,
            "num-rounds": 2,
            "eval-every": 2,
            "round-timeout": 120.0,
            **TINY,
        }
        run = cluster.flwr_run(cfg, "mh")
        summary = cluster.finish(run, "mh", timeout=420)
    finally:
        cluster.close()
    ks = sorted(
        count_params(build_model(a, 10, image_shape=(3, 32, 32))) for a in archs
    )
    assert summary["mh_param_counts"] == ks
    rows = cluster.metrics("mh")
    assert [r["valid"] for r in rows] == [3, 3]
    assert all(f"test-acc-K{k}" in rows[-1] for k in ks)
    # at 32×32 mlp-s and lenet5 share the 2^16 size group (one head for two
    # architectures), bncnn has its own (docs/models.md)
    assert len(summary["mh_groups"]) == 2
