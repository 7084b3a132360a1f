"""MH-pFedHN's model zoo, and the flat view of a model.

Every zoo model trains fast on a CPU with 28×28 single-channel inputs and takes the
data's own shape (each factory gets the class count and (channels, H, W)).

Two kinds of entries (sizes at Fashion-MNIST's 1×28×28 and 10 classes):

- models of clearly different sizes, one per ⌊log₂ K⌋ size group (``bncnn`` 6,186,
  ``mlp-s`` 25,450, ``lenet5`` 61,706, ``cnn`` 85,822, ``mlp-l`` 178,110): the first
  hetero preset, where no two architectures ever share a head;
- structurally different models of *similar* size, so that a size group holds two
  architectures and MH-pFedHN's head sharing is exercised (issue 27):
  ``lenet5`` (2 conv + 3 fc, 61,706) with ``cnn3`` (3 conv + 2 fc, 64,134) in group
  2^15; ``cnn`` (2 conv + 3 fc, 85,822) with ``mlp-m`` (MLP 784-98-84-10, 86,096) in
  group 2^16; ``mlp-xl`` (MLP 784-256-84-10, 223,398) is the unseen size (2^17).
  Each of these ends in an 84-wide representation (LeNet-5's F6 width) before its
  final linear layer, the common width FedProto's prototypes need.

A client of
MH-pFedHN holds one of them; the server knows it only by its parameter count K_i and
sends/receives one flat vector of K_i values, which :func:`to_flat` and
:func:`load_flat` map to and from the model's parameters (in ``named_parameters``
order, via :func:`torch.nn.utils.parameters_to_vector`).

The BatchNorm CNN keeps no running statistics (``track_running_stats=False``): a
client rebuilds its model from the received vector every round, so statistics kept
between rounds would not exist; batch statistics are used in training and evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.models.convnets import LeNet5, PFedHNCNN
from common.models.mlp import MLP
from common.models.shapes import need, pooled


class BNCNN(nn.Module):
    """A small CNN with BatchNorm: 2 × (conv 3×3, BN, ReLU, max-pool), then a linear
    classifier (about 12k weights)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 16,
        image_size: tuple[int, int] = (28, 28),
    ) -> None:
        super().__init__()
        for n in image_size:
            need(pooled(pooled(n)), "two 2×2 poolings", tuple(image_size))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width, track_running_stats=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width, track_running_stats=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Linear(2 * width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class CNN3(nn.Module):
    """A deeper CNN than LeNet-5: 3 × (conv 3×3, ReLU, max-pool), a 2×2 average
    pool, then fc 84 and the classifier (64,134 weights at 1×28×28, LeNet-5's size
    group; widths 20/40/80)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (20, 40, 80),
        image_size: tuple[int, int] = (28, 28),
    ) -> None:
        super().__init__()
        for n in image_size:
            need(pooled(pooled(pooled(n))), "three 2×2 poolings", tuple(image_size))
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(channels * 4, 84)
        self.classifier = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.fc(self.features(x).flatten(1))))


#: Zoo architectures by name (registered in :data:`common.models.MODEL_REGISTRY`).
ZOO: dict[str, Callable[[int, tuple[int, int, int]], nn.Module]] = {
    "mlp-s": lambda num_classes, shape: MLP(
        shape[0] * shape[1] * shape[2], num_classes, hidden=(32,)
    ),
    "bncnn": lambda num_classes, shape: BNCNN(
        shape[0], num_classes, image_size=shape[1:]
    ),
    "lenet5": lambda num_classes, shape: LeNet5(
        shape[0], num_classes, image_size=shape[1:]
    ),
    "cnn": lambda num_classes, shape: PFedHNCNN(
        shape[0], num_classes, image_size=shape[1:]
    ),
    "mlp-l": lambda num_classes, shape: MLP(
        shape[0] * shape[1] * shape[2], num_classes, hidden=(200, 100)
    ),
    # similar sizes, different structures: two per size group (issue 27)
    "cnn3": lambda num_classes, shape: CNN3(
        shape[0], num_classes, image_size=shape[1:]
    ),
    "mlp-m": lambda num_classes, shape: MLP(
        shape[0] * shape[1] * shape[2], num_classes, hidden=(98, 84)
    ),
    "mlp-xl": lambda num_classes, shape: MLP(
        shape[0] * shape[1] * shape[2], num_classes, hidden=(256, 84)
    ),
}


def to_flat(model: nn.Module) -> torch.Tensor:
    """The model's parameters as one flat vector (K values, named_parameters order)."""
    return nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def load_flat(model: nn.Module, flat: torch.Tensor) -> nn.Module:
    """Fill ``model``'s parameters from a flat vector of exactly its K values."""
    k = sum(p.numel() for p in model.parameters())
    if flat.dim() != 1 or flat.numel() != k:
        raise ValueError(
            f"flat vector of shape {tuple(flat.shape)} for a model of {k} parameters"
        )
    # a copy: vector_to_parameters makes the parameters views of the vector it gets,
    # so training would otherwise change the caller's θ in place
    nn.utils.vector_to_parameters(
        flat.detach().to(next(model.parameters())).clone(), model.parameters()
    )
    return model
