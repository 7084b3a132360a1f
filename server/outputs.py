"""Everything a run leaves on disk: config, per-round metrics, summary, checkpoint.

``outputs/<run-name>/`` holds ``config.json``, ``metrics.jsonl`` (one line per
round), ``summary.json``, ``status.json`` (which run, and how it ended), PNG plots,
``tensorboard/`` (the same metrics and the config as TensorBoard events:
:mod:`server.tensorboard_log`) and ``checkpoint/state.pt``. Files are written
to a temporary name and renamed, so a kill during a save never leaves a torn file.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from common.config import fingerprint_keys
from server.tensorboard_log import RunEvents

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or was written by a different run configuration."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


class RunOutputs:
    """The output folder of one run."""

    def __init__(
        self, root: str | Path, run_name: str, stamp: dict[str, Any] | None = None
    ) -> None:
        self.dir = Path(root).expanduser().resolve() / run_name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.checkpoint_path = self.dir / "checkpoint" / "state.pt"
        #: The run's identity and data (``run`` in config.json; id, start time and
        #: data fingerprint in summary.json): see server/runstate.py.
        self.stamp: dict[str, Any] = dict(stamp or {})
        #: The same metrics as TensorBoard events (``tensorboard/``), for every method.
        self.events = RunEvents(self.dir)

    def write_config(self, config: dict[str, Any]) -> None:
        """The resolved run config, as the run used it, with the run's identity and
        the data it used (files, cache, fingerprint, preprocessing) under ``run``."""
        atomic_write_json(
            self.dir / "config.json",
            {**config, "run": self.stamp} if self.stamp else config,
        )
        self.events.config = dict(config)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """All per-round rows so far (rewritten whole, so resume never duplicates)."""
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write_bytes(self.metrics_path, text.encode())
        self.events.rounds(rows)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """The run's headline numbers (summary.json), stamped with the run's id."""
        data = self.stamp.get("data") or {}
        ident = (
            {
                "run_id": self.stamp.get("id"),
                "started_at": self.stamp.get("started-at"),
                "data_fingerprint": data.get("fingerprint"),
            }
            if self.stamp
            else {}
        )
        atomic_write_json(self.dir / "summary.json", {**summary, **ident})
        self.events.summary(summary)

    def write_status(self, state: str, **extra: Any) -> None:
        """``status.json``: this run's id and state (running, failed, stopped, done)."""
        atomic_write_json(
            self.dir / "status.json",
            {
                "run-id": self.stamp.get("id"),
                "state": state,
                "started-at": self.stamp.get("started-at"),
                **extra,
            },
        )
        if state != "running":
            self.events.close()

    def save_checkpoint(self, state: dict[str, Any], config: dict[str, Any]) -> None:
        """Save server state atomically, stamped with the config fingerprint."""
        buffer = io.BytesIO()
        torch.save(
            {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint(config), **state},
            buffer,
        )
        atomic_write_bytes(self.checkpoint_path, buffer.getvalue())

    def load_checkpoint(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """The saved state, None when there is none; refuses a foreign or torn one."""
        if not self.checkpoint_path.exists():
            return None
        try:
            state = torch.load(
                self.checkpoint_path, map_location="cpu", weights_only=False
            )
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is corruption
            raise CheckpointError(
                f"checkpoint {self.checkpoint_path} is unreadable ({exc}); delete it "
                "or start a new run-name"
            ) from exc
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"checkpoint {self.checkpoint_path} has an unknown format"
            )
        expected, found = fingerprint(config), state.get("fingerprint", {})
        diff = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
        if diff:
            detail = ", ".join(
                f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items()
            )
            raise CheckpointError(
                f"checkpoint {self.checkpoint_path} was written by "
                f"another configuration ({detail})"
            )
        self.events.resumed(int(state.get("round", 0)))
        return state


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The config values a checkpoint depends on (the settings marked
    ``fingerprint``, shared and every method's)."""
    return {k: config.get(k) for k in fingerprint_keys()}
