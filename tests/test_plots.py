"""A run's plots on made-up data: accuracy axes and intervals stay in [0, 1], and every
title lies inside its figure (the PNGs are written too, for a look)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from server.hfz_embedding_map import embedding_map_figure  # noqa: E402
from server.plots import (  # noqa: E402
    accuracy_figure,
    clipped_interval,
    groups_figure,
    plot_run,
)

#: Clients near 100 % with a wide spread: mean + std is far above 1.
SUMMARY = {
    "method": "pfedhn",
    "dataset": "fmnist",
    "best_round": 3,
    "participant_acc": 0.97,
    "participant_acc_std": 0.09,
    "nonparticipant_acc": 0.04,
    "nonparticipant_acc_std": 0.2,
    "global_acc": 0.8,
    "global_acc_std": 0.1,
}
ROWS = [
    {
        "round": r,
        "train-loss": 1.0 / r,
        "participant-val-acc": 0.9 + 0.02 * r,
        "participant-val-acc-std": 0.2,
        "participant-test-acc": 0.9 + 0.02 * r,
        "participant-test-acc-std": 0.2,
    }
    for r in range(1, 5)
]


def titles_inside(fig: Figure) -> None:
    """Every non-empty axes title lies within the figure's pixel box."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = fig.bbox
    for ax in fig.axes:
        if not ax.get_title():
            continue
        ext = ax.title.get_window_extent(renderer)
        assert box.x0 <= ext.x0 and ext.x1 <= box.x1, (ax.get_title(), ext, box)
        assert box.y0 <= ext.y0 and ext.y1 <= box.y1, (ax.get_title(), ext, box)


def error_bar_ends(fig: Figure) -> list[float]:
    """The y values of every error-bar segment drawn in the figure."""
    ys: list[float] = []
    for ax in fig.axes:
        for coll in ax.collections:
            if isinstance(coll, LineCollection):
                for seg in coll.get_segments():
                    ys.extend(float(y) for y in seg[:, 1])
    return ys


def test_interval_is_clipped_to_the_unit_range():
    assert clipped_interval(0.97, 0.09) == pytest.approx((0.09, 0.03))
    assert clipped_interval(0.04, 0.2) == pytest.approx((0.04, 0.2))
    assert clipped_interval(0.5, 0.1) == pytest.approx((0.1, 0.1))


def test_group_bars_stay_within_0_and_1_and_title_fits(tmp_path: Path):
    fig = groups_figure(SUMMARY)
    (ax,) = fig.axes
    lo, hi = ax.get_ylim()
    assert 0.0 <= lo and hi <= 1.0
    ends = error_bar_ends(fig)
    assert ends and min(ends) >= 0.0 and max(ends) <= 1.0
    titles_inside(fig)
    plt.close(fig)


def test_accuracy_band_and_axis_stay_within_0_and_1():
    fig = accuracy_figure(ROWS, SUMMARY)
    lo, hi = fig.axes[0].get_ylim()
    assert 0.0 <= lo and hi <= 1.0
    for coll in fig.axes[0].collections:  # the ± std bands
        for path in coll.get_paths():
            assert path.vertices[:, 1].max() <= 1.0 + 1e-9
            assert path.vertices[:, 1].min() >= -1e-9
    titles_inside(fig)
    plt.close(fig)


def test_embedding_map_title_fits_the_figure(tmp_path: Path):
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(15, 2))
    fig = embedding_map_figure(
        xy, [i % 10 for i in range(15)], [i >= 10 for i in range(15)]
    )
    titles_inside(fig)
    fig.savefig(tmp_path / "embedding_map.png", dpi=110)
    plt.close(fig)


def test_plot_run_writes_both_pngs(tmp_path: Path):
    paths = plot_run(tmp_path, ROWS, SUMMARY)
    assert [p.name for p in paths] == [
        "accuracy.png",
        "participants_vs_nonparticipants.png",
    ]
    assert all(p.stat().st_size > 0 for p in paths)
