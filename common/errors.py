"""How hyperflower reports a failure, the same on the server and the clients.

- :func:`describe_exception` is an error's cause on one line
  (``"<ExceptionType>: <message>"``): a client's error reply carries it, and so does
  a failed run's ``status.json``, so the same cause reads the same on both sides.
- :func:`debug_enabled` says whether ``HYPERFLOWER_DEBUG`` asks for tracebacks too.
"""

from __future__ import annotations

import os


def describe_exception(exc: BaseException) -> str:
    """``"<ExceptionType>: <message>"`` on one line: an error reply's reason."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def debug_enabled() -> bool:
    """Whether ``HYPERFLOWER_DEBUG`` asks for tracebacks."""
    return os.environ.get("HYPERFLOWER_DEBUG", "") not in ("", "0", "false")
