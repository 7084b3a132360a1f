"""Target networks by name: the registry every method builds client models from."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.models.bn import BNCNN
from common.models.convnets import LeNet5, PFedHNCNN
from common.models.mlp import MLP
from common.models.vit import TinyViT

MODEL_REGISTRY: dict[str, Callable[[int], nn.Module]] = {
    "mlp": lambda num_classes: MLP(num_classes=num_classes),
    "lenet5": lambda num_classes: LeNet5(num_classes=num_classes),
    "cnn": lambda num_classes: PFedHNCNN(num_classes=num_classes),
    "vit-tiny": lambda num_classes: TinyViT(num_classes=num_classes),
    "cnn-bn": lambda num_classes: BNCNN(num_classes=num_classes),
}


def build_model(name: str, num_classes: int = 10, seed: int | None = None) -> nn.Module:
    """Build a target network by registry name; ``seed`` fixes its initial weights."""
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_REGISTRY)}")
    if seed is None:
        return MODEL_REGISTRY[name](num_classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MODEL_REGISTRY[name](num_classes)


def param_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Names and shapes of a model's trainable tensors, in state-dict order."""
    return {k: p.shape for k, p in model.named_parameters()}


def count_params(model: nn.Module) -> int:
    """Number of trainable weights (a client's CTWC when it trains the whole model)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _register_zoo() -> None:
    """MH-pFedHN's zoo architectures are buildable by name like any target."""
    from common.models.zoo import ZOO

    for name, make in ZOO.items():
        MODEL_REGISTRY.setdefault(name, make)


_register_zoo()
