"""The ClientApp Flower loads (``client.app:app``): the shared runtime's app with
every method's handlers registered on it.

A client holds only its own partition (decided by dataset, partitioner, seed and its
``partition-id``). Handlers live one module per method in ``client/handlers/``; the
setup, seeding, identity, registration and reply tail they share live in
:mod:`client.runtime`.
"""

from __future__ import annotations

from client import timing

timing.mark("import-start")  # a per-message process pays this import every time

import client.handlers  # noqa: E402, F401  (registers every method's handlers on app)
from client.runtime import app  # noqa: E402

timing.mark("import-done")

__all__ = ["app"]
