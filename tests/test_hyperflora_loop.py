"""HyperFLoRA through the real server loop and client handlers, in process.

A recording fault hook sees every message and reply, so the tests check what was
really sent: relays, bystanders' messages, θ_pret sent once, bytes per round.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from flwr.app import Message

from common.partition import split_participants
from common.records import from_record, message_bytes
from server.direct_grid import run_in_process
from tests.conftest import small_config

Seen = list[tuple[int, Message, Message]]


def hyperflora_config(tmp_path, **overrides) -> dict:
    # the MLP learns the synthetic set in a few rounds (LeNet needs image structure);
    # auto targets: its two Linear layers, net.1 (784 -> 100) and the head net.3
    return small_config(
        tmp_path,
        method="hyperflora",
        model="mlp",
        **{
            "partitioner": "shards",
            "shards-per-client": 4,
            "num-rounds": 4,
            "eval-every": 2,
            "pretrain-rounds": 4,
            "local-steps": 8,
            "inner-lr": 0.05,
            "lora-lr": 0.05,
            "server-lr": 0.05,
            "finetune-steps": 5,
            "clients-per-round": 4,
            "pair-exchanges": 2,
            **overrides,
        },
    )


def recorded_run(cfg: dict) -> tuple[dict, Seen]:
    seen: Seen = []

    def record(node: int, msg: Message, reply: Message) -> Message:
        seen.append((node, msg, reply))
        return reply

    return run_in_process(cfg, fault_hook=record), seen


def lora_trains(seen: Seen) -> Seen:
    return [s for s in seen if s[1].metadata.message_type == "train.lora"]


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paired")
    cfg = hyperflora_config(tmp, **{"run-name": "paired", "pretrain-epochs": 2})
    summary, seen = recorded_run(cfg)
    return cfg, summary, seen, tmp / "outputs" / "paired"


def test_bystanders_get_adapters_without_any_train_message(paired):
    cfg, summary, seen, _ = paired
    _, held_out = split_participants(
        cfg["num-clients"], cfg["holdout"], cfg.get("seed", 42)
    )
    bystanders = {1000 + pid for pid in held_out}
    to_them = [m for node, m, _ in seen if node in bystanders]
    kinds = Counter(m.metadata.message_type for m in to_them)
    assert not [k for k in kinds if k.startswith("train")], kinds
    # registration, θ_pret (once, with the Pretrain evaluation), then h(r_i)
    assert set(kinds) == {"query", "evaluate", "evaluate.lora"}, kinds
    adapters = [
        m
        for m in to_them
        if m.metadata.message_type == "evaluate.lora" and len(m.content["params"]) > 0
    ]
    assert len(adapters) == len(bystanders)
    # the generated tensors travel packed in one array (adapters of net.1 and net.3)
    assert all(
        set(m.content["params"].keys()) == {"rho"}
        and from_record(m.content["params"])["rho"].numel()
        == summary["client_trainable_params"]
        for m in adapters
    )
    assert summary["bystander_train_messages"] == 0
    assert summary["nonparticipant_acc"] is not None
    assert summary["nonparticipant_acc"] > 0.2  # 10 classes: chance is 0.1
    assert summary["participant_acc"] > 0.3
    assert summary["pretrain_bystander_acc"] is not None


def test_pairs_are_relayed_through_the_server(paired):
    cfg, summary, seen, out = paired
    hops = [
        (n, m, r) for n, m, r in lora_trains(seen) if "classes" in m.content["config"]
    ]
    assert hops and summary["relay_hops_per_round"] > 0
    results = [
        {
            k: v + from_record(r.content["delta"])[k]
            for k, v in from_record(m.content["params"]).items()
        }
        for _, m, r in hops
    ]
    relayed = 0
    for idx, (node, msg, _) in enumerate(hops):
        phase = msg.content["config"]["phase"]
        if phase == "pair-0":
            continue
        sent = from_record(msg.content["params"])
        # what this hop received is exactly what an earlier hop of the same round
        # returned (ρ + Δ), and that earlier hop ran on the other client of the pair
        sources = [
            j
            for j in range(idx)
            if hops[j][1].content["config"]["round"] == msg.content["config"]["round"]
            and all(torch.equal(results[j][k], sent[k]) for k in sent)
        ]
        assert sources, f"hop {phase} to node {node} relays nothing seen before"
        relayed += 1
        classes = list(msg.content["config"]["classes"])
        assert list(hops[sources[-1]][1].content["config"]["classes"]) == classes
    assert relayed >= summary["pairs_per_round"] * cfg["num-rounds"]
    # bytes and values per round are those of every train.lora message of the
    # round and its reply, relays included
    rows = [json.loads(x) for x in open(out / "metrics.jsonl", encoding="utf-8")]
    assert len(rows) == cfg["num-rounds"]
    for row in rows:
        this = [
            (m, r)
            for _, m, r in lora_trains(seen)
            if m.content["config"]["round"] == row["round"]
        ]
        assert row["bytes-down"] == sum(message_bytes(m) for m, _ in this)
        assert row["bytes-up"] == sum(message_bytes(r) for _, r in this)
        assert row["relay-hops"] == sum(
            1 for m, _ in this if "classes" in m.content["config"]
        )
        assert row["pairs"] == cfg["clients-per-round"] // 2
    assert summary["bytes_per_round"] == pytest.approx(
        summary["bytes_down_per_round"] + summary["bytes_up_per_round"]
    )
    assert summary["values_per_round"] > summary["client_trainable_params"]


def test_base_sent_once_and_hypernet_learns(paired):
    cfg, summary, seen, out = paired
    with_base = Counter(node for node, m, _ in seen if "base" in m.content)
    assert len(with_base) == cfg["num-clients"] and set(with_base.values()) == {1}
    assert all("base" not in m.content for _, m, _ in lora_trains(seen))
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    heads = {
        k: v
        for k, v in state["strategy"]["hnet"].items()
        if k.startswith("heads.") and k.endswith(".weight")
    }
    assert any(v.abs().sum() > 0 for v in heads.values())  # started at zero
    assert summary["client_trainable_params"] == (784 + 100) + (100 + 10)
    assert summary["participant_finetuned_acc"] is not None
    assert (out / "pretrained.pt").exists()
    assert (out / "pretrain" / "summary.json").exists()


def test_pretraining_is_fedavg_with_pretrain_epochs(paired):
    cfg, summary, seen, out = paired
    fedavg = [(m, r) for _, m, r in seen if m.metadata.message_type == "train"]
    assert len(fedavg) == cfg["pretrain-rounds"] * cfg["clients-per-round"]
    for msg, reply in fedavg:
        n = reply.content["metrics"]["num-examples"]
        steps = msg.content["config"]["local-steps"]
        assert steps == 2 * -(-n // 64) == reply.content["metrics"]["steps"]
    assert summary["pretrain_epochs"] == 2 and summary["pretrain_rounds"] == 4


@pytest.mark.parametrize("variant", ["standard", "sequential", "head"])
def test_variants(paired, tmp_path, variant):
    _, paired_summary, _, out = paired
    cfg = hyperflora_config(
        tmp_path,
        **{
            "hyperflora-variant": variant,
            "num-rounds": 2,
            "run-name": variant,
            "finetune-steps": 0,
            "pretrained-model": str(out / "pretrained.pt"),
        },
    )
    summary, seen = recorded_run(cfg)
    trains = lora_trains(seen)
    pair_hops = [m for _, m, _ in trains if "classes" in m.content["config"]]
    if variant == "standard":
        assert not pair_hops and summary["exchanges_per_round"] == 1
        assert summary["values_per_round"] < paired_summary["values_per_round"]
    else:
        assert pair_hops
    if variant == "sequential":
        # one unit at a time: each client and each hop of each pair is an exchange
        assert summary["exchanges_per_round"] == (
            cfg["clients-per-round"] + summary["relay_hops_per_round"]
        )
    if variant == "head":
        sent = from_record(trains[0][1].content["params"])["rho"]
        assert summary["client_trainable_params"] == (784 + 100) + 100 * 10 + 10
        assert sent.numel() == summary["client_trainable_params"]
    assert (
        summary["pretrain_participant_acc"]
        == paired_summary["pretrain_participant_acc"]
    )
    assert summary["nonparticipant_acc"] > 0.2


def test_theta_pret_stays_frozen_during_personalisation(paired):
    """Phase 2 trains the adapters only: a client's local training leaves every
    θ_pret tensor bit-identical (momentum and weight decay included), replies carry
    adapter deltas and nothing of θ, and the server's θ_pret after the run is the
    pre-trained one it saved."""
    from client.handlers.hyperflora import lora_model
    from common.config import parse_run_config
    from common.local_update import train_locally
    from common.models.lora import generated_tensors, pack
    from common.protocol import RHO

    cfg_dict, _, seen, out = paired
    saved = torch.load(out / "pretrained.pt", weights_only=False)["base"]
    cfg = parse_run_config(
        {**cfg_dict, "inner-momentum": 0.9, "inner-weight-decay": 0.01}
    )
    model, _ = lora_model(cfg, saved, {})
    order = list(generated_tensors(model, False))
    gen = torch.Generator().manual_seed(0)
    adapters = {
        n: torch.randn(p.shape, generator=gen)
        for n, p in generated_tensors(model, False).items()
    }
    model, names = lora_model(cfg, saved, {RHO: pack(adapters, order)})
    assert sorted(names) == sorted(adapters)
    x = torch.randn(64, 1, 28, 28)
    y = torch.randint(0, cfg.num_classes, (64,))
    train_locally(cfg, model, x, y, 10, torch.Generator().manual_seed(1))
    state = model.state_dict()
    for name, value in saved.items():
        assert torch.equal(state[name], value), f"θ_pret tensor {name} changed"
    moved = [n for n in names if not torch.equal(state[n], adapters[n])]
    assert moved, "the adapters did not train"

    for _, _, reply in lora_trains(seen):
        (record,) = reply.content.array_records.values()
        assert set(from_record(record)) == {RHO}
    final = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    for name, value in saved.items():
        assert torch.equal(final["strategy"]["base"][name], value)
