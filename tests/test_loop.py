"""The server loop with the real client handlers, in process (no Ray, no gRPC)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict

from server.direct_grid import build_runner, run_in_process
from server.loop import RoundFailedError
from tests.conftest import small_config


def test_pfedhn_learns_in_process(tmp_path):
    summary = run_in_process(
        small_config(tmp_path, **{"num-rounds": 12, "eval-every": 4, "server-lr": 0.1})
    )
    assert summary["participant_acc"] > 0.3
    assert summary["nonparticipant_acc"] > 0.1
    assert summary["nonparticipant_protocol"].startswith("embedding fitted")


def test_held_out_without_a_fit_are_named_zero_shot(tmp_path):
    """novel-rounds = 0: held-out clients get the mean embedding's model, and the
    summary says so instead of the fitted protocol."""
    summary = run_in_process(
        small_config(tmp_path, **{"num-rounds": 2, "novel-rounds": 0})
    )
    assert "mean embedding" in summary["nonparticipant_protocol"]
    assert summary["nonparticipant_acc"] is not None


def poison(kind: str):
    """A fault hook that corrupts the replies of nodes 1000 and 1001 in training."""

    def hook(node: int, msg: Message, reply: Message) -> Message | None:
        if msg.metadata.message_type != "train" or node not in (1000, 1001, 1002):
            return reply
        if kind == "missing":
            return None
        delta = reply.content["delta"]
        arrays = {k: v.numpy().copy() for k, v in delta.items()}
        first = next(iter(arrays))
        if kind == "nan":
            arrays[first][...] = np.nan
        elif kind == "shape":
            arrays[first] = arrays[first].reshape(-1)
        content = RecordDict(
            {
                "delta": ArrayRecord(
                    array_dict={k: Array(v) for k, v in arrays.items()}
                ),
                "metrics": reply.content["metrics"],
            }
        )
        return Message(content, reply_to=msg)

    return hook


def test_bad_replies_are_counted_and_skipped(tmp_path):
    for kind in ("nan", "shape", "missing"):
        cfg = small_config(
            tmp_path,
            **{
                "run-name": kind,
                "clients-per-round": 8,
                "num-rounds": 2,
                "round-timeout": 2.0,
            },
        )
        summary = run_in_process(cfg, fault_hook=poison(kind))
        rows = [
            json.loads(x)
            for x in open(
                tmp_path / "outputs" / kind / "metrics.jsonl", encoding="utf-8"
            )
        ]
        key = "missing" if kind == "missing" else "invalid"
        assert sum(r["faults"][key] for r in rows) >= 2, rows
        assert all(r["valid"] < r["sampled"] for r in rows)
        assert summary["faults_injected"] == 0  # these came from the hook, not a plan
        assert summary["faults"][key] >= 2


def test_hypernet_never_moves_on_invalid_deltas(tmp_path):
    def all_nan(node: int, msg: Message, reply: Message) -> Message | None:
        return poison("nan")(1000, msg, reply)

    runner = build_runner(
        small_config(tmp_path, **{"round-retries": 1}), fault_hook=all_nan
    )
    before = {k: v.clone() for k, v in runner.strategy.hnet.state_dict().items()}
    store = runner.strategy.store.weight.detach().clone()
    with pytest.raises(RoundFailedError, match="min-clients"):
        runner.run()
    for key, value in runner.strategy.hnet.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(runner.strategy.store.weight.detach(), store)
    assert runner.faults["retried-round"] == 2
    assert runner.faults["invalid"] == 2 * 4


@pytest.mark.parametrize("every", [1, 4])
def test_resume_matches_uninterrupted_run(tmp_path, monkeypatch, every):
    """Stopping and resuming changes nothing, also when checkpoints are every k
    rounds (the stop and the last round always save)."""
    from server.outputs import RunOutputs

    saved: list[int] = []
    real_save = RunOutputs.save_checkpoint

    def spy(self, state, config):
        saved.append(state["round"])
        return real_save(self, state, config)

    monkeypatch.setattr(RunOutputs, "save_checkpoint", spy)
    base = {"num-rounds": 6, "eval-every": 2, "checkpoint-every": every}
    whole = run_in_process(small_config(tmp_path, **base, **{"run-name": "whole"}))
    stopped = run_in_process(
        small_config(tmp_path, **base, **{"run-name": "parts", "stop-after-round": 3})
    )
    assert stopped is None
    resumed = run_in_process(
        small_config(tmp_path, **base, **{"run-name": "parts", "resume": True})
    )
    for key in (
        "participant_acc",
        "nonparticipant_acc",
        "best_round",
        "bytes_down_per_round",
    ):
        assert resumed[key] == whole[key], key
    a = torch.load(tmp_path / "outputs/whole/checkpoint/state.pt", weights_only=False)
    b = torch.load(tmp_path / "outputs/parts/checkpoint/state.pt", weights_only=False)
    for key, value in a["strategy"]["hnet"].items():
        assert torch.equal(value, b["strategy"]["hnet"][key]), key
    # whole run, stopped run (3 always saves), resumed run
    expected = {1: [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6], 4: [4, 6, 3, 4, 6]}[every]
    assert saved == expected


def test_original_one_client_per_round_variant(tmp_path):
    summary = run_in_process(
        small_config(
            tmp_path, **{"clients-per-round": 1, "num-rounds": 3, "eval-every": 3}
        )
    )
    rows = [
        json.loads(x)
        for x in open(tmp_path / "outputs" / "test" / "metrics.jsonl", encoding="utf-8")
    ]
    assert [r["sampled"] for r in rows] == [1, 1, 1]
    assert summary["participant_acc"] is not None


def test_evaluation_in_client_batches_matches_one_batch(tmp_path, monkeypatch):
    """Evaluating a few clients per exchange bounds what the server holds and
    changes no number: per-client evaluation does not depend on the batch."""
    import server.loop as loop

    sizes: list[tuple[str, int]] = []
    real_exchange = loop.exchange

    def spy(grid, outbox, timeout):
        sizes.append((outbox[0].message.metadata.message_type, len(outbox)))
        return real_exchange(grid, outbox, timeout)

    base = {"num-clients": 12, "holdout": 0.25, "num-rounds": 2, "eval-every": 2}
    whole = run_in_process(small_config(tmp_path, **base, **{"run-name": "whole"}))
    monkeypatch.setattr(loop, "exchange", spy)
    batched = run_in_process(
        small_config(
            tmp_path, **base, **{"run-name": "batched", "eval-clients-per-batch": 2}
        )
    )
    evaluate = [n for kind, n in sizes if kind == "evaluate"]
    assert evaluate and max(evaluate) == 2
    assert sum(evaluate) == 9 + 3  # 9 participants at round 2, then 3 held-out
    for key in ("participant_acc", "nonparticipant_acc", "participant_val_acc"):
        assert batched[key] == whole[key]


@pytest.mark.parametrize("method", ["fedavg", "local"])
def test_reference_held_out_clients_train_as_long_as_pfedhns_fit(tmp_path, method):
    """heldout-train-rounds: FedAvg's held-out clients fine-tune the global model,
    local-only's train from the initial model, for that many exchanges; without it
    FedAvg's get the global model as it is and local-only's nothing."""
    base = {"method": method, "num-rounds": 4, "eval-every": 2, "inner-lr": 0.05}
    plain = run_in_process(small_config(tmp_path / "plain", **base))
    trained = run_in_process(
        small_config(tmp_path / "trained", **base, **{"heldout-train-rounds": 3})
    )
    assert trained["participant_acc"] == plain["participant_acc"]
    assert "3 exchanges" in trained["nonparticipant_protocol"]
    assert trained["nonparticipant_bytes"] > plain["nonparticipant_bytes"]
    if method == "local":
        assert plain["nonparticipant_acc"] is None
        assert trained["nonparticipant_acc"] > 0.3
    else:
        assert trained["nonparticipant_acc"] != plain["nonparticipant_acc"]
