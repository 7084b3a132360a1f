"""A run's life on disk: its identity, its data, and how it ended (status.json).

:func:`open_run` gives a run its id (``run-id`` from the run config, as
``hyperflower run`` sets it, or a fresh one) and start time, moves an earlier run
out of the folder unless ``resume=true`` (never mixing two runs' files), and marks the
folder as running. :func:`check_data` loads the data where the server can (simulation)
and records it. :func:`fail_run` and :func:`end_run` write the outcome that
:func:`common.runinfo.verdict` reads.
"""

from __future__ import annotations

import time
import uuid
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.common.logger import log

from common.config import RunConfig
from common.errors import debug_enabled, describe_exception
from common.runinfo import holds_run, read_json
from server.datacheck import expected_fingerprint, local_data
from server.outputs import RunOutputs


class RunFailedError(RuntimeError):
    """The run stopped; the message is its cause on one line (status.json has it)."""


def new_run_id() -> str:
    """A short random run id."""
    return uuid.uuid4().hex[:12]


def _when(folder: Path) -> str:
    """When the run in ``folder`` started, as a name-safe stamp."""
    status = read_json(folder / "status.json") or {}
    started = str(status.get("started-at") or "")
    if started:
        return started.replace(":", "").replace("-", "").replace("+0000", "")[:15]
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(folder.stat().st_mtime))


def set_aside(folder: Path) -> Path:
    """Move an earlier run's folder to ``<name>.prev-<its start time>``; return it."""
    base = folder.with_name(f"{folder.name}.prev-{_when(folder)}")
    target, n = base, 1
    while target.exists():
        n += 1
        target = base.with_name(f"{base.name}-{n}")
    folder.rename(target)
    return target


def open_run(cfg: RunConfig) -> RunOutputs:
    """The run's output folder, stamped with its id and start time, marked running.

    Without ``resume=true``, a folder holding a finished or partial run is moved
    aside first (``<run-name>.prev-<time>``), so the new run's files never mix with
    the old ones and an old summary can never pass for the new run's.
    """
    folder = Path(cfg.output_dir).expanduser().resolve() / cfg.resolved_run_name
    moved = set_aside(folder) if not cfg.resume and holds_run(folder) else None
    stamp = {
        "id": cfg.run_id or new_run_id(),
        "started-at": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime()),
    }
    outputs = RunOutputs(cfg.output_dir, cfg.resolved_run_name, stamp)
    if moved is not None:
        log(
            WARNING,
            "%s held an earlier run: moved it to %s (resume=true continues "
            "a run instead)",
            folder,
            moved,
        )
    outputs.write_status("running")
    log(INFO, "run %s -> %s", stamp["id"], folder)
    return outputs


def check_data(cfg: RunConfig, outputs: RunOutputs, local: bool) -> str:
    """Load the data on this host when ``local`` (simulation, in-process) and record
    what the run uses; return the fingerprint every client must report."""
    data = local_data(cfg) if local else None
    outputs.stamp["data"] = {
        "dataset": cfg.dataset,
        "data-dir": cfg.data_dir,
        **(data or {"checked-on": "clients"}),
    }
    return expected_fingerprint(cfg, data)


def record_clients_data(outputs: RunOutputs, agreed: dict[str, Any]) -> None:
    """Add what the registered clients reported about their data to the record."""
    data = outputs.stamp.setdefault("data", {})
    data["clients"] = agreed
    for key in ("fingerprint", "scale", "mean", "std", "num-classes", "image-shape"):
        if key in agreed:
            data.setdefault(key, agreed[key])


def fail_run(outputs: RunOutputs, exc: BaseException) -> RunFailedError:
    """Record a failed run (status.json) and log its cause once; the error to raise."""
    cause = describe_exception(exc)
    outputs.write_status("failed", error=cause)
    log(ERROR, "run %s failed: %s", outputs.stamp.get("id"), cause)
    if debug_enabled():
        import traceback

        log(ERROR, "%s", "".join(traceback.format_exception(exc)))
    return RunFailedError(cause)


def end_run(
    outputs: RunOutputs, summary: dict[str, Any] | None, cfg: RunConfig
) -> None:
    """Record how a run that did not raise ended: done, or stopped for resume."""
    if summary is None:
        outputs.write_status("stopped", round=cfg.stop_after_round)
    else:
        outputs.write_status("done")
