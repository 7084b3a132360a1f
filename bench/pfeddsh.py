"""``python -m bench.pfeddsh [--preset P] [--seeds 1 2 3 4 5] [--variants ...]
[--batch-rounds R] [--render] [--quick]``: pFedDSH's RI / PA / capacity table on a
preset, with the rows the paper validates its claims with.

Rows (:data:`VARIANTS`, each the preset plus its run-config keys):

- ``full``: masks + replay, the paper's method (replay always kept, no gate);
- ``gate``: the same with our validation gate (``replay-accept = "val"``), an
  ablation of ours;
- ``no-replay``: masks without replay (RI expected exactly 0);
- ``no-masks``: one plain shared hypernetwork, no replay (RI expected negative);
- ``fedavg``: FedAvg on the same batch schedule (``batch-learner = "fedavg"``; RI
  expected negative).

Only ``full`` trains PA's reference (an independent learner on each new batch alone);
``gate`` and ``no-replay`` read PA against the same seed's ``full`` reference (the
same clients and settings: the reference never replays). ``--batch-rounds R`` sets
each batch's rounds (num-rounds = R × client-batches) so the table can run batches
until validation flattens; each batch's last validation gain is in the table.

Each (variant, seed) runs in process (the ServerApp's loop and the real ClientApp
handlers over a DirectGrid, as ``bench/worker.py``) and its summary's figures are
merged into ``bench/results/<preset>[-r<R>].json``, so seeds can be run in separate
sittings; ``--render`` only rewrites the page from the JSON. ``--quick`` is a smoke
test: every row once on a tiny federation, written under ``--out`` only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import RESULTS, ROOT
from bench.paired import Paired, against_zero, by_seed, claim_section, compare
from bench.tune import add_diagnostic_options, parse_pairs
from common.flwr_cli import merge_presets

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"replay-accept": "always"},  # masks + replay, PA reference
    "gate": {"replay-accept": "val", "pa-reference": False},
    "no-replay": {"replay": False, "pa-reference": False},
    "no-masks": {"masks": False, "replay": False, "pa-reference": False},
    "fedavg": {
        "batch-learner": "fedavg",
        "masks": False,
        "replay": False,
        "pa-reference": False,
    },
}
LABELS = {
    "full": "pFedDSH (masks + replay)",
    "gate": "masks + replay, validation gate (ours, ablation)",
    "no-replay": "masks, no replay",
    "no-masks": "no masks (plain shared hypernetwork), no replay",
    "fedavg": "FedAvg on the same batch schedule",
}
#: Per-preset keys a row's own tuning chose (on validation, docs/tuning.md), on top of
#: :data:`VARIANTS`: FedAvg's local lr on the 3-batch preset
#: (bench/results/tune-pfeddsh-fedavg-lr.md). The hard split's FedAvg row keeps the
#: hard split's FedAvg lr (bench/results/tune-hard-fedavg.md: 0.02, flat).
TUNED: dict[str, dict[str, dict[str, Any]]] = {
    "pfeddsh-fmnist": {"fedavg": {"inner-lr": 0.005}},
}
#: Variants whose PA reads the same seed's ``full`` reference (same clients, same
#: settings: the reference sub-run never replays and is not gated).
SHARED_REFERENCE = ("gate", "no-replay")
#: The run-config keys each run records (what makes its row what it is).
RUN_KEYS = (
    "batch-learner",
    "masks",
    "server-lr",
    "inner-lr",
    "mask-penalty",
    "mask-budget",
    "mask-budget-scope",
    "mask-settle",
    "mask-reuse-cost",
    "mask-sparsity",
    "mask-lr",
    "replay",
    "replay-accept",
    "pa-reference",
    "client-batches",
    "num-rounds",
    "eval-every",
    "di-steps",
    "di-images",
    "replay-steps",
    "replay-lr",
)
#: The smoke test's federation (``--quick``): every row in about a minute each.
QUICK: dict[str, Any] = {
    "num-clients": 12,
    "holdout": 0.25,
    "client-batches": 3,
    "num-rounds": 6,
    "eval-every": 2,
    "clients-per-round": 2,
    "local-steps": 5,
    "di-steps": 10,
    "di-images": 8,
    "replay-steps": 2,
}
#: Per-batch fields a run keeps from its summary.
BATCH_KEYS = (
    "batch",
    "acc",
    "acc_reference",
    "pa",
    "ri",
    "before",
    "after",
    "weights_used",
    "weights_reused",
    "weights_total",
    "neurons_used",
    "neurons_reused",
    "neurons_new",
    "neurons_free",
    "neurons_total",
    "val_curve",
    "val_last_gain",
)


def schedule(preset: Path, batch_rounds: int | None) -> dict[str, Any]:
    """The overrides that give each batch ``batch_rounds`` rounds (none: the
    preset's), keeping an evaluation at every batch's end."""
    if not batch_rounds:
        return {}
    cfg = merge_presets([preset], {})
    every = int(cfg.get("eval-every", 1))
    if batch_rounds % every:
        every = batch_rounds // 4 if batch_rounds % 4 == 0 else batch_rounds
    return {
        "num-rounds": batch_rounds * int(cfg["client-batches"]),
        "eval-every": every,
    }


def run_one(
    preset: Path,
    variant: str,
    seed: int,
    out: Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One run (the preset, ``extra``, the variant's keys); the figures the table
    needs and the run-config keys that made them."""
    import torch

    from server.direct_grid import run_in_process

    torch.set_num_threads(1)
    config = merge_presets(
        [preset],
        {
            **(extra or {}),
            **VARIANTS[variant],
            **TUNED.get(preset.stem, {}).get(variant, {}),
            "seed": seed,
            "run-name": f"{preset.stem}-{variant}-s{seed}",
            "output-dir": str(out),
        },
    )
    start = time.monotonic()
    summary = run_in_process(config)
    assert summary is not None
    return record(variant, seed, config, summary, time.monotonic() - start)


def record(
    variant: str,
    seed: int,
    config: dict[str, Any],
    summary: dict[str, Any],
    wall_s: float | None = None,
) -> dict[str, Any]:
    """A table row from one run's config and summary.json: what :func:`run_one`
    returns, and what ``--from-run`` reads from a run made outside the table
    (e.g. ``hyperflower run --preset conf/pfeddsh-fmnist-stress.toml``)."""
    return {
        "variant": variant,
        "seed": seed,
        "config": {k: config[k] for k in RUN_KEYS if k in config},
        "ri": summary["ri"],
        "ri_val": summary.get("ri_val"),
        "pa": summary["pa"],
        "final_acc": summary["final_acc"],
        "nonparticipant_acc": summary["nonparticipant_acc"],
        "batches": [
            {k: b.get(k) for k in BATCH_KEYS}
            | {"replay_accepted": (b.get("replay") or {}).get("accepted")}
            for b in summary["batches"]
        ],
        "wall_s": summary.get("wall_s") if wall_s is None else wall_s,
    }


def shared_pa(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of :data:`SHARED_REFERENCE` variants with PA read against the same
    seed's ``full`` reference (per batch, then the mean over joins); the others as
    they are."""
    refs = {
        r["seed"]: {b["batch"]: b.get("acc_reference") for b in r["batches"]}
        for r in runs
        if r["variant"] == "full"
    }
    out = []
    for r in runs:
        ref = refs.get(r["seed"])
        if r["variant"] not in SHARED_REFERENCE or r.get("pa") is not None or not ref:
            out.append(r)
            continue
        batches = []
        for b in r["batches"]:
            got = ref.get(b["batch"])
            pa = b["acc"] - got if got is not None and b["acc"] is not None else None
            batches.append(b | {"acc_reference": got, "pa": pa})
        pas = [b["pa"] for b in batches if b["batch"] >= 1 and b["pa"] is not None]
        out.append(r | {"batches": batches, "pa": float(np.mean(pas)) if pas else None})
    return out


def _stat(values: list[float | None], scale: float = 100.0) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "—"
    return f"{scale * np.mean(vals):+.2f} ± {scale * np.std(vals):.2f}"


def claims(runs: list[dict[str, Any]]) -> list[tuple[str, Paired]]:
    """The paper's claims on this table, each read per seed
    (:mod:`bench.paired`, docs/tuning.md rule 9), those whose variants ran: the
    full variant's PA and RI above 0 (each a per-seed value against 0), replay's RI
    above no replay's, masks' RI above no masks' (same seed, same batches), and the
    plain shared hypernetwork's RI below 0 (forgetting without masks); with the
    FedAvg row, its RI below 0 and pFedDSH's RI above it."""

    def seeds(variant: str, key: str) -> dict[int, float | None]:
        return by_seed([r for r in runs if r["variant"] == variant], key)

    full, no_replay = seeds("full", "ri"), seeds("no-replay", "ri")
    no_masks = seeds("no-masks", "ri")
    fedavg = seeds("fedavg", "ri")
    pa = seeds("full", "pa")  # None on every seed: run without its PA reference
    pairs: list[tuple[str, Paired | None]] = [
        (
            "PA of pFedDSH (masks + replay) − 0",
            against_zero(pa) if any(v is not None for v in pa.values()) else None,
        ),
        ("RI of pFedDSH (masks + replay) − 0", against_zero(full) if full else None),
        (
            "RI: pFedDSH (masks + replay) − masks, no replay",
            compare(full, no_replay) if full and no_replay else None,
        ),
        (
            "RI: masks, no replay − no masks",
            compare(no_replay, no_masks) if no_replay and no_masks else None,
        ),
        (
            "0 − RI of no masks (RI below 0)",
            against_zero(no_masks, below=True) if no_masks else None,
        ),
        (
            "0 − RI of FedAvg on the batch schedule (RI below 0)",
            against_zero(fedavg, below=True) if fedavg else None,
        ),
        (
            "RI: pFedDSH (masks + replay) − FedAvg on the batch schedule",
            compare(full, fedavg) if full and fedavg else None,
        ),
    ]
    return [(name, got) for name, got in pairs if got is not None]


def render(data: dict[str, Any]) -> str:
    """The page: RI / PA / final accuracy per variant over seeds, per batch, and
    (runs recorded with their run-config keys) capacity and each row's keys."""
    runs = data["runs"]
    recorded = bool(runs) and all("config" in r for r in runs)
    if recorded:
        runs = shared_pa(runs)
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        f"## pFedDSH — {data['title']}",
        "",
        f"`{data['preset']}`: {data['setting']} Mean ± std over seeds "
        f"{', '.join(map(str, seeds))} (percentage points). RI = mean change of "
        "earlier batches' test accuracy across a batch join (after − before); "
        "PA = the new batch's accuracy minus that of the same clients under an "
        "independent hypernetwork trained on them alone for the same rounds.",
        "",
        "| variant | seeds | RI (pp) | RI on validation (pp) | PA (pp) "
        "| final acc (%) | replay kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        kept = sum(len(b["replay_accepted"] or []) for r in mine for b in r["batches"])
        offered = (
            sum(b["batch"] for r in mine for b in r["batches"])
            if variant in ("full", "gate")
            else 0
        )
        lines.append(
            f"| {LABELS[variant]} | {len(mine)} | "
            f"{_stat([r['ri'] for r in mine])} | "
            f"{_stat([r.get('ri_val') for r in mine])} | "
            f"{_stat([r['pa'] for r in mine])} | "
            f"{_stat([r['final_acc'] for r in mine]).lstrip('+')} | "
            f"{f'{kept} of {offered}' if offered else '—'} |"
        )
    lines += [
        "",
        "Per batch join (full variant, mean over seeds): the new batch's "
        "accuracy, its reference, and hypernetwork weights its mask uses / "
        "reuses (of the total).",
        "",
        "| batch | acc (%) | reference acc (%) | PA (pp) | RI (pp) "
        "| weights used | reused |",
        "|---|---|---|---|---|---|---|",
    ]
    full = [r for r in runs if r["variant"] == "full"]
    for b in range(max((len(r["batches"]) for r in full), default=0)):
        rows = [r["batches"][b] for r in full if len(r["batches"]) > b]
        lines.append(
            f"| {b} | {_stat([x['acc'] for x in rows]).lstrip('+')} | "
            f"{_stat([x.get('acc_reference') for x in rows]).lstrip('+')} | "
            f"{_stat([x.get('pa') for x in rows])} | "
            f"{_stat([x.get('ri') for x in rows])} | "
            f"{np.mean([x['weights_used'] for x in rows]):,.0f} | "
            f"{np.mean([x['weights_reused'] for x in rows]):,.0f} of "
            f"{rows[0]['weights_total']:,} |"
        )
    if recorded:
        lines += capacity_section(full) + config_section(runs)
        if any(b.get("neurons_total") for r in full for b in r["batches"]):
            stem = data.get("stem", Path(data["preset"]).stem)
            lines += [
                "",
                f"Figure: `{stem}-capacity.png` (neurons used vs batch index).",
            ]
    lines += claim_section(
        "Claims, read per seed (percentage points; a pair of variants on the same "
        "seed sees the same split and batches; PA > 0 and RI > 0 are each seed's "
        "value against 0):",
        claims(runs),
    )
    lines += ["", data.get("notes", "")]
    return "\n".join(lines).rstrip() + "\n"


def _pct(values: list[Any]) -> str:
    vals = [v for v in values if v is not None]
    return f"{100 * np.mean(vals):.1f}" if vals else "—"


def capacity_section(full: list[dict[str, Any]]) -> list[str]:
    """Per batch of the full row (mean over seeds): the share of the trunk's
    neurons its mask uses, reuses from earlier batches, claims new and leaves free,
    reuse as a share of what it uses, and its validation gain over its last
    evaluation interval (near 0: the batch's training had flattened)."""
    rows = [r for r in full if any(b.get("neurons_total") for b in r["batches"])]
    if not rows:
        return []
    lines = [
        "",
        "Capacity per batch (full row, mean over seeds; shares of the "
        "hypernetwork trunk's neurons) and whether the batch had flattened "
        "(validation gain over its last evaluation interval, points):",
        "",
        "| batch | used (%) | reused (%) | new (%) | free after (%) "
        "| reused / used (%) | last val gain (pp) |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in range(max(len(r["batches"]) for r in rows)):
        got = [r["batches"][b] for r in rows if len(r["batches"]) > b]

        def share(key: str, got: list[dict[str, Any]] = got) -> list[Any]:
            return [
                x[key] / x["neurons_total"] if x.get(key) is not None else None
                for x in got
            ]

        reuse = [
            x["neurons_reused"] / x["neurons_used"] if x.get("neurons_used") else None
            for x in got
        ]
        lines.append(
            f"| {b} | {_pct(share('neurons_used'))} | {_pct(share('neurons_reused'))} "
            f"| {_pct(share('neurons_new'))} | {_pct(share('neurons_free'))} "
            f"| {_pct(reuse)} | {_stat([x.get('val_last_gain') for x in got])} |"
        )
    return lines


def capacity_figure(data: dict[str, Any], path: Path) -> Path | None:
    """Neurons used vs batch index for the page: the full row's capacity per batch
    (shares of the trunk's neurons), averaged over seeds; None without masks."""
    from server.pfeddsh.plots import capacity_plot
    from server.strategies.pfeddsh import capacity_of

    full = [
        r
        for r in data["runs"]
        if r["variant"] == "full" and any(b.get("neurons_total") for b in r["batches"])
    ]
    if not full:
        return None
    shares = [[capacity_of(b) for b in r["batches"]] for r in full]
    mean = []
    for b in range(min(len(x) for x in shares)):
        got = [x[b] for x in shares if "used" in x[b]]
        keys = ("used", "reused", "new", "free", "reuse_of_used")
        mean.append(
            {"batch": b} | {k: float(np.mean([g[k] for g in got])) for k in keys}
        )
    seeds = ", ".join(str(s) for s in sorted(r["seed"] for r in full))
    return capacity_plot(
        path, mean, f"pFedDSH — {data['title']}: neurons used (mean of seeds {seeds})"
    )


def config_section(runs: list[dict[str, Any]]) -> list[str]:
    """Each row's run-config keys (as its first run recorded them), less those
    the row does not use (replay's without replay, the masks' without masks)."""
    lines = ["", "Run-config keys of each row (on top of the preset):", ""]
    lines += ["| row | keys |", "|---|---|"]
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if mine:
            cfg = mine[0]["config"]
            unused = ("replay-", "di-") if not cfg.get("replay", True) else ()
            unused += ("mask-",) if not cfg.get("masks", True) else ()
            keys = ", ".join(
                f"`{k}={v}`" for k, v in cfg.items() if not k.startswith(unused)
            )
            lines.append(f"| {LABELS[variant]} | {keys} |")
    return lines


def describe(preset: Path, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The page's title and setting sentence, read off the preset (and the table's
    overrides, e.g. the rounds per batch)."""
    cfg = merge_presets([preset], extra or {})
    clients, batches = cfg["num-clients"], cfg["client-batches"]
    held = round(clients * cfg["holdout"])
    per_batch = (clients - held) // batches
    split = (
        f"Dirichlet({cfg['dirichlet-alpha']}) class mixes, "
        f"{cfg.get('samples-per-client', 'all')} images a client (the hard split)"
        if cfg.get("partitioner") == "dirichlet"
        else f"{cfg['classes-per-client']} classes"
    )
    return {
        "title": f"Fashion-MNIST, clients joining in {batches} batches"
        + (" (hard split)" if cfg.get("partitioner") == "dirichlet" else ""),
        "setting": f"{clients} clients × {split} "
        f"({held} held out), {clients - held} participants in {batches} batches "
        f"of {per_batch}, {cfg['num-rounds'] // batches} rounds per batch "
        f"({cfg['clients-per-round']} clients × {cfg['local-steps']} local steps "
        f"a round), BN CNN targets, hypernetwork lr {cfg.get('server-lr')}, "
        f"neuron masks with sparsity penalty {cfg.get('mask-penalty', 1.0)}, "
        f"budget {cfg.get('mask-budget', 0.0)} (reuse cost "
        f"{cfg.get('mask-reuse-cost', 0.5)}), replay lr {cfg.get('replay-lr')}.",
    }


def merge(path: Path, data: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Put one run into the table's JSON, replacing the same (variant, seed), and
    return the table as it now stands. The file is re-read under a lock, so several
    processes (one per seed) can fill one table without losing each other's rows."""
    import fcntl

    with (path.parent / f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            data = json.loads(path.read_text())
        key = (result["variant"], result["seed"])
        data["runs"] = [r for r in data["runs"] if (r["variant"], r["seed"]) != key] + [
            result
        ]
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)
    return data


def main(argv: list[str] | None = None) -> None:
    """Run the requested variants and seeds, merge, and render the page."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="conf/pfeddsh-fmnist.toml")
    parser.add_argument("--seeds", type=int, nargs="*", default=[42, 43, 44, 45, 46])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench-pfeddsh"))
    parser.add_argument(
        "--results",
        default=str(RESULTS),
        help="where the table's JSON, page and figure go (default bench/results; "
        "a table with fewer seeds than its claims need can go elsewhere)",
    )
    parser.add_argument("--render", action="store_true", help="only re-render")
    parser.add_argument(
        "--from-run",
        metavar="DIR",
        help="add the finished run in DIR (its config.json and summary.json) as "
        "the first --variants row of its seed, instead of running it",
    )
    parser.add_argument(
        "--batch-rounds",
        type=int,
        default=0,
        help="rounds per batch (num-rounds = this × client-batches; 0: the "
        "preset's); the page is <preset>-r<R>",
    )
    add_diagnostic_options(parser, "<preset>[-r<R>]-<tag>")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: every row once on a tiny federation, under --out only",
    )
    args = parser.parse_args(argv)
    preset = Path(args.preset)
    if args.batch_rounds < 0:
        parser.error("--batch-rounds must be >= 0")
    if bool(args.sets) != bool(args.tag):
        parser.error("--set and --tag go together (a diagnostic table has its page)")
    extra = schedule(preset, args.batch_rounds) | parse_pairs(args.sets, many=False)
    if args.quick:
        extra = {**QUICK}
        args.seeds = args.seeds[:1]
    stem = (
        preset.stem
        + (f"-r{args.batch_rounds}" if args.batch_rounds else "")
        + (f"-{args.tag}" if args.tag else "")
    )
    results = Path(args.out) / "quick" if args.quick else Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{stem}.json"
    data: dict[str, Any] = (
        json.loads(path.read_text())
        if path.exists() and not args.quick
        else {
            "preset": str(preset),
            "stem": stem,
            "runs": [],
            "overrides": extra,
            **describe(preset, extra),
        }
    )
    if args.from_run:
        run = Path(args.from_run)
        config = json.loads((run / "config.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        data = merge(
            path, data, record(args.variants[0], int(config["seed"]), config, summary)
        )
    elif not args.render:
        for seed in args.seeds:
            for variant in args.variants:
                result = run_one(preset, variant, seed, Path(args.out), extra)
                data = merge(path, data, result)
                print(
                    json.dumps(
                        {
                            k: result[k]
                            for k in ("variant", "seed", "ri", "pa", "final_acc")
                        }
                    )
                )
    data["stem"] = stem
    (results / f"{stem}.md").write_text(render(data))
    capacity_figure(data, results / f"{stem}-capacity.png")
    print(results / f"{stem}.md")


if __name__ == "__main__":
    main()
