"""Small files in the papers' official dataset formats, with random pixels.

CIFAR-10/100's python pickle batches, torchvision's MNIST / EMNIST raw IDX folders and
ImageFolder trees, written where torchvision's dataset classes look for them. The
tests load them through the user's code path (``tests/test_image_datasets.py``) and
``python -m bench.paper_presets`` times each paper preset on a sample of its data's
shape; both import these writers from here.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(header + array.tobytes())
    return path


def cifar_folder(
    root: Path,
    hundred: bool = False,
    per_batch: int = 40,
    seed: int = 0,
    learnable: bool = False,
) -> tuple[Path, np.ndarray, np.ndarray]:
    """CIFAR-10's (or CIFAR-100's) python pickle files with random pixels; returns
    the folder and all images (N, 3, 32, 32) and labels in the pooled order.

    ``learnable``: each image is its class's random prototype plus noise, so that a
    model can beat chance in a few rounds (end-to-end tests that assert learning).
    """
    rng = np.random.default_rng(seed)
    classes = 100 if hundred else 10
    shapes = np.random.default_rng(seed + 1)  # prototypes and noise, apart
    prototypes = shapes.integers(0, 256, (classes, 3072)).astype(np.int16)
    key = "fine_labels" if hundred else "labels"
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    names = (
        ["train", "test"]
        if hundred
        else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    )
    images, labels = [], []
    for name in names:
        n = per_batch * (5 if hundred and name == "train" else 1)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, classes, n)]
        if learnable:
            noise = shapes.integers(-70, 71, (n, 3072), dtype=np.int16)
            data = np.clip(prototypes[y] + noise, 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, key: y}, fh)
        images.append(data.reshape(n, 3, 32, 32))
        labels += y
    meta_name, meta_key = (
        ("meta", "fine_label_names") if hundred else ("batches.meta", "label_names")
    )
    with open(folder / meta_name, "wb") as fh:
        pickle.dump({meta_key: [f"class{i}" for i in range(classes)]}, fh)
    return root, np.concatenate(images), np.asarray(labels)


def mnist_folder(
    root: Path, split: str | None = None, n: int = 60, seed: int = 1
) -> tuple[Path, np.ndarray, np.ndarray]:
    """torchvision's MNIST (``split`` None) or EMNIST ``split`` raw folder; returns
    the images (as stored in the files) and labels in the pooled order."""
    rng = np.random.default_rng(seed)
    if split is None:
        raw, parts, low, high = root / "MNIST" / "raw", ("train", "t10k"), 0, 10
    else:
        raw, parts = root / "EMNIST" / "raw", ("train", "test")
        low, high = (1, 27) if split == "letters" else (0, 47)
    raw.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for part in parts:
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(low, high, n).astype(np.uint8)
        prefix = "" if split is None else f"emnist-{split}-"
        write_idx(raw / f"{prefix}{part}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}{part}-labels-idx1-ubyte", y)
        xs.append(x)
        ys.append(y)
    return root, np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def image_tree(
    root: Path, classes: int = 3, per_class: int = 4, size: int = 8, suffix=".png"
) -> Path:
    """An ImageFolder tree ``<class>/<image>`` of tiny RGB images."""
    rng = np.random.default_rng(2)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}{suffix}")
    return root
