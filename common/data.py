"""Datasets in memory: Fashion-MNIST, any MNIST-format IDX folder, an ``.npz`` file,
scikit-learn digits, a synthetic set, and the papers' own sets from their official
files through torchvision's dataset classes (MNIST, EMNIST letters / balanced,
CIFAR-10, CIFAR-100, Tiny ImageNet, any ImageFolder tree).

Every dataset is returned pooled (train and test files together, float32 and
normalised when rows are read) because each client gets train/val/test splits drawn
from its own distribution (see :mod:`common.partition`). Single-channel images are
stored (N, H, W), colour images (N, C, H, W); :attr:`Pooled.image_shape` is the
(channels, H, W) the models are built for. Images are tensors from the start: no
per-image PIL transform runs in the training loop.

Files read from disk (every set but ``digits`` and ``synthetic``) are decoded once into
a cache of ``.npy`` files that is *keyed by its source*: the absolute paths, sizes and
modification times of the files it came from. Another folder, a changed file or a cache
left half-written by a killed process is never answered from an old cache. Each loaded
dataset carries a fingerprint of its content (images, labels, scaling and normalisation)
that clients report at registration (see ``client/checks.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import DATASETS as CONFIG_DATASETS

DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
#: The (channels, H, W) of Fashion-MNIST, digits and synthetic (the default shape).
IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
#: Datasets whose class count is fixed; the others take theirs from the labels.
FIXED_CLASSES = {
    "fashion-mnist": 10,
    "digits": 10,
    "synthetic": 10,
    "mnist": 10,
    "emnist-letters": 26,
    "emnist-balanced": 47,
    "cifar10": 10,
    "cifar100": 100,
}
#: Datasets whose image shape (channels, H, W) is fixed by their format.
FIXED_SHAPES: dict[str, tuple[int, int, int]] = {
    "fashion-mnist": IMAGE_SHAPE,
    "digits": IMAGE_SHAPE,
    "synthetic": IMAGE_SHAPE,
    "mnist": IMAGE_SHAPE,
    "emnist-letters": IMAGE_SHAPE,
    "emnist-balanced": IMAGE_SHAPE,
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
}
#: Datasets read through torchvision's dataset classes from their official files.
TORCHVISION_SETS = (
    "mnist",
    "emnist-letters",
    "emnist-balanced",
    "cifar10",
    "cifar100",
    "tiny-imagenet",
    "folder",
)
#: Every dataset name (the run config's list: one source for both).
DATASETS = CONFIG_DATASETS
#: Datasets read from files (``data-dir`` is resolved to an absolute path for them).
FILE_SETS = ("fashion-mnist", "idx", "npz", *TORCHVISION_SETS)
_CACHE_FORMAT = 2
#: Normalisation constants: one for single-channel images, one per channel otherwise.
Norm = float | tuple[float, ...]


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is in none of the places searched; the message says how to get it."""

    key = "data-dir"


class DataError(ValueError):
    """Files were found but hold no usable dataset (shape, labels, several sets)."""

    key = "data-dir"


class DataFormatError(DataError):
    """``data-dir`` holds another dataset format than the ``dataset`` asked for (e.g.
    IDX files where CIFAR-10's batches were expected); the message names what it
    holds and which ``dataset`` value reads it."""


@dataclass(frozen=True, eq=False)
class Pooled:
    """A whole dataset: raw images (N, H, W), or (N, C, H, W) for colour, labels (N,)
    and how to normalise them (``mean``/``std``: one float, or one per channel).

    Images stay raw (uint8 for IDX files, memory-mapped from a cache) until a client
    asks for its rows, so a process that serves one client never converts the whole
    set. ``fingerprint`` identifies the content; ``source`` says which files and which
    cache it came from (recorded in a run's ``config.json``).
    """

    images: np.ndarray
    labels: np.ndarray
    scale: float = 1.0
    mean: Norm = 0.0
    std: Norm = 1.0
    num_classes: int = NUM_CLASSES
    fingerprint: str = ""
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, H, W) of one image as the models see it."""
        shape = tuple(int(d) for d in self.images.shape[1:])
        return (1, shape[0], shape[1]) if len(shape) == 2 else shape  # type: ignore[return-value]

    def normalise(self, raw: np.ndarray) -> torch.Tensor:
        """Raw images (n, H, W) or (n, C, H, W), as stored, to the float tensor the
        models see (per-channel constants for colour images)."""
        x = torch.from_numpy(np.asarray(raw, dtype=np.float32))
        if isinstance(self.mean, tuple) or isinstance(self.std, tuple):
            mean = torch.tensor(_per_channel(self.mean), dtype=torch.float32)
            std = torch.tensor(_per_channel(self.std), dtype=torch.float32)
            return (x / self.scale - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
        return (x / self.scale - self.mean) / self.std

    def rows(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images (n, C, H, W) and int64 labels for given rows."""
        idx = np.asarray(idx, dtype=np.int64)
        perm = np.argsort(idx, kind="stable")  # read a memory map in order
        inverse = torch.from_numpy(np.argsort(perm))
        x = self.normalise(self.images[idx[perm]])
        y = torch.from_numpy(np.asarray(self.labels[idx[perm]], dtype=np.int64))
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return x[inverse].contiguous(), y[inverse]

    def norm_values(self) -> list[float]:
        """``[scale, *mean, *std]``: the preprocessing as one flat list (what a
        client reports at registration; one mean and std per channel for colour)."""
        return [
            float(self.scale),
            *(float(v) for v in _per_channel(self.mean)),
            *(float(v) for v in _per_channel(self.std)),
        ]

    def describe(self) -> dict[str, Any]:
        """What a run records about its data: identity, preprocessing, files, cache."""
        return {
            "fingerprint": self.fingerprint,
            "num-classes": self.num_classes,
            "num-samples": len(self),
            "image-shape": list(self.image_shape),
            "raw-dtype": str(self.images.dtype),
            "scale": self.scale,
            "mean": self.mean,
            "std": self.std,
            **self.source,
        }


def _per_channel(value: Norm) -> tuple[float, ...]:
    return value if isinstance(value, tuple) else (value,)


def content_fingerprint(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    scale: float,
    mean: Norm,
    std: Norm,
) -> str:
    """``<name>:<16 hex digits>`` over the images, labels and their preprocessing."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(
        json.dumps([str(images.dtype), list(images.shape), scale, mean, std]).encode()
    )
    step = 4096  # rows at a time: a memory map is never read whole into memory
    for start in range(0, len(images), step):
        digest.update(np.ascontiguousarray(images[start : start + step]).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return f"{name}:{digest.hexdigest()}"


def _stats(images: np.ndarray, scale: float) -> tuple[Norm, Norm]:
    """Mean and std of all pixels after dividing by ``scale`` (float64, in chunks);
    for colour images (n, C, H, W) one mean and std per channel."""
    if images.ndim == 4:
        return _channel_stats(images, scale)
    total = total_sq = 0.0
    count = 0
    for start in range(0, len(images), 4096):
        chunk = np.asarray(images[start : start + 4096], dtype=np.float64) / scale
        total += float(chunk.sum())
        total_sq += float(np.square(chunk).sum())
        count += chunk.size
    mean = total / count
    std = max(total_sq / count - mean * mean, 0.0) ** 0.5
    return round(mean, 6), round(std if std > 0 else 1.0, 6)


def _channel_stats(
    images: np.ndarray, scale: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of images (n, C, H, W) after dividing by ``scale``."""
    channels = images.shape[1]
    total, total_sq = np.zeros(channels), np.zeros(channels)
    count = 0
    for start in range(0, len(images), 4096):
        chunk = np.asarray(images[start : start + 4096], dtype=np.float64) / scale
        total += chunk.sum(axis=(0, 2, 3))
        total_sq += np.square(chunk).sum(axis=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return (
        tuple(round(float(m), 6) for m in mean),
        tuple(round(float(s), 6) if s > 0 else 1.0 for s in std),
    )


def channels_first(x: np.ndarray, where: str) -> np.ndarray:
    """Images (n, H, W), (n, H, W, C) or (n, C, H, W) as stored here: (n, H, W) for
    one channel, (n, C, H, W) otherwise. The channel axis is the short one (at most
    4: grey, RGB, RGBA); an array where both ends could be channels is refused."""
    if x.ndim == 4:
        first, last = x.shape[1] <= 4, x.shape[3] <= 4
        if first == last:
            raise DataError(
                f"{where}: cannot tell the channel axis of images shaped "
                f"{tuple(x.shape)}; give (n, H, W), (n, H, W, C) or (n, C, H, W) "
                "with C at most 4"
            )
        if last:
            x = np.moveaxis(x, 3, 1)
        if x.shape[1] == 1:
            x = x[:, 0]
        return np.ascontiguousarray(x)
    return x


def _checked(images: np.ndarray, labels: np.ndarray, where: str) -> np.ndarray:
    """Validate images (n, H, W) or (n, C, H, W) and integer labels >= 0; return the
    labels as int64."""
    if images.ndim not in (3, 4) or min(images.shape[1:], default=0) < 1:
        got = "x".join(str(d) for d in images.shape[1:]) or "scalars"
        raise DataError(
            f"{where}: expected images (n, H, W), (n, H, W, C) or (n, C, H, W), "
            f"got {got} per sample"
        )
    if len(images) != len(labels) or labels.ndim != 1:
        raise DataError(
            f"{where}: {len(images)} images but labels of shape {tuple(labels.shape)}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got {labels.dtype}")
    if len(labels) == 0 or int(labels.min()) < 0:
        raise DataError(
            f"{where}: labels must be class indices 0, 1, ... (no "
            "samples, or a negative label)"
        )
    return labels.astype(np.int64)


# ---- IDX files -----------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims)) + 4 + 4 * ndim
    if len(data) != expected:
        raise DataError(
            f"{path} is truncated or corrupt ({len(data)} bytes, the "
            f"header promises {expected})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_path(folder: Path, name: str) -> Path:
    plain = folder / name
    return plain if plain.exists() else folder / f"{name}.gz"


def _find_idx_dir(candidates: list[Path]) -> Path | None:
    """Return the first folder that holds all four Fashion-MNIST IDX files."""
    for folder in candidates:
        if all(_idx_path(folder, n).exists() for n in FMNIST_FILES.values()):
            return folder
    return None


def idx_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """The (images, labels) IDX file pairs of one MNIST-format set in ``folder``.

    Any file named ``*images-idx3-ubyte[.gz]`` with its ``*labels-idx1-ubyte[.gz]``
    twin counts (MNIST, Fashion-MNIST, KMNIST, EMNIST ``emnist-<split>-...``). All
    pairs of the one set are pooled; a folder holding several sets (e.g. two EMNIST
    splits) is refused, since which one to use is a choice only the user can make.
    """
    pairs: list[tuple[Path, Path]] = []
    names = sorted(
        {
            p.name.removesuffix(".gz")
            for p in folder.glob("*images-idx3-ubyte*")
            if p.name.endswith(("ubyte", "ubyte.gz"))
        }
    )
    for name in names:  # a plain file wins over its .gz twin
        images = _idx_path(folder, name)
        labels = _idx_path(folder, name.replace("images-idx3", "labels-idx1"))
        if not labels.exists():
            raise DataError(
                f"data-dir '{folder}': {images.name} has no labels file {labels.name}"
            )
        pairs.append((images, labels))
    sets = sorted(
        {
            p[0].name.split("train-")[0].split("t10k-")[0].split("test-")[0]
            for p in pairs
        }
    )
    if len(sets) > 1:
        raise DataError(
            f"data-dir '{folder}' holds several IDX sets "
            f"({', '.join(s.rstrip('-') or '<plain>' for s in sets)}); "
            "give a folder holding one"
        )
    return pairs


# ---- the source-keyed cache ----------------------------------------------------
def default_data_dir() -> Path:
    """Where caches and downloads go (``$HYPERFLOWER_DATA``, else ~/.cache/...).

    Only caches live here: which dataset is read is decided by ``dataset`` and
    ``data-dir`` alone, and every cache is keyed by its source files.
    """
    env = os.environ.get("HYPERFLOWER_DATA")
    return Path(env) if env else Path.home() / ".cache" / "hyperflower" / "data"


def source_key(name: str, files: list[Path]) -> str:
    """Hash of the files' absolute paths, sizes and modification times."""
    stats = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return hashlib.sha256(
        json.dumps([_CACHE_FORMAT, name, stats]).encode()
    ).hexdigest()[:20]


def _file_list(files: list[Path]) -> list[dict[str, Any]]:
    return [
        {
            "path": str(f.resolve()),
            "bytes": f.stat().st_size,
            "mtime-ns": f.stat().st_mtime_ns,
        }
        for f in files
    ]


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def _read_cache(folder: Path, key: str) -> Pooled | None:
    """The cached dataset if ``folder`` holds a complete cache of exactly ``key``."""
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("source-key") != key or meta.get("format") != _CACHE_FORMAT:
            return None
        images = np.load(folder / "images.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy")
    except (OSError, ValueError):  # absent, partial or torn: rebuild
        return None
    shape = tuple(meta.get("image-shape", images.shape[1:]))
    if (
        images.ndim not in (3, 4)
        or images.shape != (meta["num-samples"], *shape)
        or labels.shape != (meta["num-samples"],)
    ):
        return None
    return Pooled(
        images,
        labels,
        meta["scale"],
        _norm(meta["mean"]),
        _norm(meta["std"]),
        meta["num-classes"],
        meta["fingerprint"],
        {"files": meta["files"], "cache": str(folder)},
    )


def _norm(value: Any) -> Norm:
    """A normalisation constant as JSON holds it (a number, or a list per channel)."""
    return tuple(float(v) for v in value) if isinstance(value, list) else value


#: What ``build`` returns: images, labels, scale, and optionally how many leading rows
#: are the training files' (normalisation statistics are computed on those only).
Decoded = (
    tuple[np.ndarray, np.ndarray, float] | tuple[np.ndarray, np.ndarray, float, int]
)


def cached_dataset(
    name: str,
    files: list[Path],
    build: Callable[[], Decoded],
    fixed_norm: tuple[float, float] | None = None,
    *,
    num_classes: int | None = None,
    record: list[dict[str, Any]] | None = None,
) -> Pooled:
    """Decode ``files`` once with ``build`` (images, labels, scale[, training rows])
    and memory-map the result after; the cache folder's name and its ``meta.json``
    carry the source key, and ``meta.json`` is written last, so only a complete cache
    is ever used. ``num_classes`` is the format's class count (else from the labels);
    ``record`` replaces the per-file list in the record (a tree of many images)."""
    key = source_key(name, files)
    folder = default_data_dir() / "cache" / f"{name}-{key}"
    cached = _read_cache(folder, key)
    if cached is not None:
        return cached
    images, labels, scale, *train = build()
    stats_rows = images[: train[0]] if train else images
    mean, std = fixed_norm if fixed_norm else _stats(stats_rows, scale)
    if num_classes is not None and int(labels.max()) >= num_classes:
        raise DataError(
            f"{name}: label {int(labels.max())} outside its {num_classes} classes"
        )
    num_classes = num_classes or int(labels.max()) + 1
    fingerprint = content_fingerprint(name, images, labels, scale, mean, std)
    meta = {
        "format": _CACHE_FORMAT,
        "source-key": key,
        "files": record if record is not None else _file_list(files),
        "num-samples": len(labels),
        "image-shape": list(images.shape[1:]),
        "scale": scale,
        "mean": mean,
        "std": std,
        "num-classes": num_classes,
        "fingerprint": fingerprint,
    }
    try:
        if folder.exists():
            shutil.rmtree(folder)  # a partial cache of this very source
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_save(folder / "images.npy", images)
        _atomic_save(folder / "labels.npy", labels)
        tmp = folder / f".meta.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, folder / "meta.json")
    except OSError:  # read-only home: work from memory
        return Pooled(
            images,
            labels,
            scale,
            mean,
            std,
            num_classes,
            fingerprint,
            {"files": meta["files"], "cache": None},
        )
    return _read_cache(folder, key) or Pooled(
        images,
        labels,
        scale,
        mean,
        std,
        num_classes,
        fingerprint,
        {"files": meta["files"], "cache": None},
    )


# ---- the datasets ----------------------------------------------------------------
def _download_fmnist(root: Path) -> Path:
    """Download Fashion-MNIST through torchvision (for users who are online)."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)
    FashionMNIST(str(root), train=False, download=True)
    return root / "FashionMNIST" / "raw"


def _readable_folder(data_dir: str, fix: str) -> Path:
    root = Path(data_dir).expanduser()
    if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
        raise DatasetNotFoundError(
            f"data-dir '{data_dir}' is not a readable folder; {fix}"
        )
    return root


def find_fashion_mnist(data_dir: str = "", download: bool = True) -> Path:
    """The folder Fashion-MNIST is read from: ``data_dir`` (raw IDX files in it or in
    torchvision's ``FashionMNIST/raw`` layout), else the cache folder, then
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``), then a
    torchvision download into the cache folder.

    A ``data_dir`` that is given is the only place looked at: a run never silently
    reads another copy than the one it names.
    """
    if data_dir:
        root = _readable_folder(
            data_dir,
            "create it, or leave data-dir empty to "
            "use the system copy of Fashion-MNIST",
        )
        folder = _find_idx_dir([root, root / "FashionMNIST" / "raw"])
        if folder is None and download:
            try:
                folder = _download_fmnist(root)
            except Exception:  # noqa: BLE001 - offline: say what to put there
                folder = None
        if folder is None:
            raise DatasetNotFoundError(
                f"data-dir '{data_dir}' holds no Fashion-MNIST IDX files "
                "(train-images-idx3-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and their "
                "labels); put them there, or leave data-dir empty after 'apt-get "
                "install dataset-fashion-mnist'; for another MNIST-format set use "
                "dataset='idx'"
            )
        return folder
    root = default_data_dir()
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
    return folder


def load_fashion_mnist(data_dir: str = "", download: bool = True) -> Pooled:
    """Fashion-MNIST (see :func:`find_fashion_mnist` for where it is looked for),
    normalised with its usual constants."""
    folder = find_fashion_mnist(data_dir, download)
    files = [
        _idx_path(folder, FMNIST_FILES[k])
        for k in ("train-images", "test-images", "train-labels", "test-labels")
    ]
    return load_idx_files(
        "fashion-mnist",
        [(files[0], files[2]), (files[1], files[3])],
        (FMNIST_MEAN, FMNIST_STD),
    )


def load_idx_files(
    name: str,
    pairs: list[tuple[Path, Path]],
    fixed_norm: tuple[float, float] | None = None,
) -> Pooled:
    """IDX (images, labels) pairs pooled, through the source-keyed cache."""
    files = [p[0] for p in pairs] + [p[1] for p in pairs]

    def build() -> tuple[np.ndarray, np.ndarray, float]:
        images = np.concatenate([_read_idx(i) for i, _ in pairs])
        labels = np.concatenate([_read_idx(lbl) for _, lbl in pairs])
        return images, _checked(images, labels, f"data-dir '{files[0].parent}'"), 255.0

    return cached_dataset(name, files, build, fixed_norm)


def load_idx(data_dir: str) -> Pooled:
    """Any MNIST-format folder (MNIST, KMNIST, EMNIST, ...): every image/label IDX
    pair in ``data_dir`` pooled; normalisation and class count from the data."""
    if not data_dir:
        raise DatasetNotFoundError(
            "dataset 'idx' needs data-dir: a folder holding "
            "MNIST-format files (*-images-idx3-ubyte[.gz] and "
            "*-labels-idx1-ubyte[.gz])"
        )
    root = _readable_folder(data_dir, "create it and put MNIST-format IDX files in it")
    pairs = idx_pairs(root)
    if not pairs:
        raise DatasetNotFoundError(
            f"data-dir '{data_dir}' holds no IDX image files "
            "(*-images-idx3-ubyte[.gz] with their "
            "*-labels-idx1-ubyte[.gz])"
        )
    return load_idx_files("idx", pairs)


def npz_file(data_dir: str) -> Path:
    """The ``.npz`` file ``data_dir`` names: the file itself, or the one in a folder."""
    if not data_dir:
        raise DatasetNotFoundError(
            "dataset 'npz' needs data-dir: an .npz file with "
            "arrays x (images) and y (labels), or a folder "
            "holding one"
        )
    path = Path(data_dir).expanduser()
    if path.is_file():
        return path
    root = _readable_folder(data_dir, "give an .npz file or a folder holding one")
    found = sorted(root.glob("*.npz"))
    if len(found) != 1:
        raise DatasetNotFoundError(
            f"data-dir '{data_dir}' holds {len(found)} .npz "
            "files; name the file, or keep exactly one there"
        )
    return found[0]


def load_npz(data_dir: str) -> Pooled:
    """Arrays ``x`` (n, H, W), (n, H, W, C) or (n, C, H, W), uint8 0-255 or floats,
    and ``y`` (integer labels); normalisation and class count from the data."""
    path = npz_file(data_dir)

    def build() -> tuple[np.ndarray, np.ndarray, float]:
        try:
            with np.load(path) as arrays:
                if "x" not in arrays or "y" not in arrays:
                    raise DataError(
                        f"data-dir '{path}': needs arrays 'x' and 'y', "
                        f"found {', '.join(arrays.files) or 'none'}"
                    )
                x, y = np.asarray(arrays["x"]), np.asarray(arrays["y"])
        except (OSError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(
                f"data-dir '{path}' is not a readable .npz file ({exc})"
            ) from None
        x = channels_first(x, f"data-dir '{path}'")
        scale = 255.0 if x.dtype == np.uint8 else 1.0
        if x.dtype != np.uint8:
            x = x.astype(np.float32)
        return x, _checked(x, y, f"data-dir '{path}'"), scale

    return cached_dataset("npz", [path], build)


def load_digits_28() -> Pooled:
    """scikit-learn's bundled 8x8 digits, upsampled to 28x28 so every model fits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(
        x, size=IMAGE_SHAPE[1:], mode="bilinear", align_corners=False
    ).squeeze(1)
    images, labels = x.numpy(), bunch.target.astype(np.int64)
    mean, std = float(x.mean()), float(x.std())
    return Pooled(
        images,
        labels,
        1.0,
        mean,
        std,
        10,
        content_fingerprint("digits", images, labels, 1.0, mean, std),
        {"files": [], "cache": None, "origin": "sklearn.datasets.load_digits"},
    )


def make_synthetic(num_samples: int = 6000, seed: int = 0) -> Pooled:
    """A learnable 10-class image set (class prototypes plus noise) for fast tests."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(NUM_CLASSES, *IMAGE_SHAPE, generator=gen)
    y = torch.arange(num_samples) % NUM_CLASSES
    y = y[torch.randperm(num_samples, generator=gen)]
    x = prototypes[y] + 1.5 * torch.randn(num_samples, *IMAGE_SHAPE, generator=gen)
    images, labels = x.squeeze(1).numpy(), y.numpy().astype(np.int64)
    return Pooled(
        images,
        labels,
        1.0,
        0.0,
        1.0,
        NUM_CLASSES,
        content_fingerprint("synthetic", images, labels, 1.0, 0.0, 1.0),
        {
            "files": [],
            "cache": None,
            "origin": f"synthetic (seed {seed}, {num_samples} samples)",
        },
    )


@lru_cache(maxsize=4)
def load_pooled(dataset: str, data_dir: str = "", download: bool = False) -> Pooled:
    """Load a dataset by its run-config name, cached once per process. ``download``
    (run-config ``download``) lets torchvision fetch a missing official set into
    ``data-dir``; Fashion-MNIST keeps its own fallbacks (see
    :func:`find_fashion_mnist`)."""
    if dataset in TORCHVISION_SETS:
        from common.image_sets import load_torchvision_set

        return load_torchvision_set(dataset, data_dir, download)
    if dataset == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    if dataset == "idx":
        return load_idx(data_dir)
    if dataset == "npz":
        return load_npz(data_dir)
    if dataset == "digits":
        return load_digits_28()
    if dataset == "synthetic":
        return make_synthetic()
    raise ValueError(f"unknown dataset {dataset!r}")


#: Class counts learnt from a run's record (offline tools that have no data).
_KNOWN_CLASSES: dict[tuple[str, str], int] = {}
#: Image shapes learnt from a run's record or the clients' registration.
_KNOWN_SHAPES: dict[tuple[str, str], tuple[int, int, int]] = {}


def remember_image_shape(dataset: str, data_dir: str, shape: Any) -> None:
    """Record a dataset's image shape (channels, H, W), from a run's ``config.json``
    or the clients' registration, so a host without the data builds the right
    models."""
    c, h, w = (int(v) for v in shape)
    _KNOWN_SHAPES[(dataset, data_dir)] = (c, h, w)


def image_shape_of(dataset: str, data_dir: str = "") -> tuple[int, int, int]:
    """(channels, H, W) of a dataset's images: fixed by the format where it is, else
    known from a record, else from the data (loading it, through the cache)."""
    if dataset in FIXED_SHAPES:
        return FIXED_SHAPES[dataset]
    if (dataset, data_dir) in _KNOWN_SHAPES:
        return _KNOWN_SHAPES[(dataset, data_dir)]
    return load_pooled(dataset, data_dir).image_shape


def shape_bound(dataset: str, data_dir: str = "") -> tuple[int, int, int] | None:
    """The image shape when it can be known on this host, None when the data is not
    here (as :func:`classes_bound`)."""
    try:
        return image_shape_of(dataset, data_dir)
    except (DatasetNotFoundError, DataError):
        return None


def remember_num_classes(dataset: str, data_dir: str, num_classes: int) -> None:
    """Record a dataset's class count (from a run's ``config.json``), so a tool that
    reads a finished run need not have the data itself."""
    _KNOWN_CLASSES[(dataset, data_dir)] = int(num_classes)


def num_classes_of(dataset: str, data_dir: str = "") -> int:
    """Classes of a dataset: fixed for the built-in ones, from the labels for ``idx``
    and ``npz`` (loading them, through the cache, if not known yet)."""
    if dataset in FIXED_CLASSES:
        return FIXED_CLASSES[dataset]
    if (dataset, data_dir) in _KNOWN_CLASSES:
        return _KNOWN_CLASSES[(dataset, data_dir)]
    return load_pooled(dataset, data_dir).num_classes


def resolved_data_dir(dataset: str, data_dir: str) -> str:
    """``data-dir`` as an absolute path a process anywhere on this machine can use:
    for Fashion-MNIST with none given, the folder it is found in (so ClientApps never
    depend on their environment to find it)."""
    if dataset == "fashion-mnist" and not data_dir:
        return str(find_fashion_mnist("", download=False).resolve())
    if dataset in FILE_SETS and data_dir:
        return str(Path(data_dir).expanduser().resolve())
    return data_dir


def classes_bound(dataset: str, data_dir: str = "") -> int | None:
    """The class count when it can be known on this host, None when the data is not
    here (a deployment server validating an ``idx`` config it never reads)."""
    try:
        return num_classes_of(dataset, data_dir)
    except (DatasetNotFoundError, DataError):
        return None
