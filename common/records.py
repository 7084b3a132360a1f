"""Tensors to and from Flower records, and the bytes a message really carries."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict


def to_record(tensors: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Pack named tensors into an ArrayRecord (CPU, detached, order kept)."""
    return ArrayRecord(
        array_dict={
            k: Array(np.ascontiguousarray(v.detach().to("cpu").numpy()))
            for k, v in tensors.items()
        }
    )


def from_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Unpack an ArrayRecord into named tensors (copies, safe to modify)."""
    return {
        k: torch.from_numpy(np.array(a.numpy(), copy=True)) for k, a in record.items()
    }


def content_bytes(content: RecordDict) -> int:
    """Bytes of all records in a message body, as Flower serialises their payloads."""
    return sum(rec.count_bytes() for rec in content.values())


def message_bytes(message: Message) -> int:
    """Bytes a message carries (0 for an error reply, which has no content)."""
    return 0 if message.has_error() else content_bytes(message.content)


def arrays_of(message: Message, name: str = "params") -> ArrayRecord:
    """The ArrayRecord ``name`` of a message (KeyError when it has none)."""
    return message.content.array_records[name]


def config_of(message: Message, name: str = "config") -> ConfigRecord:
    """The ConfigRecord ``name`` of a message (KeyError when it has none)."""
    return message.content.config_records[name]


def metrics_of(message: Message, name: str = "metrics") -> MetricRecord:
    """The MetricRecord ``name`` of a message (KeyError when it has none)."""
    return message.content.metric_records[name]


def as_int(value: object) -> int:
    """A record value (int, float or numeric string) as an int; TypeError otherwise,
    so a malformed value fails with its type named."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return int(value)


def numeric(record: MetricRecord | ConfigRecord) -> dict[str, float]:
    """The scalar numbers of a record, as floats (lists and strings left out)."""
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
