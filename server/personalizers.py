"""What offline personalisation shares with the strategies that serve it.

A finished run as :mod:`server.personalize` reads it (:class:`TrainedRun`), the
errors a personaliser raises, and the registry of personalisers by method
(:data:`PERSONALIZERS`). Each method's strategy module registers its own personaliser
with :func:`register_personalizer`, as strategies register themselves
(``STRATEGIES``); :mod:`server.personalize` imports the strategies and looks the
run's method up here. This module imports neither side, so both import it at module
level and there is no import cycle.

A personaliser is a class built once per run, ``cls(run, device)``, and called per
client: ``(client_id, partition_id, data, rounds, lr[, arch=...])`` → (parameters,
how they were made). A class with ``takes_arch = True`` accepts ``arch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from common.config import RunConfig

#: How each method that supports offline personalisation (its spec says so) builds a
#: new client's model; filled by :func:`register_personalizer`.
PERSONALIZERS: dict[str, type] = {}

T = TypeVar("T", bound=type)


class PersonalizeError(ValueError):
    """The run or the new client's inputs cannot give a personalised model."""


class FitFailedError(PersonalizeError):
    """The fit ran but gave no usable model (NaN or infinite weights or loss)."""


@dataclass
class TrainedRun:
    """What offline personalisation needs from a finished run."""

    dir: Path
    cfg: RunConfig
    state: dict[str, Any]
    round: int
    info: dict[str, Any] = field(default_factory=dict)


def register_personalizer(*methods: str) -> Callable[[T], T]:
    """Class decorator: the personaliser of ``methods`` (a strategy module names its
    own, so a new method adds offline personalisation without editing this file)."""

    def decorate(cls: T) -> T:
        for method in methods:
            PERSONALIZERS[method] = cls
        return cls

    return decorate
