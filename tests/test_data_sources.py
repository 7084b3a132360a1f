"""The data you named: caches keyed by their source, idx and npz datasets."""

from __future__ import annotations

import os

import numpy as np
import pytest

from common.config import ConfigError, parse_run_config
from common.data import (
    FMNIST_MEAN,
    DataError,
    DatasetNotFoundError,
    load_idx,
    load_npz,
    load_pooled,
)
from common.partition import load_client_data
from tests.byo_data import idx_folder, npz_file, write_idx


@pytest.fixture(autouse=True)
def _fresh_home(tmp_path, monkeypatch):
    """One cache home for the whole test, as a user's ~/.cache would be."""
    monkeypatch.setenv("HYPERFLOWER_DATA", str(tmp_path / "home"))
    load_pooled.cache_clear()
    yield
    load_pooled.cache_clear()


def test_two_idx_folders_give_their_own_data_in_one_home(tmp_path):
    a = load_idx(str(idx_folder(tmp_path / "a", seed=1)))
    b = load_idx(str(idx_folder(tmp_path / "b", seed=2)))
    assert a.fingerprint != b.fingerprint
    assert not np.array_equal(np.asarray(a.images), np.asarray(b.images))
    assert a.source["cache"] != b.source["cache"]
    assert a.source["files"][0]["path"].startswith(str(tmp_path / "a"))
    # read again (from the caches): still each folder's own data
    again = load_idx(str(tmp_path / "a"))
    assert again.fingerprint == a.fingerprint
    assert np.array_equal(np.asarray(again.labels), np.asarray(a.labels))


def test_a_changed_file_is_read_again(tmp_path):
    folder = idx_folder(tmp_path / "d", seed=3)
    first = load_idx(str(folder))
    x, y = np.asarray(first.images[:500]).copy(), np.asarray(first.labels[:500])
    x[:, :5] = 255
    write_idx(folder / "train-images-idx3-ubyte.gz", x)
    write_idx(folder / "train-labels-idx1-ubyte.gz", y.astype(np.uint8))
    os.utime(folder / "train-images-idx3-ubyte.gz", ns=(1, 1))  # even an old mtime
    second = load_idx(str(folder))
    assert second.fingerprint != first.fingerprint
    changed = (np.asarray(second.images)[:, :5] == 255).all(axis=(1, 2))
    assert changed.sum() == 500 and len(second) == 600


@pytest.mark.parametrize("damage", ["no-meta", "truncated"])
def test_a_partial_cache_is_rebuilt(tmp_path, damage):
    folder = idx_folder(tmp_path / "p", seed=4)
    first = load_idx(str(folder))
    cache = first.source["cache"]
    del first
    if damage == "no-meta":
        os.remove(os.path.join(cache, "meta.json"))
    else:
        path = os.path.join(cache, "images.npy")
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
    again = load_idx(str(folder))
    assert again.images.shape == (600, 28, 28)
    assert again.fingerprint.startswith("idx:")


def test_idx_normalisation_and_classes_come_from_the_data(tmp_path):
    folder = idx_folder(tmp_path / "five", classes=5, seed=5)
    pooled = load_idx(str(folder))
    raw = np.asarray(pooled.images, dtype=np.float64) / 255.0
    assert pooled.num_classes == 5 and pooled.scale == 255.0
    assert pooled.mean == pytest.approx(raw.mean(), abs=1e-5)
    assert pooled.std == pytest.approx(raw.std(), abs=1e-5)
    assert pooled.mean != FMNIST_MEAN
    cfg = parse_run_config(
        {
            "dataset": "idx",
            "data-dir": str(folder),
            "num-clients": 4,
            "classes-per-client": 2,
        }
    )
    assert cfg.num_classes == 5
    x, _ = pooled.rows(np.arange(len(pooled)))
    assert abs(float(x.mean())) < 1e-3 and float(x.std()) == pytest.approx(1, abs=1e-3)
    data = load_client_data(cfg, 0)
    assert int(data.y_train.max()) < 5


def test_npz_dataset_loads_with_its_own_classes(tmp_path):
    path = npz_file(tmp_path / "mine" / "data.npz", classes=6)
    by_file, by_folder = load_npz(str(path)), load_npz(str(path.parent))
    assert by_file.fingerprint == by_folder.fingerprint
    assert by_file.num_classes == 6 and len(by_file) == 800
    cfg = parse_run_config({"dataset": "npz", "data-dir": str(path)})
    assert cfg.num_classes == 6
    with pytest.raises(Exception, match="classes-per-client"):
        parse_run_config(
            {"dataset": "npz", "data-dir": str(path), "classes-per-client": 7}
        )


def test_unusable_sources_name_data_dir(tmp_path):
    with pytest.raises(
        DatasetNotFoundError, match="data-dir '/nonexistent' is not a readable folder"
    ):
        load_idx("/nonexistent")
    with pytest.raises(DatasetNotFoundError, match="needs data-dir"):
        load_idx("")
    # other sizes load (the models follow the data); a model that cannot take them
    # is a config error naming 'model', before anything starts
    small = idx_folder(tmp_path / "small", size=20)
    assert load_idx(str(small)).image_shape == (1, 20, 20)
    tiny = idx_folder(tmp_path / "tiny", size=8)
    with pytest.raises(ConfigError, match="'model': 'lenet5' cannot take 1×8×8"):
        parse_run_config({"dataset": "idx", "data-dir": str(tiny)})
    two = idx_folder(tmp_path / "emnist", prefix="emnist-letters-")
    idx_folder(two, prefix="emnist-digits-")
    with pytest.raises(DataError, match="several IDX sets"):
        load_idx(str(two))
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((3, 28, 28)))
    with pytest.raises(DataError, match="needs arrays 'x' and 'y'"):
        load_npz(str(bad))
