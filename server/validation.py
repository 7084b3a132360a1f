"""Checks on what clients send back: nothing invalid ever reaches an update.

A reply is rejected (and the reason kept, with the client id) when its delta has
other keys, shapes or dtype than the parameters that were sent, holds NaN/Inf, or
exceeds the configured norm bound; when its metrics lack a positive sample count or
a metric the method declared; or when the extra arrays a method declared
(:class:`ReplyExtra`, e.g. a client's distribution embedding or BatchNorm
statistics) are missing, unexpected, of the wrong shape or not finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from flwr.app import ArrayRecord, Message, MetricRecord

from common.protocol import EXTRAS
from common.records import content_bytes, from_record


class InvalidReply(ValueError):
    """A client reply that cannot be used; the message says why."""


@dataclass(frozen=True)
class ClientUpdate:
    """A validated training reply: the delta, the sample count and train metrics."""

    client_id: str
    delta: dict[str, torch.Tensor]
    num_examples: int
    metrics: dict[str, float]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplyExtra:
    """An array a method's train replies carry besides the delta, in the reply's
    ``extras`` ArrayRecord: its shape (None: any shape, e.g. one per layer of a
    client's own model) and a bound on its size."""

    shape: tuple[int, ...] | None = None
    max_numel: int = 1_000_000


def extras_of(reply: Message) -> dict[str, torch.Tensor]:
    """The extra arrays of a (validated) train reply, by name; empty when none."""
    records = reply.content.array_records
    return from_record(records[EXTRAS]) if EXTRAS in records else {}


def check_extras(
    reply: Message, declared: Mapping[str, ReplyExtra]
) -> dict[str, torch.Tensor]:
    """Decode and check a reply's extra arrays against what the method declared."""
    records = reply.content.array_records
    if not declared:
        if EXTRAS in records:
            raise InvalidReply("reply carries extras the method does not declare")
        return {}
    if EXTRAS not in records:
        raise InvalidReply(f"reply lacks the declared extras {sorted(declared)}")
    record = records[EXTRAS]
    if set(record.keys()) != set(declared):
        raise InvalidReply(
            f"extras {sorted(record.keys())} differ from the declared "
            f"{sorted(declared)}"
        )
    tensors = from_record(record)
    for key, t in tensors.items():
        spec = declared[key]
        if spec.shape is not None and tuple(t.shape) != spec.shape:
            raise InvalidReply(
                f"extra '{key}' has shape {tuple(t.shape)}, expected {spec.shape}"
            )
        if t.numel() > spec.max_numel:
            raise InvalidReply(
                f"extra '{key}' has {t.numel()} values, more than {spec.max_numel}"
            )
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise InvalidReply(f"extra '{key}' holds NaN or Inf")
    return tensors


def check_delta(
    delta: ArrayRecord, sent: ArrayRecord, max_norm: float = 0.0
) -> dict[str, torch.Tensor]:
    """Decode a delta and check it against the parameters sent (keys, shapes, dtype)."""
    if set(delta.keys()) != set(sent.keys()):
        extra = sorted(set(delta.keys()) - set(sent.keys()))
        lacking = sorted(set(sent.keys()) - set(delta.keys()))
        raise InvalidReply(f"delta keys differ (unexpected {extra}, missing {lacking})")
    for key, arr in delta.items():
        ref = sent[key]
        if tuple(arr.shape) != tuple(ref.shape):
            raise InvalidReply(
                f"'{key}' has shape {tuple(arr.shape)}, expected {tuple(ref.shape)}"
            )
        if arr.dtype != ref.dtype:
            raise InvalidReply(f"'{key}' has dtype {arr.dtype}, expected {ref.dtype}")
    tensors = from_record(delta)
    for key, t in tensors.items():
        if not torch.isfinite(t).all():
            raise InvalidReply(f"'{key}' holds NaN or Inf")
    if max_norm > 0:
        norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors.values()))
        if norm > max_norm:
            raise InvalidReply(
                f"delta norm {norm:.3g} exceeds max-delta-norm {max_norm:g}"
            )
    return tensors


def check_metrics(metrics: MetricRecord) -> tuple[int, dict[str, float]]:
    """Sample count (a positive integer) and the numeric metrics of a reply."""
    n = metrics.get("num-examples")
    if (
        isinstance(n, bool)
        or not isinstance(n, int | float)
        or n <= 0
        or not math.isfinite(n)
        or n != int(n)
    ):
        raise InvalidReply(f"num-examples must be a positive integer, got {n!r}")
    values: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidReply(f"metric '{key}' is not a number: {value!r}")
        values[key] = float(value)
    return int(n), values


def check_train_reply(
    client_id: str,
    reply: Message,
    sent: Message,
    max_norm: float = 0.0,
    max_bytes: int = 0,
    extras: Mapping[str, ReplyExtra] | None = None,
    metric_names: Sequence[str] = (),
) -> ClientUpdate:
    """Validate a train reply against the message it answers and against what the
    method declared its replies carry (``extras`` arrays, ``metric_names``)."""
    content = reply.content
    size = content_bytes(content)
    if max_bytes and size > max_bytes:
        raise InvalidReply(
            f"reply of {size / 2**20:.1f} MiB exceeds max-reply-mb "
            f"({max_bytes / 2**20:.0f} MiB)"
        )
    if "delta" not in content.array_records or "metrics" not in content.metric_records:
        raise InvalidReply("reply lacks a 'delta' ArrayRecord or 'metrics' record")
    delta = check_delta(
        content.array_records["delta"], sent.content.array_records["params"], max_norm
    )
    n, metrics = check_metrics(content.metric_records["metrics"])
    lacking = [k for k in metric_names if k not in metrics]
    if lacking:
        raise InvalidReply(f"reply lacks the declared metrics {lacking}")
    return ClientUpdate(client_id, delta, n, metrics, check_extras(reply, extras or {}))


def check_eval_reply(reply: Message) -> dict[str, float]:
    """Validate an evaluate reply: finite accuracies in [0, 1] and a sample count."""
    content = reply.content
    if "metrics" not in content.metric_records:
        raise InvalidReply("reply lacks a 'metrics' record")
    _, metrics = check_metrics(content.metric_records["metrics"])
    for key in ("val-acc", "test-acc"):
        if not 0.0 <= metrics.get(key, -1.0) <= 1.0:
            raise InvalidReply(f"'{key}' missing or outside [0, 1]")
    return metrics
