"""DeepInversion (Yin et al., 2020): labelled images synthesised from a trained
model's BatchNorm statistics, with no data.

Images start as noise and are optimised (Adam) so that the model classifies them as
the target labels (cross-entropy) while the mean and variance of every BN layer's
input over the synthetic batch match that layer's running statistics, under a
total-variation and an L2 prior:

    L = CE(f(x), y) + w_bn Σ_l (‖μ_l(x) − μ̂_l‖₂ + ‖σ²_l(x) − σ̂²_l‖₂)
        + w_tv TV(x) + w_l2 ‖x‖² / N

The model is a template module called with given parameters and BN statistics
(``torch.func.functional_call``), in eval mode, so nothing of it moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from common.models.bn import bn_layers


@dataclass(frozen=True)
class InversionWeights:
    """The loss weights and optimiser settings (run-config keys ``di-*``)."""

    steps: int = 200
    lr: float = 0.1
    bn: float = 1.0
    tv: float = 1e-3
    l2: float = 1e-4


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (a smoothness prior)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (
        x[..., :, 1:] - x[..., :, :-1]
    ).abs().mean()


class BNMatcher:
    """Forward hooks on a model's BN layers measuring how far the statistics of their
    inputs are from given targets (``<layer>.running_mean`` / ``running_var``)."""

    def __init__(self, model: nn.Module, targets: Mapping[str, torch.Tensor]) -> None:
        self.losses: list[torch.Tensor] = []
        self.handles = []
        for name, layer in bn_layers(model).items():
            mean, var = targets[f"{name}.running_mean"], targets[f"{name}.running_var"]
            self.handles.append(layer.register_forward_hook(self._hook(mean, var)))

    def _hook(self, mean: torch.Tensor, var: torch.Tensor):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _out) -> None:
            x = inputs[0]
            dims = [0, *range(2, x.dim())]
            self.losses.append(
                torch.linalg.vector_norm(x.mean(dims) - mean)
                + torch.linalg.vector_norm(x.var(dims, unbiased=False) - var)
            )

        return hook

    def take(self) -> torch.Tensor:
        """The summed distance of the last forward pass (and reset)."""
        total = torch.stack(self.losses).sum()
        self.losses = []
        return total

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


def invert(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    stats: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    image_shape: tuple[int, ...],
    weights: InversionWeights,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Synthesise one image per label from the model (``params`` and BN ``stats``);
    returns the images and the loss terms at the first and last step."""
    device = next(iter(params.values())).device
    labels = labels.to(device)
    x = torch.randn((len(labels), *image_shape), generator=generator).to(device)
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=weights.lr)
    matcher = BNMatcher(model, stats)
    values = {**params, **stats}
    model.eval()
    report: dict[str, float] = {}
    try:
        for step in range(weights.steps):
            logits = functional_call(model, values, (x,))
            ce = nn.functional.cross_entropy(logits, labels)
            bn = matcher.take()
            loss = (
                ce
                + weights.bn * bn
                + weights.tv * total_variation(x)
                + weights.l2 * x.pow(2).sum() / len(labels)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step == 0:
                report.update({"ce-first": ce.item(), "bn-first": bn.item()})
        with torch.no_grad():
            logits = functional_call(model, values, (x,))
            report.update(
                {
                    "ce-last": float(nn.functional.cross_entropy(logits, labels)),
                    "bn-last": float(matcher.take()),
                    "label-acc": float((logits.argmax(1) == labels).float().mean()),
                }
            )
    finally:
        matcher.close()
    return x.detach().cpu(), report
