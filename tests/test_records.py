"""Records: tensors survive the round trip; bytes are counted from what is sent."""

from __future__ import annotations

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from common.records import content_bytes, from_record, message_bytes, to_record


def test_round_trip_keeps_names_shapes_values():
    tensors = {"conv.weight": torch.randn(6, 1, 5, 5), "fc.bias": torch.randn(10)}
    back = from_record(to_record(tensors))
    assert list(back) == list(tensors)
    for k in tensors:
        assert torch.equal(back[k], tensors[k])
    back["fc.bias"] += 1  # decoded tensors are copies
    assert not torch.equal(back["fc.bias"], tensors["fc.bias"])


def test_byte_count_grows_with_payload():
    small = to_record({"w": torch.zeros(10)})
    large = to_record({"w": torch.zeros(10_000)})
    assert large.count_bytes() - small.count_bytes() == 4 * (10_000 - 10)
    content = RecordDict({"params": large, "config": ConfigRecord({"round": 1})})
    expected = large.count_bytes() + content["config"].count_bytes()
    assert content_bytes(content) == expected
    TaskIdentity.run_id, TaskIdentity.node_id = 1, 0  # as Flower's runtime sets it
    msg = Message(content, dst_node_id=5, message_type="train")
    assert message_bytes(msg) == content_bytes(content)
