"""The chunked hypernetwork: shapes, truncation, init scale, client dependence,
gradients, the flat/named API and its run-config key."""

from __future__ import annotations

import math

import pytest
import torch

from common.config import ConfigError, parse_run_config
from common.hypernets.chunked import ChunkedHyperNet, init_stats, unflatten
from common.hypernets.pertensor import PerTensorHyperNet
from common.models import build_model, count_params, param_shapes
from server.update import hypernet_step


@pytest.mark.parametrize("model", ["lenet5", "mlp"])
def test_output_shapes_and_truncation(model):
    shapes = param_shapes(build_model(model))
    hnet = ChunkedHyperNet(
        5, shapes, hidden=32, n_hidden=1, chunk_size=500, chunk_embed_dim=4
    )
    out = hnet(torch.randn(3, 5))
    assert list(out) == list(shapes)
    for name, shape in shapes.items():
        assert out[name].shape == (3, *shape)
    total = count_params(build_model(model))
    assert hnet.num_chunks == math.ceil(total / 500)
    assert hnet.flat(torch.randn(2, 5)).shape == (2, total)
    # the generated tensors load into the target model as they are
    target = build_model(model)
    target.load_state_dict({k: v[0] for k, v in out.items()}, strict=True)


def test_far_smaller_than_per_tensor_heads():
    shapes = param_shapes(build_model("lenet5"))
    chunked = sum(p.numel() for p in ChunkedHyperNet(13, shapes).parameters())
    per_tensor = sum(p.numel() for p in PerTensorHyperNet(13, shapes).parameters())
    assert chunked * 20 < per_tensor


def test_clients_get_different_chunks_and_gradients_reach_everything():
    shapes = param_shapes(build_model("mlp"))
    hnet = ChunkedHyperNet(4, shapes, hidden=16, n_hidden=1, chunk_size=1000)
    v = torch.randn(2, 4, requires_grad=True)
    out = hnet(v)
    first = out["net.1.weight"]
    assert not torch.allclose(first[0], first[1])
    deltas = [{k: torch.randn_like(t[i]) for k, t in out.items()} for i in range(2)]
    opt = torch.optim.SGD([*hnet.parameters(), v], lr=0.1)
    norm = hypernet_step(
        hnet,
        v,
        deltas,
        torch.full((2,), 0.5),
        opt,
        [*hnet.parameters(), v],
        clip_norm=0.0,
    )
    assert norm > 0
    assert v.grad is not None and v.grad.abs().sum() > 0
    for name, p in hnet.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_shared_update_moves_generation_towards_the_trained_model():
    shapes = param_shapes(build_model("mlp"))
    torch.manual_seed(0)
    hnet = ChunkedHyperNet(4, shapes, hidden=16, n_hidden=1, chunk_size=1000)
    v = torch.randn(1, 4)
    with torch.no_grad():
        before = {k: t[0].clone() for k, t in hnet(v).items()}
    target = {k: t + 0.01 for k, t in before.items()}
    delta = [{k: target[k] - before[k] for k in before}]
    opt = torch.optim.SGD(hnet.parameters(), lr=1e-4)
    for _ in range(5):
        with torch.no_grad():
            now = {k: t[0] for k, t in hnet(v).items()}
        delta = [{k: target[k] - now[k] for k in now}]
        hypernet_step(hnet, v, delta, torch.ones(1), opt, list(hnet.parameters()), 0)

    def dist(params):
        return sum(float(((params[k] - target[k]) ** 2).sum()) for k in target)

    with torch.no_grad():
        after = {k: t[0] for k, t in hnet(v).items()}
    assert dist(after) < dist(before)


def test_run_config_key():
    assert parse_run_config({}).hypernet == "pertensor"
    cfg = parse_run_config({"hypernet": "chunked", "chunk-size": 128})
    assert (cfg.hypernet, cfg.chunk_size) == ("chunked", 128)
    with pytest.raises(ConfigError, match="hypernet"):
        parse_run_config({"hypernet": "chunky"})
    with pytest.raises(ConfigError, match="chunk-size"):
        parse_run_config({"chunk-size": 0})


def test_pfedhn_uses_the_chunked_hypernet(tmp_path):
    from server.direct_grid import run_in_process
    from tests.conftest import small_config

    summary = run_in_process(
        small_config(
            tmp_path,
            **{
                "hypernet": "chunked",
                "chunk-size": 1000,
                "num-rounds": 4,
                "server-lr": 0.1,
            },
        )
    )
    # the per-chunk biases hold one value per generated value (CTWC 79,510 here)
    ctwc = summary["client_trainable_params"]
    assert ctwc < summary["hypernet_params"] < ctwc + 200_000
    assert summary["participant_acc"] > 0.1


@pytest.mark.parametrize("model", ["lenet5", "cnn", "vit-tiny"])
def test_init_matches_the_targets_default_scale_per_tensor(model):
    target = build_model(model, seed=0)
    shapes = param_shapes(target)
    reference = dict(target.named_parameters())
    torch.manual_seed(0)
    hnet = ChunkedHyperNet(13, shapes, reference=reference)
    with torch.no_grad():
        out = hnet(torch.randn(32, 13))
    stats = init_stats(shapes, reference)
    for name, tensor in out.items():
        mean, std = stats[name]
        ref = reference[name].detach()
        if ref.dim() >= 2 and ref.std() > 0:
            # PyTorch's default U(±1/√fan-in) has std 1/√(3·fan-in)
            fan_in = math.prod(ref.shape[1:])
            if model != "vit-tiny":
                assert std == pytest.approx(1 / math.sqrt(3 * fan_in))
            assert float(ref.std()) == pytest.approx(std, rel=0.25), name
        # generated tensors sit at their own tensor's scale (not several times it)
        assert float(tensor.std()) == pytest.approx(std, rel=0.5), name
        assert abs(float(tensor.mean()) - mean) < 0.5 * std + 1e-3, name
    if model == "vit-tiny":
        # a LayerNorm gain is generated around 1, not around 0
        assert float(out["blocks.0.norm1.weight"].mean()) == pytest.approx(1, abs=0.05)


def test_client_dependent_share_of_the_output_variance():
    shapes = param_shapes(build_model("lenet5"))
    torch.manual_seed(0)
    hnet = ChunkedHyperNet(13, shapes)
    v = torch.randn(128, 13)  # the embedding store's initial distribution
    with torch.no_grad():
        raw = hnet.generator.raw(hnet.trunk(v))
    # variance across clients at a fixed position, over the total variance
    share = float(raw.var(0).mean() / raw.var())
    assert 0.3 < share < 0.7
    assert float(raw.std()) == pytest.approx(1.0, rel=0.15)


def test_flat_of_a_requested_length_and_named_view():
    shapes = param_shapes(build_model("lenet5"))
    hnet = ChunkedHyperNet(4, shapes, hidden=16, n_hidden=1, chunk_size=1000)
    v = torch.randn(3, 4)
    full = hnet.flat(v)
    # a shorter request (MH-pFedHN: a length per client) is the same prefix
    torch.testing.assert_close(hnet.flat(v, 1234), full[:, :1234])
    with pytest.raises(ValueError):
        hnet.flat(v, full.shape[1] + 1)
    named = unflatten(full, hnet.shapes)
    for name, tensor in hnet(v).items():
        torch.testing.assert_close(named[name], tensor)
    # the classifier alone (HyperFedZero)
    head = {k: s for k, s in shapes.items() if k.startswith("fc3")}
    out = ChunkedHyperNet(4, head, hidden=16, n_hidden=1, chunk_size=64)(v)
    assert list(out) == ["fc3.weight", "fc3.bias"]
    assert out["fc3.weight"].shape == (3, *shapes["fc3.weight"])


def test_every_chunk_has_its_own_bias():
    shapes = param_shapes(build_model("mlp"))
    hnet = ChunkedHyperNet(4, shapes, hidden=16, n_hidden=1, chunk_size=1000)
    assert hnet.generator.chunk_bias.shape == (hnet.num_chunks, 1000)
    with torch.no_grad():
        before = hnet.flat(torch.zeros(1, 4))
        hnet.generator.chunk_bias[1].add_(1.0)
        after = hnet.flat(torch.zeros(1, 4))
    changed = (after - before).abs() > 0
    assert not changed[0, :1000].any() and changed[0, 1000:2000].all()


def test_scale_in_weights_starts_alike_and_lets_sgd_move_the_client_part():
    """HyperFedZero's h is trained by the clients' plain SGD: with the scale in a
    fixed multiplier, the head W's share of the client-dependent part moves σ²
    slower (σ ≈ 0.058 for a 100-input classifier); with the scale in W's initial
    weights it moves at full pace."""
    shapes = {"weight": torch.Size([10, 100]), "bias": torch.Size([10])}
    e = torch.softmax(
        2 * torch.randn(2, 16, generator=torch.Generator().manual_seed(1)), 1
    )
    target = torch.randn(1010, generator=torch.Generator().manual_seed(2))
    start, moved = {}, {}
    for flag in (False, True):
        torch.manual_seed(0)
        net = ChunkedHyperNet(16, shapes, 300, 1, 576, 16, scale_in_weights=flag)
        before = net.flat(e).detach()
        start[flag] = before
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        ((net.flat(e)[0] - target) ** 2).sum().backward()  # pull client 0 only
        opt.step()
        after = net.flat(e).detach()
        moved[flag] = float(((after[0] - after[1]) - (before[0] - before[1])).norm())
    assert torch.allclose(start[False], start[True], atol=1e-6)
    assert moved[True] > 10 * moved[False] > 0
