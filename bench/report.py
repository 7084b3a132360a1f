"""Aggregating runs over seeds and writing a suite's JSON, Markdown table and plots."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.harness import RESULTS  # noqa: E402


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and (sample) standard deviation of the values that are not None/NaN.

    One value gives std 0; none gives (None, None, 0).
    """
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None, None, 0
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return statistics.fmean(vals), std, len(vals)


def aggregate(
    runs: Sequence[Mapping[str, Any]], group: str, keys: Sequence[str]
) -> list[dict[str, Any]]:
    """Group run records by ``group`` (first-seen order) and give mean/std per key.

    Each output row has ``group``'s value, ``n`` (runs in the group), ``seeds`` and,
    for every key, ``{key: mean, key_std: std}`` over the runs that have it.
    """
    order: list[Any] = []
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for run in runs:
        label = run[group]
        if label not in groups:
            order.append(label)
            groups[label] = []
        groups[label].append(run)
    rows = []
    for label in order:
        members = groups[label]
        row: dict[str, Any] = {
            group: label,
            "n": len(members),
            "seeds": [m.get("seed") for m in members],
            "diverged": sum(bool(m.get("diverged")) for m in members),
        }
        for key in keys:
            mean, std, _ = mean_std(m.get(key) for m in members)
            row[key], row[f"{key}_std"] = mean, std
            nans = sum(_is_nan(m.get(key)) for m in members)
            if nans:
                row[f"{key}_nan"] = nans
        rows.append(row)
    return rows


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


#: Accuracy keys a diverged run reports as NaN (whatever its NaN model's argmax hit).
ACCURACY_KEYS = (
    "participant_acc",
    "participant_val_acc",
    "nonparticipant_acc",
    "global_acc",
    "bystander_acc",
)


def divergence(
    summary: Mapping[str, Any] | None,
    rows: Sequence[Mapping[str, Any]],
    error: str = "",
) -> str:
    """Why a run counts as diverged ("" when it does not).

    Diverged: a loss in its per-round rows or a reported accuracy is NaN/Inf (a NaN
    model still "classifies", so its accuracy alone would read as a number, e.g.
    0.0 %), or it stopped with an error that names NaN.
    """
    for row in rows:
        for key, value in row.items():
            if (
                key.endswith("loss")
                and isinstance(value, int | float)
                and not math.isfinite(value)
            ):
                return f"{key} is {value} at round {row.get('round')}"
    if re.search(r"\bnan\b", error, re.IGNORECASE):
        return error
    for key in ACCURACY_KEYS:
        value = (summary or {}).get(key)
        if isinstance(value, float) and not math.isfinite(value):
            return f"{key} is {value}"
    return ""


def mark_diverged(record: dict[str, Any], cause: str) -> dict[str, Any]:
    """Flag a run record as diverged: its accuracies become NaN, with the cause."""
    if cause:
        record["diverged"] = cause
        for key in ACCURACY_KEYS:
            if key in record:
                record[key] = float("nan")
    return record


def fmt(value: Any, digits: int = 3, pct: bool = False) -> str:
    """A number for a table: '—' for missing, thousands separators for big ints."""
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if pct:
        return f"{100 * value:.1f}"
    if isinstance(value, int) or (
        isinstance(value, float) and value.is_integer() and abs(value) >= 1000
    ):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


def pm(row: Mapping[str, Any], key: str, pct: bool = True, digits: int = 3) -> str:
    """'mean ± std' of an aggregated key (percent by default).

    A key that is NaN in any run of the row (a diverged run) reads "NaN (k/n
    diverged)": a broken run is named, never averaged away or printed as 0.0 %.
    """
    mean, std = row.get(key), row.get(f"{key}_std")
    nans = row.get(f"{key}_nan", 0)
    if nans or _is_nan(mean):
        return f"NaN ({nans or 1}/{row.get('n', 1)} diverged)"
    if mean is None:
        return "—"
    if pct:
        return f"{100 * mean:.1f} ± {100 * (std or 0):.1f}"
    return f"{fmt(mean, digits)} ± {fmt(std or 0.0, 2)}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def paragraphs(notes: list[str]) -> list[str]:
    """Notes as Markdown paragraphs (each followed by a blank line)."""
    return [line for note in notes for line in (note, "")]


def load_caveat(load: Mapping[str, float], cpus: int | None) -> str:
    """A sentence on how busy the machine was while timings were taken."""
    if not load:
        return ""
    mean, peak = load.get("load1-mean", 0.0), load.get("load1-max", 0.0)
    # A suite's own jobs keep up to one runnable process per core busy; more than
    # that on average means other work competed for the CPUs.
    busy = mean > (cpus or 1) * 1.25
    text = (
        f"Machine load while this ran: 1-minute load average {mean:.1f} on average "
        f"(max {peak:.1f}) on {cpus} cores"
    )
    if busy:
        text += (
            ": other work shared the CPUs, so absolute times are inflated and "
            "noisy; ratios of runs taken back to back are the robust numbers"
        )
    return text + "."


def write_results(
    suite: str, data: Mapping[str, Any], markdown: str, results_dir: Path = RESULTS
) -> tuple[Path, Path]:
    """Write ``<suite>.json`` and ``<suite>.md`` under ``bench/results``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{suite}.json"
    md_path = results_dir / f"{suite}.md"
    json_path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def save_plot(
    path: Path, draw: Callable[[plt.Axes], None], size: tuple[float, float] = (6.5, 4.0)
) -> Path:
    """Draw on one axes with ``draw`` and save a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bar_with_errors(
    ax: plt.Axes,
    labels: Sequence[str],
    series: Mapping[str, tuple[Sequence[float | None], Sequence[float | None]]],
    ylabel: str,
    title: str,
) -> None:
    """Grouped bars (one group per label, one bar per series) with std error bars."""
    n = max(1, len(series))
    width = 0.8 / n
    for i, (name, (means, stds)) in enumerate(series.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        ys = [m if m is not None else 0.0 for m in means]
        es = [s if s is not None else 0.0 for s in stds]
        ax.bar(xs, ys, width, yerr=es, capsize=4, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=15, ha="right")
    ax.set(ylabel=ylabel, title=title)
    ax.legend()
