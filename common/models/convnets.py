"""Small convolutional target networks; their flatten sizes follow the image size
(28×28 single-channel images by default)."""

from __future__ import annotations

import torch
from torch import nn

from common.models.shapes import conv_out, need, pooled


class _TwoConvThreeFC(nn.Module):
    """conv-pool, conv-pool, then three fully connected layers (ReLU between)."""

    conv1: nn.Conv2d
    conv2: nn.Conv2d
    fc1: nn.Linear
    fc2: nn.Linear
    fc3: nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


class LeNet5(_TwoConvThreeFC):
    """LeNet-5 (LeCun et al.): 2 conv + 3 fully connected layers, about 61k weights.

    ``conv1_padding`` 2 (the default) gives 28×28 digits LeNet-5's 32×32 field;
    ``conv1_padding=0, fc2_width=100`` is the HyperFLoRA authors' CIFAR LeNet
    (64,102 weights at 3×32×32 and 10 classes, the paper's 6.41E4)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: tuple[int, int] = (28, 28),
        conv1_padding: int = 2,
        fc2_width: int = 84,
    ) -> None:
        super().__init__()
        h, w = (
            lenet5_features(n, tuple(image_size), conv1_padding) for n in image_size
        )
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=conv1_padding)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, fc2_width)
        self.fc3 = nn.Linear(fc2_width, num_classes)


class PFedHNCNN(_TwoConvThreeFC):
    """The target CNN of pFedHN's code (``CNNTarget``): 4×4 features for 28×28
    inputs, 5×5 for CIFAR's 32×32 as in the authors' code."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        n_kernels: int = 16,
        image_size: tuple[int, int] = (28, 28),
    ) -> None:
        super().__init__()
        h, w = (cnn_features(n, tuple(image_size)) for n in image_size)
        self.conv1 = nn.Conv2d(in_channels, n_kernels, 5)
        self.conv2 = nn.Conv2d(n_kernels, 2 * n_kernels, 5)
        self.fc1 = nn.Linear(2 * n_kernels * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)


def lenet5_features(size: int, image: tuple[int, ...], padding: int = 2) -> int:
    """LeNet-5's feature-map side before ``fc1`` for an input side ``size``
    (``padding``: conv1's)."""
    size = need(pooled(conv_out(size, 5, padding=padding)), "conv1 and pooling", image)
    return need(pooled(conv_out(size, 5)), "conv2 and pooling", image)


def cnn_features(size: int, image: tuple[int, ...]) -> int:
    """pFedHN's CNN's feature-map side before ``fc1`` for an input side ``size``."""
    size = need(pooled(conv_out(size, 5)), "conv1 and pooling", image)
    return need(pooled(conv_out(size, 5)), "conv2 and pooling", image)
