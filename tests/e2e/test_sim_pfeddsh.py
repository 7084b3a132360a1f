"""pFedDSH end to end through `flwr run` (Ray simulation): two client batches, masks,
BN statistics as reply extras, DeepInversion replay, RI and PA with its reference."""

from __future__ import annotations

import json

import pytest

from common.flwr_cli import flwr_run
from common.methods.pfeddsh import batch_partitions
from tests.conftest import small_config

pytestmark = pytest.mark.e2e


def test_two_batches_end_to_end_in_simulation(tmp_path, flwr_env, colour_set):
    """On 3-channel 32×32 images: DeepInversion synthesises CIFAR-shaped images."""
    cfg = small_config(
        tmp_path,
        **colour_set,
        **{
            "method": "pfeddsh",
            "model": "cnn-bn",
            "num-clients": 8,
            "holdout": 0.25,
            "client-batches": 2,
            "num-rounds": 4,
            "eval-every": 2,
            "local-steps": 5,
            "clients-per-round": 3,
            "server-lr": 0.2,
            "di-steps": 15,
            "di-images": 8,
            "replay-steps": 3,
            "replay-accept": "always",
            "run-name": "dsh",
        },
    )
    proc = flwr_run(cfg, flwr_env, num_supernodes=cfg["num-clients"])
    out = tmp_path / "outputs" / "dsh"
    assert (out / "summary.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    first, second = summary["batches"]
    parts = batch_partitions(8, 0.25, 2, 42)
    assert [first["clients"], second["clients"]] == [[str(p) for p in q] for q in parts]
    # replay ran on the server from batch 1's BN statistics and was kept
    assert second["replay"]["accepted"] == [0] and second["replay"]["images"] > 0
    assert summary["ri"] == pytest.approx(second["after"]["0"] - second["before"]["0"])
    # PA against an independent hypernetwork trained on batch 1 alone (a sub-run)
    reference = json.loads((out / "pa-ref-b1" / "summary.json").read_text())
    assert reference["reference_clients"] == sorted(second["clients"])
    assert summary["pa"] == pytest.approx(second["acc"] - reference["participant_acc"])
    assert 0 < second["weights_reused"] < second["weights_used"]
    assert summary["nonparticipant_acc"] is not None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["batch-closed"] == 0 and rows[3]["batch-closed"] == 1
    assert "pa" in rows[3] and "ri" in rows[3]
    for name in ("synthetic-batch-1.png", "batch-accuracy.png", "accuracy.png"):
        assert (out / name).exists(), name
