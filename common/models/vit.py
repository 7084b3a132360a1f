"""A tiny Vision Transformer for 28x28 images (HyperFLoRA's Transformer target).

Patch 7 (16 patches plus a class token), width 64, depth 4, 4 heads, MLP ratio 4,
pre-norm blocks: about 205k weights, the size of the paper's ViT (2.08E5 on CIFAR).
The attention projections are separate ``nn.Linear`` layers (q, k, v, o) rather than
one packed matrix, so LoRA can adapt each of them as in the paper; attention itself
is :func:`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from common.models.shapes import ShapeError


class Attention(nn.Module):
    """Multi-head self-attention with separate q, k, v and output projections."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(x)), split(self.v(x))
        )
        return self.o(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Module):
    """The block's MLP: fc1, GELU, fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def vit_patch(image_size: tuple[int, ...]) -> int | tuple[int, int]:
    """The patch that cuts an image into 4 × 4 = 16 patches (7 for 28×28, 8 for
    CIFAR's 32×32); :class:`ShapeError` when a side is not a multiple of 4."""
    h, w = _pair(tuple(image_size))
    if h % 4 or w % 4:
        raise ShapeError(f"vit-tiny needs sides that are multiples of 4, got {h}×{w}")
    return h // 4 if h == w else (h // 4, w // 4)


class TinyViT(nn.Module):
    """ViT (Dosovitskiy et al., 2021) sized for 28x28 single-channel images (16
    patches of 7×7; other sizes keep 16 patches)."""

    def __init__(
        self,
        image_size: int | tuple[int, int] = 28,
        patch: int | tuple[int, int] = 7,
        in_channels: int = 1,
        num_classes: int = 10,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        sides = _pair(image_size)
        patches = _pair(patch)
        if any(s % p for s, p in zip(sides, patches, strict=True)):
            raise ShapeError(
                f"image size {image_size} is not a multiple of the patch {patch}"
            )
        tokens = (sides[0] // patches[0]) * (sides[1] // patches[1])
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))
