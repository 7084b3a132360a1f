"""Tensors to and from Flower records, and the bytes a message really carries."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict


def to_record(tensors: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Pack named tensors into an ArrayRecord (CPU, detached, order kept)."""
    return ArrayRecord(array_dict={k: Array(np.ascontiguousarray(
        v.detach().to("cpu").numpy())) for k, v in tensors.items()})


def from_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Unpack an ArrayRecord into named tensors (copies, safe to modify)."""
    return {k: torch.from_numpy(np.array(a.numpy(), copy=True))
            for k, a in record.items()}


def content_bytes(content: RecordDict) -> int:
    """Bytes of all records in a message body, as Flower serialises their payloads."""
    return sum(rec.count_bytes() for rec in content.values())


def message_bytes(message: Message) -> int:
    """Bytes a message carries (0 for an error reply, which has no content)."""
    return 0 if message.has_error() else content_bytes(message.content)
