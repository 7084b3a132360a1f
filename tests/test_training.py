"""Local training: the per-step gradient bound (``local-clip-norm``)."""

from __future__ import annotations

import torch
from torch import nn

from common.training import train_steps


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
