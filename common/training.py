"""Local training and evaluation loops run by the ClientApp (plain tensors, no PIL)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.sgd import sgd


@dataclass(frozen=True)
class TrainResult:
    """What a local training run reports: mean loss and accuracy over seen samples."""

    loss: float
    accuracy: float
    samples_seen: int
    steps: int


class ClientSGD:
    """SGD for a client's local steps: ``torch.optim.SGD``'s own update
    (``torch.optim.sgd.sgd``, the function its ``step`` calls, with the same
    arguments, so the numbers are the same bit for bit) without the
    ``torch.optim.Optimizer`` machinery.

    Why: creating or stepping a ``torch.optim.Optimizer`` imports ``torch._dynamo``
    (about 2 s of CPU here). A Flower SuperNode starts a fresh ``flwr-clientapp``
    process for every message, so every training message paid it; the server, a
    long-lived process, keeps ``torch.optim``.
    """

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        self.params, self.lr = list(params), lr
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers: dict[int, torch.Tensor | None] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the last step's gradients."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One SGD step on the parameters that have a gradient."""
        live: list[torch.Tensor] = [p for p in self.params if p.grad is not None]
        grads: list[torch.Tensor] = [p.grad for p in live if p.grad is not None]
        buffers = [self.buffers.get(id(p)) for p in live]
        sgd(
            live,
            grads,
            buffers if self.momentum != 0 else [],
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )
        if self.momentum != 0:
            self.buffers.update((id(p), b) for p, b in zip(live, buffers, strict=True))


def steps_for(
    num_samples: int, batch_size: int, local_epochs: int, local_steps: int
) -> int:
    """Optimiser steps: ``local-epochs`` passes if set, else ``local-steps``."""
    if local_epochs > 0:
        return local_epochs * max(1, -(-num_samples // batch_size))
    return local_steps


def train_steps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    generator: torch.Generator,
    clip_norm: float = 0.0,
    proximal_mu: float = 0.0,
    forward: Callable[
        [nn.Module, torch.Tensor, torch.Tensor],
        tuple[torch.Tensor, torch.Tensor | None],
    ]
    | None = None,
) -> TrainResult:
    """Plain SGD on mini-batches drawn without replacement, reshuffled each epoch.

    ``clip_norm`` > 0 bounds each step's gradient norm (``local-clip-norm``): a
    received model far from this client's data (e.g. an adapter relayed from a
    client with other classes) otherwise can blow up in the first steps.
    ``proximal_mu`` > 0 adds FedProx's term μ/2 ‖w − w_0‖² to each step's loss, w_0
    the trainable weights as received (the global model); 0 leaves the loop as it
    was, bit for bit. ``forward(model, x, y)`` (a method's own loss term, e.g.
    FedProto's prototype regulariser) returns the batch's logits and a term added
    to its loss (None: nothing); without it the logits are ``model(x)``. The
    reported loss is the cross-entropy alone.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    opt = ClientSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    order = torch.randperm(len(y), generator=generator)
    cursor = 0
    for _ in range(steps):
        if cursor >= len(order):
            order, cursor = torch.randperm(len(y), generator=generator), 0
        batch = order[cursor : cursor + batch_size]
        cursor += batch_size
        if forward is None:
            logits, extra = model(x[batch]), None
        else:
            logits, extra = forward(model, x[batch], y[batch])
        loss = nn.functional.cross_entropy(logits, y[batch])
        opt.zero_grad(set_to_none=True)
        if anchor:
            proximal = sum(
                ((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True)
            )
            (loss + 0.5 * proximal_mu * proximal).backward()
        elif extra is not None:
            (loss + extra).backward()
        else:
            loss.backward()
        if clip_norm > 0:
            nn.utils.clip_grad_norm_(params, clip_norm)
        opt.step()
        total_loss += loss.item() * len(batch)
        correct += int((logits.argmax(1) == y[batch]).sum())
        seen += len(batch)
    return TrainResult(total_loss / max(seen, 1), correct / max(seen, 1), seen, steps)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float, int]:
    """Mean cross-entropy, accuracy and sample count of ``model`` on (x, y)."""
    model.eval()
    if len(y) == 0:
        return 0.0, 0.0, 0
    loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    return loss / len(y), correct / len(y), len(y)
