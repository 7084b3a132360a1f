"""HyperFedZero end to end through `flwr run` (Ray simulation).

Its loopback deployment is tests/e2e/test_loopback.py (deploy/run-loopback.sh).

In both, held-out clients never train: they compute their embedding from their own
unlabelled data when the run ends and report only metrics (zACC).
"""

from __future__ import annotations

import json

import pytest

from common.flwr_cli import flwr_run
from common.partition import split_participants
from tests.conftest import small_config

pytestmark = pytest.mark.e2e

HFZ = {"method": "hyperfedzero", "hfz-chunk-size": 256}


def test_zero_shot_in_simulation(tmp_path, flwr_env, colour_set):
    cfg = small_config(
        tmp_path,
        **HFZ,
        **colour_set,
        **{"run-name": "hfz", "num-rounds": 4, "eval-every": 2},
    )
    proc = flwr_run(cfg, flwr_env, num_supernodes=cfg["num-clients"])
    out = tmp_path / "outputs" / "hfz"
    assert (out / "summary.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    participants, held_out = split_participants(10, 0.2, 42)
    assert len(held_out) == 2
    # zACC on clients that never trained: no embedding of theirs ever reached the
    # store (every train reply carries one), and they were evaluated
    assert not set(summary["embedding_store"]) & {str(p) for p in held_out}
    assert set(summary["embedding_store"]) <= {str(p) for p in participants}
    assert summary["nonparticipant_acc"] is not None
    assert summary["nonparticipant_acc"] > 0.3  # 10 classes: chance is 0.1
    assert summary["participant_acc"] > 0.3 and summary["global_acc"] > 0.3
    assert summary["hypernet_params"] > 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert all(r["embedding-spread"] >= 0 for r in rows)
    assert (out / "embedding_map.png").exists()
