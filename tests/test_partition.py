"""Partitions: deterministic, disjoint, and shaped as the partitioner promises."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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


def _client_cfg(**over):
    from common.config import defaults, parse_run_config

    base = {
        **defaults(),
        "dataset": "synthetic",
        "num-clients": 10,
        "partitioner": "class-shares",
        "seed": 3,
    }
    return parse_run_config({**base, **over})


def _same(a, b) -> bool:
    names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    return all(
        getattr(a, n).dtype == getattr(b, n).dtype
        and torch.equal(getattr(a, n), getattr(b, n))
        for n in names
    )


def test_client_cache_returns_the_cold_arrays_and_follows_the_settings(
    tmp_path, monkeypatch
):
    """The per-node cache (what a per-message ClientApp process reads) holds exactly
    the tensors a cold load gives, and another setting reads another file."""
    import common.partition as partition
    from common.data import load_pooled

    monkeypatch.setenv("HYPERFLOWER_DATA", str(tmp_path))
    cfg = _client_cfg()
    fingerprint = load_pooled("synthetic", "").fingerprint
    cold = partition.load_client_data(cfg, 4, disk_cache=False)
    path = partition.client_cache_path(cfg, 4, fingerprint)
    assert not path.exists()
    assert _same(partition.load_client_data(cfg, 4, disk_cache=True), cold)
    assert path.exists()

    def no_split(_cfg):
        raise AssertionError("a cache hit must not partition again")

    with monkeypatch.context() as m:
        m.setattr(partition, "client_splits", no_split)
        assert _same(partition.load_client_data(cfg, 4, disk_cache=True), cold)

    # any setting that decides the rows names another file, loaded cold and right
    for other, pid in [
        (_client_cfg(seed=4), 4),
        (_client_cfg(**{"samples-per-client": 60}), 4),
        (_client_cfg(**{"val-fraction": 0.2}), 4),
        (cfg, 5),
    ]:
        assert partition.client_cache_path(other, pid, fingerprint) != path
        want = partition.load_client_data(other, pid, disk_cache=False)
        assert _same(partition.load_client_data(other, pid, disk_cache=True), want)
        assert not _same(want, cold)
    # a torn file is not trusted: the data is computed again
    torn = path / "x_train.npy"
    torn.write_bytes(torn.read_bytes()[:1000])
    assert partition._read_client_cache(path) is None
    assert _same(partition.load_client_data(cfg, 4, disk_cache=True), cold)
    assert _same(partition._read_client_cache(path), cold)  # and replaced


def test_client_cache_is_on_in_a_per_message_clientapp_process(monkeypatch):
    from common.partition import CLIENT_CACHE_ENV, client_cache_enabled

    monkeypatch.delenv(CLIENT_CACHE_ENV, raising=False)
    monkeypatch.setattr("sys.argv", ["/venv/bin/flwr-clientapp", "--insecure"])
    assert client_cache_enabled()
    monkeypatch.setattr("sys.argv", ["/venv/bin/flwr-simulation"])
    assert not client_cache_enabled()
    monkeypatch.setenv(CLIENT_CACHE_ENV, "1")
    assert client_cache_enabled()
    monkeypatch.setenv(CLIENT_CACHE_ENV, "0")
    monkeypatch.setattr("sys.argv", ["/venv/bin/flwr-clientapp"])
    assert not client_cache_enabled()
