"""One module of ClientApp handlers per method; each registers on
:data:`client.runtime.app` when imported, so a new method's handlers are a new module
here.

The app imports them lazily (:func:`load_for`): in deployment Flower starts a fresh
process for every message, and that process needs only the module that serves the
message's action, not every method's code. A registration query imports them all
(a method's module may add registration fields), and so does an action not listed in
:data:`ACTION_MODULES`, so a module left out of it still works, only eagerly.
"""

from __future__ import annotations

import importlib
import pkgutil

from common.protocol import DSH, HYPERFEDZERO, LORA, MH

#: The module (under this package) that registers each action's train/evaluate
#: handlers; "" is the plain handlers' default action (pFedHN, FedAvg, local-only).
ACTION_MODULES: dict[str, str] = {
    "": "plain",
    "fedproto": "fedproto",
    HYPERFEDZERO: "hyperfedzero",
    LORA: "hyperflora",
    MH: "mh",
    DSH: "pfeddsh",
}


def load_all() -> None:
    """Import every handler module (each registers its handlers and fields)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def load_for(message_type: str) -> None:
    """Import what a message of ``message_type`` (``train.lora``, ``query``, …)
    needs: the module of its action for train and evaluate, every module else."""
    category, _, action = message_type.partition(".")
    action = "" if action == "default" else action
    if category in ("train", "evaluate") and action in ACTION_MODULES:
        importlib.import_module(f"{__name__}.{ACTION_MODULES[action]}")
    else:
        load_all()
