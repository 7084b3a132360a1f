"""Offline personalisation from a run folder, and the server's device choice.

The runs here go through the ServerApp's own loop and the ClientApp's handlers in one
process (server.direct_grid), so the held-out clients' in-run numbers are those a
Flower run computes; personalisation then starts from the written run folder only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.config import ConfigError, parse_run_config
from common.models import build_model, param_shapes
from common.partition import load_client_data, split_participants
from server.app import resolve_device
from server.cli import main as cli_main
from server.direct_grid import run_in_process
from server.personalize import (
    PersonalizeError,
    Personalizer,
    TrainedRun,
    evaluate_on,
    load_model,
    load_run,
    model_from,
    personalize,
    personalized_params,
)
from server.strategies.pfedhn import build_hypernet, build_store
from tests.conftest import small_config

HOLDOUT = {
    "num-clients": 5,
    "holdout": 0.4,
    "num-rounds": 2,
    "eval-every": 1,
    "local-steps": 5,
    "clients-per-round": 3,
    "novel-rounds": 3,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished pFedHN and one FedAvg run, each with 2 held-out clients."""
    root = tmp_path_factory.mktemp("personalize")
    out = {}
    for method in ("pfedhn", "fedavg"):
        cfg = small_config(root, method=method, **HOLDOUT, **{"run-name": method})
        summary = run_in_process(cfg)
        out[method] = (root / "outputs" / method, summary, parse_run_config(cfg))
    return out


def held_out(cfg) -> list[int]:
    return split_participants(cfg.num_clients, cfg.holdout, cfg.seed)[1]


@pytest.mark.parametrize("method", ["pfedhn", "fedavg"])
def test_offline_personalisation_equals_the_in_run_evaluation(runs, method):
    run_dir, summary, cfg = runs[method]
    pids = held_out(cfg)
    assert len(pids) == 2
    accs = []
    for pid in pids:
        # in simulation a client's id is its partition id
        model = personalize(run_dir, partition_id=pid, client_id=str(pid))
        accs.append(evaluate_on(model, load_client_data(cfg, pid))["test-acc"])
    # the run reports mean and std over its held-out clients; with two clients they
    # determine both numbers, and the float operations are the same: exact equality
    assert float(np.mean(accs)) == summary["nonparticipant_acc"]
    assert float(np.std(accs)) == summary["nonparticipant_acc_std"]


def test_pfedhn_fit_changes_only_the_embedding(runs):
    run_dir, _, cfg = runs["pfedhn"]
    run = load_run(run_dir)
    pid = held_out(cfg)[0]
    data = load_client_data(cfg, pid)
    fitted, info = personalized_params(run, data, client_id=str(pid), partition_id=pid)
    zero, _ = personalized_params(
        run, data, client_id=str(pid), partition_id=pid, rounds=0
    )
    assert info["fit-rounds"] == cfg.novel_rounds and info["round"] >= 1
    assert any(not torch.equal(fitted[k], zero[k]) for k in fitted)
    # the checkpoint itself is untouched by personalisation
    again, _ = personalized_params(
        load_run(run_dir), data, client_id=str(pid), partition_id=pid
    )
    assert all(torch.equal(fitted[k], again[k]) for k in fitted)
    # a participant that trained gets its own embedding's model without data
    participant = run.state["participants"][0]
    own, how = personalized_params(run, client_id=participant)
    assert how["fit-rounds"] == 0 and set(own) == set(fitted)
    with pytest.raises(PersonalizeError, match="labelled data"):
        personalized_params(run, client_id="someone-new")


def test_cli_writes_a_ready_model_file(runs, tmp_path, capsys):
    run_dir, _, cfg = runs["pfedhn"]
    pid = held_out(cfg)[1]
    data = load_client_data(cfg, pid)
    npz = tmp_path / "client.npz"
    np.savez(
        npz,
        x_train=data.x_train.numpy(),
        y_train=data.y_train.numpy(),
        x_test=data.x_test.numpy(),
        y_test=data.y_test.numpy(),
    )
    out = tmp_path / "model.pt"
    # these images are already normalised as the run's data: --normalized says so
    assert (
        cli_main(
            [
                "personalize",
                str(run_dir),
                "--data",
                str(npz),
                "--normalized",
                "--client-id",
                str(pid),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["model-file"] == str(out) and printed["method"] == "pfedhn"
    model = load_model(out)
    expected = personalize(run_dir, partition_id=pid, client_id=str(pid))
    for (k, a), (_, b) in zip(
        model.state_dict().items(), expected.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    assert printed["metrics"]["test-acc"] == evaluate_on(expected, data)["test-acc"]
    # --arch is for methods whose clients differ (MH-pFedHN): refused here, named
    refused = ["personalize", str(run_dir), "--data", str(npz), "--normalized"]
    refused += ["--arch", "lenet5"]
    assert cli_main(refused) == 2
    assert "--arch names a client's own architecture" in capsys.readouterr().err


def test_local_method_has_nothing_to_give(tmp_path):
    cfg = parse_run_config({"method": "local", "model": "mlp", "dataset": "synthetic"})
    with pytest.raises(PersonalizeError, match="never train"):
        personalized_params(TrainedRun(tmp_path, cfg, {}, 1))


def test_loaded_run_gives_lenet_models_for_pfedhn_and_fedavg(tmp_path):
    """A loaded run hands out ready LeNet-5 models: pFedHN's generated from the
    client's embedding, FedAvg's the global model (timing: ``python -m bench
    latency``, not a test)."""
    cfg = parse_run_config(
        {"model": "lenet5", "dataset": "synthetic", "num-clients": 10}
    )
    shapes = param_shapes(build_model(cfg.model, cfg.num_classes, seed=cfg.seed))
    hnet, store = build_hypernet(cfg, shapes), build_store(cfg)
    for i in range(cfg.num_clients):
        store.add(str(i), {"partition-id": i})
    pfedhn = TrainedRun(
        tmp_path,
        cfg,
        {
            "hnet": hnet.state_dict(),
            "store": store.state_dict(),
            "participants": ["0", "1"],
        },
        1,
    )
    glob = {k: p.detach() for k, p in build_model("lenet5").named_parameters()}
    fedavg = TrainedRun(
        tmp_path,
        parse_run_config({"method": "fedavg", "model": "lenet5"}),
        {"global": glob},
        1,
    )
    gen, avg = Personalizer(pfedhn), Personalizer(fedavg)
    mine, other = gen.params(client_id="0")[0], gen.params(client_id="1")[0]
    with torch.no_grad():
        expected = hnet(store(["0"]))
    for name, shape in shapes.items():
        assert mine[name].shape == torch.Size(shape)
        assert torch.allclose(mine[name], expected[name][0])
    assert any(not torch.equal(mine[k], other[k]) for k in mine)
    model = model_from(cfg, mine)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    given = avg.params()[0]
    assert all(torch.equal(given[k], glob[k]) for k in glob)


def test_device_cpu_works_and_cuda_without_gpu_is_a_config_error():
    assert resolve_device("cpu") == torch.device("cpu")
    assert parse_run_config({"device": "cpu"}).device == "cpu"
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        assert resolve_device("auto").type == "cuda"
    else:
        with pytest.raises(ConfigError) as err:
            resolve_device("cuda")
        assert err.value.key == "device" and "no CUDA device" in str(err.value)
        assert resolve_device("auto") == torch.device("cpu")
