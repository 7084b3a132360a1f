"""Light timing marks of one ClientApp message, for attributing a deployed round.

In deployment Flower starts one ``flwr-clientapp`` process per message, so a
message's cost includes starting Python, Flower's own start-up and FAB install,
importing this app and loading the client's data before any training. These marks
say where that time goes, measured rather than guessed (``bench/deploy_cost.py``):

- ``process-start``: when this process started (from ``/proc``, Linux only);
- ``import-start`` / ``import-done``: around ``import client.app``;
- ``handler-start``: the message reaches our handler (after the lifespan);
- ``data-loaded``: run config parsed and this client's data loaded;
- ``trained``: local training done (the reply is being packed);
- ``reply-built``: the handler returned its reply;
- ``exit`` (a separate line, at interpreter exit): Flower pushed the reply and is
  leaving the process.

Each is a Unix time. Nothing is written unless ``HYPERFLOWER_TIMING_LOG`` names a
file: then one JSON line per message (and one per process exit) is appended to it.
Only the standard library is imported here, so the marks cost microseconds.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from typing import Any

#: The environment variable naming the file the marks are appended to.
TIMING_LOG_ENV = "HYPERFLOWER_TIMING_LOG"

#: Marks of the message being handled (and of this process's import of the app).
_marks: dict[str, float] = {}
#: Whether this process has already handled a message (its imports are then paid).
_handled = 0


def process_start() -> float | None:
    """When this process started, as a Unix time (None where /proc is missing).

    ``/proc/self/stat`` holds the start in clock ticks after boot; the time since
    boot (``CLOCK_BOOTTIME``, the clock it counts on) places it on the wall clock to
    a tick (10 ms). Python's own start-up happens before any code of ours runs, so
    only the kernel knows when the process began.
    """
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - since_boot + ticks / os.sysconf("SC_CLK_TCK")


def mark(name: str) -> None:
    """Record that this message reached point ``name`` now."""
    _marks[name] = time.time()


def _write(record: dict[str, Any]) -> None:
    path = os.environ.get(TIMING_LOG_ENV)
    if not path:
        return
    try:  # one short append: lines of concurrent processes do not interleave
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    except OSError:
        pass  # timing is never worth a failed message


def _on_exit() -> None:
    if _handled:
        _write({"pid": os.getpid(), "exit": time.time()})


def timing_mod(msg: Any, context: Any, call_next: Any) -> Any:
    """Flower mod: time the message's handler and write its marks (when asked).

    The first message a process handles carries the process's start and import
    marks; later ones (simulation reuses its workers) carry only their own.
    """
    global _handled
    first = not _handled
    if first:
        atexit.register(_on_exit)
    own = {k: v for k, v in _marks.items() if k.startswith(("import-", "process-"))}
    _marks.clear()
    if first:
        _marks.update(own)
    mark("handler-start")
    try:
        return call_next(msg, context)
    finally:
        mark("reply-built")
        _handled += 1
        meta = msg.metadata
        _write(
            {
                "pid": os.getpid(),
                "first": first,
                "type": meta.message_type,
                "group": meta.group_id,
                "created": meta.created_at,
                "partition-id": context.node_config.get("partition-id"),
                **_marks,
            }
        )


if os.environ.get(TIMING_LOG_ENV):
    _start = process_start()
    if _start is not None:
        _marks["process-start"] = _start
