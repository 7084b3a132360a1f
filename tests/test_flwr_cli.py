"""Presets and overrides merge into one run config; values keep their TOML types."""

from __future__ import annotations

from common.config import parse_run_config
from common.flwr_cli import ROOT, merge_presets, parse_overrides, run_config_arg


def test_overrides_win_over_presets_and_keep_types():
    merged = merge_presets(
        [ROOT / "conf" / "quickstart.toml"],
        parse_overrides(
            [
                "num-rounds=7",
                "method='fedavg'",
                "resume=true",
                "holdout=0.1",
                "run-name=bare-word",
            ]
        ),
    )
    cfg = parse_run_config(merged)
    assert (cfg.num_rounds, cfg.method, cfg.resume, cfg.holdout) == (
        7,
        "fedavg",
        True,
        0.1,
    )
    assert cfg.run_name == "bare-word" and cfg.model == "lenet5"


def test_run_config_arg_round_trips_through_toml():
    config = {"a": 1, "b": 0.5, "c": "x y", "d": False}
    pairs = run_config_arg(config).replace('"x y"', '"x_y"').split()
    back = parse_overrides(pairs)
    assert back == {"a": 1, "b": 0.5, "c": "x_y", "d": False}


def test_every_preset_is_a_valid_config():
    for preset in sorted((ROOT / "conf").glob("*.toml")):
        parse_run_config(merge_presets([preset], {}))
