"""Small convolutional target networks for 28x28 single-channel images."""

from __future__ import annotations

import torch
from torch import nn


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
    """LeNet-5 (LeCun et al.): 2 conv + 3 fully connected layers, about 61k weights."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)


class PFedHNCNN(_TwoConvThreeFC):
    """The target CNN of pFedHN's code (``CNNTarget``) sized for 28x28 inputs."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, n_kernels: int = 16
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, n_kernels, 5)
        self.conv2 = nn.Conv2d(n_kernels, 2 * n_kernels, 5)
        self.fc1 = nn.Linear(2 * n_kernels * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
