"""Separate hosts on one machine: deploy/run-netns.sh in network namespaces.

The SuperLink, the ServerApp runtime, an operator host and two SuperNodes each live
in their own network namespace with their own 10.77.0.x address, joined by a bridge
that is connected to nothing else; TLS and SuperNode authentication are on. Skipped,
with the reason, only where this machine cannot create network namespaces.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from common.flwr_cli import ROOT, run_config_arg

pytestmark = pytest.mark.e2e


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run the suite as root"
    probe = f"hfprobe{os.getpid()}"
    try:
        made = subprocess.run(
            ["ip", "netns", "add", probe], capture_output=True, text=True, timeout=20
        )
    except FileNotFoundError:
        return "iproute2 ('ip') is not installed"
    if made.returncode != 0:
        return f"'ip netns add' is not permitted here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
    return None


def test_federated_run_across_network_namespaces(tmp_path, flwr_env):
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    work = tmp_path / "netns"
    cfg = {
        "dataset": "synthetic",
        "model": "mlp",
        "num-rounds": 1,  # one round proves the path; each extra costs ClientApp starts
        "eval-every": 1,
        "local-steps": 5,
        "holdout": 0.0,
        "clients-per-round": 2,
    }
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "deploy" / "run-netns.sh"),
            "--nodes",
            "2",
            "--workdir",
            str(work),
            "--run-config",
            run_config_arg(cfg),
        ],
        env=flwr_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode == 77:
        pytest.skip(f"cannot create network namespaces: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    summary = json.loads((work / "outputs" / "netns" / "summary.json").read_text())
    assert summary["num_clients"] == 2 and summary["rounds"] == 1
    rows = (work / "outputs" / "netns" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["valid"] for r in rows] == [2]
    # each SuperNode dialled the SuperLink's namespace address over TLS with its key
    for i in (0, 1):
        log = (work / f"node-{i}-supernode.log").read_text()
        assert "--superlink 10.77.0.1:9093" in log
        assert f"--auth-supernode-private-key {work}/certs/nodes/node-{i}.key" in log
        assert "SuperNode ID:" in log
    link = (work / "link-superlink.log").read_text().splitlines()[0]
    assert "--enable-supernode-auth" in link and "--insecure" not in link
    assert "10.77.0.1:9093" in (work / "server-serverapp.log").read_text()
    # everything was torn down: namespaces and processes
    tag = re.search(r"namespaces (hf\d+)-\*", proc.stdout).group(1)
    left = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True
    ).stdout
    assert tag not in left, left
    procs = subprocess.run(
        ["pgrep", "-f", str(work)], capture_output=True, text=True
    ).stdout.strip()
    assert not procs, f"processes left: {procs}"
