"""A plain multi-layer perceptron target network."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, then fully connected layers with ReLU (default 784-100-10)."""

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        hidden: tuple[int, ...] = (100,),
    ) -> None:
        super().__init__()
        sizes = (in_features, *hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
