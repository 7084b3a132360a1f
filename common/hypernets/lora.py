"""HyperFLoRA's hypernetwork ψ: class indicator r ∈ {0,1}^K -> every adapter tensor.

The architecture is pFedHN's (the authors' trunk, Linear then ``n_hidden`` × (ReLU,
Linear), then one linear head per generated tensor,
:class:`~common.hypernets.pertensor.PerTensorHyperNet`) with the input being
the client's class-indicator vector instead of a learnt embedding. What differs is
the starting point of the heads, a choice the paper leaves open:

- every head's weight is scaled by ``weight_scale`` (0 by default), so at the start
  the output does not depend on r and the trunk learns from the clients' deltas;
- each head's bias is the tensor's starting value: LoRA's own initialisation for
  adapters (A Kaiming-uniform, B zero) and θ_pret for a generated head ("+θ_hd").

So round 1 hands every client θ_pret exactly (B = 0), and personalisation grows from
the pre-trained model instead of from random adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch

from common.hypernets.pertensor import PerTensorHyperNet


class LoRAHyperNet(PerTensorHyperNet):
    """ψ: (B, K) class indicators -> {name: (B, *shape)} adapters (and head)."""

    def __init__(
        self,
        num_classes: int,
        target_shapes: Mapping[str, torch.Size],
        hidden: int = 128,
        n_hidden: int = 2,
    ) -> None:
        super().__init__(num_classes, target_shapes, hidden, n_hidden)

    def heads_by_name(self) -> dict[str, torch.nn.Linear]:
        """The output head of each generated tensor (same order as ``shapes``)."""
        return dict(
            zip(
                self.shapes,
                (cast(torch.nn.Linear, h) for h in self.heads.values()),
                strict=True,
            )
        )

    @torch.no_grad()
    def start_at(
        self, values: Mapping[str, torch.Tensor], weight_scale: float | None = None
    ) -> None:
        """Set the heads' biases to ``values``; with ``weight_scale`` also scale every
        head's weight (0 makes h(r) = ``values`` for every r)."""
        for name, head in self.heads_by_name().items():
            if weight_scale is not None:
                head.weight.mul_(weight_scale)
            if name in values:
                head.bias.copy_(values[name].reshape(-1).to(head.bias))
