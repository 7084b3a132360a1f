"""Datasets in memory: Fashion-MNIST, scikit-learn digits and a synthetic set.

Every dataset is returned pooled (train and test files together, 28 x 28 images,
float32 and normalised when rows are read) because each client gets train/val/test
splits drawn from its own distribution (see :mod:`common.partition`). Images are
tensors from the start: no per-image PIL transform runs in the training loop.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is in none of the places searched; the message says how to get it."""


@dataclass(frozen=True)
class Pooled:
    """A whole dataset: raw images (N, 28, 28), labels (N,) and how to normalise them.

    Images stay raw (uint8 for Fashion-MNIST, memory-mapped from a cache) until a
    client asks for its rows, so a process that serves one client never converts
    the whole set.
    """

    images: np.ndarray
    labels: np.ndarray
    scale: float = 1.0
    mean: float = 0.0
    std: float = 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images (n, 1, 28, 28) and int64 labels for given rows."""
        idx = np.asarray(idx, dtype=np.int64)
        perm = np.argsort(idx, kind="stable")  # read a memory map in order
        inverse = torch.from_numpy(np.argsort(perm))
        raw = np.asarray(self.images[idx[perm]], dtype=np.float32)
        x = (torch.from_numpy(raw) / self.scale - self.mean) / self.std
        y = torch.from_numpy(np.asarray(self.labels[idx[perm]], dtype=np.int64))
        return x.unsqueeze(1)[inverse].contiguous(), y[inverse]


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx_dir(candidates: list[Path]) -> Path | None:
    """Return the first folder that holds all four Fashion-MNIST IDX files."""
    for folder in candidates:
        if all((folder / n).exists() or (folder / f"{n}.gz").exists()
               for n in FMNIST_FILES.values()):
            return folder
    return None


def _idx_path(folder: Path, name: str) -> Path:
    plain = folder / name
    return plain if plain.exists() else folder / f"{name}.gz"


def default_data_dir() -> Path:
    """Where downloads go when ``data-dir`` is empty (``$HYPERFLOWER_DATA`` wins)."""
    env = os.environ.get("HYPERFLOWER_DATA")
    return Path(env) if env else Path.home() / ".cache" / "hyperflower" / "data"


def _download_fmnist(root: Path) -> Path:
    """Download Fashion-MNIST through torchvision (for users who are online)."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)
    FashionMNIST(str(root), train=False, download=True)
    return root / "FashionMNIST" / "raw"


def load_fashion_mnist(data_dir: str = "", download: bool = True) -> Pooled:
    """Load Fashion-MNIST from ``data_dir``, Debian's package or a torchvision download.

    The order is: the folder given (raw IDX files in it or in torchvision's
    ``FashionMNIST/raw`` layout), then ``/usr/share/datasets/fashion-mnist`` (Debian's
    ``dataset-fashion-mnist``), then a torchvision download into the data folder.
    """
    root = Path(data_dir) if data_dir else default_data_dir()
    if data_dir and not root.is_dir():
        raise DatasetNotFoundError(
            f"data-dir '{data_dir}' is not a readable folder; create it or leave "
            "data-dir empty to use the system copy of Fashion-MNIST"
        )
    candidates = [root, root / "FashionMNIST" / "raw", DEBIAN_FMNIST_DIR]
    folder = _find_idx_dir(candidates)
    if folder is None and download:
        try:
            folder = _download_fmnist(root)
        except Exception as exc:  # noqa: BLE001 - any network failure means the same
            raise DatasetNotFoundError(
                "Fashion-MNIST not found in "
                + ", ".join(str(c) for c in candidates)
                + f" and the download failed ({exc}). Install it with "
                "'apt-get install dataset-fashion-mnist', or put the four IDX files "
                "(train-images-idx3-ubyte.gz, ...) in the folder named by data-dir."
            ) from exc
    if folder is None:
        raise DatasetNotFoundError(
            "Fashion-MNIST not found; run 'apt-get install dataset-fashion-mnist' or "
            "set data-dir to a folder holding its IDX files"
        )
    return _cached_npy(folder)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def _cached_npy(folder: Path) -> Pooled:
    """Decompress the IDX files once into .npy files and memory-map them after."""
    cache = default_data_dir() / "cache"
    img_path, lbl_path = cache / "fmnist-images.npy", cache / "fmnist-labels.npy"
    if not (img_path.exists() and lbl_path.exists()):
        images = np.concatenate([
            _read_idx(_idx_path(folder, FMNIST_FILES["train-images"])),
            _read_idx(_idx_path(folder, FMNIST_FILES["test-images"])),
        ])
        labels = np.concatenate([
            _read_idx(_idx_path(folder, FMNIST_FILES["train-labels"])),
            _read_idx(_idx_path(folder, FMNIST_FILES["test-labels"])),
        ]).astype(np.int64)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            _atomic_save(img_path, images)
            _atomic_save(lbl_path, labels)
        except OSError:  # read-only home: work from memory
            return Pooled(images, labels, 255.0, FMNIST_MEAN, FMNIST_STD)
    return Pooled(np.load(img_path, mmap_mode="r"), np.load(lbl_path),
                  255.0, FMNIST_MEAN, FMNIST_STD)


def load_digits_28() -> Pooled:
    """scikit-learn's bundled 8x8 digits, upsampled to 28x28 so every model fits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=IMAGE_SHAPE[1:], mode="bilinear",
                                        align_corners=False).squeeze(1)
    return Pooled(x.numpy(), bunch.target.astype(np.int64), 1.0,
                  float(x.mean()), float(x.std()))


def make_synthetic(num_samples: int = 6000, seed: int = 0) -> Pooled:
    """A learnable 10-class image set (class prototypes plus noise) for fast tests."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(NUM_CLASSES, *IMAGE_SHAPE, generator=gen)
    y = torch.arange(num_samples) % NUM_CLASSES
    y = y[torch.randperm(num_samples, generator=gen)]
    x = prototypes[y] + 1.5 * torch.randn(num_samples, *IMAGE_SHAPE, generator=gen)
    return Pooled(x.squeeze(1).numpy(), y.numpy().astype(np.int64))


@lru_cache(maxsize=4)
def load_pooled(dataset: str, data_dir: str = "") -> Pooled:
    """Load a dataset by its run-config name, cached once per process."""
    if dataset == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    if dataset == "digits":
        return load_digits_28()
    if dataset == "synthetic":
        return make_synthetic()
    raise ValueError(f"unknown dataset {dataset!r}")
