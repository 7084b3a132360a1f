"""Client-side clipping and Gaussian noise on the delta a client sends.

Flower's DP mods expect full weights under the keys sent, while hypernetwork methods
exchange per-client deltas (and SecAgg would hide exactly what the server needs), so
the Gaussian mechanism is applied here, in the reply path: the delta is scaled to
L2 norm at most ``dp-clip`` and N(0, (σ·clip)²) noise is added with σ = ``dp-noise``.
"""

from __future__ import annotations

import torch


def clip_and_noise(
    delta: dict[str, torch.Tensor],
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], float]:
    """Clip the whole delta to norm ``clip`` (0: no clipping) and add Gaussian noise.

    Returns the new delta and its norm before clipping. Noise needs a clip bound,
    since its scale is relative to it.
    """
    total = torch.zeros((), dtype=torch.float64)
    for d in delta.values():
        total = total + (d.double() ** 2).sum()
    norm = float(torch.sqrt(total))
    if clip <= 0:
        return delta, norm
    scale = min(1.0, clip / (norm + 1e-12))
    out = {}
    for key, d in delta.items():
        noisy = d * scale
        if noise_multiplier > 0:
            noisy = noisy + torch.randn(d.shape, generator=generator) * (
                noise_multiplier * clip
            )
        out[key] = noisy
    return out, norm
