"""What a client does when the fault-injection plan (common/faults.py) picks it."""

from __future__ import annotations

import time
from typing import Any

import torch


def inject(
    kind: str,
    delta: dict[str, torch.Tensor],
    metrics: dict[str, Any],
    round_timeout: float,
    max_reply_mb: float,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Corrupt a train reply the way ``kind`` says (or raise, or stall)."""
    delta = dict(delta)
    first = next(iter(delta))
    if kind == "raise":
        raise RuntimeError("injected fault: this ClientApp raises")
    if kind == "hang":
        time.sleep(round_timeout + 2.0)  # the reply arrives after its round ended
    elif kind == "nan":
        delta[first] = torch.full_like(delta[first], float("nan"))
    elif kind == "inf":
        delta[first] = (
            delta[first].clone().index_fill_(0, torch.tensor([0]), float("inf"))
        )
    elif kind == "shape":
        delta[first] = delta[first].reshape(-1)[:-1]
    elif kind == "keys":
        delta["not-a-parameter"] = torch.zeros(3)
    elif kind == "dtype":
        delta[first] = delta[first].double()
    elif kind == "norm":
        delta = {k: v * 1e9 for k, v in delta.items()}
    elif kind == "big":
        delta["padding"] = torch.zeros(int(2 * max_reply_mb * 2**20) // 4)
    elif kind == "badmetric":
        metrics = {**metrics, "num-examples": float("nan")}
    return delta, metrics
