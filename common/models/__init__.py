"""Target networks by name: the registry every method builds client models from.

Every factory takes the class count and the data's image shape (channels, H, W), so
a model's input layer and flatten sizes follow the data. A shape a model cannot take
raises :class:`ShapeError` while its sizes are computed, before any weight exists;
:func:`model_shape_problem` asks that on the ``meta`` device (no memory), which is how
the run config refuses such a model before anything starts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.models.bn import BNCNN
from common.models.convnets import LeNet5, PFedHNCNN
from common.models.mlp import MLP
from common.models.resnet import resnet18
from common.models.shapes import ShapeError
from common.models.vit import TinyViT, vit_patch

#: The default image shape (Fashion-MNIST's), as common.data.IMAGE_SHAPE.
DEFAULT_SHAPE = (1, 28, 28)
Shape = tuple[int, int, int]
ModelFactory = Callable[[int, Shape], nn.Module]

MODEL_REGISTRY: dict[str, ModelFactory] = {
    "mlp": lambda num_classes, shape: MLP(
        in_features=shape[0] * shape[1] * shape[2], num_classes=num_classes
    ),
    "lenet5": lambda num_classes, shape: LeNet5(
        shape[0], num_classes, image_size=shape[1:]
    ),
    "cnn": lambda num_classes, shape: PFedHNCNN(
        shape[0], num_classes, image_size=shape[1:]
    ),
    "vit-tiny": lambda num_classes, shape: TinyViT(
        image_size=shape[1] if shape[1] == shape[2] else shape[1:],
        patch=vit_patch(shape[1:]),
        in_channels=shape[0],
        num_classes=num_classes,
    ),
    "cnn-bn": lambda num_classes, shape: BNCNN(
        shape[0], num_classes, image_size=shape[1:]
    ),
    # HyperFLoRA's ViT on CIFAR: the same width, depth and heads with 4×4 patches
    # (64 of them on 32×32): 2.08E5 weights at 3×32×32 and 10 classes, the paper's
    "vit-tiny-p4": lambda num_classes, shape: TinyViT(
        image_size=shape[1] if shape[1] == shape[2] else shape[1:],
        patch=4,
        in_channels=shape[0],
        num_classes=num_classes,
    ),
    # the HyperFLoRA authors' LeNet (conv1 unpadded, fc2 100 wide): 6.41E4 weights
    # at 3×32×32 and 10 classes, and 850 rank-1 fc adapter weights, the paper's
    "lenet5-hf": lambda num_classes, shape: LeNet5(
        shape[0], num_classes, image_size=shape[1:], conv1_padding=0, fc2_width=100
    ),
    "resnet18": lambda num_classes, shape: resnet18(
        shape[0], num_classes, image_size=shape[1:]
    ),
}


def build_model(
    name: str,
    num_classes: int = 10,
    seed: int | None = None,
    image_shape: Shape = DEFAULT_SHAPE,
) -> nn.Module:
    """Build a target network by registry name for images of ``image_shape``
    (channels, H, W); ``seed`` fixes its initial weights."""
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_REGISTRY)}")
    shape = (int(image_shape[0]), int(image_shape[1]), int(image_shape[2]))
    if seed is None:
        return MODEL_REGISTRY[name](num_classes, shape)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MODEL_REGISTRY[name](num_classes, shape)


def model_shape_problem(
    name: str, image_shape: Shape, num_classes: int = 10
) -> str | None:
    """Why model ``name`` cannot take images of ``image_shape``, or None when it can.

    The model is built on the ``meta`` device (shapes only, no memory): every model
    computes its feature-map sizes from the image size while it is built and raises
    :class:`ShapeError` where nothing is left (no forward pass: running one on
    ``meta`` would import torch's compiler, seconds of every config check)."""
    if name not in MODEL_REGISTRY:
        return f"is not a known model ({', '.join(MODEL_REGISTRY)})"
    c, h, w = image_shape
    try:
        with torch.device("meta"):
            build_model(name, num_classes, image_shape=image_shape)
    except ShapeError as exc:
        return f"cannot take {c}×{h}×{w} images: {exc}"
    return None


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
