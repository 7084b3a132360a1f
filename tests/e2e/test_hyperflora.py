"""HyperFLoRA end to end through `flwr run` (Ray simulation): pre-training, θ_pret
cached in each node's context.state, relayed pair training and bystanders."""

from __future__ import annotations

import json

import pytest

from common.flwr_cli import flwr_run
from tests.conftest import small_config

pytestmark = pytest.mark.e2e


def test_hyperflora_relays_and_bystanders_in_simulation(tmp_path, flwr_env, colour_set):
    """On 3-channel 32×32 images (the MLP: two pre-training rounds leave the
    authors' LeNet at chance; it runs on colour images in process, in
    tests/test_methods_on_colour_images.py)."""
    cfg = small_config(
        tmp_path,
        method="hyperflora",
        **colour_set,
        **{
            "run-name": "hyperflora",
            "partitioner": "shards",
            "shards-per-client": 4,
            "pretrain-rounds": 2,
            "num-rounds": 2,
            "eval-every": 2,
            "local-steps": 8,
            "inner-lr": 0.05,
            "lora-lr": 0.05,
            "server-lr": 0.05,
            "clients-per-round": 4,
            "pair-exchanges": 2,
            "finetune-steps": 5,
            "round-timeout": 120.0,
        },
    )
    proc = flwr_run(cfg, flwr_env, num_supernodes=cfg["num-clients"])
    out = tmp_path / "outputs" / "hyperflora"
    assert (out / "summary.json").exists(), (
        f"failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    s = json.loads((out / "summary.json").read_text())
    # every message was answered: θ_pret cached in context.state served all later
    # adapter-only messages (a node without it would have replied with an error)
    assert not {
        k: v
        for k, v in s["faults"].items()
        if v and k in ("error", "missing", "invalid")
    }, s["faults"]
    assert s["pairs_per_round"] == 2
    assert s["relay_hops_per_round"] == 2 * 2 * 2  # 2 pairs, i then j, E = 2
    assert s["exchanges_per_round"] == 4
    assert s["bystander_train_messages"] == 0
    assert s["nonparticipant_acc"] is not None and s["nonparticipant_acc"] > 0.2
    assert s["participant_acc"] > 0.3  # 10 classes: chance is 0.1
    assert s["pretrain_bystander_acc"] is not None
    assert s["participant_finetuned_acc"] is not None
    assert 0 < s["bytes_per_round"] < s["pretrain_bytes_per_round"]
    assert s["base_broadcast_bytes"] > 0
    rows = [json.loads(x) for x in open(out / "metrics.jsonl", encoding="utf-8")]
    assert [r["round"] for r in rows] == [1, 2]
    assert all(r["relay-hops"] == 8 and r["valid"] == 6 for r in rows)
    assert (out / "pretrain" / "summary.json").exists()
