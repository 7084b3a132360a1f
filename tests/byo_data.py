"""Small bring-your-own datasets for tests: IDX folders and .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.sample_sets import write_idx

__all__ = ["write_idx"]


def digit_like(
    n: int, classes: int, seed: int, size: int = 28
) -> tuple[np.ndarray, np.ndarray]:
    """Learnable uint8 images: a bright class-specific patch plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, size, size)).astype(np.int64)
    for c in range(classes):
        row, col = divmod(c, 4)
        x[y == c, 2 + 6 * row : 7 + 6 * row, 2 + 6 * col : 7 + 6 * col] += 180
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.uint8)


def idx_folder(
    folder: Path,
    n: int = 600,
    classes: int = 10,
    seed: int = 0,
    prefix: str = "",
    size: int = 28,
) -> Path:
    """An MNIST-format folder: train and t10k image/label files."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = digit_like(n, classes, seed, size)
    cut = n * 5 // 6
    for split, rows in (("train", slice(0, cut)), ("t10k", slice(cut, n))):
        write_idx(folder / f"{prefix}{split}-images-idx3-ubyte.gz", x[rows])
        write_idx(folder / f"{prefix}{split}-labels-idx1-ubyte.gz", y[rows])
    return folder


def npz_file(
    path: Path, n: int = 800, classes: int = 6, seed: int = 1, colour: bool = False
) -> Path:
    """An .npz dataset: uint8 images ``x`` (n, 28, 28) and labels ``y``; ``colour``:
    (n, 32, 32, 3), channels last as images usually come, each channel its own
    brightness."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x, y = digit_like(n, classes, seed, size=32 if colour else 28)
    if colour:
        x = np.stack([(x * f).astype(np.uint8) for f in (1.0, 0.8, 0.6)], axis=-1)
    np.savez(path, x=x, y=y.astype(np.int64))
    return path
