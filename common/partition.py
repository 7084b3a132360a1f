"""Client partitions: who holds which samples, and who participates.

Partitions come from flwr-datasets partitioners run on an in-memory table of labels
(only the label column and a row index are needed), so the k-classes, Dirichlet and
shard splits are Flower's own, seeded, and identical in every process that asks.
Each client's samples are then split into its own train/val/test sets, so evaluation
measures a client on its own distribution.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from common.config import RunConfig
from common.data import NUM_CLASSES, default_data_dir, load_pooled

_PARTITION_FORMAT = 2


@dataclass(frozen=True)
class ClientSplit:
    """Row indices into the pooled dataset for one client's train, val and test sets."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class ClientData:
    """One client's tensors, ready for training and evaluation."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def classes(self) -> list[int]:
        """The classes present in this client's training data (sorted)."""
        return sorted(int(c) for c in torch.unique(self.y_train))


def _make_partitioner(
    partitioner: str,
    num_clients: int,
    classes_per_client: int,
    alpha: float,
    shards_per_client: int,
    seed: int,
):
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        PathologicalPartitioner,
        ShardPartitioner,
    )

    if partitioner == "classes":
        return PathologicalPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            num_classes_per_partition=classes_per_client,
            class_assignment_mode="first-deterministic",
            shuffle=True,
            seed=seed,
        )
    if partitioner == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            alpha=alpha,
            min_partition_size=10,
            self_balancing=True,
            shuffle=True,
            seed=seed,
        )
    if partitioner == "shards":
        return ShardPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            num_shards_per_partition=shards_per_client,
            shuffle=True,
            seed=seed,
        )
    raise ValueError(f"unknown partitioner {partitioner!r}")


def partition_indices(
    labels: np.ndarray,
    partitioner: str,
    num_clients: int,
    classes_per_client: int = 2,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    seed: int = 42,
) -> list[np.ndarray]:
    """Split row indices among clients with a flwr-datasets partitioner.

    Returns one index array per client; arrays are disjoint and deterministic for a
    given seed. ``class-shares`` is pFedHN's partition (:func:`class_share_indices`),
    the others are flwr-datasets partitioners.
    """
    if partitioner == "class-shares":
        return class_share_indices(labels, num_clients, classes_per_client, seed)
    from datasets import Dataset

    table = Dataset.from_dict(
        {
            "label": labels.astype(np.int64),
            "row": np.arange(len(labels), dtype=np.int64),
        }
    )
    part = _make_partitioner(
        partitioner, num_clients, classes_per_client, alpha, shards_per_client, seed
    )
    part.dataset = table
    # numpy format: a plain column read (iterating a datasets Column is row by row,
    # ~40 s for 70k rows)
    return [
        np.asarray(
            part.load_partition(i).with_format("numpy")[:]["row"], dtype=np.int64
        )
        for i in range(num_clients)
    ]


def class_share_indices(
    labels: np.ndarray,
    num_clients: int,
    classes_per_client: int,
    seed: int,
    low: float = 0.4,
    high: float = 0.6,
) -> list[np.ndarray]:
    """pFedHN's partition (AvivSham/pFedHN, ``experiments/dataset.py``): random shares.

    Every class is held by the same number k = N·C / K of clients (N clients, C
    classes each, K classes). For each class, k shares are drawn from U(low, high)
    and normalised to sum to one, so a holder gets between roughly 40/60 and 60/40 of
    an equal split's rows. Clients pick their classes in turn, each pick uniform
    among the classes with the most unassigned holder slots left, and take their
    share of the class's shuffled rows. One deviation: a client never picks a class
    it already holds while another class has a slot left (the authors' loop can, at
    the boundary between rounds of picks, which leaves that client with fewer
    distinct classes).
    """
    classes = np.unique(labels)
    num_classes = len(classes)
    if (num_clients * classes_per_client) % num_classes:
        raise ValueError(
            "class-shares needs num-clients × classes-per-client "
            f"divisible by {num_classes}"
        )
    holders = num_clients * classes_per_client // num_classes
    rng = np.random.default_rng([seed, 104_729])
    shares = {int(c): list(rng.uniform(low, high, holders)) for c in classes}
    shares = {c: [p / sum(ps) for p in ps] for c, ps in shares.items()}
    slots = {int(c): holders for c in classes}
    picks: list[list[tuple[int, float]]] = []
    for _ in range(num_clients):
        mine: list[tuple[int, float]] = []
        for _ in range(classes_per_client):
            held = {c for c, _ in mine}
            free = [c for c in slots if c not in held and slots[c] > 0] or [
                c for c in slots if slots[c] > 0
            ]
            top = max(slots[c] for c in free)
            cls = int(rng.choice([c for c in free if slots[c] == top]))
            slots[cls] -= 1
            mine.append((cls, shares[cls].pop()))
        picks.append(mine)
    rows = {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    start = dict.fromkeys(rows, 0)
    out = []
    for mine in picks:
        parts = []
        for cls, share in mine:
            n = int(len(rows[cls]) * share)
            parts.append(rows[cls][start[cls] : start[cls] + n])
            start[cls] += n
        out.append(np.sort(np.concatenate(parts)).astype(np.int64))
    return out


def split_client(
    indices: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> ClientSplit:
    """Shuffle one client's rows (seeded) and cut them into train/val/test."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(indices)
    n_val = max(1, int(round(val_fraction * len(rows))))
    n_test = max(1, int(round(test_fraction * len(rows))))
    return ClientSplit(
        train=rows[n_val + n_test :],
        val=rows[:n_val],
        test=rows[n_val : n_val + n_test],
    )


def split_participants(
    num_clients: int, holdout: float, seed: int
) -> tuple[list[int], list[int]]:
    """Seeded split of client ids into participants and non-participants.

    The same (num_clients, holdout, seed) always gives the same split, so the
    held-out clients never change within a run or across its resumptions.
    """
    rng = np.random.default_rng([seed, 7919])
    order = rng.permutation(num_clients)
    n_out = int(holdout * num_clients)
    return sorted(int(i) for i in order[n_out:]), sorted(int(i) for i in order[:n_out])


@lru_cache(maxsize=4)
def held_out_partitions(num_clients: int, holdout: float, seed: int) -> frozenset[int]:
    """The held-out partition ids of :func:`split_participants`, as a set (cached:
    lazy registration asks for one client's role at a time, on both sides)."""
    return frozenset(split_participants(num_clients, holdout, seed)[1])


@lru_cache(maxsize=4)
def _client_splits(
    dataset: str,
    data_dir: str,
    partitioner: str,
    num_clients: int,
    classes_per_client: int,
    alpha: float,
    shards_per_client: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[ClientSplit, ...]:
    """Compute all clients' splits once and keep them in an on-disk cache.

    Deployment starts a fresh ClientApp process per message, so the partitioner's
    few seconds are paid once per machine, not once per message. The cache is keyed
    by the data's content fingerprint, never by its folder's name alone.
    """
    pooled = load_pooled(dataset, data_dir)
    key = json.dumps(
        [
            pooled.fingerprint,
            partitioner,
            num_clients,
            classes_per_client,
            alpha,
            shards_per_client,
            val_fraction,
            test_fraction,
            seed,
            _PARTITION_FORMAT,
        ]
    )
    path = (
        default_data_dir()
        / "cache"
        / "partitions"
        / (hashlib.sha256(key.encode()).hexdigest()[:20] + ".npz")
    )
    if path.exists():
        try:
            with np.load(path) as saved:
                return tuple(
                    ClientSplit(
                        saved[f"{i}-train"], saved[f"{i}-val"], saved[f"{i}-test"]
                    )
                    for i in range(num_clients)
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a torn cache file: compute again and replace it
    parts = partition_indices(
        np.asarray(pooled.labels),
        partitioner,
        num_clients,
        classes_per_client,
        alpha,
        shards_per_client,
        seed,
    )
    splits = tuple(
        split_client(p, val_fraction, test_fraction, seed * 100_003 + i)
        for i, p in enumerate(parts)
    )
    arrays = {
        f"{i}-{name}": getattr(sp, name)
        for i, sp in enumerate(splits)
        for name in ("train", "val", "test")
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs time
    return splits


#: The numpy stream of partitioner "sampled": (seed, SAMPLED_STREAM, partition id).
SAMPLED_STREAM = 31_337


@lru_cache(maxsize=4)
def _rows_by_class(dataset: str, data_dir: str) -> tuple[np.ndarray, ...]:
    """The pooled dataset's row indices of each class that has rows."""
    labels = np.asarray(load_pooled(dataset, data_dir).labels)
    return tuple(
        rows
        for c in range(int(labels.max()) + 1)
        if len(rows := np.flatnonzero(labels == c))
    )


def sampled_split(cfg: RunConfig, partition_id: int) -> ClientSplit:
    """Partitioner ``sampled``, a scale-only setting: one client's rows drawn on
    their own, from (seed, partition id) alone.

    The client picks ``classes-per-client`` classes (seeded) and draws
    ``samples-per-client`` distinct rows of those classes, cut into train/val/test
    by the fractions (at least one row each). Nothing is computed for the other
    clients, so any number of clients costs the same per client (100,000 clients
    on Fashion-MNIST's 70,000 images); the price is that clients draw
    independently and may share rows, which no other partitioner allows. Kept apart
    from the others: their partitions do not change.
    """
    by_class = _rows_by_class(cfg.dataset, cfg.data_dir)
    rng = np.random.default_rng([cfg.seed, SAMPLED_STREAM, partition_id])
    k = min(cfg.classes_per_client, len(by_class))
    classes = np.sort(rng.choice(len(by_class), k, replace=False))
    pool = np.concatenate([by_class[c] for c in classes])
    n = min(cfg.samples_per_client, len(pool))
    rows = rng.choice(pool, n, replace=False)
    n_val = max(1, int(round(cfg.val_fraction * n)))
    n_test = max(1, int(round(cfg.test_fraction * n)))
    return ClientSplit(
        train=rows[n_val + n_test :],
        val=rows[:n_val],
        test=rows[n_val : n_val + n_test],
    )


def client_split(cfg: RunConfig, partition_id: int) -> ClientSplit:
    """One client's index split (partitioner ``sampled``: computed for it alone)."""
    if cfg.partitioner == "sampled":
        return sampled_split(cfg, partition_id)
    return client_splits(cfg)[partition_id]


def client_splits(cfg: RunConfig) -> tuple[ClientSplit, ...]:
    """All clients' index splits for a run config (cached per process)."""
    if cfg.partitioner == "sampled":
        return tuple(sampled_split(cfg, i) for i in range(cfg.num_clients))
    splits = _client_splits(
        cfg.dataset,
        cfg.data_dir,
        cfg.partitioner,
        cfg.num_clients,
        cfg.classes_per_client,
        cfg.dirichlet_alpha,
        cfg.shards_per_client,
        cfg.val_fraction,
        cfg.test_fraction,
        cfg.seed,
    )
    if cfg.samples_per_client:
        n = cfg.samples_per_client
        return tuple(
            subsample(sp, n, cfg.val_fraction, cfg.test_fraction) for sp in splits
        )
    return splits


def subsample(
    split: ClientSplit, n: int, val_fraction: float, test_fraction: float
) -> ClientSplit:
    """A client's low-data split: ``n`` of its rows, cut by the same fractions.

    Each part of ``split`` is already a seeded shuffle of the client's rows, so its
    first rows are a seeded random subset: the low-data client's validation and
    test rows are a subset of the full client's (never its training rows), and a
    client with fewer than ``n`` rows keeps them all.
    """
    n_val = max(1, int(round(val_fraction * n)))
    n_test = max(1, int(round(test_fraction * n)))
    return ClientSplit(
        train=split.train[: max(1, n - n_val - n_test)],
        val=split.val[:n_val],
        test=split.test[:n_test],
    )


def load_client_data(
    cfg: RunConfig, partition_id: int, disk_cache: bool | None = None
) -> ClientData:
    """The tensors of one client's partition (what a ClientApp trains on).

    ``disk_cache`` keeps them in a per-node cache file (:func:`client_cache_path`),
    so a process that serves one message and exits does not gather and normalise
    its rows again; None decides by :func:`client_cache_enabled`.
    """
    if not 0 <= partition_id < cfg.num_clients:
        raise ValueError(f"partition-id {partition_id} outside [0, {cfg.num_clients})")
    pooled = load_pooled(cfg.dataset, cfg.data_dir)
    if disk_cache is None:
        disk_cache = client_cache_enabled()
    path = client_cache_path(cfg, partition_id, pooled.fingerprint)
    if disk_cache and (cached := _read_client_cache(path)) is not None:
        return cached
    split = client_split(cfg, partition_id)
    (xt, yt), (xv, yv), (xs, ys) = (
        pooled.rows(split.train),
        pooled.rows(split.val),
        pooled.rows(split.test),
    )
    data = ClientData(xt, yt, xv, yv, xs, ys)
    if disk_cache:
        _write_client_cache(path, data)
    return data


# ---- the per-node cache of one client's tensors --------------------------------
#: Bump when what a client cache file holds, or how it is computed, changes.
_CLIENT_FORMAT = 1
#: ``1`` / ``0``: always / never use the per-node cache (default: only in a
#: ``flwr-clientapp`` process, which Flower starts for a single message).
CLIENT_CACHE_ENV = "HYPERFLOWER_CLIENT_CACHE"
#: Client cache folders kept per host; older ones go when a new one is written.
CLIENT_CACHE_KEEP = 32
_CLIENT_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def client_cache_enabled() -> bool:
    """Whether :func:`load_client_data` uses the per-node cache by default.

    Deployment starts a fresh ``flwr-clientapp`` process for every message, which
    would otherwise gather and normalise its rows every time; a simulation worker or
    an in-process run keeps its data in memory and would only fill the disk.
    ``HYPERFLOWER_CLIENT_CACHE`` overrides the choice.
    """
    forced = os.environ.get(CLIENT_CACHE_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return os.path.basename(sys.argv[0] if sys.argv else "") == "flwr-clientapp"


def client_cache_path(cfg: RunConfig, partition_id: int, fingerprint: str) -> Path:
    """The cache folder of one client's tensors: keyed by the data's content
    fingerprint (which covers its preprocessing), the partition id and the whole
    resolved run config. A setting added later that moves rows (a partitioner's
    new key) can never be answered from an old folder; a change of a setting that
    cannot move a row (rounds, learning rates) costs one miss per node."""
    key = json.dumps(
        [fingerprint, partition_id, _PARTITION_FORMAT, _CLIENT_FORMAT, cfg.to_dict()],
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return default_data_dir() / "cache" / "clients" / digest


def _read_client_cache(path: Path) -> ClientData | None:
    """The cached tensors, or None when the folder is absent or incomplete.

    Plain ``.npy`` files, read whole: no archive to decompress or checksum, so a
    hit costs about one copy of the client's tensors from the page cache.
    """
    try:
        arrays = {name: np.load(path / f"{name}.npy") for name in _CLIENT_ARRAYS}
    except (OSError, ValueError, EOFError):
        return None
    parts = [("x_train", "y_train"), ("x_val", "y_val"), ("x_test", "y_test")]
    if any(len(arrays[x]) != len(arrays[y]) for x, y in parts):
        return None
    return ClientData(*(torch.from_numpy(arrays[name]) for name in _CLIENT_ARRAYS))


def _write_client_cache(path: Path, data: ClientData) -> None:
    """Write a client's tensors atomically (a temporary folder renamed into place)
    and keep the newest :data:`CLIENT_CACHE_KEEP` folders; a failed write (a
    read-only host, another process that renamed its copy first) only costs time."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for name in _CLIENT_ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(data, name).numpy())
        try:
            os.rename(tmp, path)
        except OSError:  # a torn copy is in the way (a good one was read instead)
            shutil.rmtree(path, ignore_errors=True)
            os.rename(tmp, path)
        kept = sorted(
            (d for d in path.parent.iterdir() if not d.name.startswith(".")),
            key=lambda d: d.stat().st_mtime,
        )
        for old in kept[:-CLIENT_CACHE_KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def class_indicator(labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> list[int]:
    """The 0/1 vector r_i of classes present (no counts), as HyperFLoRA sends it."""
    present = set(int(c) for c in torch.unique(labels))
    return [1 if c in present else 0 for c in range(num_classes)]
