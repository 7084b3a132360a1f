"""Every method runs two rounds on a 3-channel 32×32 set (issue 28's "done when").

CIFAR-10-format files with random pixels (``bench.sample_sets``), 6 clients, a few
local steps; in process (``server.direct_grid.run_in_process``: the real server loop
and ClientApp handlers over a DirectGrid). pFedHN and FedAvg on the same data are in
``tests/test_image_datasets.py`` (with the ``cnn`` and ``lenet5`` targets).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.sample_sets import cifar_folder
from common.data import load_pooled
from tests.conftest import small_config

#: Each method's keys for a tiny run, by test id (the id is the method unless the
#: keys name one; the rest: tests.conftest.small_config).
METHODS: dict[str, dict[str, Any]] = {
    "local": {"model": "lenet5"},
    "fedprox": {"model": "lenet5"},
    "hyperfedzero": {"model": "mlp"},
    "hyperflora": {  # the authors' LeNet
        "model": "lenet5-hf",
        "pretrain-rounds": 1,
        "pair-exchanges": 1,
        "finetune-steps": 2,
        "novel-rounds": 1,
    },
    "hyperflora-vit": {  # the paper's ViT and its adapters (attention and head)
        "method": "hyperflora",
        "model": "vit-tiny-p4",
        "lora-targets": "blocks.*.attn.*,head",
        "pretrain-rounds": 1,
        "pair-exchanges": 1,
        "local-steps": 1,
        "finetune-steps": 0,
        "novel-rounds": 1,
    },
    "mh-pfedhn": {
        "mh-archs": "bncnn,lenet5",
        "mh-unseen-archs": "mlp-s",
        "mh-novel-rounds": 1,
    },
    "mh-pfedhngd": {
        "mh-archs": "bncnn,lenet5",
        "mh-unseen-archs": "",
        "mh-novel-rounds": 1,
    },
    "fedproto": {  # two architectures of different representation widths
        "mh-archs": "lenet5,bncnn",
        "mh-unseen-archs": "",
        "fedproto-novel-rounds": 1,
    },
    "pfeddsh": {
        "model": "cnn-bn",
        "client-batches": 2,
        "embed-dim": 3,
        "di-steps": 2,
        "di-images": 4,
        "replay-steps": 1,
        "pa-reference": False,
    },
}


#: Run on the same CIFAR-format data in tests/test_image_datasets.py.
ELSEWHERE = {"pfedhn", "fedavg"}


def test_every_registered_method_is_run_here_or_beside_it():
    from common.config import settings
    from common.settings import METHOD_SPECS

    settings()  # imports every built-in method
    here = {keys.get("method", case) for case, keys in METHODS.items()}
    assert set(METHOD_SPECS) <= here | ELSEWHERE


@pytest.fixture(autouse=True)
def _fresh_loads():
    load_pooled.cache_clear()
    yield
    load_pooled.cache_clear()


@pytest.mark.parametrize("case", list(METHODS))
def test_two_rounds_of_every_method_on_32x32_colour_images(
    tmp_path: Path, case: str
) -> None:
    from server.direct_grid import run_in_process

    root, _, _ = cifar_folder(tmp_path / "cifar", per_batch=40)
    config = small_config(
        tmp_path,
        dataset="cifar10",
        **{
            "method": case,
            "data-dir": str(root),
            "num-clients": 6,
            "holdout": 0.34,
            "clients-per-round": 2,
            "num-rounds": 2,
            "eval-every": 1,
            "local-steps": 2,
            "batch-size": 8,
            "classes-per-client": 3,
            "novel-rounds": 1,
            **METHODS[case],
        },
    )
    method = config["method"]
    summary = run_in_process(config)
    assert summary is not None and summary["method"] == method
    assert 0.0 <= summary["participant_acc"] <= 1.0
    data = json.loads((tmp_path / "outputs" / "test" / "config.json").read_text())
    assert data["run"]["data"]["image-shape"] == [3, 32, 32]
