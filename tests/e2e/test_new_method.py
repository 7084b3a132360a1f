"""A method added without editing any shared module runs end to end in simulation.

The method (settings, strategy, client handler with a declared reply extra) lives in
tests/plugins/toy_method.py and is loaded by the ServerApp and every ClientApp
through the ``plugins`` run-config key, through the real `flwr run` (Ray).
"""

from __future__ import annotations

import json

import pytest

from common.config import ConfigError, parse_run_config
from common.flwr_cli import flwr_run
from tests.conftest import small_config

pytestmark = pytest.mark.e2e

PLUGIN = "tests.plugins.toy_method"


@pytest.fixture(autouse=True, scope="module")
def _forget_toy_afterwards():
    """The plugin registers a method in this process; later tests (the generated
    pyproject block, the README key table) must see the built-in methods only."""
    yield
    from common.settings import METHOD_SPECS
    from server.strategies import STRATEGIES

    METHOD_SPECS.pop("toy", None)
    STRATEGIES.pop("toy", None)


def test_plugin_settings_are_validated_like_built_in_ones():
    cfg = parse_run_config(
        {"plugins": PLUGIN, "method": "toy", "plugin-config": "toy-step=0.5"}
    )
    assert cfg.toy_step == 0.5 and cfg.get("toy-step") == 0.5
    with pytest.raises(ConfigError, match="'toy-step': must be > 0"):
        parse_run_config({"plugins": PLUGIN, "method": "toy", "toy-step": 0})
    with pytest.raises(ConfigError, match="'plugins': cannot import"):
        parse_run_config({"plugins": "tests.plugins.absent"})


def test_throwaway_method_runs_end_to_end_in_simulation(tmp_path, flwr_env):
    cfg = small_config(
        tmp_path,
        **{
            "plugins": PLUGIN,
            "method": "toy",
            "plugin-config": "toy-step=1.0",
            "run-name": "toy",
            "num-rounds": 6,
            "eval-every": 3,
        },
    )
    proc = flwr_run(cfg, flwr_env, num_supernodes=cfg["num-clients"])
    out = tmp_path / "outputs" / "toy"
    assert (out / "summary.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "toy"
    assert summary["participant_acc"] > 0.3, summary  # 10 classes: chance is 0.1
    assert summary["nonparticipant_protocol"] == "the global model"
    # every participant's declared extra (its label histogram) reached the strategy
    histograms = summary["toy_histograms"]
    assert len(histograms) == summary["num_participants"]
    assert all(len(h) == 10 and sum(h) > 0 for h in histograms.values())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert rows[-1]["toy-histograms"] == len(histograms)
    assert json.loads((out / "config.json").read_text())["toy-step"] == 1.0
