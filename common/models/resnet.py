"""ResNet-18 with BatchNorm for small images (pFedDSH's target network).

torchvision's ``resnet18`` adapted the way CIFAR papers do (He et al.'s ImageNet stem
is a 7×7 stride-2 convolution and a max-pool, which would leave a 32×32 image 8×8
before the first block): ``conv1`` becomes a 3×3 stride-1 convolution from the data's
channels and ``maxpool`` is removed. The four stages (64, 128, 256, 512 channels,
strides 1, 2, 2, 2) and the global average pool are torchvision's, so a 32×32 image
reaches the last stage at 4×4; the classifier ``fc`` has the data's class count.
About 11.2M weights for CIFAR-10.

BatchNorm layers keep running statistics (torchvision's defaults), as
:mod:`common.models.bn` expects: a client calibrates them on its own data and reports
them for DeepInversion.
"""

from __future__ import annotations

from torch import nn

from common.models.shapes import ShapeError

#: The smallest side the three stride-2 stages leave at least 1×1 of.
MIN_SIDE = 8


def resnet18(
    in_channels: int = 3, num_classes: int = 10, image_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    """torchvision's ResNet-18 with a CIFAR stem (3×3 conv, no max-pool) for
    ``in_channels`` × ``image_size`` images and ``num_classes`` classes.

    Raises :class:`ShapeError` for sides below :data:`MIN_SIDE` (the global average
    pool would take any size, but below 8 the last stages see padding only)."""
    h, w = (int(n) for n in image_size)
    if min(h, w) < MIN_SIDE:
        raise ShapeError(
            f"{h}×{w} images are below resnet18's {MIN_SIDE}×{MIN_SIDE} "
            "(three stride-2 stages)"
        )
    # imported here: torchvision.models imports torch._dynamo (about 2 s of CPU),
    # which every per-message ClientApp process would pay for any model
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
