"""The hard split (conf/hard-fmnist.toml) and its page (bench/hard_split.py)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch

from bench.hard_split import headroom, parse_sets, render, time_to_target, to_target
from common.config import parse_run_config
from common.data import DEBIAN_FMNIST_DIR
from common.partition import load_client_data
from server.direct_grid import run_in_process
from tests.conftest import small_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    not DEBIAN_FMNIST_DIR.exists(),
    reason="needs Debian's dataset-fashion-mnist (deploy/setup.sh installs it)",
)
def test_the_preset_gives_few_images_over_many_classes():
    cfg = parse_run_config(tomllib.loads((ROOT / "conf/hard-fmnist.toml").read_text()))
    sizes, classes = set(), []
    for p in range(10):
        data = load_client_data(cfg, p)
        sizes.add((len(data.y_train), len(data.y_val), len(data.y_test)))
        classes.append(int((torch.bincount(data.y_train, minlength=10) > 0).sum()))
    assert sizes == {(60, 20, 20)}
    assert sum(classes) / len(classes) >= 4  # a mix of many classes, not 2


def fake_runs() -> list[dict]:
    runs = []
    for seed, base in zip(
        (42, 43, 44, 45, 46), (0.60, 0.66, 0.58, 0.63, 0.70), strict=True
    ):
        for row, add in (("local", 0.0), ("fedavg", 0.08), ("pfedhn", 0.09)):
            runs.append(
                {
                    "row": row,
                    "seed": seed,
                    "ok": True,
                    "participant_val_acc": base + add,
                    "participant_acc": base + add - 0.01,
                    "nonparticipant_acc": None if row == "local" else base,
                    "client_updates": 3000,
                    "val_curve": [
                        (r, base + add * min(r, 90) / 90) for r in range(30, 301, 30)
                    ],
                    **(
                        {
                            "heldout_val_acc": base,
                            "heldout_val_acc_oracle_prior": base + 0.1,
                        }
                        if row == "fedavg"
                        else {}
                    ),
                }
            )
    # one seed where pFedHN is below FedAvg: 4 of 5 still agree
    runs[-1]["participant_val_acc"] -= 0.02
    return runs


def test_page_reads_claims_per_seed_and_the_headroom():
    page = render({"command": "x", "settings": {}, "runs": fake_runs(), "notes": []})
    assert (
        "FedAvg − local-only, participants (clients need each other) (validation)"
        in page
    )
    line = next(
        x
        for x in page.splitlines()
        if x.startswith("| FedAvg − local-only") and "(validation)" in x
    )
    assert "+8.00, +8.00, +8.00, +8.00, +8.00" in line and "**holds**" in line
    line = next(
        x
        for x in page.splitlines()
        if x.startswith("| pFedHN − FedAvg") and "(validation)" in x
    )
    assert "4 of 5" in line and "**holds**" in line
    assert "42: 60.00 → 70.00" in page
    assert "10 of 10" not in page and "flattened" in page


def test_held_out_claim_compares_zacc_with_fedavgs_global_model():
    runs = fake_runs()
    for run in [r for r in runs if r["row"] == "fedavg"]:
        run["nonparticipant_val_acc"] = run["nonparticipant_acc"]
        gain = 0.02 if run["seed"] != 46 else -0.01  # one seed below: 4 of 5
        runs.append(
            {
                **run,
                "row": "hyperfedzero",
                "nonparticipant_acc": run["nonparticipant_acc"] + gain,
                "nonparticipant_val_acc": run["nonparticipant_acc"] + gain,
            }
        )
    page = render({"command": "x", "settings": {}, "runs": runs, "notes": []})
    rows = [x for x in page.splitlines() if x.startswith("| HyperFedZero zACC")]
    assert len(rows) == 2  # validation and test
    assert "+2.00, +2.00, +2.00, +2.00, -1.00" in rows[0]
    assert "4 of 5" in rows[0] and "**holds**" in rows[0]


def test_bad_set_is_refused_by_name():
    with pytest.raises(SystemExit, match="ROW:key=value"):
        parse_sets(["nope:inner-lr=0.1"])
    assert parse_sets(["fedavg:inner-lr=0.05"]) == {"fedavg": {"inner-lr": 0.05}}


def test_headroom_reads_a_fedavg_run_and_refuses_another(tmp_path):
    tiny = {"num-rounds": 2, "eval-every": 1, "local-steps": 5}
    cfg = small_config(tmp_path, method="fedavg", **tiny, **{"run-name": "fa"})
    run_in_process(cfg)
    got = headroom(tmp_path / "outputs" / "fa")
    assert set(got) == {"heldout_val_acc", "heldout_val_acc_oracle_prior"}
    assert all(0.0 <= v <= 1.0 for v in got.values())
    other = tmp_path / "hn"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"method": "pfedhn"}))
    with pytest.raises(ValueError, match="FedAvg run, not pfedhn"):
        headroom(other)


def test_time_to_accuracy_is_the_first_round_at_the_target():
    """Time to accuracy reads the validation curve: the first evaluated round at or
    above the target, seconds pro-rated; a row that never gets there says so."""
    fast = {
        "val_curve": [(60, 0.80), (120, 0.86), (180, 0.84)],
        "rounds": 600,
        "wall_s": 600.0,
    }
    slow = {"val_curve": [(60, 0.70), (120, 0.84)], "rounds": 600, "wall_s": 300.0}
    assert to_target(fast["val_curve"], 600, 600.0) == {"round": 120, "seconds": 120.0}
    assert to_target(slow["val_curve"], 600, 300.0) is None
    assert time_to_target([fast, slow]) == "round 120, 120 s (1 of 2)"
    assert time_to_target([slow]) == "not reached (0 of 1)"
