"""A real Flower deployment on 127.0.0.1 for tests, started by deploy/hf-service.sh.

Every service (SuperLink, ServerApp SuperExec, SuperNodes, ClientApp SuperExecs) is a
process started with the same command the compose services run. Each gets its own
session, so :meth:`LoopbackCluster.close` stops it and whatever it spawned
(flwr-serverapp, flwr-clientapp) by process group, and only those.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from common.flwr_cli import ROOT, flwr_command
from tests.conftest import free_ports

SERVICE = ROOT / "deploy" / "hf-service.sh"


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5) -> None:
    """Poll ``predicate`` until true; fail the test naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class LoopbackCluster:
    """SuperLink + SuperNodes on loopback, TLS + node auth unless ``insecure``."""

    def __init__(
        self, work: Path, env: dict[str, str], num_nodes: int, insecure: bool = False
    ) -> None:
        self.work, self.num_nodes, self.insecure = work, num_nodes, insecure
        self.port = int(env["HYPERFLOWER_LINK_PORT"])
        self.certs = Path(env.get("HYPERFLOWER_CERTS", work / "certs"))
        self.env = {
            **env,
            "HYPERFLOWER_CERTS": str(self.certs),
            "HF_INSECURE": "1" if insecure else "0",
            "HF_CERTS": str(self.certs),
            "HF_BIND": "127.0.0.1",
            "HF_LINK_PORT": str(self.port),
            "HF_SUPERLINK": f"127.0.0.1:{self.port}",
            "HF_STATE": str(work / "link-state"),
            "HF_NUM_NODES": str(num_nodes),
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.node_ports = free_ports(num_nodes + 2)
        work.mkdir(parents=True, exist_ok=True)
        self.operator = {**self.env, "FLWR_HOME": str(work / "hosts" / "operator")}
        subprocess.run(
            ["bash", str(SERVICE), "connect"],
            env=self.operator,
            check=True,
            capture_output=True,
        )
        if not insecure:
            subprocess.run(
                [
                    "bash",
                    str(ROOT / "deploy" / "gen-certs.sh"),
                    "--out",
                    str(self.certs),
                    "--nodes",
                    str(num_nodes + 1),
                ],
                check=True,
                capture_output=True,
            )

    # ---- processes ---------------------------------------------------------
    def log(self, name: str) -> str:
        """The log of service ``name`` so far."""
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def service(self, name: str, role: str, **extra: str) -> subprocess.Popen:
        """Start ``hf-service.sh role`` as its own session, logging to <name>.log."""
        env = {**self.env, "FLWR_HOME": str(self.work / "hosts" / name), **extra}
        with open(self.work / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                ["bash", str(SERVICE), role],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_link(self) -> None:
        """SuperLink and its ServerApp SuperExec; wait until the port answers."""
        self.service("superlink", "superlink")
        wait_for(lambda: port_open(self.port), 60, "the SuperLink port")
        self.service("serverapp", "serverapp")

    def register(self, nodes: list[int]) -> str:
        """Register node keys with ``flwr supernode register`` (hf-service register)."""
        keys = " ".join(str(self.certs / "nodes" / f"node-{i}.pub") for i in nodes)
        env = {**self.operator, "HF_REGISTER_KEYS": keys}
        proc = subprocess.run(
            ["bash", str(SERVICE), "register"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def start_node(self, i: int, tag: str = "", **extra: str) -> subprocess.Popen:
        """SuperNode ``i`` (its own key and partition) and its ClientApp SuperExec;
        ``extra`` environment for the SuperNode (e.g. ``HF_DATA_DIR``)."""
        port = str(self.node_ports[i])
        node = self.service(
            f"supernode-{i}{tag}",
            "supernode",
            HF_NODE=str(i),
            HF_NODE_PORT=port,
            **extra,
        )
        self.service(
            f"clientapp-{i}{tag}",
            "clientapp",
            HF_NODE=str(i),
            HF_RUNTIME=f"127.0.0.1:{port}",
        )
        return node

    def stop(self, name: str, sig: int = signal.SIGTERM, wait: float = 20) -> None:
        """Signal the process group of service ``name`` and wait for it to end."""
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Stop every service this cluster started (nodes first, then the link)."""
        for name in sorted(self.procs, key=lambda n: "link" in n or "serverapp" in n):
            self.stop(name)
        for proc in self.procs.values():  # anything left in those sessions
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ---- runs --------------------------------------------------------------
    def flwr_run(self, config: dict, run_name: str) -> subprocess.Popen:
        """``flwr run . hf --stream`` (the operator's connection) in the background."""
        cfg = {
            **config,
            "num-clients": self.num_nodes,
            "run-name": run_name,
            "output-dir": str(self.work / "outputs"),
        }
        log = open(self.work / f"run-{run_name}.log", "wb")  # noqa: SIM115
        cmd = flwr_command(cfg, "hf", env=self.operator)
        proc = subprocess.Popen(
            cmd,
            env=self.operator,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[f"run-{run_name}"] = proc
        return proc

    def outputs(self, run_name: str) -> Path:
        """The output folder of run ``run_name``."""
        return self.work / "outputs" / run_name

    def finish(self, proc: subprocess.Popen, run_name: str, timeout: float) -> dict:
        """Wait for a run; return its summary, failing with the logs if it has none."""
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        summary = self.outputs(run_name) / "summary.json"
        if not summary.exists():
            logs = "\n".join(
                f"--- {n}\n{self.log(n)[-2500:]}"
                for n in [f"run-{run_name}", *self.procs]
            )
            raise AssertionError(f"run {run_name} did not finish\n{logs}")
        return json.loads(summary.read_text())

    def metrics(self, run_name: str) -> list[dict]:
        """The run's metrics.jsonl rows so far."""
        path = self.outputs(run_name) / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]
