"""Data-free replay: synthetic images from a new batch's models fine-tune the
hypernetwork for earlier batches (knowledge flows backwards).

:func:`synthesise` runs DeepInversion (:mod:`server.pfeddsh.deepinversion`) on each
model of the new batch, with labels drawn from that client's classes (its class
indicator r_i, sent at registration: classes present, no counts).
:func:`replay_loss` is an earlier client's loss on them: cross-entropy over that
client's own classes only (its personalised head is never pulled towards classes it
does not have), on the images whose label it has, and only when at least two of its
classes are there. Synthetic images never leave the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from server.pfeddsh.deepinversion import InversionWeights, invert


@dataclass
class Synthetic:
    """Labelled synthetic images and what the inversion reported, per source model."""

    images: torch.Tensor
    labels: torch.Tensor
    reports: list[dict[str, float]]

    def for_classes(self, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images whose label is in ``classes``, labels as positions in it."""
        where = {c: i for i, c in enumerate(classes)}
        keep = torch.tensor([int(y) in where for y in self.labels], dtype=torch.bool)
        y = torch.tensor([where[int(v)] for v in self.labels[keep]], dtype=torch.long)
        return self.images[keep], y


def synthesise(
    model: nn.Module,
    sources: Sequence[
        tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[int]]
    ],
    per_model: int,
    image_shape: tuple[int, ...],
    weights: InversionWeights,
    seed: int,
) -> Synthetic:
    """DeepInversion on each (params, BN statistics, classes) source model."""
    images, labels, reports = [], [], []
    for index, (params, stats, classes) in enumerate(sources):
        gen = torch.Generator().manual_seed(seed * 7_919 + index)
        choice = torch.tensor(classes, dtype=torch.long)
        y = choice[torch.arange(per_model) % len(choice)]
        x, report = invert(model, params, stats, y, image_shape, weights, gen)
        images.append(x)
        labels.append(y)
        reports.append(report)
    if not images:
        return Synthetic(
            torch.empty(0, *image_shape), torch.empty(0, dtype=torch.long), []
        )
    return Synthetic(torch.cat(images), torch.cat(labels), reports)


def replay_loss(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    stats: Mapping[str, torch.Tensor],
    synthetic: Synthetic,
    classes: Sequence[int],
) -> torch.Tensor | None:
    """One earlier client's loss on the synthetic images (None: fewer than two of its
    classes among them). BN uses the client's reported statistics (eval mode)."""
    x, y = synthetic.for_classes(classes)
    if len(set(y.tolist())) < 2:
        return None
    device = next(iter(params.values())).device
    model.eval()
    logits = functional_call(model, {**params, **stats}, (x.to(device),))
    own = logits[:, torch.tensor(list(classes), dtype=torch.long, device=device)]
    return nn.functional.cross_entropy(own, y.to(device))
