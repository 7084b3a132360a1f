"""PNG plots of a run, made from its metrics.jsonl and summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(
    out_dir: Path, rows: list[dict[str, Any]], summary: dict[str, Any]
) -> list[Path]:
    """Accuracy per round and participant vs non-participant accuracy; returns paths."""
    paths = []
    evals = [r for r in rows if "participant-test-acc" in r]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    if evals:
        rounds = [r["round"] for r in evals]
        for key, label in (
            ("participant-val-acc", "participants (val)"),
            ("participant-test-acc", "participants (test)"),
        ):
            mean = [r[key] for r in evals]
            std = [r.get(f"{key}-std", 0.0) for r in evals]
            ax_acc.plot(rounds, mean, marker="o", ms=3, label=label)
            ax_acc.fill_between(
                rounds,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                alpha=0.15,
            )
    best = summary.get("best_round")
    if best:
        ax_acc.axvline(best, color="grey", ls="--", lw=1, label=f"best round {best}")
    ax_acc.set(
        xlabel="round",
        ylabel="accuracy",
        title=f"{summary.get('method')}: accuracy per round",
        ylim=(0, 1),
    )
    ax_acc.legend(loc="lower right")
    train = [r for r in rows if "train-loss" in r]
    ax_loss.plot([r["round"] for r in train], [r["train-loss"] for r in train])
    ax_loss.set(xlabel="round", ylabel="local training loss", title="training loss")
    fig.tight_layout()
    paths.append(out_dir / "accuracy.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    labels, means, stds = [], [], []
    for name, key in (
        ("participants", "participant_acc"),
        ("non-participants", "nonparticipant_acc"),
        ("global model", "global_acc"),
    ):
        if summary.get(key) is not None:
            labels.append(name)
            means.append(summary[key])
            stds.append(summary.get(f"{key}_std") or 0.0)
    ax.bar(labels, means, yerr=stds, capsize=6, color=["C0", "C1", "C2"][: len(labels)])
    for i, m in enumerate(means):
        ax.text(i, m + 0.02, f"{m:.3f}", ha="center")
    ax.set(
        ylim=(0, 1.08),
        ylabel="test accuracy (best round)",
        title=f"{summary.get('method')} on {summary.get('dataset')}",
    )
    fig.tight_layout()
    paths.append(out_dir / "participants_vs_nonparticipants.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
