"""Local training: the per-step gradient bound (``local-clip-norm``) and the
client's SGD (torch's update, without importing torch._dynamo)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.training import ClientSGD, train_steps
from tests.conftest import fresh_process_imports


def _far_off_model() -> nn.Module:
    """A factored classifier (like W + B·A) with large factors: each factor's
    gradient scales with the other, as a relayed adapter's did (first loss ≈ 150)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.Linear(8, 3, bias=False))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(30.0)
    return model


def test_clip_bounds_every_step_and_keeps_training_finite():
    x = torch.randn(64, 4)
    y = torch.zeros(64, dtype=torch.long)
    lr, clip = 0.5, 1.0
    model = _far_off_model()
    before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    train_steps(
        model,
        x,
        y,
        1,
        64,
        lr,
        0.0,
        0.0,
        torch.Generator().manual_seed(0),
        clip_norm=clip,
    )
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.linalg.vector_norm(after - before) <= lr * clip + 1e-5

    unclipped = _far_off_model()
    train_steps(unclipped, x, y, 1, 64, lr, 0.0, 0.0, torch.Generator().manual_seed(0))
    moved = torch.cat([p.detach().flatten() for p in unclipped.parameters()])
    assert torch.linalg.vector_norm(moved - before) > 10 * lr * clip

    clipped = _far_off_model()
    with torch.no_grad():
        start = nn.functional.cross_entropy(clipped(x), y)
    train_steps(
        clipped,
        x,
        y,
        30,
        16,
        lr,
        0.9,
        0.0,
        torch.Generator().manual_seed(0),
        clip_norm=clip,
    )
    assert all(torch.isfinite(p).all() for p in clipped.parameters())
    with torch.no_grad():
        assert nn.functional.cross_entropy(clipped(x), y) < 0.5 * start


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 1e-4)])
def test_client_sgd_steps_exactly_as_torch_sgd(momentum, weight_decay):
    """The client's SGD gives torch.optim.SGD's parameters bit for bit."""

    def trained(make_opt):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
        opt = make_opt(list(model.parameters()))
        gen = torch.Generator().manual_seed(3)
        for _ in range(5):
            opt.zero_grad()
            model(torch.randn(4, 5, generator=gen)).sum().backward()
            opt.step()
        return [p.detach() for p in model.parameters()]

    ours = trained(lambda ps: ClientSGD(ps, 0.1, momentum, weight_decay))
    theirs = trained(
        lambda ps: torch.optim.SGD(
            ps, lr=0.1, momentum=momentum, weight_decay=weight_decay
        )
    )
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_a_clients_local_training_does_not_import_dynamo():
    """A fresh client process (Flower starts one per message) trains without
    importing torch._dynamo, which costs about 2 s of CPU per message."""
    code = (
        "import torch\n"
        "from common.training import train_steps\n"
        "from common.models import build_model\n"
        "m = build_model('lenet5', 10)\n"
        "x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))\n"
        "g = torch.Generator().manual_seed(0)\n"
        "train_steps(m, x, y, 3, 32, 0.1, 0.9, 1e-4, g)"
    )
    assert not fresh_process_imports(code, "torch._dynamo")
