"""Print a finished run's accuracy table and where its plots are.

``python -m common.report outputs/<run-name> [more runs...]`` reads each run's
summary.json; several runs give one table to compare them side by side.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


def _pct(summary: dict[str, Any], key: str) -> str:
    value = summary.get(key)
    if value is None:
        return "n/a"
    if summary.get("diverged") or math.isnan(value):
        return "NaN (diverged)"
    std = summary.get(f"{key}_std")
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def diverged(summary: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    """Whether a run diverged: a NaN/Inf loss in its rows or a NaN accuracy.

    A NaN model still "classifies" (argmax of NaN logits), so its accuracy can read
    as a plain number such as 0.0; the table names such a run instead.
    """
    for row in rows:
        if any(k.endswith("loss") and isinstance(v, int | float)
               and not math.isfinite(v) for k, v in row.items()):
            return True
    return any(isinstance(summary.get(k), float) and math.isnan(summary[k])
               for k in ("participant_acc", "nonparticipant_acc", "global_acc"))


def table(summaries: list[dict[str, Any]]) -> str:
    """A Markdown table of the headline numbers of one or more runs (a summary
    flagged ``diverged`` shows NaN in its accuracy columns)."""
    head = ("| method | dataset | participants acc % | non-participants acc % | "
            "global acc % | best round | MB down/round | MB up/round | CTWC | HS |")
    rows = [head, "|" + "---|" * 10]
    for s in summaries:
        rows.append(
            f"| {s['method']} | {s['dataset']} | {_pct(s, 'participant_acc')} | "
            f"{_pct(s, 'nonparticipant_acc')} | {_pct(s, 'global_acc')} | "
            f"{s['best_round']} | {s['bytes_down_per_round'] / 1e6:.2f} | "
            f"{s['bytes_up_per_round'] / 1e6:.2f} | {s['client_trainable_params']} | "
            f"{s['hypernet_params']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Print the table for the run folders given on the command line."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__)
        return 2
    summaries = []
    for folder in map(Path, args):
        path = folder / "summary.json"
        if not path.exists():
            print(f"{folder}: no summary.json (the run failed or has not finished; "
                  f"see its metrics.jsonl and the flwr log)", file=sys.stderr)
            return 1
        summary = json.loads(path.read_text())
        metrics = folder / "metrics.jsonl"
        rows = ([json.loads(line) for line in metrics.read_text().splitlines()
                 if line.strip()] if metrics.exists() else [])
        summary["diverged"] = diverged(summary, rows)
        summaries.append(summary)
    print(table(summaries))
    for folder in map(Path, args):
        for png in sorted(folder.glob("*.png")):
            print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
