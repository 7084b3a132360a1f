"""Print a finished run's accuracy table and where its plots are.

``hyperflower report outputs/<run-name> [more runs...]`` (or ``python -m
common.report``) reads each run's summary.json; several runs give one table to compare
them side by side. A folder whose latest run did not finish prints no table.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from common.runinfo import EXIT_DONE, EXIT_FAILED, EXIT_USAGE, verdict


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
        if any(
            k.endswith("loss") and isinstance(v, int | float) and not math.isfinite(v)
            for k, v in row.items()
        ):
            return True
    return any(
        isinstance(summary.get(k), float) and math.isnan(summary[k])
        for k in ("participant_acc", "nonparticipant_acc", "global_acc")
    )


def table(summaries: list[dict[str, Any]]) -> str:
    """A Markdown table of the headline numbers of one or more runs (a summary
    flagged ``diverged`` shows NaN in its accuracy columns)."""
    head = (
        "| method | dataset | participants acc % | non-participants acc % | "
        "global acc % | best round | MB down/round | MB up/round | CTWC | HS |"
    )
    rows = [head, "|" + "---|" * 10]
    for s in summaries:
        rows.append(
            f"| {s['method']} | {s['dataset']} | {_pct(s, 'participant_acc')} | "
            f"{_pct(s, 'nonparticipant_acc')} | {_pct(s, 'global_acc')} | "
            f"{s['best_round']} | {s['bytes_down_per_round'] / 1e6:.2f} | "
            f"{s['bytes_up_per_round'] / 1e6:.2f} | {s['client_trainable_params']} | "
            f"{s['hypernet_params']} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Print the table for the run folders given on the command line.

    A folder counts only if its latest run finished (:func:`common.runinfo.verdict`):
    a summary left by an older run is never shown for a newer one that failed. Exit
    code: 0 all done, else the worst of 1 (failed) and 3 (stopped for resume).
    """
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__)
        return EXIT_USAGE
    summaries, worst = [], EXIT_DONE
    for folder in map(Path, args):
        found = verdict(folder)
        if found.summary is None:
            print(f"error: {found.message}", file=sys.stderr)
            worst = EXIT_FAILED if EXIT_FAILED in (worst, found.code) else found.code
            continue
        if "run_id" not in found.summary:
            print(f"note: {found.message}", file=sys.stderr)
        summary = dict(found.summary)
        metrics = folder / "metrics.jsonl"
        rows = (
            [
                json.loads(line)
                for line in metrics.read_text().splitlines()
                if line.strip()
            ]
            if metrics.exists()
            else []
        )
        summary["diverged"] = diverged(summary, rows)
        summaries.append(summary)
    if worst != EXIT_DONE:
        return worst
    print(table(summaries))
    for folder in map(Path, args):
        for png in sorted(folder.glob("*.png")):
            print(f"plot: {png}")
    return EXIT_DONE


if __name__ == "__main__":
    raise SystemExit(main())
