"""HyperFedZero's collapse, measured every evaluation round (issue 24).

Two questions, each a number in metrics.jsonl, a panel of ``collapse.png`` and an
entry of summary.json:

- **do the embeddings follow the class mix?** ``embedding-spread`` (mean L2
  distance of the store's embeddings to their mean) against ``class-mix-spread``
  (the same measure on the same clients' label distributions, the class mixes that
  the embeddings should reflect), their ratio ``spread-ratio``, and
  ``embedding-mix-corr`` (correlation of the clients' pairwise embedding distances
  with their pairwise class-mix distances). A collapsed store has a ratio near 0.
  The class mixes need the clients' labels, so they are computed where the server
  can read the clients' data (simulation, loopback, the in-process harness), once
  per run; elsewhere the class-mix entries are left out with a warning.
- **does a held-out client's own embedding help?** ``heldout-own-e-val-acc`` (held-out
  clients, which never train, evaluate the classifier generated for their own e on
  their validation rows) against ``heldout-mean-e-val-acc`` (the classifier for the
  store's mean e, on the same rows), and their difference
  ``heldout-own-minus-mean-val-acc``: no better than the mean e means h does not
  personalise. Validation rows only; nothing is selected on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import torch

from common.config import RunConfig
from common.partition import load_client_data
from server.plots import fit_title

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: The metrics.jsonl keys of the collapse metric (summary.json: '-' -> '_').
COLLAPSE_KEYS = (
    "embedding-spread",
    "class-mix-spread",
    "spread-ratio",
    "embedding-mix-corr",
    "heldout-own-e-val-acc",
    "heldout-mean-e-val-acc",
    "heldout-own-minus-mean-val-acc",
)


def class_mix(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A client's label distribution (C,): the share of each class in ``labels``."""
    counts = torch.bincount(labels.long(), minlength=num_classes).float()
    return counts / counts.sum().clamp_min(1.0)


def class_mixes(
    cfg: RunConfig, partitions: Mapping[str, int]
) -> dict[str, torch.Tensor]:
    """Each client's class mix over its local training pool (what its embedding is
    computed from), read from its partition: only where the server can read the
    clients' data."""
    return {
        cid: class_mix(load_client_data(cfg, pid).y_train, cfg.num_classes)
        for cid, pid in partitions.items()
    }


def mean_distance(rows: torch.Tensor) -> float:
    """Mean L2 distance of the rows (N, D) to their mean: the spread measure."""
    return float((rows - rows.mean(0)).norm(dim=1).mean())


def pairwise_correlation(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation of the pairwise distances within ``a`` and within ``b``
    (same clients, same order); None with fewer than 3 clients or no variation."""
    if len(a) < 3:
        return None
    iu = torch.triu_indices(len(a), len(a), offset=1)
    da = torch.cdist(a, a)[iu[0], iu[1]]
    db = torch.cdist(b, b)[iu[0], iu[1]]
    da, db = da - da.mean(), db - db.mean()
    denom = float(da.norm() * db.norm())
    return float((da * db).sum()) / denom if denom > 0 else None


def spread_against_mix(
    embeddings: Mapping[str, torch.Tensor], mixes: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    """Class-mix spread of the clients that have an embedding, the embedding spread
    over its ratio, and the pairwise-distance correlation; {} with no class mix."""
    ids = [c for c in embeddings if c in mixes]
    if not ids:
        return {}
    e = torch.stack([embeddings[c].float() for c in ids])
    m = torch.stack([mixes[c].float() for c in ids])
    mix_spread = mean_distance(m)
    out = {"class-mix-spread": mix_spread}
    if mix_spread > 0:
        out["spread-ratio"] = mean_distance(e) / mix_spread
    corr = pairwise_correlation(e, m)
    if corr is not None:
        out["embedding-mix-corr"] = corr
    return out


def own_vs_mean(
    own: Mapping[str, Mapping[str, float]], mean: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Held-out clients' validation accuracy with their own e and with the mean e
    (mean over the clients that answered both) and the difference."""
    ids = [c for c in own if c in mean]
    if not ids:
        return {}
    a = sum(float(own[c]["val-acc"]) for c in ids) / len(ids)
    b = sum(float(mean[c]["val-acc"]) for c in ids) / len(ids)
    return {
        "heldout-own-e-val-acc": a,
        "heldout-mean-e-val-acc": b,
        "heldout-own-minus-mean-val-acc": a - b,
    }


def collapse_summary(
    rows: Sequence[Mapping[str, Any]], best_round: int
) -> dict[str, Any]:
    """The collapse metric at the best round (or the last evaluated row before it)
    and at the last evaluated round, summary.json's ``collapse``."""
    evals = [r for r in rows if "heldout-own-e-val-acc" in r or "spread-ratio" in r]
    if not evals:
        return {}
    at_best = [r for r in evals if r.get("round", 0) <= best_round] or evals[:1]

    def pick(row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "round": row.get("round"),
            **{k.replace("-", "_"): row[k] for k in COLLAPSE_KEYS if k in row},
        }

    return {"best_round": pick(at_best[-1]), "last": pick(evals[-1])}


def collapse_figure(rows: Sequence[Mapping[str, Any]], method: str) -> Figure:
    """Per evaluation round: the embedding spread beside the class-mix spread, and
    held-out clients' validation accuracy with their own e and with the mean e."""
    fig, (ax_s, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (
        ("embedding-spread", "embedding spread"),
        ("class-mix-spread", "class-mix spread"),
    ):
        pts = [(r["round"], r[key]) for r in rows if key in r]
        if pts:
            ax_s.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label)
    ax_s.set(xlabel="round", ylabel="mean L2 distance to the mean", ylim=(0, None))
    ax_s.legend(loc="best")
    for key, label in (
        ("heldout-own-e-val-acc", "held out, own e"),
        ("heldout-mean-e-val-acc", "held out, mean e"),
    ):
        pts = [(r["round"], r[key]) for r in rows if key in r]
        if pts:
            ax_a.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label)
    ax_a.set(xlabel="round", ylabel="validation accuracy", ylim=(0, 1))
    ax_a.legend(loc="lower right")
    fig.tight_layout()
    fit_title(ax_s, f"{method}: embedding spread against the class mix")
    fit_title(ax_a, "held-out clients: own e against mean e")
    fig.tight_layout()
    return fig


def plot_collapse(
    out_dir: Path, rows: Sequence[Mapping[str, Any]], method: str
) -> Path:
    """Draw ``collapse.png`` in ``out_dir``; returns its path."""
    fig = collapse_figure(rows, method)
    path = out_dir / "collapse.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
