"""One module of ClientApp handlers per method; importing this package imports all
of them (each registers on :data:`client.runtime.app`), so a new method's handlers
are a new module here."""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
