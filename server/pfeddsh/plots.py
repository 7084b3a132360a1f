"""pFedDSH's pictures: the synthetic images of a replay, accuracy per batch, and
neurons used per batch (capacity)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from server.plots import fit_title  # noqa: E402


def image_grid(
    path: Path, images: torch.Tensor, labels: torch.Tensor, title: str, limit: int = 64
) -> Path:
    """Up to ``limit`` synthetic images tiled 8 to a row (each scaled to its own
    range), their labels row by row in the caption, as one PNG."""
    n = min(limit, len(images))
    cols = min(8, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    h, w = images.shape[-2:]
    canvas = torch.ones(rows * (h + 2), cols * (w + 2))
    for i in range(n):
        img = images[i, 0]
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
        top, left = (i // cols) * (h + 2) + 1, (i % cols) * (w + 2) + 1
        canvas[top : top + h, left : left + w] = img
    shown = [int(y) for y in labels[:n]]
    caption = "\n".join(
        " ".join(map(str, shown[r * cols : (r + 1) * cols])) for r in range(rows)
    )
    fig, ax = plt.subplots(figsize=(0.5 * cols + 1.5, 0.5 * rows + 1.2))
    ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    fig.text(
        0.5,
        0.0,
        f"labels by row:\n{caption}",
        fontsize=6,
        ha="center",
        va="top",
        family="monospace",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def batch_accuracy_plot(
    path: Path, rows: list[dict[str, Any]], batches: int, joins: list[int], title: str
) -> Path:
    """Test accuracy of each batch's clients over rounds, batch joins marked: the
    forgetting (a curve that drops after a join) and transfer picture."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for b in range(batches):
        key = f"batch-{b}-test-acc"
        points = [(r["round"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", ms=3, label=f"batch {b}")
    for i, rnd in enumerate(joins):
        ax.axvline(
            rnd + 0.5,
            color="grey",
            ls="--",
            lw=1,
            label="batch joins" if i == 0 else None,
        )
    ax.set(
        xlabel="round",
        ylabel="test accuracy (mean over the batch's clients)",
        ylim=(0, 1),
    )
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fit_title(ax, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def capacity_plot(path: Path, capacity: list[dict[str, Any]], title: str) -> Path:
    """Neurons used vs batch index: per batch, the share of the trunk's units it
    reuses from earlier batches and claims new (stacked bars), and the share no
    batch uses yet after it (a line): where capacity runs out."""
    rows = [c for c in capacity if "used" in c]
    batches = [c["batch"] for c in rows]
    reused = [100 * c["reused"] for c in rows]
    new = [100 * c["new"] for c in rows]
    free = [100 * c["free"] for c in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(batches, reused, color="tab:blue", label="reused (an earlier batch uses)")
    ax.bar(batches, new, bottom=reused, color="tab:orange", label="new (claimed)")
    ax.plot(batches, free, color="black", marker="o", ms=3, label="free after it")
    ax.set(
        xlabel="batch index",
        ylabel="share of the hypernetwork trunk's neurons (%)",
        ylim=(0, 100),
    )
    ax.set_xticks(batches)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fit_title(ax, title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
