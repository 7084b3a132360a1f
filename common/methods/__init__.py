"""Every built-in method's spec (its settings and what it promises), one module each.

Importing this package imports every module in it, so a new method is a new file
here (plus its strategy and client handler modules): no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
