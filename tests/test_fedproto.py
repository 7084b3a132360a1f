"""FedProto (Tan et al., AAAI 2022), MH-pFedHN's model-heterogeneous baseline: the
common representation width, per-class weighted aggregation (by hand and on a tiny
round through the real loop and client handlers), the regulariser's pull, and
invalid settings refused with the key named."""

from __future__ import annotations

import pytest
import torch
from flwr.app import Message

from common.config import ConfigError, parse_run_config
from common.models import build_model, count_params
from common.models.prototypes import (
    aggregate_prototypes,
    build_proto_model,
    local_prototypes,
    prototype_logits,
    train_fedproto,
)
from server.direct_grid import build_runner
from tests.conftest import small_config

SHARED = {"mh-archs": "lenet5,cnn3,cnn,mlp-m", "mh-unseen-archs": "mlp-xl"}


def proto_config(tmp_path, **overrides):
    base = {
        "method": "fedproto",
        "num-rounds": 1,
        "local-steps": 3,
        "fedproto-novel-rounds": 1,
    }
    return small_config(tmp_path, **{**base, **SHARED, **overrides})


def test_every_architecture_gets_the_common_representation_width():
    """An architecture whose final linear layer takes fedproto-dim values is used as
    it is (same K as in MH-pFedHN's runs); one of another width gets a projection."""
    x = torch.randn(5, 1, 28, 28)
    for name in ("lenet5", "cnn3", "cnn", "mlp-m", "mlp-xl", "mlp-s", "bncnn"):
        net = build_proto_model(name, 10, (1, 28, 28), 84, seed=1)
        logits, rep = net.represent(x)
        assert logits.shape == (5, 10) and rep.shape == (5, 84), name
        assert torch.equal(net(x), logits)
        same = count_params(net) == count_params(build_model(name, 10))
        assert same == (name not in ("mlp-s", "bncnn")), name
    a = build_proto_model("mlp-s", 10, (1, 28, 28), 84, seed=3)
    b = build_proto_model("mlp-s", 10, (1, 28, 28), 84, seed=3)
    assert all(
        torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def test_prototypes_are_class_means_and_aggregate_per_class_by_counts():
    net = build_proto_model("mlp-m", 3, (1, 28, 28), 84, seed=0)
    x, y = torch.randn(7, 1, 28, 28), torch.tensor([0, 0, 2, 2, 2, 0, 0])
    protos, counts = local_prototypes(net, x, y, 3, batch_size=3)
    _, rep = net.represent(x)
    assert counts.tolist() == [4.0, 0.0, 3.0]
    assert torch.allclose(protos[0], rep[y == 0].mean(0), atol=1e-5)
    assert torch.allclose(protos[2], rep[y == 2].mean(0), atol=1e-5)
    assert torch.equal(protos[1], torch.zeros(84))

    p1 = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    p2 = torch.tensor([[4.0, 3.0], [5.0, 5.0], [0.0, 0.0]])
    c1, c2 = torch.tensor([3.0, 0.0, 1.0]), torch.tensor([1.0, 2.0, 0.0])
    glob, have = aggregate_prototypes([p1, p2], [c1, c2], "samples")
    assert torch.allclose(glob[0], (3 * p1[0] + 1 * p2[0]) / 4)  # [1.75, 0.75]
    assert torch.allclose(glob[1], p2[1]) and torch.allclose(glob[2], p1[2])
    assert have.tolist() == [True, True, True]
    uniform, _ = aggregate_prototypes([p1, p2], [c1, c2], "uniform")
    assert torch.allclose(uniform[0], (p1[0] + p2[0]) / 2)
    # a class nobody of the round holds keeps its previous prototype; one that
    # never had one stays absent
    prev = torch.full((3, 2), 9.0)
    again, have = aggregate_prototypes(
        [p1], [c1], "samples", prev, torch.tensor([False, True, False])
    )
    assert torch.equal(again[1], prev[1]) and have.tolist() == [True, True, True]
    alone, have = aggregate_prototypes([p1], [c1], "samples")
    assert have.tolist() == [True, False, True] and torch.equal(
        alone[1], torch.zeros(2)
    )
    logits = prototype_logits(torch.tensor([[1.9, 1.9]]), alone, have)
    assert int(logits.argmax()) == 2 and float(logits[0, 1]) < -1e8


def test_a_round_aggregates_the_clients_prototypes_weighted_by_their_counts(
    tmp_path,
):
    """One round through the real loop and ClientApp handlers, on four
    architectures: every client's reply carries C × d prototypes and its class
    counts; the server's global prototypes are their per-class count-weighted mean,
    each client's stored vector moved by exactly its Δ, and the next messages carry
    the new prototypes."""
    seen: list[tuple[Message, Message | None]] = []

    def hook(node: int, msg: Message, reply: Message | None) -> Message | None:
        seen.append((msg, reply))
        return reply

    runner = build_runner(
        proto_config(tmp_path, **{"num-clients": 6, "local-steps": 1}), fault_hook=hook
    )
    strategy = runner.strategy
    assert strategy.reply_extras["protos"].shape == (10, 84)
    assert set(strategy.k.values()) >= {61706, 64134, 85822, 86096}
    runner.train_round(1)
    replies = [
        (m, r)
        for m, r in seen
        if m.metadata.message_type == "train.fedproto" and r is not None
    ]
    assert len(replies) == 4
    protos = [
        torch.from_numpy(r.content["extras"]["protos"].numpy()) for _, r in replies
    ]
    counts = [
        torch.from_numpy(r.content["extras"]["proto-counts"].numpy())
        for _, r in replies
    ]
    n = torch.stack(counts)
    expected = (n.unsqueeze(2) * torch.stack(protos)).sum(0) / n.sum(0).clamp_min(
        1
    ).unsqueeze(1)
    have = n.sum(0) > 0
    assert torch.equal(strategy.present, have)
    assert torch.allclose(strategy.protos[have], expected[have], atol=1e-5)
    for msg, reply in replies:
        assert float(msg.content["protos"]["present"].numpy().sum()) == 0  # round 1
        delta = torch.from_numpy(reply.content["delta"]["theta"].numpy())
        cid = next(
            c
            for c in strategy.models
            if strategy.registry.node_of(c) == msg.metadata.dst_node_id
        )
        assert torch.equal(strategy.models[cid], delta)  # from zeros: s = Δ
    (nxt,) = strategy.messages(
        "train",
        [cid],
        strategy.generate([cid]),
        msg.content["config"],
    )
    assert torch.allclose(
        torch.from_numpy(nxt.content["protos"]["protos"].numpy()), strategy.protos
    )


def test_the_regulariser_pulls_representations_toward_the_global_prototypes():
    """The same local steps with λ > 0 leave the representations nearer their
    classes' global prototypes than with λ = 0; a class without a global
    prototype adds nothing to the regulariser."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=gen)
    y = torch.randint(0, 3, (64,), generator=gen)
    targets = torch.randn(3, 84, generator=gen).abs()
    present = torch.tensor([True, True, False])

    def distance(lam: float) -> float:
        net = build_proto_model("lenet5", 3, (1, 28, 28), 84, seed=5)
        result, reg = train_fedproto(
            net,
            x,
            y,
            20,
            16,
            0.05,
            0.9,
            0.0,
            torch.Generator().manual_seed(1),
            targets,
            present,
            lam,
        )
        assert (reg > 0) == (lam > 0)
        with torch.no_grad():
            _, rep = net.represent(x)
        mask = present[y]
        return float((rep[mask] - targets[y[mask]]).pow(2).sum(1).mean())

    assert distance(50.0) < 0.5 * distance(0.0)
    from common.models.prototypes import proto_loss

    rep = torch.randn(4, 84, requires_grad=True)
    loss = proto_loss(rep, torch.tensor([2, 2, 2, 2]), targets, present)
    assert float(loss) == 0.0


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("fedproto-lambda", -1.0, ">= 0"),
        ("fedproto-inference", "knn", "prototype"),
        ("fedproto-weighting", "median", "samples"),
        ("fedproto-dim", 0, ">= 1"),
        ("mh-archs", "lenet5,resnet-1000", "resnet-1000"),
    ],
)
def test_invalid_settings_are_refused_naming_the_key(tmp_path, key, value, words):
    with pytest.raises(ConfigError, match=key) as err:
        parse_run_config(proto_config(tmp_path, **{key: value}))
    assert words in str(err.value)
    assert err.value.key == key
