"""End to end through `flwr run` (Ray simulation): pFedHN and FedAvg on small data.

Resuming through `flwr run` is tests/faults/test_sim_faults.py (a ServerApp killed
mid-run, resumed to the uninterrupted run's exact figures); `stop-after-round` and
resume are tested in process (tests/test_loop.py)."""

from __future__ import annotations

import json

import pytest

from common.flwr_cli import flwr_run
from tests.conftest import small_config

pytestmark = pytest.mark.e2e

SUMMARY_KEYS = {
    "method",
    "dataset",
    "num_clients",
    "num_participants",
    "rounds",
    "seed",
    "best_round",
    "participant_acc",
    "participant_acc_std",
    "nonparticipant_acc",
    "nonparticipant_acc_std",
    "global_acc",
    "bytes_down_per_round",
    "bytes_up_per_round",
    "client_trainable_params",
    "hypernet_params",
    "wall_s",
    "server_update_s",
}


def run_and_read(tmp_path, env, **overrides) -> dict:
    cfg = small_config(tmp_path, **overrides)
    proc = flwr_run(cfg, env, num_supernodes=cfg["num-clients"])
    out = tmp_path / "outputs" / cfg["run-name"]
    summary = out / "summary.json"
    assert summary.exists(), f"failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(summary.read_text()) | {"_dir": str(out)}


def test_pfedhn_and_fedavg_learn_in_simulation(tmp_path, flwr_env, colour_set):
    """On 3-channel 32×32 images (CIFAR-10's files), pFedHN with its CIFAR CNN."""
    pfedhn = run_and_read(
        tmp_path,
        flwr_env,
        method="pfedhn",
        model="cnn",
        **colour_set,
        **{"run-name": "pfedhn", "num-rounds": 12, "eval-every": 4, "server-lr": 0.1},
    )
    fedavg = run_and_read(  # the MLP: FedAvg's CNN is still at chance at 6 rounds
        tmp_path,
        flwr_env,
        method="fedavg",
        model="mlp",
        **colour_set,
        # lazy registration through Flower's simulation (issue 30): a client
        # registers in the round it is first drawn, the last round the rest
        **{"run-name": "fedavg", "num-rounds": 6, "eval-every": 3},
        registration="lazy",
    )
    for s in (pfedhn, fedavg):
        assert SUMMARY_KEYS <= set(s), SUMMARY_KEYS - set(s)
        assert s["participant_acc"] > 0.3, s  # 10 classes: chance is 0.1
        assert s["nonparticipant_acc"] is not None
        assert s["bytes_down_per_round"] > 0 and s["bytes_up_per_round"] > 0
    assert pfedhn["hypernet_params"] > 0 and pfedhn["global_acc"] is None
    assert fedavg["global_acc"] == fedavg["participant_acc"]
    assert fedavg["hypernet_params"] == 0
    # lazy: start-up registered one client; round 1 the ones it drew (a held-out
    # one drawn is registered and passed over); the last round every node still
    # pending. Which clients is not fixed: Flower's simulation gives its nodes
    # random ids.
    lazy = [
        json.loads(line)
        for line in open(f"{fedavg['_dir']}/metrics.jsonl", encoding="utf-8")
    ]
    assert lazy[0]["valid"] == 4 and 1 <= lazy[0]["registered"] < 9
    assert sum(r["registered"] for r in lazy) == 9
    assert fedavg["num_participants"] == fedavg["participant_eval_clients"] == 8
    rows = [
        json.loads(line)
        for line in open(f"{pfedhn['_dir']}/metrics.jsonl", encoding="utf-8")
    ]
    assert [r["round"] for r in rows] == list(range(1, 13))
    for name in (
        "config.json",
        "accuracy.png",
        "participants_vs_nonparticipants.png",
        "checkpoint/state.pt",
    ):
        assert (tmp_path / "outputs" / "pfedhn" / name).exists(), name
