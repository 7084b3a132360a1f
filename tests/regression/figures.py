"""Same seed, same numbers: the figures a refactor must not change.

``python -m tests.regression.figures OUT.json`` runs the digits quick job and a
5-round Fashion-MNIST job in process for pFedHN, HyperFLoRA, FedAvg and local and
writes their headline accuracies and losses; ``tests/test_regression.py`` re-runs
them and compares with the committed ``expected.json`` bit for bit (same machine
kind, same torch build: CPU float32 kernels are deterministic for a fixed seed).
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("pfedhn", "hyperflora", "fedavg", "local")
#: Per-job overrides of the presets; HyperFLoRA needs its pre-training phase short.
JOBS: dict[str, dict[str, Any]] = {
    "digits": {"preset": "conf/digits-quick.toml", "num-rounds": 40},
    "fmnist-5": {
        "preset": "conf/quickstart.toml",
        "num-rounds": 5,
        "eval-every": 5,
        "novel-rounds": 2,
    },
}
HYPERFLORA = {"pretrain-rounds": 3, "finetune-steps": 10}
SUMMARY_KEYS = (
    "best_round",
    "participant_val_acc",
    "participant_acc",
    "participant_acc_std",
    "nonparticipant_acc",
    "global_acc",
)
ROW_KEYS = ("train-loss", "train-acc", "participant-test-loss", "participant-test-acc")


def job_config(job: str, method: str, out: Path) -> dict[str, Any]:
    """The run config of one (job, method) pair."""
    spec = dict(JOBS[job])
    with open(ROOT / spec.pop("preset"), "rb") as fh:
        config = tomllib.load(fh)
    config.update(spec)
    config.update(
        {
            "method": method,
            "run-name": f"{job}-{method}",
            "output-dir": str(out),
            "checkpoint-every": 1000,
        }
    )
    if method == "hyperflora":
        config.update(HYPERFLORA)
    return config


def figures(
    out: Path, jobs: tuple[str, ...] = tuple(JOBS), methods: tuple[str, ...] = METHODS
) -> dict[str, Any]:
    """Run every (job, method) in process; their headline numbers and last row."""
    from server.direct_grid import run_in_process

    result: dict[str, Any] = {}
    for job in jobs:
        for method in methods:
            config = job_config(job, method, out)
            summary = run_in_process(config)
            assert summary is not None
            metrics = out / config["run-name"] / "metrics.jsonl"
            last = json.loads(metrics.read_text().splitlines()[-1])
            result[f"{job}/{method}"] = {
                **{k: summary.get(k) for k in SUMMARY_KEYS},
                **{f"last-{k}": last.get(k) for k in ROW_KEYS},
            }
    return result


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        got = figures(Path(tmp))
    Path(sys.argv[1]).write_text(json.dumps(got, indent=2) + "\n")
    print(json.dumps(got, indent=2))
