"""The compose deployment, validated without a Docker engine.

Debian's ``docker-compose`` (v1) checks the file's structure (``config -q``) and
resolves it (``config``); the resolved services are then checked for the topology the
deployment promises, and each service's environment is turned into the exact command
it would run with ``deploy/hf-service.sh print ROLE`` (the script the containers use
as their entrypoint, and the one the network-namespace run uses).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest
import yaml

from common.flwr_cli import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(
    COMPOSE is None,
    reason="docker-compose (v1) is not installed: apt-get install docker-compose",
)


def compose(
    *args: str,
    files: tuple[str, ...] = ("docker-compose.yml",),
    env: dict | None = None,
) -> subprocess.CompletedProcess[str]:
    cmd = [COMPOSE]
    for f in files:
        cmd += ["-f", str(f)]
    return subprocess.run(
        [*cmd, *args],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def resolved(files: tuple[str, ...] = ("docker-compose.yml",), env=None) -> dict:
    proc = compose("config", files=files, env=env)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of a resolved service's volumes (short syntax)."""
    out = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            out.append(
                (vol.get("source", ""), vol["target"], bool(vol.get("read_only")))
            )
        else:
            parts = vol.split(":")
            out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2]))
    return out


def service_command(service: dict) -> str:
    """The command hf-service.sh runs for a resolved compose service."""
    env = {
        **os.environ,
        **{k: str(v) for k, v in service["environment"].items()},
        "HF_CERTS": "/certs",
    }
    role = service["command"][0]
    out = subprocess.run(
        ["bash", str(DEPLOY / "hf-service.sh"), "print", role],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return " ".join(shlex.split(out.stdout))  # arguments unquoted, space-joined


@pytest.mark.parametrize(
    "files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.gpu.yml")]
)
def test_compose_files_are_valid(files):
    proc = compose("config", "-q", files=files)
    assert proc.returncode == 0, proc.stderr


def test_topology_secrets_and_commands():
    services = resolved()["services"]
    nodes = sorted(s for s in services if s.startswith("supernode-"))
    assert {"superlink", "serverapp", "register"} <= set(services)
    assert nodes == ["supernode-0", "supernode-1"]
    data_volumes = set()
    for i, name in enumerate(nodes):
        node, app = services[name], services[f"clientapp-{i}"]
        assert node["command"] == ["supernode"] and app["command"] == ["clientapp"]
        assert node["environment"]["HF_NODE"] == app["environment"]["HF_NODE"] == str(i)
        assert app["environment"]["HF_RUNTIME"] == f"{name}:9094"
        assert (
            node["depends_on"]["register"]["condition"]
            == "service_completed_successfully"
        )
        # only this node's key, read-only; its ClientApps alone see its data volume
        keys = [t for _, t, _ in mounts(node) if t.endswith(".key")]
        assert keys == [f"/certs/nodes/node-{i}.key"]
        assert all(ro for _, _, ro in mounts(node))
        (data,) = [src for src, t, _ in mounts(app) if t == "/data"]
        data_volumes.add(data)
    assert len(data_volumes) == len(nodes)
    # the secrets are mounted read-only and never copied into the image
    link = services["superlink"]
    assert any(t == "/certs" and ro for _, t, ro in mounts(link))
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copies = [line for line in dockerfile.splitlines() if line.startswith("COPY")]
    assert copies and not any(
        "certs" in line or line.strip() == "COPY . ." for line in copies
    )
    assert "deploy/certs" in (DEPLOY / "Dockerfile.dockerignore").read_text()
    # what the services run: TLS and node authentication unless HF_INSECURE=1
    link_cmd = service_command(link)
    for flag in (
        "--enable-supernode-auth",
        "--ssl-certfile /certs/server.crt",
        "--isolation process",
        "--host 0.0.0.0",
        "--port 9093",
    ):
        assert flag in link_cmd, link_cmd
    assert "--insecure" not in link_cmd
    node_cmd = service_command(services["supernode-1"])
    for flag in (
        "--superlink superlink:9093",
        "--root-certificates /certs/ca.crt",
        "--auth-supernode-private-key /certs/nodes/node-1.key",
        "partition-id=1 num-partitions=2",
        "--isolation process",
    ):
        assert flag in node_cmd, node_cmd
    exec_cmd = service_command(services["serverapp"])
    assert "--runtime-api-address superlink:9093" in exec_cmd
    assert "--root-certificates /certs/ca.crt" in exec_cmd
    insecure = resolved(env={"HF_INSECURE": "1"})["services"]
    assert "--insecure" in service_command(insecure["superlink"])


def test_gpu_override_requests_a_gpu_for_the_serverapp_only():
    services = resolved(("docker-compose.yml", "docker-compose.gpu.yml"))["services"]
    devices = services["serverapp"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "cu" in services["serverapp"]["build"]["args"]["TORCH_INDEX_URL"]
    assert all("deploy" not in s for n, s in services.items() if n != "serverapp")


def test_scaling_the_supernodes(tmp_path):
    extra = tmp_path / "docker-compose.nodes.yml"
    proc = subprocess.run(
        ["bash", str(DEPLOY / "compose-nodes.sh"), "4", "--out", str(extra)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    files = ("docker-compose.yml", str(extra))
    assert compose("config", "-q", files=files).returncode == 0
    services = resolved(files, env={"HF_NUM_NODES": "4"})["services"]
    nodes = sorted(s for s in services if s.startswith("supernode-"))
    assert nodes == [f"supernode-{i}" for i in range(4)]
    node3 = service_command(services["supernode-3"])
    assert "partition-id=3 num-partitions=4" in node3
    assert 'client-id="node-3"' in node3
    assert services["clientapp-3"]["environment"]["HF_RUNTIME"] == "supernode-3:9094"
