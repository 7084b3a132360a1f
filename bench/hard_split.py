"""``python -m bench.hard_split``: the hard split's page (issue 23).

``conf/hard-fmnist.toml`` is a split where clients need each other: 100 clients,
each a Dirichlet(0.5) mix over all ten Fashion-MNIST classes and 60 training images.
This module measures, on *validation* rows only, the two things that make it hard:

- **clients cannot learn alone**: local-only's participants' validation accuracy
  against FedAvg's (the preset asks for at least 5 points below);
- **room to personalise**: FedAvg's global model at its best-validation round,
  evaluated on the held-out clients' validation rows as it is and with its logits
  shifted by log π_i − log π̄, where π_i is the client's own training-label mix
  and π̄ the participants' pooled one (an oracle that knows each client's label
  prior: a diagnosis, never a method; the preset asks for at least 3 points).

It also runs the foundation's table on the split — pFedHN against FedAvg and
local-only, at the same client updates and local steps, five seeds — and reads
every claim per seed (bench.paired). Each row's settings are the preset's plus the
row's overrides in :data:`ROWS`; a row's learning rate is chosen by
``python -m bench tune hard-<row>`` (docs/tuning.md).
Results: ``bench/results/hard-fmnist.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from bench.harness import RUNS, Job, run_or_reuse
from bench.paired import by_seed, claim_section, compare
from bench.report import fmt, mean_std, table

PRESET = "conf/hard-fmnist.toml"
RESULTS = Path("bench/results")
SUITE = "hard-fmnist"
#: Each row's method and settings on top of the preset (learning rates from the
#: rows' sweeps, bench/results/tune-hard-*.md).
ROWS: dict[str, dict[str, Any]] = {
    "pfedhn": {"method": "pfedhn"},
    "fedavg": {"method": "fedavg"},
    "local": {"method": "local"},
    "hyperfedzero": {"method": "hyperfedzero"},
}
#: The table's budget, the same for every row: the tuning sweeps ran 300 rounds and
#: FedAvg's curves were still rising there (rule 7), so the table runs twice that
#: (6,000 client updates of 10 local steps), evaluated every 60 rounds (10 times).
BUDGET: dict[str, Any] = {"num-rounds": 600, "eval-every": 60}
#: Time-to-accuracy target on participants' validation accuracy, written from the
#: tuning runs' validation curves before the table was run (FedAvg's level there).
TARGET = 0.85
#: The compared pairs (row, reference) and what each says, on participants.
CLAIMS = (
    ("fedavg", "local", "FedAvg − local-only, participants (clients need each other)"),
    ("pfedhn", "fedavg", "pFedHN − FedAvg, participants"),
    ("pfedhn", "local", "pFedHN − local-only, participants"),
)
#: Pairs compared on the held-out clients, which never train (HyperFedZero's zACC
#: against FedAvg's global model on the same clients).
HELD_OUT_CLAIMS = (
    ("hyperfedzero", "fedavg", "HyperFedZero zACC − FedAvg's global model, held out"),
)


def headroom(run_dir: Path) -> dict[str, float]:
    """Held-out clients' validation accuracy of a FedAvg run's best-round global
    model as it is and with the oracle label-prior shift (the room a method that
    knew each client's class mix would have), averaged over the held-out clients."""
    import torch

    from common.models import build_model
    from common.partition import load_client_data, split_participants
    from server.personalize import load_run

    method = json.loads((run_dir / "config.json").read_text()).get("method")
    if method != "fedavg":
        raise ValueError(f"{run_dir}: headroom reads a FedAvg run, not {method}")
    run = load_run(run_dir)
    cfg = run.cfg
    model = build_model(cfg.model, cfg.num_classes)
    model.load_state_dict(run.state["global"])
    model.eval()
    participants, held = split_participants(cfg.num_clients, cfg.holdout, cfg.seed)

    def prior(labels: torch.Tensor) -> torch.Tensor:
        counts = torch.bincount(labels, minlength=cfg.num_classes).float()
        return counts / counts.sum()

    pooled = prior(torch.cat([load_client_data(cfg, p).y_train for p in participants]))
    plain, shifted = [], []
    with torch.no_grad():
        for p in held:
            data = load_client_data(cfg, p)
            logits = model(data.x_val)
            shift = prior(data.y_train).clamp_min(1e-6).log() - pooled.log()
            for out, z in ((plain, logits), (shifted, logits + shift)):
                out.append(float((z.argmax(1) == data.y_val).float().mean()))
    return {
        "heldout_val_acc": sum(plain) / len(plain),
        "heldout_val_acc_oracle_prior": sum(shifted) / len(shifted),
    }


def jobs(seeds: list[int], rows: list[str], sets: dict[str, dict]) -> list[Job]:
    """One in-process job per (row, seed)."""
    return [
        Job(
            name=f"{row}-s{seed}",
            preset=PRESET,
            overrides={**BUDGET, **ROWS[row], **sets.get(row, {}), "seed": seed},
            tags={"row": row, "seed": seed},
        )
        for seed in seeds
        for row in rows
    ]


def record(result: Any) -> dict[str, Any]:
    """The validation and test numbers of one finished run (test shown on the page,
    never used to choose anything)."""
    s = result.summary or {}
    out = {
        "row": result.job.tags["row"],
        "seed": result.job.tags["seed"],
        "ok": result.ok,
        "participant_val_acc": s.get("participant_val_acc"),
        "participant_acc": s.get("participant_acc"),
        "nonparticipant_acc": s.get("nonparticipant_acc"),
        "nonparticipant_val_acc": s.get("nonparticipant_val_acc"),
        "best_round": s.get("best_round"),
        "rounds": s.get("rounds"),
        "client_updates": sum(int(r.get("valid", 0)) for r in result.rows),
        "val_curve": [
            (r["round"], r["participant-val-acc"])
            for r in result.rows
            if "participant-val-acc" in r
        ],
        "wall_s": s.get("wall_s"),
    }
    if out["row"] == "fedavg" and result.ok:
        out.update(headroom(RUNS / SUITE / result.job.name))
    return out


def to_target(
    curve: list[tuple[int, float]], rounds: int | None, wall_s: float | None
) -> dict[str, float] | None:
    """Round and (pro-rated) seconds at which participants' validation accuracy
    first reached :data:`TARGET`; None when it never did."""
    for rnd, acc in curve:
        if acc >= TARGET:
            secs = wall_s * rnd / rounds if wall_s and rounds else None
            return {"round": rnd, "seconds": secs}
    return None


def time_to_target(mine: list[dict[str, Any]]) -> str:
    """A row's time-to-accuracy cell: mean round (and seconds) over the seeds that
    reached the target, and how many did."""
    reached = [
        to_target(r["val_curve"], r.get("rounds"), r.get("wall_s")) for r in mine
    ]
    hit = [h for h in reached if h is not None]
    if not hit:
        return f"not reached (0 of {len(mine)})"
    rnd = sum(h["round"] for h in hit) / len(hit)
    secs = [h["seconds"] for h in hit if h["seconds"] is not None]
    wall = f", {sum(secs) / len(secs):.0f} s" if secs else ""
    return f"round {rnd:.0f}{wall} ({len(hit)} of {len(mine)})"


def render(data: dict[str, Any]) -> str:
    """The page, from the JSON alone."""
    from bench.tune import curve_state

    runs = data["runs"]
    rows = list(dict.fromkeys(r["row"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        "# The hard split: clients that need each other (Fashion-MNIST)",
        "",
        f"Preset `{PRESET}` (100 clients, Dirichlet 0.5 over all 10 classes, 60 "
        "training / 20 validation / 20 test images a client, 20 held out; LeNet-5), "
        f"seeds {', '.join(map(str, seeds))}. Command: `{data['command']}`.",
        "",
    ]
    if "budget" in data:
        lines += [
            "Every row: "
            + ", ".join(f"{k}={v}" for k, v in data["budget"].items())
            + f" (equal client updates and local steps); time to accuracy is the "
            f"first evaluated round with participants' validation ≥ "
            f"{100 * TARGET:.0f} %, seconds pro-rated from the run's wall time.",
            "",
        ]
    head = [
        "row",
        "settings",
        "participants' val",
        "participants' test",
        "held-out test",
        "client updates",
        f"to {100 * TARGET:.0f} % val",
        "curves flattened",
    ]
    body = []
    for row in rows:
        mine = [r for r in runs if r["row"] == row]
        states = [curve_state([a for _, a in r["val_curve"]]) for r in mine]
        m, s, _ = mean_std([r["participant_val_acc"] for r in mine])
        t, ts, _ = mean_std([r["participant_acc"] for r in mine])
        h, hs, _ = mean_std([r["nonparticipant_acc"] for r in mine])
        sets = data["settings"].get(row, {})
        body.append(
            [
                row,
                ", ".join(f"{k}={v}" for k, v in sets.items()) or "preset",
                f"{fmt(m, pct=True)} ± {fmt(s, pct=True)}",
                f"{fmt(t, pct=True)} ± {fmt(ts, pct=True)}",
                "—" if h is None else f"{fmt(h, pct=True)} ± {fmt(hs, pct=True)}",
                str(sorted({r["client_updates"] for r in mine})),
                time_to_target(mine),
                f"{states.count('flattened')} of {len(states)}"
                + (
                    f" (rising: {states.count('rising')})" if "rising" in states else ""
                ),
            ]
        )
    lines += [table(head, body), ""]
    fed = [r for r in runs if r["row"] == "fedavg" and "heldout_val_acc" in r]
    if fed:
        gap = compare(
            by_seed(fed, "heldout_val_acc_oracle_prior"),
            by_seed(fed, "heldout_val_acc"),
        )
        lines += [
            "**Room to personalise** (validation rows of the held-out clients, "
            "FedAvg's best-round global model): as it is → with the oracle "
            "label-prior shift, per seed: "
            + "; ".join(
                f"{r['seed']}: {100 * r['heldout_val_acc']:.2f} → "
                f"{100 * r['heldout_val_acc_oracle_prior']:.2f}"
                for r in sorted(fed, key=lambda r: r["seed"])
            )
            + f" ({gap.summary()}).",
        ]
    pairs = []
    for claims, who in ((CLAIMS, "participant"), (HELD_OUT_CLAIMS, "nonparticipant")):
        for row, ref, what in claims:
            if row not in rows or ref not in rows:
                continue
            for key, split in (
                (f"{who}_val_acc", "validation"),
                (f"{who}_acc", "test"),
            ):
                got = compare(
                    by_seed([r for r in runs if r["row"] == row], key),
                    by_seed([r for r in runs if r["row"] == ref], key),
                )
                pairs.append((f"{what} ({split})", got))
    lines += claim_section("Claims, per seed:", pairs)
    lines += [""] + [note for note in data.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``ROW:key=JSON`` overrides by row."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        row, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        if row not in ROWS or not key:
            raise SystemExit(
                f"--set {item!r}: expected ROW:key=value, ROW in {list(ROWS)}"
            )
        try:
            out.setdefault(row, {})[key] = json.loads(value)
        except json.JSONDecodeError:
            out.setdefault(row, {})[key] = value
    return out


def command_args(argv: list[str]) -> list[str]:
    """The command's arguments less its ``--note`` sentences (kept on the page)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--note":
            skip = True
            continue
        if not arg.startswith("--note="):
            out.append(arg)
    return out


def main() -> None:
    """Run (or reuse) the rows on the seeds, then write the page."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="42,43,44,45,46")
    parser.add_argument("--rows", nargs="*", default=list(ROWS))
    parser.add_argument("--set", nargs="*", default=[], help="ROW:key=JSON-value")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--render", action="store_true", help="only re-render")
    parser.add_argument("--note", action="append", default=[])
    args = parser.parse_args()
    out = RESULTS / f"{SUITE}.json"
    if args.render:
        out.with_suffix(".md").write_text(render(json.loads(out.read_text())))
        return
    sets = parse_sets(args.set)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = run_or_reuse(
        SUITE, jobs(seeds, args.rows, sets), args.parallel, args.reuse
    )
    runs = [record(r) for r in results]
    bad = [
        r
        for r in runs
        if not r["ok"]
        or r["participant_val_acc"] is None
        or math.isnan(r["participant_val_acc"])
    ]
    data = {
        "command": "python -m bench.hard_split "
        + shlex.join(command_args(sys.argv[1:])),
        "budget": BUDGET,
        "settings": {row: {**ROWS[row], **sets.get(row, {})} for row in args.rows},
        "runs": runs,
        "notes": args.note + [f"Failed or diverged runs: {len(bad)}."],
    }
    out.write_text(json.dumps(data, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(data))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
