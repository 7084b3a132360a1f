"""Run-config keys as data: what a key means, its default and what it allows.

Every key is a :class:`Setting`. The keys every run shares live in
:mod:`common.config`; a method declares its own in a :class:`MethodSpec` (one module
under ``common/methods/``), which both its server strategy and its client handlers
import. Nothing else lists keys: the config parser, ``pyproject.toml``'s
``[tool.flwr.app.config]`` (checked by a test), docs/config.md's key table, checkpoint
fingerprints, the summary's non-participant protocol and offline personalisation all
read them from here, so adding a method touches no shared module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.config import RunConfig

#: A value check: returns what is wrong with a value (without the key), or None.
Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Setting:
    """One run-config key: default (which also fixes its type), one-line help, the
    allowed values (``choices``) or a ``check``, and whether a checkpoint written
    with another value may be resumed (``fingerprint``: it may not)."""

    default: Any
    help: str
    choices: tuple[str, ...] = ()
    check: Check | None = None
    fingerprint: bool = False


@dataclass(frozen=True)
class MethodSpec:
    """What a method declares once, for the server, the clients and the tools.

    ``settings`` are the keys it owns (a group such as the hypernetwork optimiser's
    may be shared by several methods, with identical definitions);
    ``nonparticipant_protocol`` says in one line what a client that never trained
    gets (summary.json); ``personalizable`` says whether ``hyperflower personalize``
    can serve it offline; ``validate`` checks combinations of keys when this method
    is the one chosen; ``lazy_registration`` says whether clients may register
    when first drawn instead of before round 1.
    """

    name: str
    summary: str
    settings: Mapping[str, Setting] = field(default_factory=dict)
    nonparticipant_protocol: str = ""
    personalizable: bool = False
    validate: Callable[[RunConfig], None] | None = None
    #: Whether the method runs with ``registration = "lazy"``: its server state is
    #: not built from every client's registration, and a client registered
    #: mid-run gets what it needs from its strategy's ``admit``.
    lazy_registration: bool = False


#: Every registered method by name, in registration order.
METHOD_SPECS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Make a method's name and settings known to the config parser.

    A key may be declared by several methods only with the same definition; a
    method registered again under its name replaces its earlier spec (tests and
    plugins may redefine one).
    """
    others = {
        k: s
        for name, m in METHOD_SPECS.items()
        if name != spec.name
        for k, s in m.settings.items()
    }
    for key, setting in spec.settings.items():
        if key in others and others[key] != setting:
            raise ValueError(
                f"method {spec.name!r} redefines run-config key {key!r} "
                "differently from another method"
            )
    METHOD_SPECS[spec.name] = spec
    return spec


# ---- checks, each naming what is allowed ---------------------------------------
def at_least(low: float) -> Check:
    """``value >= low``."""
    return lambda v: None if v >= low else f"must be >= {low}, got {v}"


def above(low: float) -> Check:
    """``value > low``."""
    return lambda v: None if v > low else f"must be > {low}, got {v}"


def in_range(low: float, high: float, closed_high: bool = False) -> Check:
    """``low <= value < high`` (or ``<= high``)."""

    def check(v: Any) -> str | None:
        ok = low <= v <= high if closed_high else low <= v < high
        bracket = "]" if closed_high else ")"
        return None if ok else f"must be in [{low}, {high}{bracket}, got {v}"

    return check


def open_range(low: float, high: float) -> Check:
    """``low < value < high``."""
    return lambda v: None if low < v < high else f"must be in ({low}, {high}), got {v}"


def all_settings(shared: Mapping[str, Setting]) -> dict[str, Setting]:
    """The shared keys, then every registered method's, each once."""
    out = dict(shared)
    for spec in METHOD_SPECS.values():
        for key, setting in spec.settings.items():
            out.setdefault(key, setting)
    return out


def key_table(settings: Mapping[str, Setting], owners: Mapping[str, str]) -> str:
    """A Markdown table of keys (key, default, meaning, used by) for docs/config.md."""
    lines = ["| key | default | meaning | used by |", "| --- | --- | --- | --- |"]
    for key, s in settings.items():
        allowed = f" ({', '.join(f'`{c}`' for c in s.choices)})" if s.choices else ""
        default = f"`{s.default!r}`" if s.default != "" else "`''`"
        lines.append(
            f"| `{key}` | {default} | {s.help}{allowed} | {owners.get(key, 'all')} |"
        )
    return "\n".join(lines)
