"""Runs you can trust, through `hyperflower run` and the real Flower simulation.

A run on a bring-your-own ``.npz`` dataset records its identity and data; a second
run in the same folder whose clients all fail exits 1 with the cause on one line,
prints no table (not the first run's either) and moves the first run aside.
"""

from __future__ import annotations

import json
import re

import pytest

from common.runinfo import EXIT_DONE, EXIT_FAILED
from tests.byo_data import npz_file
from tests.test_cli import cli

pytestmark = pytest.mark.e2e


def test_cli_run_then_a_failed_rerun_never_shows_the_old_result(tmp_path, flwr_env):
    # 3-channel 32×32 images, channels last; local-only (its one run through
    # `flwr run` on colour images)
    data = npz_file(tmp_path / "data" / "mine.npz", n=600, classes=4, colour=True)
    out = tmp_path / "outputs"
    base = [
        "run",
        "method='local'",
        "dataset='npz'",
        f"data-dir='{data}'",
        "model='mlp'",
        "num-clients=4",
        "holdout=0.25",
        "num-rounds=2",
        "eval-every=2",
        "local-steps=5",
        "clients-per-round=3",
        "novel-rounds=1",
        "classes-per-client=2",
        "run-name='trust'",
        f"output-dir='{out}'",
    ]
    first = cli(*base, env=flwr_env, timeout=400)
    assert first.returncode == EXIT_DONE, first.stdout[-3000:] + first.stderr[-2000:]
    assert "| local | npz |" in first.stdout
    printed = re.search(
        r"^data: (npz:[0-9a-f]{16}) \(600 samples, 4 classes\)", first.stdout, re.M
    )
    assert printed, first.stdout[:2000]
    summary = json.loads((out / "trust" / "summary.json").read_text())
    config = json.loads((out / "trust" / "config.json").read_text())
    assert summary["run_id"] == config["run-id"] == config["run"]["id"]
    assert summary["data_fingerprint"] == printed.group(1)
    assert config["run"]["data"]["files"][0]["path"] == str(data)
    assert config["run"]["data"]["clients"]["clients"] == 4  # all agreed

    crash = "fault-injection='raise@0,raise@1,raise@2,raise@3'"
    second = cli(*base, crash, "round-retries=0", env=flwr_env, timeout=400)
    log = second.stdout + second.stderr
    assert second.returncode == EXIT_FAILED, log[-3000:]
    assert "| local" not in second.stdout  # neither its table nor the old one
    # many clients, one cause: logged once with the count, named by the final error
    assert re.search(
        r"round 1: 3 of 3 clients \([0-9, ]+\): replied with an error: "
        r"RuntimeError: injected fault: this ClientApp raises",
        log,
    ), log[-3000:]
    # each client logs its own failure once (Ray may fold repeats: at most 3 here);
    # the server's side names it in its round line, its run-failed line, Flower's
    # traceback and the CLI's final error: four, never once per client
    fault = "injected fault: this ClientApp raises"
    lines = [line for line in log.splitlines() if fault in line]
    clients = [line for line in lines if "ClientApp (train, partition" in line]
    assert len(clients) <= 3, log[-3000:]
    assert len(lines) - len(clients) <= 4, log[-3000:]
    error = second.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "failed: RoundFailedError" in error
    assert "cause: 3 of 3 clients" in error and "RuntimeError: injected fault" in error
    status = json.loads((out / "trust" / "status.json").read_text())
    assert status["state"] == "failed" and status["run-id"] != summary["run_id"]
    assert not (out / "trust" / "summary.json").exists()
    (old,) = out.glob("trust.prev-*")  # the first run, moved aside whole
    assert json.loads((old / "summary.json").read_text())["run_id"] == summary["run_id"]
