"""Partitions: deterministic, disjoint, and shaped as the partitioner promises."""

from __future__ import annotations

import numpy as np
import pytest

from common.partition import partition_indices, split_client, split_participants


@pytest.fixture(scope="module")
def labels():
    return np.random.default_rng(0).integers(0, 10, size=5000)


@pytest.mark.parametrize("kind", ["classes", "dirichlet", "shards"])
def test_partitions_are_deterministic_and_disjoint(labels, kind):
    a = partition_indices(labels, kind, 20, classes_per_client=2, seed=3)
    b = partition_indices(labels, kind, 20, classes_per_client=2, seed=3)
    c = partition_indices(labels, kind, 20, classes_per_client=2, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    rows = np.concatenate(a)
    assert len(rows) == len(set(rows.tolist())), "a row was given to two clients"
    assert all(len(p) > 0 for p in a)


def test_classes_partitioner_gives_k_classes(labels):
    for part in partition_indices(labels, "classes", 20, classes_per_client=2, seed=1):
        assert len(np.unique(labels[part])) == 2


def test_client_split_is_disjoint_and_complete():
    rows = np.arange(100, 300)
    split = split_client(rows, 0.15, 0.15, seed=9)
    parts = [split.train, split.val, split.test]
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == rows.tolist()
    assert len(split.val) == 30 and len(split.test) == 30


def test_participant_split_is_fixed_by_seed():
    p1, n1 = split_participants(50, 0.2, seed=42)
    p2, n2 = split_participants(50, 0.2, seed=42)
    assert (p1, n1) == (p2, n2)
    assert len(n1) == 10 and not set(p1) & set(n1)
    assert sorted(p1 + n1) == list(range(50))
    assert split_participants(50, 0.2, seed=43)[1] != n1


def test_low_data_split_keeps_a_seeded_subset_cut_by_the_fractions():
    from common.partition import subsample

    full = split_client(np.arange(1000), 0.15, 0.15, seed=5)
    low = subsample(full, 143, 0.15, 0.15)
    assert (len(low.train), len(low.val), len(low.test)) == (101, 21, 21)
    # each part is a subset of the same part of the full split: a low-data client's
    # test rows never come from the full client's training rows
    for part in ("train", "val", "test"):
        assert set(getattr(low, part)) <= set(getattr(full, part))
    again = subsample(full, 143, 0.15, 0.15)
    assert all(
        np.array_equal(getattr(low, p), getattr(again, p))
        for p in ("train", "val", "test")
    )


def test_samples_per_client_shrinks_every_client_and_zero_keeps_all():
    from common.config import defaults, parse_run_config
    from common.partition import client_splits

    base = {**defaults(), "dataset": "digits", "num-clients": 10}
    full = client_splits(parse_run_config(base))
    low = client_splits(parse_run_config({**base, "samples-per-client": 40}))
    assert all(len(s.train) + len(s.val) + len(s.test) == 40 for s in low)
    assert all(len(s.train) > 40 for s in full)
