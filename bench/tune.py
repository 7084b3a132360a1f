"""``python -m bench tune <target> [--grid KEY=V1,V2 ...] [--set KEY=V ...]``.

A grid search that reads participants' *validation* accuracy only (the protocol is
docs/tuning.md). Every grid point runs the target's preset with the point's values
for each seed; a point's score is the mean over seeds of the validation accuracy at
each run's best-validation round. Test accuracy is never read, written or shown
here. Results go to ``bench/results/tune-<name>.json`` and ``.md`` with the command
that produced them; ``--quick`` writes to ``outputs/bench/quick-results`` instead.

Each run's validation curve is read with :func:`curve_state` (docs/tuning.md rule 7):
still rising, flattened or unknown (too short to tell); a point whose curve still
rises, or cannot be read, at the end of the budget is flagged, and the protocol says to
lengthen the runs (equally for every point) before choosing. Tuning runs evaluate at
least :data:`MIN_EVALS` times (``eval-every`` is set from ``num-rounds`` when a sweep
does not set it). Points are chosen by their per-seed differences from the first grid
point, the source's value (:func:`paired_choice`, rule 4).

``python -m bench tune --render [NAME ...]`` re-renders committed sweep pages from
their stored runs under the current rules, without running anything.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    Job,
    JobResult,
    LoadMonitor,
    machine,
    results_dir,
    run_or_reuse,
)
from bench.paired import Paired, compare
from bench.report import divergence, fmt, mean_std, table, write_results

#: Minimum improvement (absolute) of the best validation accuracy over the last
#: ``FLAT_WINDOW`` evaluations that still counts as "rising".
FLAT_TOL = 0.005
FLAT_WINDOW = 3
#: Fewer evaluations than this and a curve's state is "unknown" (rule 7).
MIN_CURVE = FLAT_WINDOW + 1
#: A tuning run evaluates validation at least this many times (rule 7).
MIN_EVALS = 10

#: The three readings of a validation curve (docs/tuning.md rule 7).
RISING, FLATTENED, UNKNOWN = "rising", "flattened", "unknown"


class TooFewEvaluations(ValueError):
    """A sweep whose runs would evaluate validation fewer than :data:`MIN_EVALS`
    times: rule 7 could not tell a rising curve from a flat one."""


@dataclass(frozen=True)
class Target:
    """What ``tune <target>`` tunes: a preset, fixed overrides and a default grid."""

    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    what: str = ""
    score: str = "participant_val_acc"


#: What a sweep can be scored on (a summary key, and how its page names it): always a
#: validation number. A key that only acts on held-out clients (``novel-lr``) is
#: scored on their validation rows; the participants' would not see it.
SCORES = {
    "participant_val_acc": "participants' validation accuracy at each run's "
    "best-validation round",
    "ri_val": "pFedDSH's retroactive improvement read on validation: the mean "
    "change of earlier batches' validation accuracy across each batch join",
    "nonparticipant_val_acc": "held-out clients' validation accuracy (their own "
    "validation rows, with the model they get at the best-validation round)",
}


#: A seed's converged θ_pret for a HyperFLoRA preset (bench/hyperflora.py's
#: pretrain job; ``{seed}`` is filled per run by :func:`per_seed`).
HFL_PRETRAINED = "outputs/bench/hyperflora/{preset}-pretrain-s{{seed}}/pretrained.pt"

#: The chunked generator's fixed settings (its own optimiser; docs/tuning.md).
CHUNKED = {"hypernet": "chunked", "server-optimizer": "adam"}


def _hyperflora_baseline(row: str, tuned: str) -> dict[str, Any]:
    """A baseline row of HyperFLoRA's LeNet table, less the key being tuned."""
    from bench.harness import load_preset
    from bench.hyperflora import PRESETS, baseline_overrides

    preset = PRESETS["lenet"]
    fixed = baseline_overrides(preset, row, load_preset(preset.conf))
    return {k: v for k, v in fixed.items() if k != tuned}


TARGETS: dict[str, Target] = {
    "pfedhn": Target(
        "quickstart",
        {},
        {"server-lr": [0.01, 0.05]},
        "pFedHN (parallel, M = 10) on the quickstart split: server lr "
        "(the authors' 0.01 against the earlier default 0.05)",
    ),
    "pfedhn-novel": Target(
        "quickstart",
        {},
        {"novel-lr": [1.0, 0.2, 5.0]},
        "pFedHN's held-out embedding fit: novel-lr (the current default first)",
        score="nonparticipant_val_acc",
    ),
    "chunked": Target(
        "quickstart",
        CHUNKED,
        {"server-lr": [3e-4, 1e-3, 3e-3]},
        "pFedHN with the chunked generator: Adam lr",
    ),
    "chunked-digits": Target(
        "digits-quick",
        CHUNKED,
        {"server-lr": [3e-4, 1e-3, 3e-3]},
        "the chunked generator's Adam lr on digits (cheap)",
    ),
    "pfedhn-digits": Target(
        "digits-quick",
        {},
        {"server-lr": [0.01, 0.05]},
        "per-tensor pFedHN's server lr on digits (cheap)",
    ),
    "fedavg": Target(
        "fedavg-fmnist",
        {},
        {"inner-lr": [0.005, 0.02]},
        "FedAvg on the quickstart split: local lr",
    ),
    "local": Target(
        "local-fmnist",
        {},
        {"inner-lr": [0.005, 0.02]},
        "local training on the quickstart split: local lr",
    ),
    # The hard split (issue 23): the local lr, the one key all three rows share,
    # on the same three points for each; each row's first point is its source's
    # value (pFedHN: the authors' 0.005; FedAvg and local: their quickstart
    # choice 0.02). pFedHN's and local-only's best sat on the upper edge (0.05):
    # widened to 0.1 and 0.25 (rule 4).
    "hard-pfedhn": Target(
        "hard-fmnist",
        {"method": "pfedhn"},
        {"inner-lr": [0.005, 0.02, 0.05, 0.1, 0.25]},
        "pFedHN on the hard split: local lr",
    ),
    "hard-fedavg": Target(
        "hard-fmnist",
        {"method": "fedavg"},
        {"inner-lr": [0.02, 0.005, 0.05]},
        "FedAvg on the hard split: local lr",
    ),
    # HyperFedZero's claim on the hard split is about held-out clients (zACC): its
    # local lr from its preset's 0.01, and FedAvg's sweep above read again on the
    # held-out clients' validation rows (the same runs: --reuse-from hard-fedavg).
    "hard-hyperfedzero": Target(
        "hard-fmnist",
        {"method": "hyperfedzero"},
        {"inner-lr": [0.01, 0.03, 0.1]},
        "HyperFedZero on the hard split, scored on held-out clients: local lr",
        score="nonparticipant_val_acc",
    ),
    "hard-fedavg-zeroshot": Target(
        "hard-fmnist",
        {"method": "fedavg"},
        {"inner-lr": [0.02, 0.005, 0.05]},
        "FedAvg on the hard split, scored on held-out clients (its global model): "
        "local lr",
        score="nonparticipant_val_acc",
    ),
    "hard-local": Target(
        "hard-fmnist",
        {"method": "local"},
        {"inner-lr": [0.02, 0.005, 0.05, 0.1, 0.25]},
        "local-only on the hard split: local lr",
    ),
    # HyperFedZero and the FedAvg it is compared with, on HyperFedZero's split
    # (the paper's MNIST-MLP setting on Fashion-MNIST): the same grid of the key
    # both share and are most sensitive to, the local lr (equal effort).
    "hyperfedzero": Target(
        "hyperfedzero-fmnist",
        {},
        {"inner-lr": [0.01, 0.003, 0.03]},
        "HyperFedZero on its Fashion-MNIST split (Dirichlet 1.0, 10 participants): "
        "local lr",
    ),
    "fedavg-hyperfedzero": Target(
        "hyperfedzero-fmnist",
        {"method": "fedavg"},
        {"inner-lr": [0.01, 0.003, 0.03]},
        "FedAvg on HyperFedZero's Fashion-MNIST split (the same MLP, rounds and "
        "local steps): local lr",
    ),
    # HyperFedZero's claim is about held-out clients (zACC): its most collapse-prone
    # key and FedAvg's local lr, each scored on the held-out clients' validation
    # rows (zero-shot for both: h(e) / the global model), three points, two seeds.
    "hyperfedzero-zeroshot": Target(
        "hyperfedzero-fmnist",
        {},
        {"hfz-beta": [0.01, 0.1, 1.0]},
        "HyperFedZero on its Fashion-MNIST split, scored on held-out clients: "
        "hfz-beta (the preset's first)",
        score="nonparticipant_val_acc",
    ),
    "fedavg-hyperfedzero-zeroshot": Target(
        "hyperfedzero-fmnist",
        {"method": "fedavg"},
        {"inner-lr": [0.03, 0.01, 0.1]},
        "FedAvg on HyperFedZero's split, scored on held-out clients (its global "
        "model): local lr (its preset's first)",
        score="nonparticipant_val_acc",
    ),
    # HyperFLoRA's LeNet table (bench/hyperflora.py) at its equal budget: each row's
    # most sensitive key, three points, seeds 42 and 43 (equal effort). HyperFLoRA's
    # server lr starts at the authors' 0.01; pFedHN's grid is its quickstart sweep's;
    # FedAvg's local lr starts at its own preset's 0.02.
    "hyperflora-lenet": Target(
        "hyperflora-lenet-fmnist",
        {},
        {"server-lr": [0.01, 0.003, 0.03]},
        "HyperFLoRA (paired) on its LeNet-5 preset: hypernetwork (server) lr",
    ),
    # Issue 25: phase 2 alone, from each seed's converged θ_pret (``python -m
    # bench.hyperflora --pretrain-only`` leaves it), 200 hypernetwork rounds; the
    # authors' 0.01 first, the earlier sweep's edge (0.03) and two points past it.
    "hyperflora-lenet-phase2": Target(
        "hyperflora-lenet-fmnist",
        {
            "pretrained-model": HFL_PRETRAINED.format(preset="lenet"),
            "finetune-steps": 0,
        },
        {"server-lr": [0.01, 0.03, 0.1, 0.3]},
        "HyperFLoRA (paired) on its LeNet-5 preset, from each seed's converged "
        "θ_pret: hypernetwork (server) lr",
    ),
    "pfedhn-hyperflora-lenet": Target(
        "hyperflora-lenet-fmnist",
        _hyperflora_baseline("pFedHN", "server-lr"),
        {"server-lr": [0.01, 0.05, 0.2]},
        "pFedHN on HyperFLoRA's LeNet-5 split at HyperFLoRA's budget: server lr",
    ),
    # The paper's pFedHN baselines of HyperFLoRA's table (issue 25), reading r_i and
    # serving bystanders zero-shot, at the table's budget from the converged
    # phases (1,200 rounds of M; the one-client row M times as many): their server
    # lr from the fitted pFedHN's choice on this split (0.2, M a round) and the
    # authors' 0.01 (one client a round), a point either side.
    "pfedhn-ri-parallel-hyperflora-lenet": Target(
        "hyperflora-lenet-fmnist",
        _hyperflora_baseline("pFedHN-Parallel (paper: r_i)", "server-lr"),
        {"server-lr": [0.2, 0.05, 0.6]},
        "pFedHN-Parallel reading r_i on HyperFLoRA's LeNet-5 split at HyperFLoRA's "
        "budget: server lr",
    ),
    "pfedhn-ri-hyperflora-lenet": Target(
        "hyperflora-lenet-fmnist",
        _hyperflora_baseline("pFedHN (paper: r_i)", "server-lr"),
        {"server-lr": [0.01, 0.003, 0.03]},
        "pFedHN (one client a round) reading r_i on HyperFLoRA's LeNet-5 split at "
        "HyperFLoRA's budget: server lr",
    ),
    # pFedDSH's mask budget (issue 26): the penalty alone (β = 0, the first
    # design) shrinks a mask for as long as its batch trains; scored without replay
    # and PA reference (neither changes what a batch's own mask learns).
    "pfeddsh-budget": Target(
        "pfeddsh-fmnist",
        {"replay": False, "pa-reference": False},
        {"mask-budget": [0.0, 0.1, 0.2, 0.4]},
        "pFedDSH (3 batches of 8, 40 rounds a batch, masks without replay): the "
        "share of each trunk layer's units a batch keeps before the sparsity "
        "penalty acts",
    ),
    # pFedDSH's hypernetwork lr (issue 26): at 0.2 later batches' training
    # collapsed on some seeds (a masked hypernetwork's step lands on fewer weights).
    "pfeddsh-server-lr": Target(
        "pfeddsh-fmnist",
        {"replay": False, "pa-reference": False},
        {"server-lr": [0.2, 0.1, 0.05]},
        "pFedDSH (3 batches of 8, 40 rounds a batch, masks at β 0.4 without "
        "replay): the hypernetwork's learning rate",
    ),
    # pFedDSH's replay step size (issue 26), scored on RI read on validation.
    "pfeddsh-replay": Target(
        "pfeddsh-fmnist",
        {"pa-reference": False},
        {"replay-lr": [0.01, 0.003, 0.03]},
        "pFedDSH (3 batches of 8, 40 rounds a batch, masks + replay, no gate): "
        "replay's learning rate",
        score="ri_val",
    ),
    # FedAvg on pFedDSH's batch schedule (issue 26): the table's FedAvg row gets a
    # sweep of its own local lr, the effort its pFedDSH rows had on server-lr.
    "pfeddsh-fedavg-lr": Target(
        "pfeddsh-fmnist",
        {
            "batch-learner": "fedavg",
            "masks": False,
            "replay": False,
            "pa-reference": False,
        },
        {"inner-lr": [0.02, 0.005, 0.05]},
        "FedAvg on pFedDSH's batch schedule (3 batches of 8, 40 rounds a batch): "
        "local lr",
    ),
    "fedavg-hyperflora-lenet": Target(
        "hyperflora-lenet-fmnist",
        _hyperflora_baseline("FedAvg (same budget)", "inner-lr"),
        {"inner-lr": [0.02, 0.005, 0.05]},
        "FedAvg on HyperFLoRA's LeNet-5 split at HyperFLoRA's budget: local lr",
    ),
}


def curve_state(curve: Sequence[float | None]) -> str:
    """Rule 7's reading of one validation curve: :data:`RISING` when its best is at
    its last evaluation (above every earlier one) or the best of its last
    ``FLAT_WINDOW`` evaluations beats the best before them by ``FLAT_TOL`` or more;
    :data:`UNKNOWN` with fewer than :data:`MIN_CURVE` evaluations (too short to
    tell, never "not rising"); :data:`FLATTENED` otherwise."""
    vals = [v for v in curve if v is not None]
    if len(vals) < MIN_CURVE:
        return UNKNOWN
    if vals[-1] > max(vals[:-1]):
        return RISING
    rising = max(vals[-FLAT_WINDOW:]) - max(vals[:-FLAT_WINDOW]) >= FLAT_TOL
    return RISING if rising else FLATTENED


def flattened(curve: Sequence[float | None]) -> bool | None:
    """Whether a validation curve has flattened by rule 7 (:func:`curve_state`):
    True flattened, False still rising, None unknown (fewer than four
    evaluations) — a None must be shown as unknown, never as "not rising"."""
    return {FLATTENED: True, RISING: False, UNKNOWN: None}[curve_state(curve)]


def run_curves(curve: Sequence[Sequence[float]]) -> list[list[float]]:
    """A record's ``val_curve`` (``(round, acc)`` pairs) split into its runs' curves:
    a row made of several runs (the MH table's per-architecture row) stores them one
    after another, each starting again at an earlier round."""
    runs: list[list[float]] = []
    last = None
    for rnd, acc in curve:
        if last is None or rnd <= last:
            runs.append([])
        runs[-1].append(acc)
        last = rnd
    return runs


def record_state(rec: dict[str, Any]) -> str | None:
    """Rule 7's reading of one sweep record: from its stored validation curve(s)
    when it has one (several runs: rising if any rises, else unknown if any is
    unknown), else from its stored ``flattened`` flag; None for a record with
    neither (an offline fit without a curve)."""
    curves = run_curves(rec.get("val_curve") or [])
    if curves:
        states = {curve_state(c) for c in curves}
        return next(s for s in (RISING, UNKNOWN, FLATTENED) if s in states)
    flag = rec.get("flattened")
    return None if flag is None else (FLATTENED if flag else RISING)


def evaluations(num_rounds: int, eval_every: int) -> int:
    """How many validation evaluations a run of ``num_rounds`` makes at
    ``eval_every`` (every E rounds, plus the last round when E does not divide it)."""
    every = max(1, eval_every)
    return num_rounds // every + (num_rounds % every != 0)


def eval_sizing(num_rounds: int, sets: dict[str, Any]) -> dict[str, Any]:
    """``sets`` with an ``eval-every`` that gives at least :data:`MIN_EVALS`
    evaluations (rule 7): set to ``num-rounds // 10`` when the sweep does not name
    one; a named one that gives fewer raises :class:`TooFewEvaluations` (so a
    rising curve can be seen)."""
    rounds = int(sets.get("num-rounds", num_rounds))
    if rounds < MIN_EVALS:
        raise TooFewEvaluations(
            f"num-rounds={rounds} cannot give {MIN_EVALS} validation evaluations "
            "(docs/tuning.md rule 7)"
        )
    if "eval-every" not in sets:
        return {**sets, "eval-every": rounds // MIN_EVALS}
    got = evaluations(rounds, int(sets["eval-every"]))
    if got < MIN_EVALS:
        raise TooFewEvaluations(
            f"num-rounds={rounds} at eval-every={sets['eval-every']} evaluates "
            f"{got} times; tuning runs evaluate at least {MIN_EVALS} times "
            f"(docs/tuning.md rule 7): use eval-every <= {rounds // MIN_EVALS}"
        )
    return sets


def points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the grid's order."""
    keys = list(grid)
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(grid[k] for k in keys))
    ]


def label(point: dict[str, Any]) -> str:
    """A short name of a grid point: ``key=value, ...``."""
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "preset"


def per_seed(values: dict[str, Any], seed: int) -> dict[str, Any]:
    """``values`` with ``{seed}`` in string values replaced by ``seed``."""
    return {
        k: v.replace("{seed}", str(seed)) if isinstance(v, str) else v
        for k, v in values.items()
    }


def jobs_for(
    name: str,
    target: Target,
    grid: dict[str, list[Any]],
    sets: dict[str, Any],
    seeds: Sequence[int],
    start: int = 0,
) -> list[Job]:
    """One job per (grid point, seed); points numbered from ``start``. A string
    value holding ``{seed}`` is filled with the run's seed (a per-seed input such as
    HyperFLoRA's ``pretrained-model``: every point of a seed starts from the same
    θ_pret)."""
    jobs = []
    for i, point in enumerate(points(grid), start):
        for seed in seeds:
            fixed = {**target.overrides, **sets, **point}
            jobs.append(
                Job(
                    f"{name}-p{i}-s{seed}",
                    target.preset,
                    {**per_seed(fixed, seed), "seed": seed},
                    tags={"point": label(point), "seed": seed},
                )
            )
    return jobs


def run_record(result: JobResult, score: str = "participant_val_acc") -> dict[str, Any]:
    """Validation numbers of one run (no test accuracy); ``val_acc`` is ``score``."""
    s = result.summary or {}
    curve = [
        (r["round"], r["participant-val-acc"])
        for r in result.rows
        if "participant-val-acc" in r
    ]
    cfg = result.job.overrides
    rec = {
        "point": result.job.tags["point"],
        "seed": result.job.tags["seed"],
        "ok": result.ok,
        "error": result.error,
        "val_acc": s.get(score),
        "best_round": s.get("best_round"),
        "rounds": s.get("rounds"),
        "wall_s": s.get("wall_s"),
        "val_curve": curve,
        "flattened": flattened([v for _, v in curve]),
        "clients_per_round": cfg.get("clients-per-round"),
    }
    cause = divergence({}, result.rows, result.error)
    if cause:
        rec["diverged"], rec["val_acc"] = cause, float("nan")
    return rec


def scored(run: dict[str, Any]) -> bool:
    """Whether a sweep record has a score: it finished and did not diverge."""
    return bool(run["ok"]) and not run.get("diverged")


def seed_scores(runs: list[dict[str, Any]], point: str) -> dict[int, float | None]:
    """``{seed: validation score}`` of one grid point (None where it failed or
    diverged), for the paired comparison."""
    return {
        int(r["seed"]): (r["val_acc"] if scored(r) else None)
        for r in runs
        if r["point"] == point
    }


def paired_choice(
    runs: list[dict[str, Any]], order: list[str]
) -> tuple[int, dict[str, Paired]]:
    """Rule 4 (docs/tuning.md): the index of the chosen point in ``order`` and each
    later point's paired comparison with the first point (the source's value).

    A point beats the first point when :func:`bench.paired.compare` says "holds"
    on their per-seed differences (every seed above 0 with fewer than five seeds;
    mean above 0 and 4 of 5 agreeing with five or more); among those the largest
    mean difference wins (equal means: the earlier point); none: the first point is
    kept (the sweep is flat, paired). Should the first point have scored on no
    seed at all, there is nothing to pair with, and the best mean is chosen."""
    if not order:
        return 0, {}
    source = seed_scores(runs, order[0])
    pairs = {p: compare(seed_scores(runs, p), source) for p in order[1:]}
    if all(v is None for v in source.values()):
        means = [
            mean_std(v for v in seed_scores(runs, p).values() if v is not None)[0]
            for p in order
        ]
        best_i = max(
            (i for i, m in enumerate(means) if m is not None),
            key=lambda i: means[i] or 0.0,
            default=0,
        )
        return best_i, pairs
    best, best_mean = 0, 0.0
    for i, point in enumerate(order[1:], 1):
        got = pairs[point]
        if got.holds and got.mean is not None and got.mean > best_mean:
            best, best_mean = i, got.mean
    return best, pairs


def summarise(runs: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """One row per grid point: mean ± std of the validation score over seeds, the
    paired differences from the first point, rule 7's curve counts and the choice
    (rule 4: :func:`paired_choice`)."""
    rows = []
    chosen, pairs = paired_choice(runs, order)
    for point in order:
        mine = [r for r in runs if r["point"] == point]
        ok = [r for r in mine if scored(r)]
        mean, std, n = mean_std(r["val_acc"] for r in ok)
        states = [record_state(r) for r in ok]
        row: dict[str, Any] = {
            "point": point,
            "val_acc": mean,
            "val_acc_std": std,
            "n": n,
            "runs": len(mine),
            "diverged": sum(bool(r.get("diverged")) for r in mine),
            "best_round": mean_std(r["best_round"] for r in ok)[0],
            "still_rising": states.count(RISING),
            "unknown": states.count(UNKNOWN),
            "wall_s": mean_std(r["wall_s"] for r in ok)[0],
        }
        if point in pairs:
            got = pairs[point]
            row["paired"] = {
                "diffs": {str(s): d for s, d in got.diffs.items()},
                "mean": got.mean,
                "agree": got.agree,
                "n": got.n,
                "verdict": got.verdict,
            }
        rows.append(row)
    if rows and any(r["val_acc"] is not None for r in rows):
        rows[chosen]["chosen"] = True
        if len(rows) > 1 and chosen == 0:
            rows[0]["flat"] = True  # flat (paired): no point beats the source's value
    return rows


#: What two sweeps must share for their points to be compared on one page.
COMPARABLE = ("target", "preset", "overrides", "sets", "seeds", "score")


def incomparable(committed: dict[str, Any], added: dict[str, Any]) -> str | None:
    """The first of :data:`COMPARABLE` in which the two sweeps differ, if any."""
    return next((k for k in COMPARABLE if committed.get(k) != added.get(k)), None)


def widened(committed: dict[str, Any], added: dict[str, Any]) -> dict[str, Any]:
    """A committed one-key sweep with more points of its key (the edge rule), the
    choice re-made over all of them. The added runs must share the sweep's preset,
    sizing and seeds, or the points would not be comparable."""
    differ = incomparable(committed, added)
    if differ:
        raise ValueError(f"cannot widen: the sweeps differ in {differ}")
    (key,) = committed["grid"]
    grid = {key: [*committed["grid"][key], *added["grid"][key]]}
    runs = [*committed["runs"], *added["runs"]]
    return {
        **committed,
        "grid": grid,
        "command": f"{committed['command']} && {added['command']}",
        "rows": summarise(runs, [label(p) for p in points(grid)]),
        "runs": runs,
    }


def _paired_cell(row: dict[str, Any]) -> str:
    """A row's per-seed differences from the first point, in points, with the
    number of seeds above 0 and the verdict (the first point itself: "—")."""
    got = row.get("paired")
    if not got:
        return "— (first point)"
    diffs = ", ".join(
        "NaN" if d is None else f"{100 * d:+.2f}" for d in got["diffs"].values()
    )
    word = "beats it" if got["verdict"] == "holds" else "no"
    return f"{diffs} ({got['agree']}/{got['n']}; {word})"


def _curves_cell(row: dict[str, Any]) -> str:
    """Rule 7's counts of a row: rising, and unknown where any."""
    rising = str(row["still_rising"])
    unknown = row.get("unknown", 0)
    return f"{rising}; {unknown} unknown" if unknown else rising


def render(data: dict[str, Any]) -> str:
    """The sweep's page, from its JSON alone."""
    body = table(
        [
            "grid point",
            "held-out val acc % (mean ± std)"
            if data.get("score") == "nonparticipant_val_acc"
            else "participants' val acc % (mean ± std)",
            "seeds",
            "paired diff. vs first point, per seed (points; seeds above 0)",
            "best round (mean)",
            "curves still rising",
            "diverged",
            "s/run",
            "chosen",
        ],
        [
            [
                r["point"],
                "NaN"
                if r["diverged"] and r["val_acc"] is None
                else (
                    "—"
                    if r["val_acc"] is None
                    else f"{100 * r['val_acc']:.2f} ± "
                    f"{100 * (r['val_acc_std'] or 0):.2f}"
                ),
                f"{r['n']}/{r['runs']}",
                _paired_cell(r) if len(data["rows"]) > 1 else "—",
                fmt(r["best_round"], 3),
                _curves_cell(r),
                r["diverged"],
                fmt(r["wall_s"], 3),
                "**yes**" if r.get("chosen") else "",
            ]
            for r in data["rows"]
        ],
    )
    sets = ", ".join(f"{k}={v}" for k, v in data["sets"].items()) or "none"
    fixed = ", ".join(f"{k}={v}" for k, v in data["overrides"].items()) or "none"
    seeds = data["seeds"]
    notes = [
        f"### Tuning — {data['name']}",
        "",
        data["what"],
        "",
        f"Command: `{data['command']}`",
        "",
        f"Preset `{data['preset']}`; fixed overrides: {fixed}; sizing: {sets}; "
        f"seeds {', '.join(map(str, seeds))}.",
        "",
        body,
        "",
        f"Score: {SCORES[data.get('score', 'participant_val_acc')]}, mean over "
        "seeds; test accuracy is not read (docs/tuning.md). "
        "Choice (rule 4, paired): a point replaces the first grid point (the "
        "source's value) when its per-seed difference from it is above 0 on every "
        "seed (fewer than 5 seeds), or its mean difference is above 0 with at "
        "least 4 of 5 seeds agreeing (5 or more seeds); among such points the "
        "largest mean difference is chosen. "
        f"A curve is 'still rising' (rule 7) when its best is at its last "
        f"evaluation or its last {FLAT_WINDOW} evaluations beat the best before "
        f"them by {100 * FLAT_TOL:.1f} points or more; 'unknown' with fewer than "
        f"{MIN_CURVE} evaluations.",
    ]
    if len(seeds) < 2 and len(data["rows"]) > 1:
        notes.append("One seed only: the paired test is that seed's difference alone.")
    if any(r.get("flat") for r in data["rows"]):
        notes.append(
            "Flat (paired): no point beats the first grid point on its per-seed "
            "differences, so the first grid point (the source's value) is kept "
            "(docs/tuning.md rule 4)."
        )
    rising = [r["point"] for r in data["rows"] if r["still_rising"]]
    if rising:
        notes.append(
            "Not flattened within the budget: "
            + "; ".join(rising)
            + " — the choice holds for this budget only."
        )
    unknown = [r["point"] for r in data["rows"] if r.get("unknown")]
    if unknown:
        notes.append(
            f"Unknown (fewer than {MIN_CURVE} evaluations, too short for rule 7 "
            "to tell; not counted as flattened): "
            + "; ".join(unknown)
            + " — the choice holds for this budget only."
        )
    return "\n".join(notes) + "\n"


def rerender(names: Sequence[str] = (), results: Path | None = None) -> list[str]:
    """Re-make each committed sweep's rows (choice and curve counts) from its stored
    runs under the current rules and rewrite its ``tune-<name>.{json,md}``; nothing
    is run. No names: every ``tune-*.json`` in ``results``. Returns the names."""
    folder = results or results_dir(False)
    paths = (
        [folder / f"tune-{n}.json" for n in names]
        if names
        else sorted(folder.glob("tune-*.json"))
    )
    done = []
    for path in paths:
        data = json.loads(path.read_text())
        data["rows"] = summarise(data["runs"], [label(p) for p in points(data["grid"])])
        name = path.stem.removeprefix("tune-")
        write_results(f"tune-{name}", data, render(data), folder)
        done.append(name)
    return done


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def add_diagnostic_options(parser: argparse.ArgumentParser, page: str) -> None:
    """``--set KEY=VALUE`` (repeatable) and ``--tag T`` on a table's command line: a
    diagnostic run of the table's rows with keys changed, written to its own page
    (``page``, with ``<tag>`` where the tag goes) so it never replaces the table."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        metavar="KEY=VALUE",
        help=f"run-config key for every run of a diagnostic table (repeatable; "
        f"needs --tag, which names its page {page})",
    )
    parser.add_argument("--tag", default="", help="page suffix of a --set table")


def parse_pairs(items: Sequence[str], many: bool) -> dict[str, Any]:
    """KEY=VALUE arguments as run-config overrides (``many``: KEY=V1,V2 as a list of
    grid points), values typed as the TOML presets would type them."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        out[key] = [_value(v) for v in value.split(",")] if many else _value(value)
    return out


def main(argv: Sequence[str]) -> int:
    """Parse ``tune`` arguments, run the sweep and write its results
    (``--render [NAME ...]``: re-render committed sweeps from their runs instead)."""
    if argv and argv[0] == "--render":
        done = rerender(argv[1:])
        print(
            f"re-rendered {len(done)} sweep page(s): {', '.join(done)}", file=sys.stderr
        )
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench tune",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("target", help=f"one of: {', '.join(TARGETS)}")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        help="KEY=V1,V2 (repeatable); replaces the target's grid",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        help="KEY=VALUE sizing for every run (repeatable), e.g. num-rounds=30",
    )
    parser.add_argument("--seeds", default="42,43", help="comma-separated seeds")
    parser.add_argument("--name", default="", help="results name (tune-<name>)")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--reuse-from",
        action="append",
        default=[],
        metavar="NAME",
        help="with --reuse: also take finished runs of the same config from sweep "
        "tune-NAME (the same runs, scored as this target scores them)",
    )
    parser.add_argument(
        "--widen",
        action="store_true",
        help="add the --grid points to the committed sweep tune-<name> (the "
        "protocol's edge rule): only they run, the choice is made over all",
    )
    args = parser.parse_args(list(argv))
    if args.target not in TARGETS:
        parser.error(f"unknown target {args.target!r}; known: {', '.join(TARGETS)}")
    target = TARGETS[args.target]
    grid = parse_pairs(args.grid, many=True) or target.grid
    sets = parse_pairs(args.sets, many=False)
    if args.quick:
        sets = {
            "num-rounds": 2,
            "eval-every": 1,
            "local-steps": 5,
            "novel-rounds": 1,
            **sets,
        }
    else:
        from bench.harness import load_preset
        from common.config import parse_run_config

        base = {**load_preset(target.preset), **target.overrides}
        try:
            sets = eval_sizing(parse_run_config(base).num_rounds, sets)
        except TooFewEvaluations as err:
            parser.error(f"{type(err).__name__}: {err}")
    seeds = [int(s) for s in args.seeds.split(",")]
    name = args.name or args.target
    committed = None
    if args.widen:
        path = results_dir(args.quick) / f"tune-{name}.json"
        if not path.exists():
            parser.error(f"--widen needs a committed sweep {path}")
        committed = json.loads(path.read_text())
        planned = {
            "target": args.target,
            "preset": target.preset,
            "overrides": target.overrides,
            "sets": sets,
            "seeds": seeds,
            "score": target.score,
        }
        differ = incomparable(committed, planned)
        if differ or list(committed["grid"]) != list(grid):
            # before any run: a mismatch found after the runs would waste them
            parser.error(
                "--widen adds points of the committed sweep's key with its "
                f"settings; this call differs in {differ or 'the grid key'}"
            )
    start = len(points(committed["grid"])) if committed else 0
    jobs = jobs_for(name, target, grid, sets, seeds, start)
    with LoadMonitor() as load:
        results = run_or_reuse(
            f"tune-{name}",
            jobs,
            args.parallel,
            args.reuse,
            [f"tune-{other}" for other in args.reuse_from],
        )
    runs = [run_record(r, target.score) for r in results]
    rows = summarise(runs, [label(p) for p in points(grid)])
    data = {
        "name": name,
        "target": args.target,
        "what": target.what
        if grid == target.grid
        else f"{target.what.rsplit(':', 1)[0]}: {', '.join(grid)}",
        "preset": target.preset,
        "overrides": target.overrides,
        "grid": grid,
        "sets": sets,
        "seeds": seeds,
        "command": "python -m bench tune " + shlex.join(list(argv)),
        "rows": rows,
        "runs": runs,
        "machine": machine(),
        "load": load.summary(),
        "quick": args.quick,
        "score": target.score,
    }
    if committed is not None:
        data = widened(committed, data)
        rows = data["rows"]
    write_results(f"tune-{name}", data, render(data), results_dir(args.quick))
    chosen = next((r["point"] for r in rows if r.get("chosen")), None)
    print(f"tune {name}: chosen on validation: {chosen}", file=sys.stderr)
    return 0
