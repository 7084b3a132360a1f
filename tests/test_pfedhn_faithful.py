"""pFedHN as the authors wrote it (AvivSham/pFedHN): trunk, optimiser groups,
embedding steps, inner clipping, partition and the official preset."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from common.config import ConfigError, defaults, parse_run_config
from common.hypernets.chunked import ChunkedHyperNet
from common.hypernets.lora import LoRAHyperNet
from common.hypernets.pertensor import PerTensorHyperNet, mlp_trunk
from common.models import build_model, param_shapes
from common.partition import class_share_indices
from tests.conftest import small_config

ROOT = Path(__file__).resolve().parents[1]
SHAPES = param_shapes(build_model("mlp"))


def _kinds(trunk: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in trunk]


@pytest.mark.parametrize("n_hidden", [0, 1, 3])
def test_trunk_is_linear_then_n_hidden_relu_linear(n_hidden):
    trunk = mlp_trunk(13, 100, n_hidden)
    assert _kinds(trunk) == ["Linear"] + ["ReLU", "Linear"] * n_hidden
    assert trunk[0].in_features == 13
    assert all(m.out_features == 100 for m in trunk if isinstance(m, nn.Linear))
    # the heads read the last Linear's output: negative features survive
    out = trunk(torch.randn(64, 13))
    assert (out < 0).any()


def test_every_hypernet_shares_the_trunk():
    hnets = [
        PerTensorHyperNet(13, SHAPES, hidden=32, n_hidden=3),
        ChunkedHyperNet(13, SHAPES, hidden=32, n_hidden=3),
        LoRAHyperNet(10, SHAPES, hidden=32, n_hidden=3),
    ]
    for hnet in hnets:
        assert _kinds(hnet.trunk) == [
            "Linear",
            "ReLU",
            "Linear",
            "ReLU",
            "Linear",
            "ReLU",
            "Linear",
        ]
    # the per-tensor heads are plain Linear layers on the trunk's output
    assert all(h.in_features == 32 for h in hnets[0].heads.values())


def test_the_hypernet_keys_reach_the_strategy(tmp_path):
    from server.direct_grid import build_runner

    runner = build_runner(small_config(tmp_path, **{"hn-hidden": 24, "hn-n-hidden": 2}))
    trunk = runner.strategy.hnet.trunk
    assert _kinds(trunk) == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert trunk[-1].out_features == 24
    with pytest.raises(ConfigError, match="hn-layers"):
        parse_run_config({"hn-layers": 3})


def _strategy(tmp_path, **overrides):
    from server.direct_grid import build_runner

    return build_runner(small_config(tmp_path, **overrides)).strategy


def test_embeddings_get_the_embed_lr_and_weight_decay(tmp_path):
    strategy = _strategy(tmp_path, **{"server-lr": 0.02, "server-weight-decay": 1e-3})
    phi, emb = strategy.optimizer.param_groups
    assert emb["params"] == [strategy.store.weight]
    # --embed-lr unset: the embeddings use lr, as the authors' default
    assert emb["lr"] == phi["lr"] == 0.02
    assert emb["weight_decay"] == phi["weight_decay"] == 1e-3
    other = _strategy(tmp_path, **{"server-lr": 0.02, "embed-lr": 0.5})
    assert [g["lr"] for g in other.optimizer.param_groups] == [0.02, 0.5]


def test_embedding_weight_decay_is_applied_in_a_step(tmp_path):
    from server.validation import ClientUpdate

    strategy = _strategy(
        tmp_path, **{"server-lr": 0.1, "embed-lr": 0.5, "server-weight-decay": 0.01}
    )
    ids = strategy.registry.participants[:2]
    before = strategy.store.weight.detach().clone()
    zero = {k: torch.zeros(s) for k, s in strategy.shapes.items()}
    strategy.apply_updates(1, [ClientUpdate(c, zero, 10, {}) for c in ids])
    # no client signal: the step is the decay alone, v ← v − lr·wd·v (first SGD
    # step with momentum), on every row as the authors' dense embedding gradient
    torch.testing.assert_close(
        strategy.store.weight.detach(), before * (1 - 0.5 * 0.01)
    )


def test_parallel_step_moves_each_embedding_as_a_single_client_step(tmp_path):
    from server.validation import ClientUpdate

    cfg = {
        "server-lr": 0.1,
        "server-weight-decay": 0.0,
        "clip-norm": 0.0,
        "server-momentum": 0.0,
    }
    many = _strategy(tmp_path, **cfg)
    ids = many.registry.participants[:4]
    torch.manual_seed(1)
    deltas = {
        c: {k: 0.01 * torch.randn(s) for k, s in many.shapes.items()} for c in ids
    }
    before = many.store.weight.detach().clone()
    many.apply_updates(1, [ClientUpdate(c, deltas[c], 10, {}) for c in ids])
    moved_many = (many.store.weight.detach() - before)[many.store.rows(ids[:1])]
    one = _strategy(tmp_path, **cfg)
    one.apply_updates(1, [ClientUpdate(ids[0], deltas[ids[0]], 10, {})])
    moved_one = (one.store.weight.detach() - before)[one.store.rows(ids[:1])]
    torch.testing.assert_close(moved_many, moved_one)


def test_inner_clip_defaults_to_the_authors_value():
    assert defaults()["local-clip-norm"] == 50.0
    assert parse_run_config({}).local_clip_norm == 50.0


def test_class_shares_partition():
    labels = np.repeat(np.arange(10), 700)
    parts = class_share_indices(labels, 50, 2, seed=3)
    rows = np.concatenate(parts)
    assert len(np.unique(rows)) == len(rows)  # disjoint
    holders: dict[int, list[int]] = {}
    for part in parts:
        classes, counts = np.unique(labels[part], return_counts=True)
        assert len(classes) == 2
        for c, n in zip(classes, counts, strict=True):
            holders.setdefault(int(c), []).append(int(n))
    for counts in holders.values():
        assert len(counts) == 10  # 50 × 2 / 10 holders each
        # shares drawn in U(0.4, 0.6), normalised: between 0.4/5.8 and 0.6/4.2
        assert min(counts) >= int(700 * 0.4 / 5.8) and max(counts) <= 700 * 0.6 / 4.2
        assert max(counts) > min(counts)  # not an equal split
    again = class_share_indices(labels, 50, 2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    with pytest.raises(ConfigError, match="classes-per-client"):
        parse_run_config({"partitioner": "class-shares", "num-clients": 7})


def test_official_preset_is_the_authors_trainer_setting():
    raw = tomllib.loads((ROOT / "conf" / "pfedhn-official-fmnist.toml").read_text())
    cfg = parse_run_config(raw)
    assert (cfg.clients_per_round, cfg.num_rounds, cfg.local_steps, cfg.batch_size) == (
        1,
        5000,
        50,
        64,
    )
    assert (
        cfg.inner_lr,
        cfg.inner_momentum,
        cfg.inner_weight_decay,
        cfg.local_clip_norm,
    ) == (5e-3, 0.9, 5e-5, 50.0)
    assert (
        cfg.server_optimizer,
        cfg.server_lr,
        cfg.resolved_embed_lr,
        cfg.server_momentum,
        cfg.server_weight_decay,
        cfg.clip_norm,
    ) == ("sgd", 1e-2, 1e-2, 0.9, 1e-3, 50.0)
    assert (cfg.hn_hidden, cfg.hn_n_hidden, cfg.resolved_embed_dim) == (100, 3, 13)
    assert (cfg.model, cfg.partitioner, cfg.classes_per_client, cfg.num_clients) == (
        "cnn",
        "class-shares",
        2,
        50,
    )


def test_per_tensor_heads_start_constant_tensors_at_their_value():
    from common.hypernets.pertensor import offset_constant_tensors

    vit = build_model("vit-tiny", seed=0)
    shapes = param_shapes(vit)
    torch.manual_seed(0)
    hnet = PerTensorHyperNet(13, shapes, hidden=32, n_hidden=1)
    done = offset_constant_tensors(hnet, dict(vit.named_parameters()))
    assert done and all(
        name.endswith("norm1.weight") or name.endswith("norm2.weight") or "norm" in name
        for name in done
    )
    with torch.no_grad():
        out = hnet(torch.randn(4, 13))
    assert abs(float(out["blocks.0.norm1.weight"].mean()) - 1.0) < 0.1
    # a CNN target has no constant tensor: the authors' initialisation, untouched
    lenet = build_model("lenet5", seed=0)
    fresh = PerTensorHyperNet(13, param_shapes(lenet), hidden=32, n_hidden=1)
    assert offset_constant_tensors(fresh, dict(lenet.named_parameters())) == []
