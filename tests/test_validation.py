"""Bad client replies are rejected with a reason and never reach an update."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, MetricRecord

from common.records import to_record
from server.validation import InvalidReply, check_delta, check_metrics

SENT = to_record({"w": torch.zeros(3, 2), "b": torch.zeros(3)})


def delta(**override) -> ArrayRecord:
    arrays = {"w": np.ones((3, 2), np.float32), "b": np.ones(3, np.float32)}
    arrays.update(override)
    return ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})


def test_valid_delta_decodes():
    out = check_delta(delta(), SENT)
    assert torch.equal(out["w"], torch.ones(3, 2))


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"w": np.full((3, 2), np.nan, np.float32)}, "NaN or Inf"),
        ({"b": np.array([1, np.inf, 0], np.float32)}, "NaN or Inf"),
        ({"w": np.ones((2, 3), np.float32)}, "shape"),
        ({"w": np.ones((3, 2), np.float64)}, "dtype"),
        ({"extra": np.ones(1, np.float32)}, "keys differ"),
    ],
)
def test_malformed_deltas_rejected(bad, match):
    with pytest.raises(InvalidReply, match=match):
        check_delta(delta(**bad), SENT)


def test_norm_bound():
    big = {"w": np.full((3, 2), 100.0, np.float32)}
    with pytest.raises(InvalidReply, match="max-delta-norm"):
        check_delta(delta(**big), SENT, max_norm=10.0)
    check_delta(delta(**big), SENT)  # no bound by default


@pytest.mark.parametrize(
    "metrics",
    [
        {},
        {"num-examples": 0},
        {"num-examples": -3},
        {"num-examples": 2.5},
        {"num-examples": 4, "loss": "x"},
    ],
)
def test_bad_metrics_rejected(metrics):
    with pytest.raises(InvalidReply):
        check_metrics(
            MetricRecord(metrics)
            if all(isinstance(v, int | float) for v in metrics.values())
            else _raw(metrics)
        )


def _raw(values):
    class Raw(dict):
        pass

    return Raw(values)


def train_pair(extras: dict | None, metrics: dict | None = None):
    """A sent train message and a reply carrying ``extras`` (None: no record)."""
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    # replies read their run from the task identity Flower's runtime sets
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    sent = Message(
        RecordDict({"params": SENT, "config": ConfigRecord({})}),
        dst_node_id=1,
        message_type="train",
    )
    sent.metadata.__dict__["_message_id"] = "m1"
    content = {
        "delta": delta(),
        "metrics": MetricRecord(metrics or {"num-examples": 5}),
    }
    if extras is not None:
        content["extras"] = to_record(extras)
    return sent, Message(RecordDict(content), reply_to=sent)


def test_declared_extras_are_validated_like_deltas():
    from server.validation import ReplyExtra, check_train_reply

    declared = {"embedding": ReplyExtra((4,))}
    sent, reply = train_pair({"embedding": torch.full((4,), 0.25)})
    update = check_train_reply("c", reply, sent, extras=declared)
    assert torch.equal(update.extras["embedding"], torch.full((4,), 0.25))
    cases = [
        ({"embedding": torch.full((4,), float("nan"))}, "NaN or Inf"),
        ({"embedding": torch.zeros(5)}, "shape"),
        ({"embedding": torch.zeros(4), "smuggled": torch.zeros(1)}, "differ"),
        (None, "lacks the declared extras"),
    ]
    for extras, match in cases:
        sent, reply = train_pair(extras)
        with pytest.raises(InvalidReply, match=match):
            check_train_reply("c", reply, sent, extras=declared)
    sent, reply = train_pair({"embedding": torch.zeros(4)})
    with pytest.raises(InvalidReply, match="does not declare"):
        check_train_reply("c", reply, sent)  # a method that declares none
    sent, reply = train_pair(None)
    with pytest.raises(InvalidReply, match="declared metrics"):
        check_train_reply("c", reply, sent, metric_names=("embedding-spread",))
