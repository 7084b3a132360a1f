"""Evaluation rounds on a seeded sample of participants; the final evaluation on all."""

from __future__ import annotations

import json

import pytest
from flwr.app import Message, MetricRecord, RecordDict

from server.direct_grid import run_in_process
from server.loop import evaluation_sample
from tests.conftest import small_config

POOL = [f"c{i}" for i in range(50)]


def test_sample_is_seeded_per_round_and_bounded():
    first = evaluation_sample(POOL, 10, seed=7, rnd=3)
    assert first == evaluation_sample(POOL, 10, seed=7, rnd=3)
    assert first != evaluation_sample(POOL, 10, seed=7, rnd=4)
    assert first != evaluation_sample(POOL, 10, seed=8, rnd=3)
    assert len(first) == len(set(first)) == 10
    assert set(first) <= set(POOL)
    assert first == sorted(first, key=POOL.index)  # in pool order


@pytest.mark.parametrize("size", [0, 50, 51, 1000])
def test_sample_of_a_small_pool_is_the_pool(size):
    assert evaluation_sample(POOL, size, seed=7, rnd=1) == POOL


def rows_of(tmp_path, name: str) -> list[dict]:
    path = tmp_path / "outputs" / name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rounds_before_the_last_evaluate_a_sample_and_the_last_all(tmp_path):
    """8 participants, eval-sample 3: rounds 1 and 2 evaluate 3 of them (each its
    own seeded draw), round 3 (the last) all 8; the summary names both sizes."""
    summary = run_in_process(
        small_config(tmp_path, **{"num-rounds": 3, "eval-every": 1, "eval-sample": 3})
    )
    assert summary is not None
    rows = rows_of(tmp_path, "test")
    assert [(r["eval-clients"], r["eval-pool"]) for r in rows] == [
        (3, 8),
        (3, 8),
        (8, 8),
    ]
    assert summary["eval_sample"] == 3
    assert summary["participant_eval_clients"] == 8


def test_a_round_chosen_on_a_sample_is_evaluated_on_every_participant(tmp_path):
    """When the best round was evaluated on a sample, the summary's participant
    accuracies come from every participant evaluating that round's state.

    The last round's validation replies are made worse, so an earlier (sampled)
    round is chosen."""
    final: dict[int, float] = {}

    def worse_last_round(node: int, msg: Message, reply: Message) -> Message | None:
        config = msg.content["config"]
        if msg.metadata.message_type != "evaluate" or reply.has_error():
            return reply
        metrics = dict(reply.content["metrics"])
        if config["phase"] == "eval" and config["round"] == 3:
            metrics["val-acc"] = -1.0
            return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
        if config["phase"] == "final-eval":
            final[node] = float(metrics["test-acc"])
        return reply

    summary = run_in_process(
        small_config(tmp_path, **{"num-rounds": 3, "eval-every": 1, "eval-sample": 3}),
        fault_hook=worse_last_round,
    )
    assert summary is not None
    assert summary["best_round"] in (1, 2)
    assert summary["best_round_eval_clients"] == 3
    assert len(final) == summary["participant_eval_clients"] == 8
    assert summary["participant_acc"] == pytest.approx(sum(final.values()) / 8)
    assert summary["final_eval_bytes"] > 0


def test_a_federation_within_the_sample_evaluates_as_before(tmp_path):
    """eval-sample at or above the participants changes nothing: every evaluation
    round evaluates all of them, and no extra final evaluation is sent."""
    base = {"num-rounds": 2, "eval-every": 1}
    all_of_them = run_in_process(
        small_config(tmp_path, **base, **{"run-name": "all", "eval-sample": 0})
    )
    default = run_in_process(small_config(tmp_path, **base, **{"run-name": "dflt"}))
    assert all_of_them is not None and default is not None
    for key in ("participant_acc", "participant_val_acc", "best_round"):
        assert default[key] == all_of_them[key], key
    assert default["final_eval_bytes"] == 0
    assert [r["eval-clients"] for r in rows_of(tmp_path, "dflt")] == [8, 8]
