"""Many clients, one cause: failed replies grouped by what went wrong.

When fifty clients fail the same way (a missing data folder, a bad install) the log
gets one line per cause with the count, ``"round 3: 50 of 50 clients: FileNotFoundError:
..."``, instead of fifty tracebacks, and a run that stops names the cause in its
final error. Reasons arrive as ClientApps send them (``client/checks.py``:
``"<ExceptionType>: <message>"``), or as Flower writes them for failures outside the
app (``"<class 'X'>:<'message'>"``, sometimes with a whole traceback inside), which
:func:`cause_of` reduces to the same one-line form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from logging import WARNING

from flwr.common.logger import log

_CODE = re.compile(r"^code (\d+): ")
_FLWR = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)'>$", re.DOTALL)
_LAST_ERROR = re.compile(
    r"^(?:[\w]+\.)*(\w+(?:Error|Exception|Exit|Interrupt|Warning)): (.+)$"
)
#: Client ids named in a grouped line (the rest are counted).
NAMED = 5


def cause_of(reason: str) -> str:
    """The one-line cause in an error reply's reason."""
    text = _CODE.sub("", reason.strip())
    match = _FLWR.match(text)
    if match:
        kind, inner = match.groups()
        found = [
            m for line in inner.splitlines() if (m := _LAST_ERROR.match(line.strip()))
        ]
        # Flower wraps the ClientApp's exception (with its traceback) in its own
        # ClientAppException: the innermost "XError: message" line is the cause
        text = (
            f"{found[-1].group(1)}: {found[-1].group(2)}"
            if found
            else f"{kind}: {inner}"
        )
    return " ".join(text.split())


def group_causes(failures: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """(cause, client ids) pairs, the most common cause first."""
    groups: dict[str, list[str]] = {}
    for cid, reason in failures.items():
        groups.setdefault(cause_of(reason), []).append(cid)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def _named(ids: list[str]) -> str:
    shown = ", ".join(ids[:NAMED])
    return shown + (f", +{len(ids) - NAMED} more" if len(ids) > NAMED else "")


def cause_lines(failures: Mapping[str, str], total: int) -> list[str]:
    """``"<n> of <total> clients (<ids>): <cause>"``, one line per distinct cause."""
    return [
        f"{len(ids)} of {total} client{'s' if total != 1 else ''} "
        f"({_named(ids)}): {cause}"
        for cause, ids in group_causes(failures)
    ]


def main_cause(failures: Mapping[str, str], total: int) -> str:
    """The most common cause as one line ("" when nothing failed)."""
    lines = cause_lines(failures, total)
    return lines[0] if lines else ""


def log_faults(
    what: str,
    errors: Mapping[str, str],
    missing: Iterable[str],
    invalid: Mapping[str, str],
    total: int,
    timeout: float,
) -> None:
    """Log an exchange's failed clients once per cause, with the count."""
    missing = list(missing)
    merged = {
        **{c: f"replied with an error: {cause_of(r)}" for c, r in errors.items()},
        **{c: f"did not reply within {timeout:.0f}s" for c in missing},
        **{c: f"sent an invalid reply, left out: {r}" for c, r in invalid.items()},
    }
    for line in cause_lines(merged, total):
        log(WARNING, "%s: %s", what, line)


def exchange_cause(
    errors: Mapping[str, str],
    missing: Iterable[str],
    invalid: Mapping[str, str],
    total: int,
) -> str:
    """The most common reason clients of an exchange failed, for a final error."""
    merged = {
        **{c: cause_of(r) for c, r in errors.items()},
        **{c: "no reply in time" for c in missing},
        **{c: f"invalid reply: {r}" for c, r in invalid.items()},
    }
    return main_cause(merged, total)
