"""Helpers for driving the `flwr` command line from scripts, tests and benchmarks."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
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


def flwr_run(config: Mapping[str, Any], env: Mapping[str, str],
             connection: str = "local", num_supernodes: int | None = None,
             timeout: float = 600, presets: list[str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run ``flwr run . <connection> --stream`` in the project root and wait for it.

    ``flwr run`` exits 0 even when the ServerApp failed, so callers check the run's
    ``summary.json`` rather than the exit code.
    """
    cmd = ["flwr", "run", str(ROOT), connection, "--stream"]
    for preset in presets or []:
        cmd += ["--run-config", preset]
    cmd += ["--run-config", run_config_arg(config)]
    if num_supernodes is not None:
        cmd += ["--federation-config",
                f"num-supernodes={num_supernodes} client-resources-num-cpus=1"]
    return subprocess.run(cmd, env=dict(env), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
