"""LoRA adapters (Hu et al., 2021) on a frozen base network: z = Wx + (α/r)·B A x.

A LoRA layer keeps the base layer's own weight ``W`` (and bias) under the same names,
so a pre-trained state dict loads into an adapted model unchanged, and adds a rank-r
adapter ρ = (A, B) as ``<layer>.lora_A`` (r × in) and ``<layer>.lora_B`` (out × r).
B starts at zero, so a fresh adapter leaves the base model's output unchanged, and
:func:`merge_lora` folds (α/r)·B A into W to give a plain network that computes the
same function (what a client can deploy without any LoRA code).

Linear and Conv2d layers are supported. The conv adapter is a k×k convolution to r
channels (A) followed by a 1×1 convolution back to the output channels (B); their
product is a rank-r update of the flattened kernel, so it merges the same way.

Which layers are adapted is a list of ``fnmatch`` patterns over module names
(``lora-targets``); ``auto`` means every ``nn.Linear`` layer, the classifier head
included, which for LeNet-5 is fc1–fc3 (818 adapter weights at rank 1) and for the
tiny ViT every attention and MLP projection plus the head.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

#: ``lora-targets`` value meaning "every nn.Linear layer, the head included".
AUTO_TARGETS = "auto"


class LoRALinear(nn.Linear):
    """``nn.Linear`` plus a rank-r adapter: y = x Wᵀ + b + (α/r)·(x Aᵀ) Bᵀ."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int = 1,
        alpha: float = 1.0,
        bias: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.reset_lora()

    def reset_lora(self) -> None:
        """LoRA's initialisation: A Kaiming-uniform, B zero (the adapter adds 0)."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @classmethod
    def from_layer(cls, layer: nn.Linear, rank: int, alpha: float) -> LoRALinear:
        """Wrap an existing layer, sharing nothing: its weights are copied."""
        new = cls(
            layer.in_features,
            layer.out_features,
            rank,
            alpha,
            bias=layer.bias is not None,
        )
        new.to(layer.weight.device, layer.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(layer.weight)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def delta_weight(self) -> torch.Tensor:
        """(α/r)·B A, the adapter as a dense update of W."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight, self.bias)
        return base + self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with W + (α/r)·B A."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        out.to(self.weight.device, self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + self.delta_weight())
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


class LoRAConv2d(nn.Conv2d):
    """``nn.Conv2d`` plus a rank-r adapter: conv(x, W) + (α/r)·B(conv(x, A))."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        rank: int = 1,
        alpha: float = 1.0,
        **conv_kwargs,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, **conv_kwargs)
        if self.groups != 1:
            raise ValueError("LoRA on grouped convolutions is not supported")
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        kh, kw = self.kernel_size
        self.lora_A = nn.Parameter(torch.empty(rank, in_channels, kh, kw))
        self.lora_B = nn.Parameter(torch.zeros(out_channels, rank, 1, 1))
        self.reset_lora()

    def reset_lora(self) -> None:
        """LoRA's initialisation: A Kaiming-uniform, B zero (the adapter adds 0)."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @classmethod
    def from_layer(cls, layer: nn.Conv2d, rank: int, alpha: float) -> LoRAConv2d:
        """Wrap an existing convolution; its weights are copied."""
        # torch's stubs type these attributes as tuple[int, ...]: a 2-d conv's are pairs
        new = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,  # type: ignore[arg-type]
            rank,
            alpha,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
        )
        new.to(layer.weight.device, layer.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(layer.weight)
            if layer.bias is not None and new.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def delta_weight(self) -> torch.Tensor:
        """(α/r)·B A as a dense kernel update (out, in, kh, kw)."""
        return self.scaling * torch.einsum(
            "or,rikl->oikl", self.lora_B[:, :, 0, 0], self.lora_A
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self._conv_forward(x, self.weight, self.bias)
        low = self._conv_forward(x, self.lora_A, None)  # same stride/padding as W
        return base + self.scaling * F.conv2d(low, self.lora_B)

    def merged(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with W + (α/r)·B A."""
        out = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,  # type: ignore[arg-type]
            stride=self.stride,  # type: ignore[arg-type]
            padding=self.padding,  # type: ignore[arg-type]
            dilation=self.dilation,  # type: ignore[arg-type]
            groups=self.groups,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
        )
        out.to(self.weight.device, self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + self.delta_weight())
            if self.bias is not None and out.bias is not None:
                out.bias.copy_(self.bias)
        return out


LORA_LAYERS = (LoRALinear, LoRAConv2d)


def parse_targets(spec: str) -> list[str] | None:
    """``lora-targets`` as a list of patterns; None for ``auto`` (every Linear)."""
    spec = spec.strip()
    if spec == AUTO_TARGETS:
        return None
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    if not patterns:
        raise ValueError("lora-targets is empty; use 'auto' or module name patterns")
    return patterns


def select_targets(model: nn.Module, targets: str | Sequence[str] | None) -> list[str]:
    """Names of the Linear/Conv2d modules the target spec picks, in module order.

    A pattern that matches no Linear or Conv2d module is an error, so a typo in
    ``lora-targets`` never silently trains nothing.
    """
    patterns = parse_targets(targets) if isinstance(targets, str) else targets
    layers = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d)
    }
    if patterns is None:
        return [n for n, m in layers.items() if isinstance(m, nn.Linear)]
    chosen = []
    for pattern in patterns:
        hits = [n for n in layers if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(
                f"lora-targets pattern {pattern!r} matches no Linear or "
                f"Conv2d layer; layers are: {', '.join(layers)}"
            )
        chosen += hits
    return [n for n in layers if n in set(chosen)]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def add_lora(
    model: nn.Module,
    targets: str | Sequence[str] | None,
    rank: int = 1,
    alpha: float = 1.0,
) -> list[str]:
    """Put rank-``rank`` adapters on the targeted layers, in place; freeze the rest.

    Base weights keep their names (a pre-trained state dict still loads) and stop
    requiring gradients; only the ``lora_A``/``lora_B`` tensors are trainable.
    Returns the adapted module names.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    names = select_targets(model, targets)
    for name in names:
        layer = model.get_submodule(name)
        if isinstance(layer, LORA_LAYERS):
            continue
        wrapped: nn.Module
        if isinstance(layer, nn.Conv2d):
            wrapped = LoRAConv2d.from_layer(layer, rank, alpha)
        else:
            wrapped = LoRALinear.from_layer(cast(nn.Linear, layer), rank, alpha)
        _set_module(model, name, wrapped)
    for pname, param in model.named_parameters():
        param.requires_grad_(is_lora_param(pname))
    return names


def is_lora_param(name: str) -> bool:
    """Whether a parameter name is an adapter tensor (``...lora_A``/``...lora_B``)."""
    return name.rpartition(".")[2] in ("lora_A", "lora_B")


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every adapter tensor of an adapted model, by name (ρ)."""
    return {n: p for n, p in model.named_parameters() if is_lora_param(n)}


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose LoRA layers are plain layers with merged weights."""
    merged = copy.deepcopy(model)
    for name, module in list(merged.named_modules()):
        if isinstance(module, LORA_LAYERS):
            _set_module(merged, name, module.merged())
    for param in merged.parameters():
        param.requires_grad_(True)
    return merged


def head_name(model: nn.Module) -> str:
    """The classifier head: the last ``nn.Linear`` in module order."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no Linear layer to call its head")
    return linears[-1]


def generated_tensors(
    model: nn.Module, generate_head: bool = False
) -> dict[str, torch.Tensor]:
    """What HyperFLoRA generates for an adapted model, in a fixed order (current
    values): every adapter tensor, except that with ``generate_head`` ("+θ_hd") the
    head's adapter is left out and the head's own weight and bias are in instead.

    Server and clients both call this on the same model, so a packed vector
    (:func:`pack`) unpacks to the same names and shapes on either side.
    """
    tensors = {k: p.detach() for k, p in lora_parameters(model).items()}
    if not generate_head:
        return tensors
    head = head_name(model)
    tensors = {k: v for k, v in tensors.items() if not k.startswith(head + ".")}
    layer = cast(nn.Linear, model.get_submodule(head))
    tensors[f"{head}.weight"] = layer.weight.detach()
    if layer.bias is not None:
        tensors[f"{head}.bias"] = layer.bias.detach()
    return tensors


def pack(tensors: dict[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """Named tensors as one flat vector, in the order of ``names``.

    One array per message instead of two per adapted layer: Flower frames every
    array of a record separately, which for rank-1 adapters costs as much as the
    values themselves.
    """
    return torch.cat([tensors[n].reshape(-1) for n in names])


def unpack(
    flat: torch.Tensor, shapes: dict[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """The inverse of :func:`pack` (raises when the length does not match)."""
    sizes = [int(torch.Size(s).numel()) for s in shapes.values()]
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(
            f"packed vector of shape {tuple(flat.shape)}, expected ({sum(sizes)},)"
        )
    return {
        name: part.reshape(shape)
        for (name, shape), part in zip(
            shapes.items(), torch.split(flat, sizes), strict=True
        )
    }
