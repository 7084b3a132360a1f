"""HyperFedZero's h (issue 24): sized by the rule, e-only generation, the e-path's
learning rate, bytes a round against FedAvg, and the collapse metrics."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from common.config import ConfigError, parse_run_config
from common.models import build_model
from common.models.hyperfedzero import (
    H_HIGH,
    H_LOW,
    HyperFedZeroNet,
    classifier_size,
    extractor_size,
    h_size,
    size_h,
)
from server.direct_grid import run_in_process
from server.hfz_collapse import (
    COLLAPSE_KEYS,
    class_mix,
    collapse_summary,
    own_vs_mean,
)
from server.strategies.hyperfedzero import spread
from tests.conftest import small_config

BACKBONES = [("mlp", 100, 1010, 3232), ("lenet5", 84, 850, 2720)]


# ---- the size rule -------------------------------------------------------------------
@pytest.mark.parametrize("backbone, feat, theta_c, theta_f", BACKBONES)
def test_size_rule_makes_h_about_the_classifier(backbone, feat, theta_c, theta_f):
    """|θh| within [H_LOW, H_HIGH]·|θc| on both backbones; the closed form counts
    the real module; |θf| is 2P(F+1)."""
    net = HyperFedZeroNet(backbone, 10)
    report = net.size_report()
    assert (report["theta_c"], report["theta_f"]) == (theta_c, theta_f)
    assert classifier_size(feat, 10) == theta_c
    assert extractor_size(feat, 16) == theta_f
    assert H_LOW <= report["theta_h"] / theta_c <= H_HIGH, report
    assert report["chunk_size"] == feat  # a chunk per class row
    assert net.h is not None and report["theta_h"] == sum(
        p.numel() for p in net.h.parameters()
    )
    assert report["theta_h"] == h_size(16, theta_c, net.h_sizes, chunk_bias=False)
    assert report["f_plus_h_over_c"] == pytest.approx(
        (theta_f + report["theta_h"]) / theta_c
    )


@pytest.mark.parametrize("backbone, feat, theta_c, theta_f", BACKBONES)
def test_bytes_a_round_within_1_1_of_fedavg(backbone, feat, theta_c, theta_f):
    """What a round ships (the whole model, both ways) against FedAvg's model on
    the same backbone: within 1.1× with the rule, 5× and more with the old fixed
    sizes (chunk 576, trunk [300, 300], biased)."""
    fedavg = sum(p.numel() for p in build_model(backbone, 10).parameters())
    net = HyperFedZeroNet(backbone, 10)
    shipped = sum(p.numel() for p in net.state_dict().values())
    assert shipped / fedavg <= 1.1
    assert net.size_report()["model_over_fedavg"] == pytest.approx(shipped / fedavg)
    old = HyperFedZeroNet(
        backbone, 10, hidden=300, chunk_size=576, chunk_embed_dim=16, generator="biased"
    )
    assert sum(p.numel() for p in old.state_dict().values()) / fedavg > 2.5


def test_explicit_sizes_are_kept_and_the_paper_setting_is_possible():
    """Any value given > 0 is kept, the rule fills the rest; the paper's ResNet
    setting (hidden 300, chunk 576, chunk embedding 16) can still be asked for."""
    assert size_h(100, 10, 16, hidden=300, chunk_size=576, chunk_embed_dim=16) == (
        size_h(100, 10, 16, 300, 576, 16)
    )
    sizes = size_h(100, 10, 16, chunk_size=256)
    assert sizes.chunk_size == 256 and sizes.hidden >= 2
    net = HyperFedZeroNet(
        "mlp", 10, hidden=300, chunk_size=576, chunk_embed_dim=16, generator="biased"
    )
    assert net.size_report()["theta_h"] == 364_484  # the earlier default


def test_size_keys_default_to_the_rule_and_scale_option_needs_biased(tmp_path):
    cfg = parse_run_config(small_config(tmp_path, method="hyperfedzero"))
    assert (cfg.hfz_hidden, cfg.hfz_chunk_size, cfg.hfz_chunk_embed_dim) == (0, 0, 0)
    assert cfg.hfz_generator == "e-only"
    with pytest.raises(ConfigError, match="hfz-scale-in-weights"):
        parse_run_config(
            small_config(
                tmp_path, method="hyperfedzero", **{"hfz-scale-in-weights": "true"}
            )
        )
    cfg = parse_run_config(
        small_config(
            tmp_path,
            method="hyperfedzero",
            **{"hfz-generator": "biased", "hfz-scale-in-weights": "true"},
        )
    )
    assert cfg.hfz_scale_in_weights is True


# ---- no e-independent path in the main row ------------------------------------
@pytest.mark.parametrize("backbone", ["mlp", "lenet5"])
def test_e_only_changing_e_changes_every_generated_value(backbone):
    """e-only: no chunk biases, and two embeddings give classifiers that differ in
    every value; the biased ablation has a learnable bias over every value."""
    torch.manual_seed(0)
    net = HyperFedZeroNet(backbone, 10)
    assert net.h is not None and net.h.generator.chunk_bias is None
    assert not any("chunk_bias" in k for k in net.state_dict())
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        a, b = (torch.softmax(torch.randn(16, generator=gen), 0) for _ in range(2))
        flat_a = net.h.flat(net.h_input(a)[None])
        flat_b = net.h.flat(net.h_input(b)[None])
        assert bool(((flat_a - flat_b).abs() > 0).all())
    biased = HyperFedZeroNet(backbone, 10, generator="biased")
    assert biased.h is not None and biased.h.generator.chunk_bias is not None
    assert biased.h.generator.chunk_bias.numel() >= classifier_size(
        biased.feature_dim, 10
    )


def _rates(net: HyperFedZeroNet) -> dict[str, float]:
    """How far one small SGD step on each of h's parameters moves the generated
    classifier θc, against the same step on a plain classifier (which moves θc by
    lr·∇θc L): ‖Δθc‖ / (lr·‖∇θc L‖), on a made-up batch at initialisation."""
    torch.manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(64) % 10
    net.eval()
    feats = net.features(x).detach()
    e = torch.softmax(torch.randn(16, generator=torch.Generator().manual_seed(2)), 0)
    assert net.h is not None
    h = net.h

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        c, f = 10, feats.shape[1]
        w, b = theta[0, : c * f].reshape(c, f), theta[0, c * f : c * f + c]
        return nn.functional.cross_entropy(feats @ w.T + b, y)

    theta = h.flat(net.h_input(e)[None])
    grad_theta = torch.autograd.grad(loss_of(theta), theta, retain_graph=True)[0]
    named = dict(h.named_parameters())
    grads = torch.autograd.grad(loss_of(theta), list(named.values()))
    lr, rates = 1e-4, {}
    with torch.no_grad():
        for (name, p), g in zip(named.items(), grads, strict=True):
            old = p.clone()
            p -= lr * g
            moved = h.flat(net.h_input(e)[None]) - theta
            p.copy_(old)
            rates[name] = float(moved.norm() / (lr * grad_theta.norm()))
    return rates


@pytest.mark.parametrize("backbone", ["mlp", "lenet5"])
def test_e_path_learns_at_the_rate_of_a_plain_classifier(backbone):
    """e-only: a step on h's head W moves θc about as a plain classifier's step
    (rate within [0.3, 3]) and no parameter of h is a lever 10× faster; the biased
    ablation's chunk bias moves θc at rate 1 while its e-dependent head is more
    than 10× slower (σ² per parameter)."""
    rates = _rates(HyperFedZeroNet(backbone, 10))
    assert 0.3 <= rates["generator.head.weight"] <= 3, rates
    assert max(rates.values()) < 10, rates
    biased = _rates(HyperFedZeroNet(backbone, 10, generator="biased"))
    assert biased["generator.chunk_bias"] == pytest.approx(1.0, rel=1e-3)
    assert biased["generator.head.weight"] < 0.1, biased


@pytest.mark.parametrize("backbone", ["mlp", "lenet5"])
def test_e_path_gradients_of_the_same_order_as_the_trunk(backbone):
    """At initialisation on a made-up batch, the per-value gradient of h's head W
    (what turns e into θc) is within 10× of the backbone g's last layer's: the
    e-path's weights are not held back by a σ multiplier."""
    torch.manual_seed(0)
    net = HyperFedZeroNet(backbone, 10)
    net.train()
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    logits, _, _ = net.training_outputs(x, torch.Generator().manual_seed(0))
    nn.functional.cross_entropy(logits, torch.arange(64) % 10).backward()
    named = dict(net.named_parameters())
    rms = {
        k: float(p.grad.pow(2).mean().sqrt())
        for k, p in named.items()
        if p.grad is not None
    }
    head = rms["h.generator.head.weight"]
    g_last = [k for k in rms if k.startswith("g.") and k.endswith("weight")][-1]
    assert 0.1 <= head / rms[g_last] <= 10, (head, g_last, rms[g_last])


# ---- the collapse metric -----------------------------------------------------------
def test_collapse_metric_on_a_made_up_store():
    """A collapsed store against spread class mixes gives a ratio near 0; a store
    that follows the mixes gives ratio ~1 and pairwise-distance correlation 1."""
    mixes = {str(i): torch.eye(4)[i % 4] * 0.7 + 0.075 for i in range(6)}
    collapsed = {c: torch.full((4,), 0.25) + 1e-3 * int(c) for c in mixes}
    out = spread(collapsed, mixes)
    rows = torch.stack(list(mixes.values()))
    assert out["class-mix-spread"] == pytest.approx(
        float((rows - rows.mean(0)).norm(dim=1).mean())
    )
    assert out["spread-ratio"] < 0.02
    follows = {c: m.clone() for c, m in mixes.items()}
    out = spread(follows, mixes)
    assert out["spread-ratio"] == pytest.approx(1.0)
    assert out["embedding-mix-corr"] == pytest.approx(1.0)
    # only the store's clients count; without class mixes nothing is claimed
    assert spread({"0": mixes["0"]}, mixes)["class-mix-spread"] == 0.0
    assert "class-mix-spread" not in spread(follows)
    assert "class-mix-spread" not in spread(list(follows.values()), mixes)
    assert class_mix(torch.tensor([0, 0, 1, 3]), 4).tolist() == [0.5, 0.25, 0, 0.25]


def test_own_vs_mean_and_the_summary_at_the_best_round():
    own = {"5": {"val-acc": 0.8}, "6": {"val-acc": 0.6}, "7": {"val-acc": 0.1}}
    mean = {"5": {"val-acc": 0.7}, "6": {"val-acc": 0.5}}
    got = own_vs_mean(own, mean)  # client 7 answered only once: left out
    assert got["heldout-own-e-val-acc"] == pytest.approx(0.7)
    assert got["heldout-own-minus-mean-val-acc"] == pytest.approx(0.1)
    assert own_vs_mean({}, mean) == {}
    rows = [
        {"round": 1, "embedding-spread": 0.1},
        {"round": 2, **got, "spread-ratio": 0.5},
        {"round": 3},
        {"round": 4, **got, "spread-ratio": 0.2},
    ]
    summary = collapse_summary(rows, best_round=3)
    assert summary["best_round"]["round"] == 2
    assert summary["best_round"]["spread_ratio"] == 0.5
    assert summary["last"]["round"] == 4
    assert collapse_summary([{"round": 1}], 1) == {}


def test_in_process_run_records_sizes_and_collapse(tmp_path):
    """Every evaluation row carries the collapse metric; the summary lists |θc|,
    |θf|, |θh|, the ratios and the collapse at the best round; collapse.png."""
    cfg = small_config(
        tmp_path, method="hyperfedzero", **{"num-rounds": 2, "eval-every": 1}
    )
    summary = run_in_process(cfg)
    assert summary is not None
    out = tmp_path / "outputs" / "test"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        for key in COLLAPSE_KEYS:
            assert key in row, (key, row)
        assert 0 <= row["heldout-own-e-val-acc"] <= 1
        assert row["class-mix-spread"] > 0
    sizes = summary["hfz_sizes"]
    assert sizes["theta_c"] == 1010 and sizes["theta_f"] == 3232
    assert H_LOW <= sizes["theta_h"] / 1010 <= H_HIGH
    assert sizes["model_over_fedavg"] <= 1.1
    assert summary["collapse"]["best_round"]["round"] == summary["best_round"]
    assert "heldout_own_minus_mean_val_acc" in summary["collapse"]["best_round"]
    assert summary["class_mix_spread"] > 0
    assert (out / "collapse.png").exists()
