"""Client pairing: pseudo-client classes, relay plans, the data each hop trains on."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ConfigRecord, Message

from client.app import app as client_app
from client.handlers.hyperflora import restrict
from common.config import parse_run_config
from common.models import build_model
from common.models.lora import pack
from common.partition import load_client_data
from common.records import from_record, to_record
from server.direct_grid import DirectGrid
from server.registry import ClientInfo, ClientRegistry, message_to
from server.strategies.hyperflora import HyperFLoRA, pseudo_indicator
from tests.conftest import small_config


def test_pseudo_client_classes_are_a_random_half_of_the_union():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        r_i, r_j = (rng.integers(0, 2, 10).tolist() for _ in range(2))
        r_i[rng.integers(10)] = 1  # every real client holds at least one class
        union = {k for k in range(10) if r_i[k] or r_j[k]}
        r = pseudo_indicator(r_i, r_j, rng)
        chosen = {k for k in range(10) if r[k]}
        assert chosen <= union
        assert len(chosen) == (len(union) + 1) // 2
        assert set(r) <= {0, 1} and len(r) == 10
        seen.add(tuple(r))
    assert len(seen) > 100  # random, not a fixed rule


def test_restrict_keeps_exactly_the_requested_classes():
    y = torch.tensor([0, 1, 2, 3, 1, 2, 9, 9])
    x = torch.arange(len(y)).float().view(-1, 1)
    classes = [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    xs, ys = restrict(x, y, classes)
    assert ys.tolist() == [1, 1, 9, 9]
    assert xs.view(-1).tolist() == [1, 4, 6, 7]
    assert restrict(x, y, None)[1] is y


def registry_with(
    classes: dict[str, list[int]], participants: set[str]
) -> ClientRegistry:
    reg = ClientRegistry()
    for pid, (cid, r) in enumerate(classes.items()):
        reg.clients[cid] = ClientInfo(
            cid, 1000 + pid, pid, cid in participants, {"classes": r}
        )
    return reg


def test_round_plan_pairs_participants_and_alternates_hops():
    one_hot = {
        str(i): [1 if k in (i % 10, (i + 3) % 10) else 0 for k in range(10)]
        for i in range(10)
    }
    reg = registry_with(one_hot, {str(i) for i in range(8)})
    cfg = parse_run_config(
        {
            "method": "hyperflora",
            "model": "lenet5",
            "num-clients": 10,
            "clients-per-round": 6,
            "pair-exchanges": 2,
        }
    )
    strategy = HyperFLoRA(cfg, reg, torch.device("cpu"))
    for rnd in range(1, 20):
        units = strategy.plan_round(rnd)
        clients = [u for u in units if not u.is_pair]
        pairs = [u for u in units if u.is_pair]
        assert len(clients) == 6 and len(pairs) == 3
        sampled = [u.key for u in clients]
        assert all(int(c) < 8 for c in sampled)  # bystanders never sampled
        paired = [c for u in pairs for c in u.key[5:].split("+")]
        assert sorted(paired) == sorted(sampled)  # each participant once
        for u in pairs:
            i, j = u.key[5:].split("+")
            union = {k for k in range(10) if one_hot[i][k] or one_hot[j][k]}
            assert {k for k in range(10) if u.r[k]} <= union
            assert u.classes == u.r
            holds = [
                c
                for c in (i, j)
                if any(a and b for a, b in zip(one_hot[c], u.r, strict=True))
            ]
            assert u.hops == [c for c in [i, j] * 2 if c in holds]
    standard = HyperFLoRA(
        parse_run_config({**cfg.raw, "hyperflora-variant": "standard"}),
        reg,
        torch.device("cpu"),
    )
    assert not any(u.is_pair for u in standard.plan_round(1))


def test_a_relay_hop_trains_only_on_the_pair_classes(tmp_path):
    run_config = small_config(
        tmp_path,
        method="hyperflora",
        model="lenet5",
        **{"local-steps": 3, "partitioner": "shards", "shards-per-client": 4},
    )
    cfg = parse_run_config(run_config)
    data = load_client_data(cfg, 3)
    present = sorted({int(c) for c in data.y_train})
    classes = [1 if k in present[:2] else 0 for k in range(10)]
    expected = int(sum((data.y_train == k).sum() for k in present[:2]))
    base = build_model("lenet5", seed=0)
    strategy_like = HyperFLoRA(
        cfg,
        registry_with({str(i): [1] * 10 for i in range(10)}, {"0"}),
        torch.device("cpu"),
    )
    adapters = strategy_like.generate(["3"])[0]
    grid = DirectGrid(client_app, run_config, cfg.num_clients)

    def send(**records) -> Message:
        msg = message_to(1003, "train.lora", **records)
        return list(grid.pull_messages(grid.push_messages([msg])))[0]

    packed = to_record({"rho": pack(adapters, list(adapters))})
    reply = send(
        params=packed,
        base=to_record(base.state_dict()),
        config=ConfigRecord(
            {"round": 1, "phase": "pair-0", "base-id": "b", "classes": classes}
        ),
    )
    assert not reply.has_error(), reply.error
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == expected < len(data.y_train)
    delta = from_record(reply.content["delta"])
    assert set(delta) == {"rho"} and delta["rho"].numel() == 818
    assert delta["rho"].abs().sum() > 0
    # the base is cached in the node's state: the next hop needs adapters only
    reply = send(
        params=packed,
        config=ConfigRecord({"round": 1, "phase": "pair-1", "base-id": "b"}),
    )
    assert not reply.has_error(), reply.error
    assert reply.content["metrics"]["num-examples"] == len(data.y_train)
    # an unknown base id is refused with a clear error
    reply = send(params=packed, config=ConfigRecord({"round": 1, "base-id": "other"}))
    assert reply.has_error() and "no cached base model" in reply.error.reason
