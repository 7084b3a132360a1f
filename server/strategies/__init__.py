"""Every method, as a Flower strategy, by its run-config name.

Importing this package imports every strategy module in it; each strategy class
with a ``name`` registers itself (:data:`STRATEGIES`), so a new method is a new
module here, not an edit of this file.
"""

from __future__ import annotations

import importlib
import pkgutil

from server.strategies.base import STRATEGIES, HyperflowerStrategy

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")


def strategy_for(method: str) -> type[HyperflowerStrategy]:
    """The strategy class of a method (a plugin's too, once its module is loaded)."""
    try:
        return STRATEGIES[method]
    except KeyError:
        raise KeyError(
            f"method {method!r} has a spec but no strategy; known: "
            f"{', '.join(STRATEGIES)}"
        ) from None


__all__ = ["STRATEGIES", "HyperflowerStrategy", "strategy_for"]
