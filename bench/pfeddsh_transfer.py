"""``python -m bench.pfeddsh_transfer --runs DIR [--stem pfeddsh-fmnist]``: does a
new pFedDSH batch start from what earlier batches learnt (forward transfer)?

PA as the table reads it compares a batch's accuracy *at the end of its rounds* with
that of an independent hypernetwork trained on the same clients for the same rounds
(its PA reference). When both runs reach the task's ceiling before the batch ends,
PA is about 0 whatever the hypernetwork carried over; forward transfer shows
earlier, as a head start. This diagnostic reads, from the table's own ``full`` runs
(nothing is re-run), each later batch's validation curve beside its reference's at
the same evaluations of the batch:

- **first evaluation**: the new batch's validation accuracy after its first
  ``eval-every`` rounds, minus the reference's after the same rounds;
- **first three evaluations**: the same, averaged over the batch's first three
  evaluations (how fast it learns);
- **last evaluation**: the same at the batch's end (the table's PA, read on
  validation instead of test).

Each is read per seed with the paired rule (docs/tuning.md rule 9), per join and
averaged over joins as PA is. Validation only: the curves the runs record per
evaluation are validation curves (test accuracy is read once, at the end).
Results: ``bench/results/<page>.{json,md}`` (``--page``, default
``<stem>-transfer``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.harness import RESULTS
from bench.paired import against_zero, claim_section

#: The points of a batch's curve each claim reads: (label, first index, last index).
WINDOWS = (
    ("first evaluation", 0, 1),
    ("first three evaluations", 0, 3),
    ("last evaluation", -1, None),
)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _window(curve: list[float], start: int, stop: int | None) -> float:
    """The mean of ``curve[start:stop]`` (the last point for ``start`` −1)."""
    return _mean(curve[start:stop] if start >= 0 else curve[start:])


def head_starts(run_dir: Path) -> dict[str, Any]:
    """For one ``full`` run: per later batch, its validation curve, its PA
    reference's, and their differences over :data:`WINDOWS`."""
    summary = json.loads((run_dir / "summary.json").read_text())
    joins = []
    for batch in summary["batches"][1:]:
        rows = [
            json.loads(line)
            for line in (run_dir / f"pa-ref-b{batch['batch']}" / "metrics.jsonl")
            .read_text()
            .splitlines()
        ]
        ref = [
            float(r["participant-val-acc"])
            for r in rows
            if r.get("participant-val-acc") is not None
        ]
        own = [float(v) for v in batch["val_curve"] if v is not None]
        n = min(len(own), len(ref))
        joins.append(
            {
                "batch": batch["batch"],
                "curve": own[:n],
                "reference": ref[:n],
                "diff": {
                    label: _window(own[:n], a, b) - _window(ref[:n], a, b)
                    for label, a, b in WINDOWS
                },
            }
        )
    return {"seed": summary["seed"], "joins": joins}


def collect(runs: Path, stem: str) -> dict[str, Any]:
    """Every seed's ``<stem>-full-s<seed>`` run under ``runs``."""
    found = sorted(
        runs.glob(f"{stem}-full-s*"), key=lambda p: int(p.name.rsplit("s", 1)[1])
    )
    seeds = [head_starts(d) for d in found if (d / "summary.json").exists()]
    return {"stem": stem, "runs": str(runs), "seeds": seeds}


def render(data: dict[str, Any]) -> str:
    """The page: per-seed head starts, and the paired verdicts."""
    seeds = data["seeds"]
    batches = sorted({j["batch"] for s in seeds for j in s["joins"]})
    lines = [
        f"## pFedDSH forward transfer — `{data['stem']}`, later batches against "
        "their PA reference",
        "",
        "Validation accuracy of each later batch's clients at the same evaluations of "
        "the batch: pFedDSH (a hypernetwork that earlier batches trained, the batch's "
        "mask reusing their neurons) minus its PA reference (an independent "
        "hypernetwork on the same clients, same settings). Read from the table's "
        f"`full` runs (`{data['runs']}`), nothing re-run. Seeds: "
        f"{', '.join(str(s['seed']) for s in seeds)}.",
        "",
        "| seed | batch | pFedDSH val curve (%) | reference val curve (%) |",
        "|---|---|---|---|",
    ]
    for s in seeds:
        for j in s["joins"]:
            own = " ".join(f"{100 * v:.1f}" for v in j["curve"])
            ref = " ".join(f"{100 * v:.1f}" for v in j["reference"])
            lines.append(f"| {s['seed']} | {j['batch']} | {own} | {ref} |")
    pairs = []
    for label, _, _ in WINDOWS:
        mean_over_joins = {
            s["seed"]: _mean([j["diff"][label] for j in s["joins"]]) for s in seeds
        }
        pairs.append(
            (
                f"head start at the {label}, mean over joins",
                against_zero(mean_over_joins),
            )
        )
        for b in batches:
            per = {
                s["seed"]: next(j["diff"][label] for j in s["joins"] if j["batch"] == b)
                for s in seeds
            }
            pairs.append((f"head start at the {label}, batch {b}", against_zero(per)))
    lines += claim_section(
        "Claims (pFedDSH − reference, validation points; > 0 is forward transfer):",
        pairs,
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Read the runs, write the JSON and the page."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", required=True, help="the table's --out folder")
    parser.add_argument("--stem", default="pfeddsh-fmnist", help="the preset's stem")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--page", help="the page's stem (default <stem>-transfer)")
    args = parser.parse_args(argv)
    data = collect(Path(args.runs), args.stem)
    if not data["seeds"]:
        parser.error(f"no {args.stem}-full-s* run with a summary under {args.runs}")
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    page = args.page or f"{args.stem}-transfer"
    (out / f"{page}.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / f"{page}.md").write_text(render(data))
    print(out / f"{page}.md")


if __name__ == "__main__":
    main()
