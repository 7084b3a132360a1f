"""``python -m bench.pfeddsh [--seeds 1 2 3] [--variants full no-replay no-masks]``:
pFedDSH's RI / PA table on a preset, with and without masks and replay.

Each (variant, seed) runs in process (the ServerApp's loop and the real ClientApp
handlers over a DirectGrid, as ``bench/worker.py``) and its summary's figures are
merged into ``bench/results/<preset>.json``, so seeds can be run in separate sittings;
``--render`` only rewrites the page ``bench/results/<preset>.md`` from the JSON.
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
from common.flwr_cli import merge_presets

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},  # masks + replay, PA reference
    "no-replay": {"replay": False, "pa-reference": False},
    "no-masks": {"masks": False, "replay": False, "pa-reference": False},
}
LABELS = {
    "full": "pFedDSH (masks + replay)",
    "no-replay": "masks, no replay",
    "no-masks": "no masks (plain shared hypernetwork), no replay",
}


def run_one(preset: Path, variant: str, seed: int, out: Path) -> dict[str, Any]:
    """One run; the figures the table needs."""
    import torch

    from server.direct_grid import run_in_process

    torch.set_num_threads(1)
    config = merge_presets(
        [preset],
        {
            **VARIANTS[variant],
            "seed": seed,
            "run-name": f"{preset.stem}-{variant}-s{seed}",
            "output-dir": str(out),
        },
    )
    start = time.monotonic()
    summary = run_in_process(config)
    assert summary is not None
    return {
        "variant": variant,
        "seed": seed,
        "ri": summary["ri"],
        "pa": summary["pa"],
        "final_acc": summary["final_acc"],
        "nonparticipant_acc": summary["nonparticipant_acc"],
        "batches": [
            {
                k: b.get(k)
                for k in (
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
                )
            }
            | {"replay_accepted": (b.get("replay") or {}).get("accepted")}
            for b in summary["batches"]
        ],
        "wall_s": time.monotonic() - start,
    }


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
    plain shared hypernetwork's RI below 0 (forgetting without masks)."""

    def seeds(variant: str, key: str) -> dict[int, float | None]:
        return by_seed([r for r in runs if r["variant"] == variant], key)

    full, no_replay = seeds("full", "ri"), seeds("no-replay", "ri")
    no_masks = seeds("no-masks", "ri")
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
    ]
    return [(name, got) for name, got in pairs if got is not None]


def render(data: dict[str, Any]) -> str:
    """The page: RI / PA / final accuracy per variant over seeds, and per batch."""
    runs = data["runs"]
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
        "| variant | seeds | RI (pp) | PA (pp) | final acc (%) | replay kept |",
        "|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        kept = sum(len(b["replay_accepted"] or []) for r in mine for b in r["batches"])
        offered = (
            sum(b["batch"] for r in mine for b in r["batches"])
            if variant == "full"
            else 0
        )
        lines.append(
            f"| {LABELS[variant]} | {len(mine)} | "
            f"{_stat([r['ri'] for r in mine])} | "
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
    lines += claim_section(
        "Claims, read per seed (percentage points; a pair of variants on the same "
        "seed sees the same split and batches; PA > 0 and RI > 0 are each seed's "
        "value against 0):",
        claims(runs),
    )
    lines += ["", data.get("notes", "")]
    return "\n".join(lines).rstrip() + "\n"


def describe(preset: Path) -> dict[str, str]:
    """The page's title and setting sentence, read off the preset itself."""
    cfg = merge_presets([preset], {})
    clients, batches = cfg["num-clients"], cfg["client-batches"]
    held = round(clients * cfg["holdout"])
    per_batch = (clients - held) // batches
    return {
        "title": f"Fashion-MNIST, clients joining in {batches} batches",
        "setting": f"{clients} clients × {cfg['classes-per-client']} classes "
        f"({held} held out), {clients - held} participants in {batches} batches "
        f"of {per_batch}, {cfg['num-rounds'] // batches} rounds per batch "
        f"({cfg['clients-per-round']} clients × {cfg['local-steps']} local steps "
        f"a round), BN CNN targets, mask sparsity {cfg['mask-sparsity']}.",
    }


def main(argv: list[str] | None = None) -> None:
    """Run the requested variants and seeds, merge, and render the page."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="conf/pfeddsh-fmnist.toml")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench-pfeddsh"))
    parser.add_argument("--render", action="store_true", help="only re-render")
    args = parser.parse_args(argv)
    preset = Path(args.preset)
    path = RESULTS / f"{preset.stem}.json"
    data: dict[str, Any] = (
        json.loads(path.read_text())
        if path.exists()
        else {"preset": str(preset), "runs": [], **describe(preset)}
    )
    if not args.render:
        for seed in args.seeds:
            for variant in args.variants:
                result = run_one(preset, variant, seed, Path(args.out))
                data["runs"] = [
                    r
                    for r in data["runs"]
                    if (r["variant"], r["seed"]) != (variant, seed)
                ] + [result]
                path.write_text(json.dumps(data, indent=1) + "\n")
                print(
                    json.dumps(
                        {
                            k: result[k]
                            for k in ("variant", "seed", "ri", "pa", "final_acc")
                        }
                    )
                )
    (RESULTS / f"{preset.stem}.md").write_text(render(data))


if __name__ == "__main__":
    main()
