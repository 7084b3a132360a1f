"""Received parameters into a target network whose BatchNorm statistics are not
among them.

No method sends BatchNorm running statistics: the hypernetworks generate parameters
only, and FedAvg averages what the clients train. A BN model's statistics therefore
stay with the client, as in FedBN, and since a SuperNode starts a fresh process for
every message, the client recomputes them from its own training rows before it
evaluates (:func:`calibrate_batchnorm`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def load_parameters(model: nn.Module, params: Mapping[str, torch.Tensor]) -> bool:
    """Load ``params`` into ``model`` as a strict load would, except that BatchNorm
    buffers (running mean, variance, batch count) may be absent; return whether they
    were (then :func:`calibrate_batchnorm` gives them values)."""
    missing, unexpected = model.load_state_dict(dict(params), strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    wrong = [k for k in missing if k not in buffers]
    if wrong or unexpected:
        raise RuntimeError(
            f"Error(s) in loading state_dict for {type(model).__name__}: "
            f"missing key(s) {wrong}, unexpected key(s) {list(unexpected)}"
        )
    return bool(missing)


@torch.no_grad()
def calibrate_batchnorm(
    model: nn.Module, x: torch.Tensor, batch_size: int = 256
) -> nn.Module:
    """Recompute every BatchNorm layer's running statistics on ``x`` (the client's
    training rows) with torch's ``update_bn`` (one pass, the cumulative average of
    the batches' statistics, no gradient); ``model`` is left in eval mode. Nothing
    changes for a model without BatchNorm or when ``x`` is empty."""
    from torch.optim.swa_utils import update_bn

    if len(x):
        update_bn(torch.split(x, batch_size), model)
    return model.eval()
