"""Faults injected into real `flwr run` simulations: runs survive and count them."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch

from common.flwr_cli import flwr_run
from tests.conftest import small_config

pytestmark = pytest.mark.e2e

EVERY_KIND = ["raise", "nan", "shape", "keys", "dtype", "norm", "big", "badmetric"]


def read(tmp_path, name, proc=None):
    out = tmp_path / "outputs" / name
    summary = out / "summary.json"
    if proc is not None:
        assert summary.exists(), proc.stdout[-4000:] + proc.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return (json.loads(summary.read_text()) if summary.exists() else None), rows


def test_every_client_fault_is_caught_and_the_round_goes_on(
    tmp_path, flwr_env, colour_set
):
    """FedProx on 3-channel 32×32 images (its run through `flwr run`): a reply is
    checked the same way whatever the method."""
    plan = ",".join(f"{k}@{i}" for i, k in enumerate(EVERY_KIND)) + ",hang@8:1"
    cfg = small_config(
        tmp_path,
        method="fedprox",
        **colour_set,
        **{
            "holdout": 0.0,
            "clients-per-round": 10,
            "num-rounds": 2,
            "eval-every": 2,
            "fault-injection": plan,
            "max-delta-norm": 1e4,
            "max-reply-mb": 4.0,
            "round-timeout": 25.0,
            "run-name": "chaos",
        },
    )
    # the hanging client holds its Ray worker past the round: a second one serves
    # the other clients meanwhile
    env = {**flwr_env, "HYPERFLOWER_SIM_CPUS": "2"}
    proc = flwr_run(cfg, env, num_supernodes=10)
    summary, rows = read(tmp_path, "chaos", proc)
    assert [r["faults-injected"] for r in rows] == [9, 8]
    assert summary["faults_injected"] == summary["faults_survived"] == 17
    assert rows[0]["faults"] == {"error": 1, "missing": 1, "invalid": 7}
    assert rows[1]["faults"] == {"error": 1, "missing": 0, "invalid": 7}
    assert [r["valid"] for r in rows] == [1, 2]
    assert summary["participant_acc"] is not None


def test_too_few_valid_replies_stops_with_a_clear_message(tmp_path):
    """In process (the same server loop as under Flower): a whole run failing
    through `flwr run` and the CLI is tests/e2e/test_trust.py."""
    from server.direct_grid import run_in_process
    from server.ops import RoundFailedError

    cfg = small_config(
        tmp_path,
        **{
            "holdout": 0.0,
            "clients-per-round": 3,
            "num-rounds": 3,
            "fault-injection": ",".join(f"raise@{i}" for i in range(10)),
            "round-retries": 1,
            "run-name": "doomed",
        },
    )
    with pytest.raises(RoundFailedError) as failed:
        run_in_process(cfg)
    assert "fewer than min-clients=1 valid replies in 2 attempts" in str(failed.value)
    assert not (tmp_path / "outputs" / "doomed" / "summary.json").exists()


def test_server_killed_mid_run_resumes_to_identical_result(tmp_path, flwr_env):
    """The uninterrupted run is made in process (server.direct_grid): the resumed
    `flwr run` must match it exactly, which also checks that the same seed gives
    the same figures whichever way a job runs."""
    from server.direct_grid import run_in_process

    base = {"num-rounds": 6, "eval-every": 2}
    run_in_process(small_config(tmp_path, **base, **{"run-name": "whole"}))
    whole, _ = read(tmp_path, "whole")

    from common.flwr_cli import ROOT, flwr_command

    cfg = small_config(tmp_path, **base, **{"run-name": "killed"})
    proc = subprocess.Popen(
        flwr_command(cfg, "local", 10, env=flwr_env),
        env=flwr_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = tmp_path / "outputs" / "killed" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    port = flwr_env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]
    pids = subprocess.run(
        ["pgrep", "-f", f"flwr-simulation.*127.0.0.1:{port}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert pids, "no ServerApp process found to kill"
    for pid in pids:
        subprocess.run(["kill", f"-{signal.SIGKILL.value}", pid], check=False)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
    killed_rows = len(metrics.read_text().splitlines())
    assert 3 <= killed_rows < 6, "the kill should land mid-run"
    assert not (tmp_path / "outputs" / "killed" / "summary.json").exists()

    proc = flwr_run({**cfg, "resume": True}, flwr_env, num_supernodes=10)
    resumed, rows = read(tmp_path, "killed", proc)
    assert [r["round"] for r in rows] == list(range(1, 7))
    for key in (
        "participant_acc",
        "nonparticipant_acc",
        "best_round",
        "participant_acc_std",
        "bytes_up_per_round",
    ):
        assert resumed[key] == whole[key], key
    a = torch.load(tmp_path / "outputs/whole/checkpoint/state.pt", weights_only=False)
    b = torch.load(tmp_path / "outputs/killed/checkpoint/state.pt", weights_only=False)
    for key, value in a["strategy"]["hnet"].items():
        assert torch.equal(value, b["strategy"]["hnet"][key]), key
