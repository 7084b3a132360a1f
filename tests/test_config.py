"""Run-config validation: bad input fails before anything starts, naming the key."""

from __future__ import annotations

import pytest

from common.config import ConfigError, defaults, parse_run_config, pyproject_block
from common.data import DatasetNotFoundError, load_fashion_mnist


def test_defaults_parse_and_match_pyproject():
    import tomllib
    from pathlib import Path

    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    pyproject = tomllib.loads(text)
    assert pyproject["tool"]["flwr"]["app"]["config"] == defaults()
    assert pyproject_block() in text, "regenerate: python -m common.config pyproject"
    cfg = parse_run_config({})
    assert cfg.method == "pfedhn" and cfg.resolved_embed_dim == 1 + 50 // 4


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("method", "fedsgd", ["method", "pfedhn", "fedavg"]),
        ("num-rounds", -1, ["num-rounds", ">= 1"]),
        ("holdout", 1.0, ["holdout", "[0, 1)"]),
        ("holdout", -0.1, ["holdout"]),
        ("dataset", "cifar-1000", ["dataset", "fashion-mnist"]),
        ("partitioner", "iid", ["partitioner", "dirichlet"]),
        ("num-clients", "many", ["num-clients", "integer"]),
        ("resume", "maybe", ["resume", "true or false"]),
        ("classes-per-client", 11, ["classes-per-client", "10"]),
        ("min-clients", 99, ["min-clients"]),
    ],
)
def test_invalid_values_name_key_and_allowed(key, value, words):
    with pytest.raises(ConfigError) as err:
        parse_run_config({key: value})
    assert err.value.key == key
    for word in words:
        assert word in str(err.value)


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'num-rounds'"):
        parse_run_config({"num-round": 3})


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr("common.data.DEBIAN_FMNIST_DIR", tmp_path / "absent")
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion"):
        load_fashion_mnist(str(tmp_path), download=False)
    with pytest.raises(DatasetNotFoundError, match="not a readable folder"):
        load_fashion_mnist(str(tmp_path / "nope"), download=False)


def test_docs_key_table_is_generated_from_the_settings():
    from pathlib import Path

    from common.config import readme_table

    text = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    block = text.split("<!-- keys:begin")[1].split("<!-- keys:end -->")[0]
    assert block.split("-->\n", 1)[1].strip() == readme_table().strip(), (
        "regenerate docs/config.md's key table: python -m common.config"
    )


def test_every_method_declares_its_settings_once_and_has_a_strategy():
    from common.settings import METHOD_SPECS
    from server.strategies import STRATEGIES

    assert {"pfedhn", "fedavg", "local", "hyperflora"} <= set(METHOD_SPECS)
    for name, spec in METHOD_SPECS.items():
        assert spec.nonparticipant_protocol, name
        if not name.startswith("toy"):
            assert name in STRATEGIES, name
