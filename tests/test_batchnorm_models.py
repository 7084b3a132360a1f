"""BatchNorm targets with the methods that send whole models (pFedHN, FedAvg,
local-only): running statistics never travel, the client computes them from its own
training rows before it evaluates (common.models.loading)."""

from __future__ import annotations

import pytest
import torch

from bench.sample_sets import cifar_folder
from common.data import load_pooled
from common.models import build_model
from common.models.loading import calibrate_batchnorm, load_parameters
from server.direct_grid import run_in_process
from tests.conftest import small_config


def parameters_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_parameters()}


def test_only_batchnorm_statistics_may_be_missing():
    model = build_model("cnn-bn", 10)
    params = parameters_of(model)
    assert load_parameters(model, params) is True  # BN buffers absent
    assert (
        load_parameters(build_model("cnn", 10), parameters_of(build_model("cnn", 10)))
        is False
    )
    short = dict(params)
    short.pop(next(iter(short)))
    with pytest.raises(RuntimeError, match="missing key"):
        load_parameters(model, short)
    with pytest.raises(RuntimeError, match="unexpected key"):
        load_parameters(model, {**params, "extra.weight": torch.zeros(1)})


def test_calibration_gives_the_statistics_of_the_training_rows():
    torch.manual_seed(0)
    model = build_model("cnn-bn", 10)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen: list[torch.Tensor] = []
    bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    x = torch.randn(300, 1, 28, 28) * 2 + 0.5
    calibrate_batchnorm(model, x, batch_size=100)  # three batches, one average
    inputs = torch.cat(seen)
    torch.testing.assert_close(bn.running_mean, inputs.mean(dim=(0, 2, 3)))
    assert int(bn.num_batches_tracked) == 3 and not model.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calibrate_batchnorm(model, x[:0])  # no rows: nothing changes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("method", ["pfedhn", "fedavg", "local"])
def test_whole_model_methods_train_and_evaluate_a_batchnorm_cnn(tmp_path, method):
    summary = run_in_process(
        small_config(
            tmp_path,
            method=method,
            model="cnn-bn",
            **{
                "run-name": method,
                "num-rounds": 3,
                "eval-every": 3,
                "novel-rounds": 1,
            },
        )
    )
    assert summary is not None
    # 10 classes: chance is 0.1 (FedAvg's one model for 2-class clients: 0.25 here)
    assert summary["participant_acc"] > 0.2, summary
    if method != "local":  # local-only has no model for clients that never train
        assert summary["nonparticipant_acc"] is not None


def test_resnet18_trains_with_fedavg_on_32x32_colour_images(tmp_path):
    load_pooled.cache_clear()
    root, _, _ = cifar_folder(tmp_path / "cifar", per_batch=20, learnable=True)
    summary = run_in_process(
        small_config(
            tmp_path,
            method="fedavg",
            model="resnet18",
            dataset="cifar10",
            **{
                "data-dir": str(root),
                "num-clients": 4,
                "holdout": 0.25,
                "clients-per-round": 2,
                "num-rounds": 1,
                "eval-every": 1,
                "local-steps": 1,
                "batch-size": 8,
                "novel-rounds": 1,
                "run-name": "resnet",
            },
        )
    )
    load_pooled.cache_clear()
    assert summary is not None and summary["rounds"] == 1
    assert 0.0 <= summary["participant_acc"] <= 1.0
    assert summary["client_trainable_params"] == 11_173_962
