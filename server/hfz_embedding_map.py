"""HyperFedZero's embedding map: a 2-D projection of every client's embedding.

An analysis plot, drawn where the clients' data can be read (a simulation's server,
a benchmark): the global model computes each client's e from its own data exactly
as the client does, participants are drawn as circles and held-out clients as
crosses, each coloured by its dominant class (the label colouring needs the labels,
which is why the server's training loop never draws it from the store alone). The
projection is PCA of the embeddings (the first two principal directions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

from common.config import RunConfig
from common.models.hyperfedzero import net_from
from common.partition import load_client_data
from server.plots import fit_title

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def project_2d(embeddings: torch.Tensor) -> torch.Tensor:
    """PCA of (N, P) embeddings to (N, 2) (zeros for a missing component)."""
    centred = embeddings - embeddings.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    out = centred @ v[:2].T
    return torch.nn.functional.pad(out, (0, 2 - out.shape[1]))


def client_embeddings(
    cfg: RunConfig, state: dict[str, torch.Tensor], partitions: dict[str, int]
) -> tuple[torch.Tensor, list[int]]:
    """Each client's e (the global model on its own data) and dominant class."""
    net = net_from(cfg, state)
    rows, dominant = [], []
    for pid in partitions.values():
        data = load_client_data(cfg, pid)
        rows.append(net.client_embedding(data.x_train))
        dominant.append(int(torch.bincount(data.y_train).argmax()))
    return torch.stack(rows), dominant


def plot_embedding_map(
    out_dir: Path,
    cfg: RunConfig,
    state: dict[str, torch.Tensor],
    registry: Any,
    limit: int = 0,
) -> Path:
    """Draw ``embedding_map.png`` in ``out_dir``; returns its path.

    Every registered client is drawn, or with ``limit`` > 0 at most that many of
    each role (a seeded sample: the map computes each drawn client's e from its
    data, which at 100,000 clients would cost as much as a training run)."""
    clients = {
        **{
            c: registry.clients[c].partition_id
            for c in _at_most(registry.participants, limit, cfg.seed)
        },
        **{
            c: registry.clients[c].partition_id
            for c in _at_most(registry.nonparticipants, limit, cfg.seed)
        },
    }
    emb, dominant = client_embeddings(cfg, state, clients)
    held = set(registry.nonparticipants)
    fig = embedding_map_figure(
        project_2d(emb).numpy(), dominant, [cid in held for cid in clients]
    )
    path = out_dir / "embedding_map.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _at_most(ids: list[str], limit: int, seed: int) -> list[str]:
    """``ids``, or a seeded sample of ``limit`` of them (in their order)."""
    if limit <= 0 or len(ids) <= limit:
        return ids
    rng = np.random.default_rng([seed, 4])
    return [ids[i] for i in sorted(rng.choice(len(ids), limit, replace=False))]


def embedding_map_figure(
    xy: np.ndarray, dominant: list[int], held_out: list[bool]
) -> Figure:
    """The map itself: a point per client at ``xy`` (N, 2), coloured by its dominant
    class, a cross where ``held_out``; the title wrapped to fit the figure."""
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab10")
    for i, held in enumerate(held_out):
        ax.scatter(
            xy[i, 0],
            xy[i, 1],
            color=cmap(dominant[i] % 10),
            marker="x" if held else "o",
            s=50 if held else 30,
        )
    for cls in sorted(set(dominant)):
        ax.scatter([], [], color=cmap(cls % 10), marker="s", label=f"class {cls}")
    ax.scatter([], [], color="grey", marker="o", label="participant")
    ax.scatter([], [], color="grey", marker="x", label="held out")
    ax.legend(fontsize=7, loc="best", ncol=2)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    fig.tight_layout()
    fit_title(ax, "HyperFedZero client embeddings (PCA), colour = dominant class")
    fig.tight_layout()
    return fig
