"""Real deployment on loopback: deploy/run-loopback.sh starts a SuperLink and 2
SuperNodes as separate processes and runs HyperFedZero on them (1 participant, 1
held out that never trains: it computes its embedding from its own unlabelled data
when the run ends and reports only metrics). Two nodes are the fewest that show
both kinds; each extra node costs a ClientApp process start per message."""

from __future__ import annotations

import json
import subprocess

import pytest

from common.flwr_cli import ROOT, run_config_arg

pytestmark = pytest.mark.e2e


def test_loopback_deployment_completes_zero_shot_rounds(tmp_path, flwr_env):
    work = tmp_path / "loopback"
    cfg = {
        "method": "hyperfedzero",
        "hfz-chunk-size": 256,
        "dataset": "synthetic",
        "model": "mlp",
        "num-rounds": 1,  # one round proves the path; each extra costs ClientApp starts
        "eval-every": 1,
        "local-steps": 5,
        "holdout": 0.5,
        "clients-per-round": 1,
        "min-clients": 1,
        "round-timeout": 300.0,
    }
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "deploy" / "run-loopback.sh"),
            "--nodes",
            "2",
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
    assert summary["num_clients"] == 2 and summary["num_participants"] == 1
    assert summary["rounds"] == 1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["valid"] for r in rows] == [1]
    assert all("embedding-spread" in r for r in rows)
    assert len(summary["embedding_store"]) == 1  # the held-out node never trained
    assert summary["nonparticipant_acc"] is not None
    assert summary["global_acc"] is not None
    # every process the script started is gone
    pattern = f"--superlink 127.0.0.1:{flwr_env['HYPERFLOWER_LINK_PORT']}"
    left = subprocess.run(
        ["pgrep", "-f", pattern], capture_output=True, text=True
    ).stdout.strip()
    assert not left, f"SuperNodes still running: {left}"
