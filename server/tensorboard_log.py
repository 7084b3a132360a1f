"""TensorBoard events for every run, and ``hyperflower report --tensorboard``.

:class:`server.outputs.RunOutputs` (the one path every method's metrics take to disk)
hands each write here too, so every run gets ``<run>/tensorboard/`` beside its
``metrics.jsonl``: each per-round row as scalars (tag = the row's key, nested dicts as
``key/sub``, step = round) and, when the run finishes, its config as hyperparameters
(TensorBoard's HParams tab) with the summary's headline numbers as the metrics (also
scalars ``summary/<key>``). Without the ``tensorboard`` package the run says so once
in its log and goes on; a failure here never stops a run.

Resume appends: a resumed process writes only the rounds after the last one already
logged and opens its event file with ``purge_step`` there, so TensorBoard drops any
step an earlier process logged past that point (a new file is started in a later
second than the newest one, so name order, TensorBoard's reading order, is the
order they were written); a fresh (not resumed) run under an
existing name first removes the old run's event files, as ``metrics.jsonl`` is
rewritten whole. The hyperparameters go to their own event file (``*.hparams``),
replaced whole each time the run finishes.

:func:`compare` collects run folders into one log dir (a folder of symlinks, one per
run) for ``tensorboard --logdir``, converting a run's ``metrics.jsonl`` into events
when the run predates this logging.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from logging import WARNING
from pathlib import Path
from typing import Any

from flwr.common.logger import log

#: Sub-folder of a run folder that holds its event files.
EVENTS_DIR = "tensorboard"
#: The last round whose row is in the event files (written after each flush).
MARKER = ".last-round"
#: Suffix of the event file that holds the hyperparameters (replaced whole).
HPARAMS_SUFFIX = ".hparams"
#: The summary's headline numbers, shown as the HParams tab's metrics.
HEADLINE = (
    "participant_acc",
    "participant_val_acc",
    "nonparticipant_acc",
    "nonparticipant_val_acc",
    "global_acc",
    "best_round",
    "bytes_down_per_round",
    "bytes_up_per_round",
    "wall_s",
)
#: Default name of the folder ``report --tensorboard`` makes beside the runs.
COMPARE_DIR = "tensorboard-compare"

_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    """Log ``message`` once per process for ``key`` (a missing package or a broken
    log dir should not repeat every round)."""
    if key not in _warned:
        _warned.add(key)
        log(WARNING, message, *args)


def summary_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or None (said once) when the
    ``tensorboard`` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        _warn_once(
            "missing",
            "TensorBoard logging is off: %s (pip install tensorboard); "
            "metrics.jsonl and the plots are written as usual",
            exc,
        )
        return None
    return SummaryWriter


def flat_scalars(
    row: Mapping[str, Any], prefix: str = ""
) -> Iterator[tuple[str, float]]:
    """The numeric entries of a metrics row as ``(tag, value)``: nested dicts as
    ``key/sub``; strings, lists and None are left out (TensorBoard scalars are
    numbers)."""
    for key, value in row.items():
        tag = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flat_scalars(value, f"{tag}/")
        elif isinstance(value, bool | int | float):
            yield tag, float(value)


def hparam_values(config: Mapping[str, Any]) -> dict[str, float | str]:
    """A run config as HParams values: numbers stay numbers (the HParams tab sorts
    and filters them), booleans become ``"true"``/``"false"`` (torch's writer would
    turn them into 1.0/0.0), lists and dicts JSON, None is left out."""
    out: dict[str, float | str] = {}
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str):
            out[key] = value
        elif isinstance(value, int | float):
            out[key] = float(value)
        else:
            out[key] = json.dumps(value, sort_keys=True, default=str)
    return out


def has_events(folder: Path) -> bool:
    """Whether ``folder`` (a run's ``tensorboard/``) holds any event file."""
    return folder.is_dir() and any(folder.glob("*tfevents*"))


class RunEvents:
    """The TensorBoard event files of one run folder (``<run>/tensorboard/``).

    Every method is best-effort: an error is logged once and turns the logging off
    for this run, so TensorBoard can never fail a training run.
    """

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / EVENTS_DIR
        self.config: dict[str, Any] = {}
        self._writer: Any = None
        self._off = False
        self._resumed_at: int | None = None
        self._logged = 0  # last round written (this process, or before a resume)
        self._started = False  # whether this process has opened the events yet

    def resumed(self, round_: int) -> None:
        """The run continues after checkpointed round ``round_``: keep the rounds
        already logged up to there, append after them."""
        self._resumed_at = int(round_)

    def _open(self) -> Any:
        """The scalar writer, opened on first use: fresh runs start clean, resumed
        ones (or a reopen after :meth:`close`) append with ``purge_step`` after the
        last round logged."""
        if self._writer is not None or self._off:
            return self._writer
        writer_class = summary_writer_class()
        if writer_class is None:
            self._off = True
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        purge: int | None = None
        if self._started:
            purge = self._logged + 1
        elif self._resumed_at is None:
            for old in [*self.dir.glob("*tfevents*"), self.dir / MARKER]:
                old.unlink(missing_ok=True)  # an earlier run of this name
            self._logged = 0
        else:
            marker = self.dir / MARKER
            logged = int(marker.read_text()) if marker.exists() else 0
            self._logged = min(logged, self._resumed_at)
            purge = self._logged + 1
        _wait_past_newest_stamp(self.dir)
        self._writer = writer_class(log_dir=str(self.dir), purge_step=purge)
        self._started = True
        return self._writer

    def _guard(self, what: str, exc: Exception) -> None:
        """Turn the logging off after an error, saying so once."""
        _warn_once(
            f"error:{self.dir}",
            "TensorBoard logging in %s is off after an error while writing %s: %r",
            self.dir,
            what,
            exc,
        )
        self._off = True
        self.close()

    def rounds(self, rows: list[dict[str, Any]]) -> None:
        """Write the rows not yet logged as scalars (step = the row's round)."""
        try:
            writer = self._open()
            if writer is None:
                return
            last = self._logged
            for row in rows:
                step = int(row.get("round", 0))
                if step <= self._logged:
                    continue
                for tag, value in flat_scalars(row):
                    if tag != "round":
                        writer.add_scalar(tag, value, global_step=step)
                last = max(last, step)
            writer.flush()
            if last != self._logged:
                self._logged = last
                (self.dir / MARKER).write_text(f"{last}\n")
        except Exception as exc:  # noqa: BLE001 - logging must never stop a run
            self._guard("scalars", exc)

    def summary(self, summary: Mapping[str, Any]) -> None:
        """The run config as hyperparameters with the summary's headline numbers as
        their metrics, in a ``*.hparams`` event file that replaces any earlier one;
        then close the scalar writer (the run is over)."""
        try:
            self._hparams(summary)
        except Exception as exc:  # noqa: BLE001 - logging must never stop a run
            self._guard("hyperparameters", exc)
        self.close()

    def _hparams(self, summary: Mapping[str, Any]) -> None:
        if self._off or summary_writer_class() is None:
            return
        from torch.utils.tensorboard.summary import hparams
        from torch.utils.tensorboard.writer import FileWriter

        metrics = {
            key: float(summary[key])
            for key in HEADLINE
            if isinstance(summary.get(key), int | float)
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob(f"*tfevents*{HPARAMS_SUFFIX}"):
            old.unlink()
        step = int(summary.get("rounds") or self._logged or 0)
        writer = FileWriter(str(self.dir), filename_suffix=HPARAMS_SUFFIX)
        try:
            exp, ssi, sei = hparams(
                hparam_values(self.config),
                {f"summary/{k}": v for k, v in metrics.items()},
            )
            for item in (exp, ssi, sei):
                writer.add_summary(item)
            for key, value in metrics.items():
                writer.add_summary(_scalar(f"summary/{key}", value), step)
        finally:
            writer.close()

    def close(self) -> None:
        """Flush and close the event file (end of run; safe to call twice)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as exc:  # noqa: BLE001 - logging must never stop a run
                _warn_once(f"close:{self.dir}", "TensorBoard close failed: %r", exc)


def _stamp(path: Path) -> int:
    """The whole second in an event file's name (``events.out.tfevents.<s>.…``)."""
    try:
        return int(path.name.split("tfevents.", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return 0


def _wait_past_newest_stamp(folder: Path) -> None:
    """Wait (under a second) until a new event file's name sorts after every scalar
    file already in ``folder``.

    TensorBoard reads a folder's event files in name order, and with its default
    ``purge_orphaned_data`` a step lower than one already read drops the later steps.
    A name is ``<second>.<host>.<pid>.<counter>``: two files opened in the same second
    sort by pid and by an unpadded counter (".10" before ".9"), so an appended file
    could be read first. Starting it in a later second keeps the order.
    """
    newest = max(
        (_stamp(p) for p in folder.glob("*tfevents*") if p.suffix != HPARAMS_SUFFIX),
        default=0,
    )
    while int(time.time()) <= newest:
        time.sleep(max(0.01, newest + 1 - time.time()))


def _scalar(tag: str, value: float) -> Any:
    """A scalar ``Summary`` proto (for writing beside the hparams summaries)."""
    from torch.utils.tensorboard.summary import scalar

    return scalar(tag, value)


# ---- report --tensorboard ----------------------------------------------------
def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def convert(run_dir: Path) -> bool:
    """Write a finished or partial run's events from its ``metrics.jsonl``,
    ``config.json`` and ``summary.json`` (for runs from before this logging).
    Returns whether there were rows to convert."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return False
    rows = [
        json.loads(line)
        for line in metrics.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    if not rows:
        return False
    events = RunEvents(run_dir)
    config = _read_json(run_dir / "config.json") or {}
    events.config = {k: v for k, v in config.items() if k != "run"}
    events.rounds(rows)
    summary = _read_json(run_dir / "summary.json")
    if summary:
        events.summary(summary)
    events.close()
    return has_events(events.dir)


def _event_dirs(run_dir: Path) -> list[tuple[str, Path]]:
    """``(suffix, folder)`` for the run's own events and those of its sub-runs
    (``<run>/<sub>/tensorboard``)."""
    found = [("", run_dir / EVENTS_DIR)] if has_events(run_dir / EVENTS_DIR) else []
    for sub in sorted(run_dir.iterdir()):
        if sub.is_dir() and has_events(sub / EVENTS_DIR):
            found.append((f".{sub.name}", sub / EVENTS_DIR))
    return found


def compare(runs: list[str], logdir: str | None = None) -> int:
    """``hyperflower report --tensorboard RUN...``: one TensorBoard log dir of
    symlinks (one per run, named after its folder) to compare runs side by side,
    then the command that opens it. A run without event files (older than this
    logging) gets them from its ``metrics.jsonl`` first. Exit code 0, or 2 when no
    folder given is a run."""
    folders = [Path(r).expanduser().resolve() for r in runs]
    target = (
        Path(logdir).expanduser().resolve()
        if logdir
        else Path(os.path.commonpath([f.parent for f in folders] or [Path.cwd()]))
        / COMPARE_DIR
    )
    links: dict[str, Path] = {}
    for folder in folders:
        if folder == target:
            continue
        if (
            not (folder / "config.json").exists()
            and not (folder / "metrics.jsonl").exists()
        ):
            print(f"skipped: {folder} is not a run folder", file=sys.stderr)
            continue
        if not _event_dirs(folder):
            if convert(folder):
                print(f"converted: {folder}/metrics.jsonl -> {EVENTS_DIR}/")
            else:
                print(f"skipped: {folder} has no metrics yet", file=sys.stderr)
                continue
        for suffix, events in _event_dirs(folder):
            name = base = f"{folder.name}{suffix}"
            n = 2
            while name in links:
                name, n = f"{base}-{n}", n + 1
            links[name] = events
    if not links:
        print("error: no run folders with metrics given", file=sys.stderr)
        return 2
    spec = ",".join(f"{name}:{path}" for name, path in links.items())
    try:
        _link_all(target, links)
    except OSError as exc:  # no symlinks here (e.g. Windows without rights)
        print(f"note: could not make {target} ({exc}); use --logdir_spec instead")
        print(f"open with:  tensorboard --logdir_spec {spec}")
        return 0
    print(f"TensorBoard log dir with {len(links)} run(s): {target}")
    for name, path in links.items():
        print(f"  {name} -> {path}")
    print(f"open with:  tensorboard --logdir {target}")
    print("then browse http://localhost:6006 (Scalars: per round; HParams: configs)")
    return 0


def _link_all(target: Path, links: Mapping[str, Path]) -> None:
    """Make ``target`` hold exactly one symlink per entry of ``links`` (old links
    from an earlier compare are removed; anything else there is left alone)."""
    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        if old.is_symlink():
            old.unlink()
    for name, path in links.items():
        (target / name).symlink_to(path, target_is_directory=True)
