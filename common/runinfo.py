"""A run folder's identity and state: which run made its files, and how it ended.

The ServerApp writes ``status.json`` (``run-id``, ``state``: running, failed, stopped
or done, the one-line ``error`` of a failed run) next to ``config.json`` and
``summary.json``, which carry the same run id. :func:`verdict` is the one place that
decides what a folder says about a run, so ``hyperflower run``, ``hyperflower report``
and the deploy scripts never show a summary that an older run left behind.

Exit codes (docs/running.md): 0 done, 1 failed, 2 bad config or usage, 3 stopped
for resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
STATUS_FILE = "status.json"
#: Files whose presence means a folder holds (part of) a run.
RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "summary.json",
    STATUS_FILE,
    "checkpoint/state.pt",
)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds files of a finished or partial run."""
    return any((folder / name).exists() for name in RUN_FILES)


@dataclass(frozen=True)
class Verdict:
    """What a run folder says about one run: exit code, message, summary if done."""

    code: int
    message: str
    summary: dict[str, Any] | None = None


def verdict(folder: str | Path, run_id: str | None = None) -> Verdict:
    """How the run ``run_id`` (default: the latest run started in ``folder``) ended.

    A summary counts only when ``status.json`` says that very run is done and the
    summary carries its id; anything else is a failure (exit 1) or a run stopped
    for resume (exit 3), whatever older files the folder still holds.
    """
    folder = Path(folder)
    status = read_json(folder / STATUS_FILE)
    summary = read_json(folder / "summary.json")
    if status is None:
        if run_id is None and summary is not None and "run_id" not in summary:
            return Verdict(
                EXIT_DONE,
                f"{folder}: a run from before run ids were "
                "recorded (cannot tell whether it is the latest)",
                summary,
            )
        wanted = f"run {run_id}" if run_id else "a run"
        return Verdict(
            EXIT_FAILED,
            f"{folder}: no record of {wanted} (the ServerApp "
            "never started it, or it was killed before writing anything): "
            "see the flwr log",
        )
    rid = str(status.get("run-id", ""))
    if run_id is not None and rid != run_id:
        return Verdict(
            EXIT_FAILED,
            f"{folder}: the run just started ({run_id}) left "
            f"no record there (it holds run {rid}): it failed before its "
            "ServerApp started; see the flwr log",
        )
    state = status.get("state")
    if state == "done" and summary is not None and summary.get("run_id") == rid:
        return Verdict(EXIT_DONE, f"{folder}: run {rid} done", summary)
    if state == "stopped":
        return Verdict(
            EXIT_STOPPED,
            f"{folder}: run {rid} stopped after round "
            f"{status.get('round')} as asked; run again with resume=true "
            "to continue",
        )
    if state == "running":
        return Verdict(
            EXIT_FAILED,
            f"{folder}: run {rid} did not finish (killed, or "
            "still running elsewhere); resume=true continues it from its "
            "last checkpoint",
        )
    error = status.get("error") or "no summary written"
    return Verdict(EXIT_FAILED, f"{folder}: run {rid} failed: {error}")
