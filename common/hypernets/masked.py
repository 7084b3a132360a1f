"""pFedDSH's hypernetwork: an MLP with a linear head per target tensor whose every
weight can be switched off by a batch-specific binary mask.

Each client batch b has real-valued scores s_b, one per hypernetwork weight; its mask
m_b keeps the top (1 − sparsity) of each tensor by |s_b| (a straight-through top-k:
the forward uses the binary mask, the backward passes the gradient to the scores, as
in Winning SubNetworks). Once batch b has trained, m_b is fixed and the weights it
uses are frozen for every later batch (they may still be used in the forward pass),
so an earlier batch's generated models cannot drift. :class:`MaskBank` keeps the
scores, the fixed masks and what they use; the freezing itself is a gradient hook
(:meth:`MaskBank.freeze_grads`) run by the shared update between backward and step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

Masks = Mapping[str, torch.Tensor]


class _TopK(torch.autograd.Function):
    """Binary mask of the largest |scores| (a ``keep`` share); straight-through."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, keep: float) -> torch.Tensor:  # noqa: D102
        return topk_mask(scores, keep)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return grad, None


def topk_mask(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """1.0 where |score| is among the top ``keep`` share of the tensor, else 0.0."""
    flat = scores.detach().abs().flatten()
    k = max(1, int(round(keep * flat.numel())))
    mask = torch.zeros_like(flat)
    mask[flat.topk(k, sorted=False).indices] = 1.0
    return mask.view_as(scores)


class MaskedHyperNet(nn.Module):
    """θ = θ₀ + h(v; φ ⊙ m): ``layers`` × (Linear, ReLU) of ``hidden`` units, then
    one linear head per target tensor, every weight and bias multiplied by a mask (or
    not, when ``masks`` is None: a plain hypernetwork).

    θ₀ (``base``, a fixed buffer, e.g. the target's initial weights) gives every
    generated model a sensible starting point: BatchNorm scales near 1, not near 0,
    which a bare head would generate (and a mask would zero half of).
    """

    def __init__(
        self,
        embed_dim: int,
        target_shapes: Mapping[str, torch.Size],
        hidden: int = 100,
        layers: int = 3,
        base: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        widths = [embed_dim] + [hidden] * layers
        self.trunk = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.shapes = {k: torch.Size(s) for k, s in target_shapes.items()}
        self.heads = nn.ModuleDict(
            {_safe(k): nn.Linear(hidden, s.numel()) for k, s in self.shapes.items()}
        )
        for k, s in self.shapes.items():
            value = base[k] if base is not None else torch.zeros(s)
            self.register_buffer(f"base__{_safe(k)}", value.detach().clone().view(s))

    def forward(
        self, embeddings: torch.Tensor, masks: Masks | None = None
    ) -> dict[str, torch.Tensor]:
        """Generated tensors, each (B, *target_shape), under ``masks`` (by parameter
        name, as :meth:`named_parameters` gives them)."""

        def linear(prefix: str, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
            w: torch.Tensor = layer.weight
            b: torch.Tensor = layer.bias
            if masks is not None:
                w, b = w * masks[f"{prefix}.weight"], b * masks[f"{prefix}.bias"]
            return nn.functional.linear(x, w, b)

        x = embeddings
        for i, layer in enumerate(self.trunk):
            x = torch.relu(linear(f"trunk.{i}", cast(nn.Linear, layer), x))
        return {
            k: getattr(self, f"base__{_safe(k)}")
            + linear(
                f"heads.{_safe(k)}", cast(nn.Linear, self.heads[_safe(k)]), x
            ).view(-1, *s)
            for k, s in self.shapes.items()
        }


class MaskBank:
    """Scores of the batch in training, fixed masks of finished batches, and the
    union of the weights those use (frozen)."""

    def __init__(self, hnet: MaskedHyperNet, sparsity: float) -> None:
        self.hnet, self.keep = hnet, 1.0 - sparsity
        self.names = [n for n, _ in hnet.named_parameters()]
        self.fixed: list[dict[str, torch.Tensor]] = []  # bool, per finished batch
        self.scores: dict[str, nn.Parameter] = {}
        self.batch = -1

    @property
    def used(self) -> dict[str, torch.Tensor]:
        """Weights used by any finished batch (bool): frozen from now on."""
        out = {
            n: torch.zeros_like(p, dtype=torch.bool)
            for n, p in self.hnet.named_parameters()
        }
        for mask in self.fixed:
            for n in out:
                out[n] |= mask[n]
        return out

    def start(self, batch: int, generator: torch.Generator) -> list[nn.Parameter]:
        """Fresh scores for ``batch`` (uniform, like a Linear's initial weights);
        returns them for the optimiser."""
        if batch != len(self.fixed):
            raise ValueError(
                f"batch {batch} starts after {len(self.fixed)} fixed masks"
            )
        self.batch = batch
        self.scores = {}
        for n, p in self.hnet.named_parameters():
            fan_in = p.shape[1] if p.dim() > 1 else p.shape[0]
            bound = fan_in**-0.5
            s = (torch.rand(p.shape, generator=generator) * 2 - 1) * bound
            self.scores[n] = nn.Parameter(s.to(p.device))
        return list(self.scores.values())

    def fix(self) -> dict[str, int]:
        """Fix the training batch's mask; how many weights it uses, reuses (already
        used by an earlier batch) and how many no batch uses yet after it."""
        before = self.used
        mask = {n: topk_mask(s, self.keep).bool() for n, s in self.scores.items()}
        self.fixed.append(mask)
        self.scores = {}
        used = sum(int(m.sum()) for m in mask.values())
        reused = sum(int((mask[n] & before[n]).sum()) for n in mask)
        total = sum(m.numel() for m in mask.values())
        free = sum(int((~(mask[n] | before[n])).sum()) for n in mask)
        return {
            "weights-used": used,
            "weights-reused": reused,
            "weights-new": used - reused,
            "weights-free": free,
            "weights-total": total,
        }

    def masks(self, batch: int) -> dict[str, torch.Tensor]:
        """Float masks of ``batch``: fixed, or the straight-through top-k of its
        scores while it trains (gradients reach the scores)."""
        if batch < len(self.fixed):
            return {n: m.to(self.hnet_dtype) for n, m in self.fixed[batch].items()}
        if batch != self.batch or not self.scores:
            raise KeyError(f"batch {batch} has neither a fixed mask nor scores")
        return {n: _TopK.apply(s, self.keep) for n, s in self.scores.items()}

    @property
    def hnet_dtype(self) -> torch.dtype:
        return next(self.hnet.parameters()).dtype

    def exclusive(self, batch: int) -> dict[str, torch.Tensor]:
        """Weights only ``batch`` uses among the fixed masks (bool): what replay may
        move for it without touching any other batch's models."""
        others = {n: torch.zeros_like(m) for n, m in self.fixed[batch].items()}
        for b, mask in enumerate(self.fixed):
            if b != batch:
                for n in others:
                    others[n] |= mask[n]
        return {n: m & ~others[n] for n, m in self.fixed[batch].items()}

    def freeze_grads(self, weight_decay: float) -> None:
        """Gradient hook of a training round: weight decay on the weights the
        training mask uses, then zero for every weight an earlier batch uses (the
        optimiser itself has no weight decay, so frozen weights stay bit for bit)."""
        used = self.used
        with torch.no_grad():
            for n, p in self.hnet.named_parameters():
                if p.grad is None:
                    continue
                if weight_decay:
                    current = topk_mask(self.scores[n], self.keep)
                    p.grad.add_(p * current, alpha=weight_decay)
                p.grad.masked_fill_(used[n], 0.0)

    def state_dict(self) -> dict[str, object]:
        """Fixed masks, the training batch and its scores (for checkpoints)."""
        return {
            "fixed": [{n: m.clone() for n, m in f.items()} for f in self.fixed],
            "batch": self.batch,
            "scores": {n: s.detach().clone() for n, s in self.scores.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> list[nn.Parameter]:
        """Restore :meth:`state_dict`; returns the scores (for the optimiser)."""
        self.fixed = [dict(f) for f in state["fixed"]]
        self.batch = int(state["batch"])
        self.scores = {n: nn.Parameter(s.clone()) for n, s in state["scores"].items()}
        return list(self.scores.values())


def _safe(name: str) -> str:
    """ModuleDict keys may not contain dots."""
    return name.replace(".", "__")
