"""Real deployment on loopback: a SuperLink and 2 SuperNodes as separate processes."""

from __future__ import annotations

import json
import subprocess

import pytest

from common.flwr_cli import ROOT, run_config_arg

pytestmark = pytest.mark.e2e


def test_loopback_deployment_completes_two_rounds(tmp_path, flwr_env):
    work = tmp_path / "loopback"
    cfg = {
        "dataset": "synthetic",
        "model": "mlp",
        "num-rounds": 2,
        "eval-every": 1,
        "local-steps": 5,
        "holdout": 0.0,
        "round-timeout": 120.0,
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
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((work / "outputs" / "loopback" / "summary.json").read_text())
    assert summary["num_clients"] == 2 and summary["rounds"] == 2
    rows = (work / "outputs" / "loopback" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["valid"] for r in rows] == [2, 2]
    # every process the script started is gone
    pattern = f"--superlink 127.0.0.1:{flwr_env['HYPERFLOWER_LINK_PORT']}"
    left = subprocess.run(
        ["pgrep", "-f", pattern], capture_output=True, text=True
    ).stdout.strip()
    assert not left, f"SuperNodes still running: {left}"
