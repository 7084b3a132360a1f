"""The ``hyperflower`` command line: one-line errors, exit codes, no stale results."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from common import report
from common.flwr_cli import ROOT
from common.partition import load_client_data, split_participants
from common.runinfo import EXIT_DONE, EXIT_FAILED, EXIT_STOPPED, EXIT_USAGE
from server.direct_grid import run_in_process
from server.localsim import local_superlink_pids
from server.personalize import (
    PersonalizeError,
    load_model,
    load_run,
    personalize,
    read_client_file,
)
from tests.byo_data import npz_file
from tests.conftest import small_config


def cli(
    *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m server.cli ARGS`` (what the ``hyperflower`` script runs)."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- configuration and usage errors ---------------------------------------------
def test_config_error_is_one_line_and_exit_2():
    proc = cli("run", "num-rounds=-3")
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr == "error: run config 'num-rounds': must be >= 1, got -3\n"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_debug_shows_the_traceback():
    proc = cli("--debug", "run", "num-rounds=-3")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "ConfigError: run config 'num-rounds'" in proc.stderr


def test_missing_preset_and_bad_override_are_usage_errors():
    proc = cli("run", "--preset", "conf/nope.toml")
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr == "error: preset 'conf/nope.toml' not found\n"
    proc = cli("run", "novalue")
    assert proc.returncode == EXIT_USAGE and proc.stderr.count("\n") == 1


def test_missing_data_dir_fails_before_ray_in_seconds(flwr_env):
    start = time.monotonic()
    proc = cli(
        "run",
        "--preset",
        "conf/quickstart.toml",
        "data-dir='/nonexistent'",
        env=flwr_env,
    )
    took = time.monotonic() - start
    assert proc.returncode == EXIT_USAGE, proc.stdout + proc.stderr
    assert proc.stderr.startswith(
        "error: data-dir '/nonexistent' is not a readable folder"
    ), proc.stderr
    assert proc.stderr.count("\n") == 1 and took < 10, (took, proc.stderr)
    # nothing was started: no flwr call, no local SuperLink, no Ray
    assert "flwr run" not in proc.stdout
    assert not local_superlink_pids(flwr_env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"])


# ---- report: only the summary of the run that is there ----------------------------
def _folder(tmp_path, status: dict | None, summary_id: str = "old"):
    folder = tmp_path / "run"
    folder.mkdir()
    summary = {
        "method": "pfedhn",
        "dataset": "synthetic",
        "participant_acc": 0.9,
        "nonparticipant_acc": 0.8,
        "global_acc": None,
        "best_round": 3,
        "bytes_down_per_round": 1e6,
        "bytes_up_per_round": 1e6,
        "client_trainable_params": 10,
        "hypernet_params": 20,
        "run_id": summary_id,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    if status is not None:
        (folder / "status.json").write_text(json.dumps(status))
    return folder


def test_report_never_shows_a_stale_summary(tmp_path, capsys):
    folder = _folder(
        tmp_path,
        {
            "run-id": "new",
            "state": "failed",
            "error": "RegistrationError: 3 of 3 clients ...",
        },
    )
    assert report.main([str(folder)]) == EXIT_FAILED
    out, err = capsys.readouterr()
    assert "participants acc" not in out and "| pfedhn" not in out
    assert "run new failed: RegistrationError: 3 of 3 clients" in err


@pytest.mark.parametrize(
    "state,code",
    [("done", EXIT_DONE), ("stopped", EXIT_STOPPED), ("running", EXIT_FAILED)],
)
def test_report_exit_codes(tmp_path, capsys, state, code):
    folder = _folder(tmp_path, {"run-id": "old", "state": state, "round": 2})
    assert report.main([str(folder)]) == code
    out = capsys.readouterr().out
    assert ("| pfedhn" in out) == (code == EXIT_DONE)


# ---- personalize: the inputs users have -------------------------------------------
@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    """A finished pFedHN run on an .npz dataset of uint8 images (2 held out)."""
    root = tmp_path_factory.mktemp("npzrun")
    data = npz_file(root / "data" / "clients.npz", n=900, classes=6)
    cfg = small_config(
        root,
        **{
            "dataset": "npz",
            "data-dir": str(data),
            "num-clients": 5,
            "holdout": 0.4,
            "num-rounds": 2,
            "eval-every": 1,
            "local-steps": 5,
            "novel-rounds": 2,
            "clients-per-round": 3,
            "classes-per-client": 2,
            "run-name": "npz",
        },
    )
    run_in_process(cfg)
    return root / "outputs" / "npz", data


def _held_out_raw(run_dir, data_path):
    run = load_run(run_dir)
    pid = split_participants(run.cfg.num_clients, run.cfg.holdout, run.cfg.seed)[1][0]
    from common.partition import client_splits

    rows = client_splits(run.cfg)[pid].train
    with np.load(data_path) as arrays:
        return run, pid, arrays["x"][rows], arrays["y"][rows]


def test_run_records_its_data_and_identity(npz_run):
    run_dir, data_path = npz_run
    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    status = json.loads((run_dir / "status.json").read_text())
    data = config["run"]["data"]
    assert data["files"][0]["path"] == str(data_path)
    assert data["cache"] and data["num-classes"] == 6 and data["scale"] == 255.0
    assert data["clients"]["fingerprint"] == data["fingerprint"]
    assert summary["run_id"] == config["run"]["id"] == status["run-id"]
    assert summary["data_fingerprint"] == data["fingerprint"]
    assert status["state"] == "done" and summary["started_at"]


def test_uint8_and_unit_float_images_give_the_same_model(npz_run, tmp_path):
    run_dir, data_path = npz_run
    run, pid, x, y = _held_out_raw(run_dir, data_path)
    as_uint8, as_float = tmp_path / "u8.npz", tmp_path / "f.npz"
    np.savez(as_uint8, x=x, y=y)
    np.savez(as_float, x=x.astype(np.float32) / 255.0, y=y)
    data_u8, how_u8 = read_client_file(as_uint8, run)
    data_f, how_f = read_client_file(as_float, run)
    assert how_u8.startswith("uint8 images") and how_f.startswith("floats in [0, 1]")
    assert torch.equal(data_u8.x_train, data_f.x_train)
    # the run's own preprocessing: the same tensors the ClientApp trained on
    own = load_client_data(run.cfg, pid)
    assert torch.equal(data_u8.x_train, own.x_train)
    a = personalize(run_dir, as_uint8, client_id=str(pid))
    b = personalize(run_dir, as_float, client_id=str(pid))
    c = personalize(run_dir, partition_id=pid, client_id=str(pid))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
        assert torch.equal(value, c.state_dict()[key]), key


def test_bad_inputs_are_named(npz_run, tmp_path):
    run_dir, data_path = npz_run
    run, _, x, y = _held_out_raw(run_dir, data_path)
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=x, y=np.full(len(y), 12))
    with pytest.raises(PersonalizeError, match="label 12 outside the run's 6 classes"):
        read_client_file(labels, run)
    normalised = tmp_path / "norm.npz"
    np.savez(normalised, x=(x / 255.0 - 0.3) / 0.3, y=y)
    with pytest.raises(PersonalizeError, match="pass --normalized"):
        read_client_file(normalised, run)


def test_cli_personalize_errors_are_one_line(npz_run, tmp_path):
    run_dir, data_path = npz_run
    _, _, x, y = _held_out_raw(run_dir, data_path)
    small = tmp_path / "small.npz"
    np.savez(small, x=x[:, :20, :20], y=y)
    proc = cli("personalize", str(run_dir), "--data", str(small))
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr == (
        f"error: {small}: expected 28×28 images in x_train, got 20×20\n"
    )
    proc = cli("personalize", str(run_dir), "--data", str(tmp_path / "absent.npz"))
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr == f"error: --data '{tmp_path / 'absent.npz'}': no such file\n"


def test_cli_personalize_never_reports_a_nan_fit(npz_run, tmp_path, capsys):
    from server.cli import main

    run_dir, data_path = npz_run
    _, pid, x, y = _held_out_raw(run_dir, data_path)
    given = tmp_path / "client.npz"
    np.savez(given, x_train=x, y_train=y, x_test=x, y_test=y)
    out = tmp_path / "model.pt"
    assert (
        main(
            [
                "personalize",
                str(run_dir),
                "--data",
                str(given),
                "--out",
                str(out),
                "--client-id",
                str(pid),
            ]
        )
        == EXIT_DONE
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["input"].startswith("uint8 images (0-255), normalised as the run's")
    assert np.isfinite(printed["metrics"]["test-loss"])
    assert load_model(out) is not None
    diverged = tmp_path / "nan.pt"
    assert (
        main(
            [
                "personalize",
                str(run_dir),
                "--data",
                str(given),
                "--out",
                str(diverged),
                "--lr",
                "1e30",
            ]
        )
        == EXIT_FAILED
    )
    captured = capsys.readouterr()
    assert "diverged" in captured.err or "non-finite" in captured.err
    assert captured.out == "" and not diverged.exists()


def test_a_background_superlink_with_another_environment_is_refused(tmp_path):
    from server.localsim import stale_superlink

    port = "47613"  # a stand-in process that looks like a local simulation SuperLink
    fake = subprocess.Popen(
        [
            "bash",
            "-c",
            f"exec -a flower-superlink {sys.executable} -c "
            f"'import time; time.sleep(60)' --simulation --port {port}",
        ],
        env={"PATH": "/usr/bin:/bin", "HYPERFLOWER_DATA": "/other/folder"},
    )
    try:
        deadline = time.monotonic() + 10
        while not local_superlink_pids(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        mine = {
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": port,
            "HYPERFLOWER_DATA": str(tmp_path),
        }
        why = stale_superlink(mine)
        assert (
            f"pid {fake.pid}" in why
            and "HYPERFLOWER_DATA='/other/folder' there" in why
            and f"kill {fake.pid}" in why
        )
        assert stale_superlink({**mine, "HYPERFLOWER_DATA": "/other/folder"}) == ""
    finally:
        fake.kill()
        fake.wait()
