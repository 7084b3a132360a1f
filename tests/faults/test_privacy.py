"""What crosses the wire: only what each method promises, and DP on deltas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Message

from server.direct_grid import run_in_process
from tests.conftest import small_config

# identity: who the client is, and which dataset it loaded (a hash and the scaling of
# the pooled set every client of a run holds: nothing of its own partition)
# data-shape: (channels, H, W) of the images, so a server without the data learns
# the model's input shape (no pixels, no labels)
IDENTITY = {"client-id", "partition-id", "data-fingerprint", "data-norm", "data-shape"}
ALLOWED_INFO = IDENTITY | {"num-train", "num-val", "num-test", "param-count", "classes"}


class Recorder:
    """A DirectGrid fault hook that only records (message, reply) pairs."""

    def __init__(self) -> None:
        self.seen: list[tuple[Message, Message]] = []

    def __call__(self, node: int, msg: Message, reply: Message) -> Message:
        self.seen.append((msg, reply))
        return reply


#: What a method needs beyond the small config (pFedDSH inverts BatchNorm statistics).
METHOD_OVERRIDES: dict[str, dict] = {
    "pfeddsh": {"model": "cnn-bn", "client-batches": 1, "eval-every": 1}
}


def test_registration_sends_only_what_the_method_asks_for(tmp_path):
    from server.strategies import STRATEGIES

    for method, cls in STRATEGIES.items():
        if method == "hyperflora":
            assert cls.registration_fields["nonparticipant"] == ("classes",)
        rec = Recorder()
        own = METHOD_OVERRIDES.get(method, {})
        run_in_process(
            small_config(
                tmp_path, method=method, **{"num-rounds": 1, "run-name": method, **own}
            ),
            fault_hook=rec,
        )
        roles = {
            True: set(cls.registration_fields["participant"]),
            False: set(cls.registration_fields["nonparticipant"]),
        }
        from common.partition import split_participants

        chosen, _ = split_participants(10, 0.2, 42)
        sent: dict[int, set] = {}
        for msg, reply in rec.seen:
            if msg.metadata.message_type == "query":
                info = reply.content.config_records["info"]
                sent.setdefault(int(info["partition-id"]), set()).update(info)
        assert len(sent) == 10
        for pid, keys in sent.items():
            assert keys - IDENTITY <= roles[pid in chosen], (method, pid, keys)


def test_with_nobody_held_out_registration_is_one_query_a_node(tmp_path):
    """Every client is a participant: one query asks for the participants' fields
    (a SuperNode starts a process a message, so the second one is not free)."""
    from server.strategies import STRATEGIES

    fields = STRATEGIES["pfedhn"].registration_fields
    assert fields["participant"] != fields["nonparticipant"]  # two steps otherwise
    rec = Recorder()
    cfg = {"num-rounds": 1, "run-name": "all", "holdout": 0.0}
    run_in_process(small_config(tmp_path, method="pfedhn", **cfg), fault_hook=rec)
    queries = [r for m, r in rec.seen if m.metadata.message_type == "query"]
    assert len(queries) == 10
    for reply in queries:
        keys = set(reply.content.config_records["info"])
        assert (
            set(fields["participant"]) <= keys <= IDENTITY | set(fields["participant"])
        )


@pytest.mark.parametrize("method", ["pfedhn", "fedavg", "local"])
def test_replies_carry_no_data_labels_or_extra_arrays(tmp_path, method):
    rec = Recorder()
    run_in_process(
        small_config(tmp_path, method=method, **{"num-rounds": 1}), fault_hook=rec
    )
    kinds = {m.metadata.message_type for m, _ in rec.seen}
    assert {"query", "train", "evaluate"} <= kinds
    for msg, reply in rec.seen:
        content = reply.content
        kind = msg.metadata.message_type
        if kind == "query":
            assert set(content.config_records["info"]) <= ALLOWED_INFO
            assert not content.array_records
        elif kind == "train":
            assert set(content.array_records) == {"delta"}
            sent = msg.content.array_records["params"]
            delta = content.array_records["delta"]
            assert set(delta) == set(sent), "only deltas of what was sent go back"
            for key, arr in delta.items():
                assert tuple(arr.shape) == tuple(sent[key].shape)
                assert np.issubdtype(np.dtype(arr.numpy().dtype), np.floating)
        else:
            assert not content.array_records, "evaluation sends back numbers only"
        for record in content.metric_records.values():
            assert all(isinstance(v, int | float) for v in record.values())


def test_client_side_clipping_and_noise(tmp_path):
    rec = Recorder()
    summary = run_in_process(
        small_config(tmp_path, **{"num-rounds": 2, "dp-clip": 0.5, "run-name": "clip"}),
        fault_hook=rec,
    )
    norms = []
    for msg, reply in rec.seen:
        if msg.metadata.message_type == "train" and not reply.has_error():
            delta = reply.content.array_records["delta"]
            norms.append(
                math.sqrt(
                    sum(
                        float((a.numpy().astype(float) ** 2).sum())
                        for a in delta.values()
                    )
                )
            )
            assert reply.content["metrics"]["delta-norm"] > 0.5  # norm before
    assert norms and max(norms) <= 0.5 + 1e-5
    assert summary["dp_clip"] == 0.5 and summary["dp_noise_multiplier"] == 0.0

    rec = Recorder()
    summary = run_in_process(
        small_config(
            tmp_path,
            **{"num-rounds": 1, "dp-clip": 0.5, "dp-noise": 1.0, "run-name": "noise"},
        ),
        fault_hook=rec,
    )
    noisy = [reply for msg, reply in rec.seen if msg.metadata.message_type == "train"]
    total = sum(
        float((a.numpy().astype(float) ** 2).sum())
        for r in noisy
        for a in r.content.array_records["delta"].values()
    )
    assert math.sqrt(total / len(noisy)) > 5 * 0.5  # noise dominates the clipped delta
    assert summary["dp_noise_multiplier"] == 1.0
