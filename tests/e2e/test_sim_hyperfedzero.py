"""HyperFedZero end to end: `flwr run` (Ray simulation) and a loopback deployment.

In both, held-out clients never train: they compute their embedding from their own
unlabelled data when the run ends and report only metrics (zACC).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from common.flwr_cli import ROOT, flwr_run, run_config_arg
from common.partition import split_participants
from tests.conftest import small_config

pytestmark = pytest.mark.e2e

HFZ = {"method": "hyperfedzero", "hfz-chunk-size": 256}


def test_zero_shot_in_simulation(tmp_path, flwr_env):
    cfg = small_config(
        tmp_path, **HFZ, **{"run-name": "hfz", "num-rounds": 4, "eval-every": 2}
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


def test_zero_shot_on_a_loopback_deployment(tmp_path, flwr_env):
    """3 SuperNodes on 127.0.0.1 (2 participants, 1 held out), 2 rounds."""
    work = tmp_path / "loopback"
    cfg = {
        **HFZ,
        "dataset": "synthetic",
        "model": "mlp",
        "num-rounds": 2,
        "eval-every": 2,
        "local-steps": 5,
        "holdout": 0.34,
        "clients-per-round": 2,
        "min-clients": 2,
        "round-timeout": 300.0,
    }
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "deploy" / "run-loopback.sh"),
            "--nodes",
            "3",
            "--workdir",
            str(work),
            "--run-config",
            run_config_arg(cfg),
        ],
        env=flwr_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = work / "outputs" / "loopback"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_clients"] == 3 and summary["num_participants"] == 2
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["valid"] for r in rows] == [2, 2]
    assert all("embedding-spread" in r for r in rows)
    assert len(summary["embedding_store"]) == 2
    assert summary["nonparticipant_acc"] is not None
    assert summary["global_acc"] is not None
