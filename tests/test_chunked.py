"""The chunked hypernetwork: shapes, truncation, gradients, and its run-config key."""

from __future__ import annotations

import math

import pytest
import torch

from common.config import ConfigError, parse_run_config
from common.models import build_model, count_params, param_shapes
from server.hypernets.chunked import ChunkedHyperNet
from server.hypernets.pertensor import PerTensorHyperNet
from server.update import hypernet_step


@pytest.mark.parametrize("model", ["lenet5", "mlp"])
def test_output_shapes_and_truncation(model):
    shapes = param_shapes(build_model(model))
    hnet = ChunkedHyperNet(5, shapes, hidden=32, layers=2, chunk_size=500,
                           chunk_embed_dim=4)
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
    hnet = ChunkedHyperNet(4, shapes, hidden=16, layers=2, chunk_size=1000)
    v = torch.randn(2, 4, requires_grad=True)
    out = hnet(v)
    first = out["net.1.weight"]
    assert not torch.allclose(first[0], first[1])
    deltas = [{k: torch.randn_like(t[i]) for k, t in out.items()} for i in range(2)]
    opt = torch.optim.SGD([*hnet.parameters(), v], lr=0.1)
    norm = hypernet_step(hnet, v, deltas, torch.full((2,), 0.5), opt,
                         [*hnet.parameters(), v], clip_norm=0.0)
    assert norm > 0
    assert v.grad is not None and v.grad.abs().sum() > 0
    for name, p in hnet.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_shared_update_moves_generation_towards_the_trained_model():
    shapes = param_shapes(build_model("mlp"))
    torch.manual_seed(0)
    hnet = ChunkedHyperNet(4, shapes, hidden=16, layers=2, chunk_size=1000)
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

    summary = run_in_process(small_config(tmp_path, **{
        "hypernet": "chunked", "chunk-size": 1000, "num-rounds": 4,
        "server-lr": 0.1}))
    assert 0 < summary["hypernet_params"] < 200_000
    assert summary["participant_acc"] > 0.1
