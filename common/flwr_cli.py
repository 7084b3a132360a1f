"""Driving `flwr` from scripts, tests, benchmarks and `hyperflower run`.

flwr 1.41 accepts either one TOML file or ``k=v`` pairs for ``--run-config``, not both,
so presets (``conf/*.toml``) and overrides are merged here into one ``k=v`` string.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def toml_value(value: Any) -> str:
    """A Python value as a TOML literal for ``--run-config``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def run_config_arg(config: Mapping[str, Any]) -> str:
    """``k=v`` pairs for ``flwr run --run-config``."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in config.items())


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``k=v`` strings (TOML values; bare words taken as strings) into a dict."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"override {pair!r} is not key=value")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


def merge_presets(
    presets: Sequence[str | Path], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Presets in order, later ones winning, then the overrides on top."""
    merged: dict[str, Any] = {}
    for preset in presets:
        with open(preset, "rb") as fh:
            merged.update(tomllib.load(fh))
    merged.update(overrides)
    return merged


def flwr_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every flwr call needs (deploy/flwr-env.sh, sourced)."""
    env = dict(os.environ if base is None else base)
    out = subprocess.run(
        ["bash", "-c", f"source {ROOT}/deploy/flwr-env.sh && env -0"],
        env=env,
        check=True,
        capture_output=True,
    ).stdout
    env.update(dict(kv.split("=", 1) for kv in out.decode().split("\0") if "=" in kv))
    return env


def app_dir(env: Mapping[str, str]) -> Path:
    """The folder ``flwr run`` builds the app (FAB) from: this repository, unless
    ``HYPERFLOWER_APP_DIR`` names a copy holding only the app's files.

    ``flwr run`` walks every file under the folder it is given before its filters
    apply, the ~50,000 of a virtual environment inside the repository included:
    2-3 s of CPU a run, which the tests' many short runs avoid with a copy.
    """
    return Path(env.get("HYPERFLOWER_APP_DIR") or ROOT)


def flwr_command(
    config: Mapping[str, Any],
    connection: str = "local",
    num_supernodes: int | None = None,
    stream: bool = True,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """The ``flwr run`` command line for a merged run config.

    From ``env`` (the environment the command will run in): the folder the FAB is
    built from (:func:`app_dir`) and ``HYPERFLOWER_SIM_CPUS``, the CPUs Ray may use
    in a simulation (one client a CPU, so also how many clients train at once;
    unset: all of them).
    """
    env = env or {}
    cmd = ["flwr", "run", str(app_dir(env)), connection]
    cmd += ["--stream"] if stream else []
    cmd += ["--run-config", run_config_arg(config)]
    if num_supernodes is not None:
        fed = f"num-supernodes={num_supernodes} client-resources-num-cpus=1"
        if env.get("HYPERFLOWER_SIM_CPUS"):
            fed += f" init-args-num-cpus={int(env['HYPERFLOWER_SIM_CPUS'])}"
        cmd += ["--federation-config", fed]
    return cmd


def flwr_run(
    config: Mapping[str, Any],
    env: Mapping[str, str],
    connection: str = "local",
    num_supernodes: int | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``flwr run . <connection> --stream`` in the project root and wait for it.

    ``flwr run`` exits 0 even when the ServerApp failed, so callers check the run's
    ``summary.json`` rather than the exit code.
    """
    return subprocess.run(
        flwr_command(config, connection, num_supernodes, env=env),
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, so parallel runs and tests never collide."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def copy_app_files(root: Path, dest: Path) -> Path:
    """The app's files under ``root`` (what git tracks or would track) copied to
    ``dest``: ``flwr run`` builds its FAB from there without walking the virtual
    environment's files, seconds of CPU a run; the FAB holds the same files."""
    import shutil

    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = root / name
        if src.is_file() and not src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest
