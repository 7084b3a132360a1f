"""The ClientApp Flower loads (``client.app:app``): the shared runtime's app, on
which every method's handlers register as messages need them.

A client holds only its own partition (decided by dataset, partitioner, seed and its
``partition-id``). Handlers live one module per method in ``client/handlers/``,
imported when a message first needs them; the setup, seeding, identity,
registration and reply tail they share live in :mod:`client.runtime`.
"""

from __future__ import annotations

from client import timing

timing.mark("import-start")  # a per-message process pays this import every time

# every method's handlers register on app when a message first needs them
# (client.handlers.load_for): a per-message process imports one method's code
from client.runtime import app  # noqa: E402

timing.mark("import-done")

__all__ = ["app"]
