"""Paired, per-seed comparison of two rows: the one test behind every verdict.

Two rows run on the same seeds see the same splits, so the difference of their
scores on one seed carries no split-to-split spread; the spread *between* seeds
(5–7 points on a Dirichlet 0.3 split) is not noise of the comparison and must not
hide a difference that has the same sign on every seed. :func:`compare` is used by
the tuning rule (docs/tuning.md rule 4: does a grid point beat the source's value?)
and by every claim page's writer (rule 9: does a claim hold?), so both read a
difference the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: With at least this many seeds the test is "mean > 0 and ⌈AGREE_SHARE · n⌉ of n
#: seeds agree" (4 of 5); with fewer, every seed must agree.
MIN_SEEDS_FOR_MAJORITY = 5
AGREE_SHARE = 0.8


@dataclass(frozen=True)
class Paired:
    """The per-seed comparison of a row with a reference row.

    ``diffs`` maps each compared seed to row − reference (None where the row did not
    score on that seed: it counts against the row); ``mean`` is over the scored
    seeds; ``agree`` counts seeds with a difference above 0; ``verdict`` is "holds"
    or "tie" (docs/tuning.md rules 4 and 9)."""

    diffs: dict[int, float | None]
    mean: float | None
    agree: int
    n: int
    verdict: str

    @property
    def holds(self) -> bool:
        """Whether the row beats the reference by the paired test."""
        return self.verdict == "holds"

    def cells(self, scale: float = 100.0, digits: int = 2) -> str:
        """The per-seed differences in a table cell, e.g. ``+1.02, +0.68``
        (``scale`` 100 turns accuracy fractions into points; a seed the row did not
        score on is ``NaN``)."""
        return ", ".join(
            "NaN" if d is None else f"{scale * d:+.{digits}f}"
            for d in self.diffs.values()
        )

    def summary(self, scale: float = 100.0, digits: int = 2) -> str:
        """``mean +x.xx, k of n seeds agree — holds`` (with the seed count said
        where fewer than five seeds decide it)."""
        mean = "—" if self.mean is None else f"{scale * self.mean:+.{digits}f}"
        few = (
            f" (only {self.n} seed{'s' if self.n != 1 else ''}: holds only if every "
            "seed agrees)"
            if self.n < MIN_SEEDS_FOR_MAJORITY
            else ""
        )
        return (
            f"mean {mean}, {self.agree} of {self.n} seeds agree — {self.verdict}{few}"
        )


def _score(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def needed(n: int) -> int:
    """How many of ``n`` seeds must agree for "holds": all of them below five seeds,
    ⌈0.8 n⌉ from five on (4 of 5)."""
    if n < MIN_SEEDS_FOR_MAJORITY:
        return n
    return math.ceil(AGREE_SHARE * n - 1e-9)


def compare(
    row: Mapping[int, float | None], reference: Mapping[int, float | None]
) -> Paired:
    """Compare ``row`` with ``reference`` seed by seed (both map seed → score).

    Only seeds on which the reference scored are compared (a reference that failed
    on a seed leaves that seed out); a seed on which the row failed, diverged (NaN)
    or is missing counts as a disagreeing seed. The verdict is "holds" when the mean
    difference is above 0 and at least :func:`needed` seeds have a difference above
    0, else "tie"; with no seed to compare it is "tie"."""
    diffs: dict[int, float | None] = {}
    for seed in sorted(reference):
        ref = _score(reference[seed])
        if ref is None:
            continue
        got = _score(row.get(seed))
        diffs[seed] = None if got is None else got - ref
    scored = [d for d in diffs.values() if d is not None]
    mean = sum(scored) / len(scored) if scored else None
    agree = sum(d > 0 for d in scored)
    n = len(diffs)
    holds = n > 0 and mean is not None and mean > 0 and agree >= needed(n)
    return Paired(diffs, mean, agree, n, "holds" if holds else "tie")


def by_seed(rows: Iterable[Mapping[str, Any]], key: str) -> dict[int, float | None]:
    """``{seed: row[key]}`` from per-seed run records (each with a ``seed``); a
    missing or non-numeric value (a failed run) is None."""
    out: dict[int, float | None] = {}
    for r in rows:
        value = r.get(key)
        out[int(r["seed"])] = (
            float(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else None
        )
    return out


def claim_table(pairs: Iterable[tuple[str, Paired]], scale: float = 100.0) -> str:
    """A claim page's Markdown table of compared pairs (docs/tuning.md rule 9): for
    each ``(name, comparison)`` its per-seed differences, mean, agreeing seeds and
    the verdict in words, with the seed count said where fewer than five seeds
    decide it. Every claim page writer renders its pairs with this one function, so
    every page reads a claim the same way."""
    lines = [
        "| compared (row − reference) | per-seed differences (points, seeds "
        "ascending) | mean | seeds above 0 | verdict |",
        "|---|---|---|---|---|",
    ]
    for name, got in pairs:
        mean = "—" if got.mean is None else f"{scale * got.mean:+.2f}"
        few = (
            f" ({got.n} seeds: every seed must agree)"
            if got.n < MIN_SEEDS_FOR_MAJORITY
            else ""
        )
        lines.append(
            f"| {name} | {got.cells(scale)} | {mean} | {got.agree} of {got.n} | "
            f"**{got.verdict}**{few} |"
        )
    return "\n".join(lines)


#: One sentence a claim page prints under its table of pairs (rule 9).
CLAIM_RULE = (
    "A claim **holds** when the mean paired difference is above 0 and at least 4 "
    "of 5 seeds agree; with fewer than 5 seeds only when every seed agrees; "
    "otherwise it is a **tie** (docs/tuning.md rule 9)."
)


def against_zero(values: Mapping[int, float | None], below: bool = False) -> Paired:
    """A claim about the sign of a per-seed value (pFedDSH's "RI > 0", "PA > 0"; a
    variant's "RI below 0") read as a pair: the value against 0 on each seed, or
    with ``below`` 0 − value, so that "holds" reads "below 0". The same test as any
    pair (:func:`compare`); a seed whose value is missing counts against the
    claim."""
    sign = -1.0 if below else 1.0
    row: dict[int, float | None] = {}
    for seed, value in values.items():
        got = _score(value)
        row[seed] = None if got is None else sign * got + 0.0  # never "-0.00"
    return compare(row, dict.fromkeys(values, 0.0))


def claim_section(intro: str, pairs: Iterable[tuple[str, Paired]]) -> list[str]:
    """A claim page's block of lines: ``intro``, the :func:`claim_table` of
    ``pairs`` and :data:`CLAIM_RULE` (no lines without a pair), so every writer
    lays its claims out alike."""
    pairs = list(pairs)
    if not pairs:
        return []
    return ["", intro, "", claim_table(pairs), "", CLAIM_RULE]
