"""pFedHN's hypernetwork: an MLP trunk and one linear head per target tensor."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class PerTensorHyperNet(nn.Module):
    """h(v; φ): embedding v -> every tensor of the target network.

    As in Shamsian et al. (2021): ``layers`` hidden layers of ``hidden`` units with
    ReLU, then a linear head per target tensor. A batch of embeddings (B, d) yields a
    batch of parameter sets, so all sampled clients are generated in one forward.
    """

    def __init__(self, embed_dim: int, target_shapes: Mapping[str, torch.Size],
                 hidden: int = 100, layers: int = 3) -> None:
        super().__init__()
        self.trunk = mlp_trunk(embed_dim, hidden, layers)
        self.shapes = {k: torch.Size(s) for k, s in target_shapes.items()}
        self.heads = nn.ModuleDict({
            _safe(k): nn.Linear(hidden, int(torch.Size(s).numel()))
            for k, s in self.shapes.items()})

    def forward(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generated tensors, each of shape (B, *target_shape)."""
        features = self.trunk(embeddings)
        return {k: self.heads[_safe(k)](features).view(-1, *s)
                for k, s in self.shapes.items()}


def mlp_trunk(in_features: int, hidden: int, layers: int) -> nn.Sequential:
    """The hypernetworks' shared trunk: ``layers`` × (Linear to ``hidden``, ReLU)."""
    trunk: list[nn.Module] = []
    width = in_features
    for _ in range(layers):
        trunk += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*trunk)


def _safe(name: str) -> str:
    """ModuleDict keys may not contain dots."""
    return name.replace(".", "__")
