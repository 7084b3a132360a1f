"""PNG plots of a run, made from its metrics.jsonl and summary.json.

Accuracies are fractions in [0, 1], and so is every axis and every interval drawn for
them: a mean ± std that would leave [0, 1] is clipped to it (a client's accuracy
cannot exceed 100 %). Titles are wrapped until they fit inside the figure.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: The bars of the participants/non-participants plot: label, summary key.
GROUPS = (
    ("participants", "participant_acc"),
    ("non-participants", "nonparticipant_acc"),
    ("global model", "global_acc"),
)


def clipped_interval(mean: float, std: float) -> tuple[float, float]:
    """The (below, above) lengths of a ``mean ± std`` bar clipped to [0, 1], so an
    error bar never claims an accuracy under 0 or over 100 %."""
    lo, hi = max(0.0, mean - std), min(1.0, mean + std)
    return max(0.0, mean - lo), max(0.0, hi - mean)


def fit_title(ax: Axes, text: str) -> None:
    """Set ``ax``'s title, wrapped onto as many lines as it takes for it to be no
    wider than the axes (a title is centred on its axes, so it then lies inside the
    figure; a long one is otherwise cut off at the edge). Call it after a first
    ``tight_layout`` and lay the figure out again after it (the height changed)."""
    fig = ax.get_figure()
    assert isinstance(fig, Figure)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    limit = ax.get_window_extent(renderer).width
    width = len(text)
    while True:
        ax.set_title(textwrap.fill(text, width) if width < len(text) else text)
        if width <= 12 or ax.title.get_window_extent(renderer).width <= limit:
            return
        width = max(12, int(width * 0.85))


def accuracy_figure(rows: list[dict[str, Any]], summary: dict[str, Any]) -> Figure:
    """Participants' accuracy per round (mean ± std over clients, clipped to [0, 1])
    beside the local training loss."""
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
                [max(0.0, m - s) for m, s in zip(mean, std, strict=True)],
                [min(1.0, m + s) for m, s in zip(mean, std, strict=True)],
                alpha=0.15,
            )
    best = summary.get("best_round")
    if best:
        ax_acc.axvline(best, color="grey", ls="--", lw=1, label=f"best round {best}")
    ax_acc.set(xlabel="round", ylabel="accuracy", ylim=(0, 1))
    ax_acc.legend(loc="lower right")
    train = [r for r in rows if "train-loss" in r]
    ax_loss.plot([r["round"] for r in train], [r["train-loss"] for r in train])
    ax_loss.set(xlabel="round", ylabel="local training loss", title="training loss")
    fig.tight_layout()
    fit_title(ax_acc, f"{summary.get('method')}: accuracy per round")
    fig.tight_layout()
    return fig


def groups_figure(summary: dict[str, Any]) -> Figure:
    """Test accuracy at the best round of participants, non-participants and the
    global model: a bar per group with its ± 1 std over clients clipped to [0, 1],
    the mean and std written under the bar (not above it, where 100 % leaves no
    room)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    labels, means, below, above = [], [], [], []
    for name, key in GROUPS:
        if summary.get(key) is None:
            continue
        mean = float(summary[key])
        std = float(summary.get(f"{key}_std") or 0.0)
        lo, hi = clipped_interval(mean, std)
        labels.append(f"{name}\n{mean:.3f} ± {std:.3f}")
        means.append(mean)
        below.append(lo)
        above.append(hi)
    ax.bar(
        range(len(means)),
        means,
        yerr=[below, above],
        capsize=6,
        color=["C0", "C1", "C2"][: len(means)],
    )
    ax.set_xticks(range(len(means)), labels)
    ax.set(ylim=(0, 1), ylabel="test accuracy at the best round (± 1 std)")
    fig.tight_layout()
    fit_title(ax, f"{summary.get('method')} on {summary.get('dataset')}")
    fig.tight_layout()
    return fig


def plot_run(
    out_dir: Path, rows: list[dict[str, Any]], summary: dict[str, Any]
) -> list[Path]:
    """Write ``accuracy.png`` and ``participants_vs_nonparticipants.png`` to
    ``out_dir``; returns their paths."""
    paths = []
    for name, fig in (
        ("accuracy.png", accuracy_figure(rows, summary)),
        ("participants_vs_nonparticipants.png", groups_figure(summary)),
    ):
        paths.append(out_dir / name)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
