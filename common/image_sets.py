"""The papers' datasets from their official files, read by torchvision's own classes.

``dataset`` names and what ``data-dir`` must hold (torchvision's layouts):

- ``mnist``: ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``;
- ``emnist-letters`` / ``emnist-balanced``:
  ``EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte``;
- ``cifar10``: ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``;
- ``cifar100``: ``cifar-100-python/{train,test,meta}``;
- ``tiny-imagenet``: ``train/<wnid>/images/*.JPEG`` (the training split: its
  ``val/`` is not in ImageFolder's layout);
- ``folder``: any ImageFolder tree ``<class>/<image>``, or ``train/``, ``val/``,
  ``test/`` trees of the same classes, pooled.

Train and test files are pooled, as for every dataset (see :mod:`common.data`), and
decoded once into the source-keyed cache; normalisation statistics come from the
training files, per channel for colour images. Nothing is downloaded unless the
run config says ``download=true`` (then torchvision's own download, with its MD5
checks, fills ``data-dir``).

The only departures from torchvision: the CIFAR classes below check that the files
exist instead of their MD5 sums (so copies and test files are read), EMNIST's images
are transposed upright (torchvision returns them as stored, transposed) and EMNIST
letters' labels 1..26 become 0..25 (torchvision keeps 1..26 with an unused class
0 'N/A'). ImageFolder images are decoded as RGB (torchvision's default loader);
every image of one tree must have the same size.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.data import (
    FIXED_CLASSES,
    DataError,
    DataFormatError,
    DatasetNotFoundError,
    Decoded,
    Pooled,
    _readable_folder,
    cached_dataset,
)

if TYPE_CHECKING:
    from torchvision.datasets import MNIST

#: CIFAR's official files (torchvision's ``base_folder``, ``train_list`` +
#: ``test_list`` and ``meta``; a test checks them against torchvision's classes),
#: known here so that a cache hit never imports ``torchvision.datasets``
#: (:mod:`common.torchvision_readers`).
_CIFAR = {
    "cifar10": (
        "cifar-10-batches-py",
        [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"],
    ),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
}
_EMNIST_SPLITS = {"emnist-letters": "letters", "emnist-balanced": "balanced"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff")


def expected_files(dataset: str, root: Path) -> list[Path]:
    """The official files torchvision reads for ``dataset`` under ``root``."""
    if dataset in _CIFAR:
        folder, names = _CIFAR[dataset]
        return [root / folder / n for n in names]
    if dataset == "mnist":
        return [
            root / "MNIST" / "raw" / f"{part}-{kind}-ubyte"
            for part in ("train", "t10k")
            for kind in ("images-idx3", "labels-idx1")
        ]
    if dataset in _EMNIST_SPLITS:
        split = _EMNIST_SPLITS[dataset]
        return [
            root / "EMNIST" / "raw" / f"emnist-{split}-{part}-{kind}-ubyte"
            for part in ("train", "test")
            for kind in ("images-idx3", "labels-idx1")
        ]
    raise ValueError(f"{dataset!r} has no fixed file list")


def layout(dataset: str) -> str:
    """What ``data-dir`` must hold for ``dataset``, in words (for error messages)."""
    if dataset in _CIFAR or dataset == "mnist" or dataset in _EMNIST_SPLITS:
        files = expected_files(dataset, Path("."))
        folder = files[0].parent
        return f"{folder}/ with " + ", ".join(f.name for f in files)
    if dataset == "tiny-imagenet":
        return "train/<wnid>/images/*.JPEG (tiny-imagenet-200 as unpacked)"
    return "<class>/<image> folders (or train/, val/, test/ trees of them)"


def _has_images(folder: Path) -> bool:
    return any(
        f.suffix.lower() in _IMAGE_SUFFIXES for f in folder.rglob("*") if f.is_file()
    )


def sniff_format(root: Path) -> str | None:
    """What dataset format ``root`` holds, in words with the ``dataset`` value that
    reads it; None when it holds nothing recognisable."""
    found: list[str] = []
    if (root / "cifar-10-batches-py").is_dir():
        found.append("CIFAR-10 batches (dataset='cifar10')")
    if (root / "cifar-100-python").is_dir():
        found.append("CIFAR-100 files (dataset='cifar100')")
    if (root / "MNIST" / "raw").is_dir():
        found.append("torchvision's MNIST folder (dataset='mnist')")
    emnist = root / "EMNIST" / "raw"
    if emnist.is_dir():
        splits = sorted(
            {p.name.split("-")[1] for p in emnist.glob("emnist-*-images-idx3-ubyte*")}
        )
        found.append(
            f"EMNIST files of splits {', '.join(splits) or 'none'} "
            "(dataset='emnist-letters' or 'emnist-balanced')"
        )
    if any(root.glob("*-idx3-ubyte*")):
        found.append("IDX files (dataset='idx', or 'fashion-mnist')")
    if any(root.glob("*.npz")):
        found.append("an .npz file (dataset='npz')")
    if (root / "train").is_dir() and (root / "wnids.txt").is_file():
        found.append("a Tiny ImageNet folder (dataset='tiny-imagenet')")
    elif not found and any(
        d.is_dir() and _has_images(d) for d in root.iterdir() if d.is_dir()
    ):
        found.append("an ImageFolder tree of images (dataset='folder')")
    return "; ".join(found) or None


def _missing(dataset: str, root: Path, data_dir: str, download: bool) -> None:
    """Raise the named error for a ``data-dir`` that lacks ``dataset``'s files."""
    files = expected_files(dataset, root)
    missing = [f for f in files if not f.is_file()]
    if not missing:
        return
    get = "" if download else "; or set download=true to let torchvision fetch them"
    if len(missing) < len(files):
        raise DatasetNotFoundError(
            f"data-dir '{data_dir}': {dataset} files missing: "
            + ", ".join(str(f.relative_to(root)) for f in missing)
            + f" (expected {layout(dataset)}){get}"
        )
    other = sniff_format(root)
    if other:
        raise DataFormatError(
            f"data-dir '{data_dir}' holds {other}, not {dataset}'s files "
            f"(expected {layout(dataset)})"
        )
    raise DatasetNotFoundError(
        f"data-dir '{data_dir}' holds no {dataset} files (expected "
        f"{layout(dataset)}){get}"
    )


def _root(dataset: str, data_dir: str) -> Path:
    if not data_dir:
        raise DatasetNotFoundError(
            f"dataset '{dataset}' needs data-dir: a folder holding {layout(dataset)}"
        )
    return _readable_folder(data_dir, f"create it and put {layout(dataset)} in it")


def _torchvision_error(dataset: str, data_dir: str, exc: Exception) -> DataError:
    return DataError(
        f"data-dir '{data_dir}': torchvision cannot read the {dataset} files "
        f"({' '.join(str(exc).split())})"
    )


def _download(dataset: str, data_dir: str, fetch: Callable[[], object]) -> None:
    """Let torchvision fetch a missing official set (``download=true``); an offline
    or refused download is a :class:`DatasetNotFoundError` that says so."""
    try:
        fetch()
    except Exception as exc:  # noqa: BLE001 - offline or refused: say so
        raise DatasetNotFoundError(
            f"data-dir '{data_dir}': downloading {dataset} failed ({exc})"
        ) from None


def load_cifar(dataset: str, data_dir: str, download: bool = False) -> Pooled:
    """CIFAR-10 or CIFAR-100 from the python pickle batches under ``data-dir``:
    images (N, 3, 32, 32) uint8, train and test pooled, statistics per channel from
    the training batches."""
    root = _root(dataset, data_dir)

    def reader() -> Any:
        from common.torchvision_readers import CIFAR_READERS

        return CIFAR_READERS[dataset]

    if download:
        _download(
            dataset, data_dir, lambda: reader()(str(root), train=True, download=True)
        )
    _missing(dataset, root, data_dir, download)
    files = expected_files(dataset, root)

    def build() -> Decoded:
        cls = reader()
        try:
            train, test = cls(str(root), train=True), cls(str(root), train=False)
        except (RuntimeError, OSError, pickle.UnpicklingError, KeyError) as exc:
            raise _torchvision_error(dataset, data_dir, exc) from None
        images = np.concatenate([train.data, test.data]).transpose(0, 3, 1, 2)
        labels = np.asarray(list(train.targets) + list(test.targets), dtype=np.int64)
        return np.ascontiguousarray(images), labels, 255.0, len(train.data)

    return cached_dataset(dataset, files, build, num_classes=FIXED_CLASSES[dataset])


def load_mnist_format(dataset: str, data_dir: str, download: bool = False) -> Pooled:
    """MNIST or an EMNIST split from torchvision's folder layout under ``data-dir``:
    images (N, 28, 28) uint8 (EMNIST's transposed upright), EMNIST letters' labels
    1..26 as 0..25, statistics from the training files."""
    root = _root(dataset, data_dir)

    def make(train: bool, fetch: bool = False) -> MNIST:
        from torchvision.datasets import EMNIST, MNIST

        if dataset == "mnist":
            return MNIST(str(root), train=train, download=fetch)
        return EMNIST(
            str(root), split=_EMNIST_SPLITS[dataset], train=train, download=fetch
        )

    if download:
        _download(dataset, data_dir, lambda: make(True, fetch=True))
    _missing(dataset, root, data_dir, download)
    files = expected_files(dataset, root)

    def build() -> Decoded:
        try:
            train, test = make(True), make(False)
        except (RuntimeError, OSError, AssertionError, ValueError) as exc:
            raise _torchvision_error(dataset, data_dir, exc) from None
        images = np.concatenate([train.data.numpy(), test.data.numpy()])
        labels = np.concatenate([train.targets.numpy(), test.targets.numpy()])
        labels = labels.astype(np.int64)
        if dataset in _EMNIST_SPLITS:
            images = np.ascontiguousarray(images.transpose(0, 2, 1))  # upright
        if dataset == "emnist-letters":
            if len(labels) and int(labels.min()) < 1:
                raise DataError(
                    f"data-dir '{data_dir}': EMNIST letters labels must be 1..26 "
                    f"as in the official files, found {int(labels.min())}"
                )
            labels = labels - 1
        return images, labels, 255.0, len(train.data)

    return cached_dataset(dataset, files, build, num_classes=FIXED_CLASSES[dataset])


def _folder_trees(dataset: str, root: Path, data_dir: str) -> list[Path]:
    """The ImageFolder roots to pool: tiny-imagenet's ``train``; for ``folder`` the
    ``train``/``val``/``test`` trees when the top level holds only those, else the
    folder itself."""
    if dataset == "tiny-imagenet":
        train = root / "train"
        if not train.is_dir():
            other = sniff_format(root)
            if other:
                raise DataFormatError(
                    f"data-dir '{data_dir}' holds {other}, not tiny-imagenet's "
                    f"files (expected {layout(dataset)})"
                )
            raise DatasetNotFoundError(
                f"data-dir '{data_dir}' holds no tiny-imagenet files (expected "
                f"{layout(dataset)})"
            )
        return [train]
    subdirs = sorted(d.name for d in root.iterdir() if d.is_dir())
    splits = [s for s in ("train", "val", "valid", "test") if s in subdirs]
    if splits and len(splits) == len(subdirs):
        return [root / s for s in splits]
    return [root]


def load_image_folder(dataset: str, data_dir: str) -> Pooled:
    """Images of an ImageFolder tree (``folder``, ``tiny-imagenet``) decoded by
    torchvision's loader (RGB): images (N, 3, H, W) uint8, labels the sorted class
    folders' indices, statistics per channel from the ``train`` tree when there is
    one. Every image must have the same size."""
    from torchvision.datasets import ImageFolder

    root = _root(dataset, data_dir)
    trees = _folder_trees(dataset, root, data_dir)
    try:
        sets = [ImageFolder(str(t)) for t in trees]
    except (FileNotFoundError, OSError) as exc:
        other = sniff_format(root)
        if other and "ImageFolder" not in other and "Tiny ImageNet" not in other:
            raise DataFormatError(
                f"data-dir '{data_dir}' holds {other}, not an ImageFolder tree "
                f"(expected {layout(dataset)})"
            ) from None
        raise DatasetNotFoundError(
            f"data-dir '{data_dir}' holds no images in {layout(dataset)} "
            f"({' '.join(str(exc).split())})"
        ) from None
    classes = sets[0].classes
    for tree, ds in zip(trees[1:], sets[1:], strict=True):
        if ds.classes != classes:
            raise DataError(
                f"data-dir '{data_dir}': {tree.name}/ has classes other than "
                f"{trees[0].name}/'s ({len(ds.classes)} vs {len(classes)})"
            )
    samples = [s for ds in sets for s in ds.samples]
    files = [Path(p) for p, _ in samples]
    record: list[dict[str, Any]] = [
        {
            "path": str(t.resolve()),
            "images": len(ds.samples),
            "classes": len(ds.classes),
            "bytes": sum(Path(p).stat().st_size for p, _ in ds.samples),
        }
        for t, ds in zip(trees, sets, strict=True)
    ]

    def build() -> Decoded:
        arrays: list[np.ndarray] = []
        for path, _ in samples:
            try:
                image = np.asarray(sets[0].loader(path), dtype=np.uint8)
            except OSError as exc:
                raise DataError(
                    f"data-dir '{data_dir}': cannot read {path} ({exc})"
                ) from None
            if arrays and image.shape != arrays[0].shape:
                raise DataError(
                    f"data-dir '{data_dir}': images differ in size ({samples[0][0]} "
                    f"is {arrays[0].shape[1]}×{arrays[0].shape[0]}, {path} is "
                    f"{image.shape[1]}×{image.shape[0]}); resize them to one size"
                )
            arrays.append(image)
        images = np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))
        labels = np.asarray([t for _, t in samples], dtype=np.int64)
        train_rows = len(sets[0].samples) if trees[0].name == "train" else len(labels)
        return images, labels, 255.0, train_rows

    return cached_dataset(
        dataset, files, build, num_classes=len(classes), record=record
    )


def load_torchvision_set(dataset: str, data_dir: str, download: bool = False) -> Pooled:
    """One of :data:`common.data.TORCHVISION_SETS` from ``data-dir``."""
    if dataset in _CIFAR:
        return load_cifar(dataset, data_dir, download)
    if dataset == "mnist" or dataset in _EMNIST_SPLITS:
        return load_mnist_format(dataset, data_dir, download)
    if dataset in ("tiny-imagenet", "folder"):
        return load_image_folder(dataset, data_dir)
    raise ValueError(f"unknown dataset {dataset!r}")
