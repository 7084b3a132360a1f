"""HyperFedZero vs FedAvg on the same held-out clients, with the ablation rows.

``python -m bench.hyperfedzero --preset conf/hyperfedzero-fmnist.toml --seeds 5
--parallel 2`` runs, per seed, HyperFedZero (the preset), FedAvg with the same split
and budget (rounds, local steps; its learning rate as given by ``--fedavg-set``, else
the preset's), and the ablations (no NoisyEmbed; α = β = 0; option 1), each in
process (the real handlers over a DirectGrid, one thread a run), ``--parallel`` at a
time; a finished run of the same config (here or, with ``--reuse-from``, a sweep's)
is taken instead of run again. Every run picks its round on participants'
validation accuracy (the loop's rule); nothing is tuned on test data. Results go to
``bench/results/hyperfedzero-<tag>.json`` and a Markdown table beside it, with each
run's collapse figures (embedding spread over class-mix spread, held-out clients'
own-e minus mean-e validation accuracy) at its best round.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS: dict[str, dict[str, Any]] = {
    "hyperfedzero": {},
    "fedavg": {"method": "fedavg"},
    "no NoisyEmbed": {"hfz-noisy": False},
    "α = β = 0": {"hfz-alpha": 0.0, "hfz-beta": 0.0},
    "option 1 (e as input)": {"hfz-conditioning": "input"},
}
#: Run folders: outputs/bench/<SUITE>/<tag>-<variant>-s<seed>.
SUITE = "hyperfedzero"
KEYS = (
    "nonparticipant_acc",
    "nonparticipant_acc_std",
    "participant_acc",
    "global_acc",
    "nonparticipant_global_acc",
    "best_round",
    "bytes_down_per_round",
    "bytes_up_per_round",
    "client_trainable_params",
    "hypernet_params",
    "wall_s",
    "nonparticipant_val_acc",
)
#: Collapse figures at the best round (summary.json's ``collapse``), kept per row.
COLLAPSE_KEYS = ("spread_ratio", "heldout_own_minus_mean_val_acc")
#: Short names of the variants in run folder names.
SLUGS = {
    "hyperfedzero": "hfz",
    "fedavg": "fedavg",
    "no NoisyEmbed": "no-noisy",
    "α = β = 0": "no-penalty",
    "option 1 (e as input)": "option1",
}


def _order(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Variant names in table order: the known variants first, then any others."""
    return [v for v in VARIANTS if v in results] + [
        v for v in results if v not in VARIANTS
    ]


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Mean ± std over seeds per variant (Markdown)."""

    def cell(rows: list[dict[str, Any]], key: str, scale: float = 100.0) -> str:
        vals = [scale * r[key] for r in rows if r.get(key) is not None]
        if not vals:
            return "n/a"
        return f"{np.mean(vals):.2f} ± {np.std(vals):.2f}"

    lines = [
        "| variant | seeds | zACC (held out) | global model on held out | pACC "
        "| gACC | e spread / class-mix spread | own e − mean e, held-out val "
        "(points) | bytes/round (down+up) | CTWC | HS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in _order(results):
        rows = results[name]
        if not rows:
            continue
        traffic = np.mean(
            [r["bytes_down_per_round"] + r["bytes_up_per_round"] for r in rows]
        )
        fedavg = name == "fedavg"  # its global model is what held-out clients get
        held_global = cell(
            rows, "nonparticipant_acc" if fedavg else "nonparticipant_global_acc"
        )
        lines.append(
            f"| {name} | {len(rows)} | {cell(rows, 'nonparticipant_acc')} | "
            f"{held_global} | {cell(rows, 'participant_acc')} | "
            f"{cell(rows, 'global_acc')} | {cell(rows, 'spread_ratio', 1.0)} | "
            f"{cell(rows, 'heldout_own_minus_mean_val_acc')} | "
            f"{traffic / 1e6:.2f} MB | {rows[0]['client_trainable_params']} | "
            f"{rows[0]['hypernet_params']} |"
        )
    return "\n".join(lines)


def paired(results: dict[str, list[dict[str, Any]]]) -> str:
    """Each variant's zACC against FedAvg's on the same seed (same split, same
    held-out clients), read by :func:`bench.paired.compare` (docs/tuning.md rule 9):
    the seeds' splits differ far more than the methods do, so the per-seed
    difference is the comparison the claim rests on ("" without a FedAvg row)."""
    from bench.paired import CLAIM_RULE, by_seed, claim_table, compare

    base = by_seed(results.get("fedavg", []), "nonparticipant_acc")
    if not base:
        return ""
    pairs = [
        (
            f"{name} − FedAvg (zACC)",
            compare(mine, {seed: v for seed, v in base.items() if seed in mine}),
        )
        for name in _order(results)
        if name != "fedavg"
        # a variant with no seed in common with FedAvg has nothing to compare
        and set(mine := by_seed(results[name], "nonparticipant_acc")) & set(base)
    ]
    if not pairs:
        return ""
    return (
        "\nzACC against FedAvg's on the same seed (the same split and held-out "
        "clients):\n\n" + claim_table(pairs) + "\n\n" + CLAIM_RULE + "\n"
    )


def render(data: dict[str, Any], tag: str = "digits") -> str:
    """The results page (Markdown) from the JSON this module writes."""
    overrides = {
        k: v
        for k, v in data["overrides"].items()
        if k
        in (
            "num-rounds",
            "local-steps",
            "clients-per-round",
            "num-clients",
            "holdout",
            "dirichlet-alpha",
            "inner-lr",
            "hfz-beta",
            "hfz-penalty-clean",
            "hfz-shift-batches",
        )
    }
    setting = ", ".join(f"{k}={v}" for k, v in overrides.items())
    own = data.get("fedavg_overrides") or {}
    fedavg = (
        "FedAvg with the same split, rounds and local steps, on its own tuned "
        f"setting ({', '.join(f'{k}={v}' for k, v in own.items())})"
        if own
        else "FedAvg with the same split, rounds, local steps and learning rate"
    )
    return (
        f"## HyperFedZero: zero-shot vs FedAvg ({tag})\n\n"
        f"Preset `{data['preset']}` ({setting}); "
        "seeds from 42, mean ± std over seeds; each run's round chosen on "
        f"participants' validation accuracy; {fedavg}. "
        "zACC: held-out clients (never trained); "
        "'global model on held out': FedAvg's global model / HyperFedZero's "
        "global model (mean embedding) on the same held-out clients, pooled; "
        "pACC: participants' own test sets; gACC: the global model on the "
        "participants' pooled test sets (`python -m bench.hyperfedzero`).\n\n"
        + table(data["results"])
        + "\n"
        + paired(data["results"])
        + "".join(f"\n{note}\n" for note in data.get("notes", []))
    )


def diagnose(run_dir: Path) -> dict[str, float]:
    """Why a finished run's embeddings do or do not personalise (issue 11).

    From the run's best-round global model and every client's data (validation rows
    and training inputs; no test row is read): the spread of the clients'
    embeddings e next to that of their class mixes π (same L2 measure), how far
    apart the per-class mean embeddings lie and the per-sample entropy (is f
    class-discriminative?), the NoisyEmbed scale, and validation accuracy with the
    classifier made for each client's own e, for the mean e, and — the ceiling of
    label-shift personalisation — the mean e's logits shifted by log π − log π̄
    (the client's training-label prior: an oracle, diagnosis only), over all
    clients and over the held-out ones. ``val_amplified_e_x{3,10}``: the classifier
    made for ē + γ·(e_i − ē), each client's offset from the mean embedding
    stretched γ times (as if f spread the embeddings like the class mixes): above
    ``val_mean_e`` when h maps the direction e moves in to a better classifier and
    only the spread of e is missing; at or below it when h does not use e.
    """
    import torch

    from common.config import parse_run_config
    from common.models.hyperfedzero import net_from
    from common.partition import load_client_data

    raw = json.loads((run_dir / "config.json").read_text())
    raw.pop("run", None)
    cfg = parse_run_config(raw)
    state = torch.load(run_dir / "checkpoint" / "state.pt", weights_only=False)
    store = json.loads((run_dir / "summary.json").read_text())["embedding_store"]
    net = net_from(cfg, state["best"]["state"]["global"])
    net.eval()
    datas = [load_client_data(cfg, p) for p in range(cfg.num_clients)]
    held = [i for i in range(cfg.num_clients) if str(i) not in store]

    def spread(rows: torch.Tensor) -> float:
        return float((rows - rows.mean(0)).norm(dim=1).mean())

    out: dict[str, float] = {}
    with torch.no_grad():
        emb = torch.stack([net.client_embedding(d.x_train) for d in datas])
        prior = torch.stack(
            [
                torch.bincount(d.y_train, minlength=cfg.num_classes).float()
                / len(d.y_train)
                for d in datas
            ]
        )
        xs = torch.cat([d.x_train for d in datas])
        ys = torch.cat([d.y_train for d in datas])
        feats = net.features(xs)
        rows = net.sample_embeddings(feats)
        means = torch.stack([rows[ys == c].mean(0) for c in range(cfg.num_classes)])
        noise = torch.nn.functional.softplus(net.extractor.noisy(feats))
        out.update(
            {
                "spread_e": spread(emb),
                "spread_class_mix": spread(prior),
                "spread_class_mean_embeddings": spread(means),
                "sample_entropy": float(
                    -(rows * rows.clamp_min(1e-12).log()).sum(1).mean()
                ),
                "noise_scale": float(noise.mean()),
                "f_logit_std": float(net.extractor.f(feats).std(0).mean()),
            }
        )
        mean_theta = net.classifier_params(emb.mean(0))
        log_mean_prior = prior.mean(0).clamp_min(1e-6).log()
        names = ("own_e", "mean_e", "oracle_prior", "amplified_e_x3", "amplified_e_x10")
        acc = torch.zeros(len(datas), len(names))
        centre = emb.mean(0)
        for i, d in enumerate(datas):
            f = net.features(d.x_val)
            own = net.classify(f, net.classifier_params(emb[i]))
            mean = net.classify(f, mean_theta)
            oracle = mean + prior[i].clamp_min(1e-6).log() - log_mean_prior
            stretched = [
                net.classify(
                    f, net.classifier_params(centre + gamma * (emb[i] - centre))
                )
                for gamma in (3.0, 10.0)
            ]
            for j, logits in enumerate((own, mean, oracle, *stretched)):
                acc[i, j] = (logits.argmax(1) == d.y_val).float().mean()
    for group, idx in (("all", list(range(len(datas)))), ("held_out", held)):
        for j, name in enumerate(names):
            out[f"val_{name}_{group}"] = float(acc[idx, j].mean())
    return out


def main() -> None:
    """Run (or reuse) every variant on every seed, ``--parallel`` at a time, and
    write the page; a finished run of the same config is never run again."""
    from bench.harness import Job, run_or_reuse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="conf/hyperfedzero-digits.toml")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tag", default="digits")
    parser.add_argument(
        "--set", nargs="*", default=[], help="overrides key=JSON-value for every run"
    )
    parser.add_argument(
        "--fedavg-set",
        nargs="*",
        default=[],
        help="overrides key=JSON-value for the FedAvg row only (its own tuned "
        "preset, e.g. inner-lr chosen by `python -m bench tune "
        "fedavg-hyperfedzero`)",
    )
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--first-seed", type=int, default=42)
    parser.add_argument(
        "--parallel", type=int, default=1, help="runs at a time (one thread each)"
    )
    parser.add_argument(
        "--reuse-from",
        action="append",
        default=[],
        metavar="SUITE",
        help="also take finished runs of the same config from outputs/bench/SUITE "
        "(e.g. tune-hyperfedzero-h24-zeroshot: a sweep's run at the chosen point)",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="add these seeds' rows to the existing JSON",
    )
    parser.add_argument(
        "--note",
        default="",
        help="a sentence to keep under the table (e.g. which rows ran on an "
        "earlier setting)",
    )
    parser.add_argument(
        "--add-run",
        nargs=3,
        action="append",
        default=[],
        metavar=("VARIANT", "SEED", "FOLDER"),
        help="a finished run of exactly this variant's config and seed (e.g. a "
        "tuning run at the chosen point: bit-identical) taken as its row",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="with --append: drop these variants' earlier rows first (a preset "
        "setting of theirs changed)",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="only re-render the page from the committed JSON",
    )
    parser.add_argument(
        "--diagnose",
        metavar="RUN_DIR",
        help="only print diagnose() of a finished run (embedding spread against "
        "the class mixes, own-e / mean-e / oracle validation accuracy)",
    )
    args = parser.parse_args()
    if args.diagnose:
        for key, value in diagnose(Path(args.diagnose)).items():
            print(f"{key:32s} {value:.4f}")
        return
    out = Path("bench/results") / f"hyperfedzero-{args.tag}.json"
    if args.render:
        out.with_suffix(".md").write_text(render(json.loads(out.read_text()), args.tag))
        return
    base = tomllib.loads(Path(args.preset).read_text())
    for kv in args.set:
        key, value = kv.split("=", 1)
        base[key] = json.loads(value)
    fedavg = {
        key: json.loads(value)
        for key, value in (kv.split("=", 1) for kv in args.fedavg_set)
    }
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    notes: list[str] = []
    if args.append and out.exists():
        earlier = json.loads(out.read_text())
        results.update(earlier["results"])
        notes = list(earlier.get("notes", []))
        if args.replace:
            results.update({v: [] for v in args.variants})
    if args.note:
        notes.append(args.note)
    for name, seed, folder in args.add_run:
        summary = json.loads((Path(folder) / "summary.json").read_text())
        results.setdefault(name, []).append(row_of(int(seed), summary))

    def save() -> None:
        data = {
            "preset": args.preset,
            "overrides": base,
            "fedavg_overrides": fedavg,
            "results": results,
            "notes": notes,
        }
        out.write_text(json.dumps(data, indent=1))
        out.with_suffix(".md").write_text(render(data, args.tag))

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [
        Job(
            name=f"{args.tag}-{SLUGS.get(name, name)}-s{seed}",
            overrides={
                **base,
                **VARIANTS[name],
                **(fedavg if name == "fedavg" else {}),
                "seed": seed,
            },
            tags={"variant": name, "seed": seed},
        )
        for seed in seeds
        for name in args.variants
    ]
    done = run_or_reuse(SUITE, jobs, args.parallel, True, args.reuse_from)
    for result in done:
        name, seed = result.job.tags["variant"], result.job.tags["seed"]
        kept = [r for r in results.setdefault(name, []) if r["seed"] != seed]
        results[name] = [*kept, row_of(seed, result.summary or {})]
        results[name].sort(key=lambda r: r["seed"])
    save()


def row_of(seed: int, summary: dict[str, Any]) -> dict[str, Any]:
    """A table row of one finished run: the headline keys and the collapse figures
    at its best round."""
    collapse = (summary.get("collapse") or {}).get("best_round") or {}
    return {
        "seed": seed,
        **{k: summary.get(k) for k in KEYS},
        **{k: collapse.get(k) for k in COLLAPSE_KEYS},
    }


if __name__ == "__main__":
    main()
