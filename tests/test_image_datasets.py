"""The papers' datasets from their official file formats (issue 28's foundation).

Small files in each official format are written into ``tmp_path`` (random pixels in
CIFAR's python pickle batches, IDX files in torchvision's MNIST / EMNIST folders, an
ImageFolder tree of tiny PNGs) and loaded through the same code path a user's files
take (``load_pooled``, the run config); each wrong layout fails with its named error.
A 2-round in-process run on a 3-channel 32×32 set checks that shapes reach the models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.sample_sets import cifar_folder, image_tree, mnist_folder, write_idx
from common.config import ConfigError, parse_run_config
from common.data import (
    DataError,
    DataFormatError,
    DatasetNotFoundError,
    load_npz,
    load_pooled,
)
from common.models import build_model, model_shape_problem
from tests.conftest import fresh_process_imports, small_config


@pytest.fixture(autouse=True)
def _fresh_loads():
    load_pooled.cache_clear()
    yield
    load_pooled.cache_clear()


# ---- each format through the user's code path -------------------------------------
@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_pickles_pooled_with_per_channel_statistics_of_the_training_files(
    tmp_path, hundred
):
    name = "cifar100" if hundred else "cifar10"
    root, images, labels = cifar_folder(tmp_path / name, hundred)
    pooled = load_pooled(name, str(root))
    assert pooled.image_shape == (3, 32, 32) and len(pooled) == len(labels)
    assert pooled.num_classes == (100 if hundred else 10)
    np.testing.assert_array_equal(pooled.images, images)  # CHW, as in the pickles
    np.testing.assert_array_equal(pooled.labels, labels)
    train = images[:200].astype(np.float64) / 255.0  # 5 × 40 training rows
    mean, std = train.mean(axis=(0, 2, 3)), train.std(axis=(0, 2, 3))
    np.testing.assert_allclose(pooled.mean, mean, atol=1e-6)
    np.testing.assert_allclose(pooled.std, std, atol=1e-6)
    x, y = pooled.rows(np.array([3, 0, 201]))
    assert x.shape == (3, 3, 32, 32) and y.tolist() == labels[[3, 0, 201]].tolist()
    want = (images[[3, 0, 201]] / 255.0 - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(x.numpy(), want, atol=1e-5)
    record = pooled.describe()
    assert record["image-shape"] == [3, 32, 32] and len(record["mean"]) == 3
    json.dumps(record)  # what config.json records
    cfg = parse_run_config({"dataset": name, "data-dir": str(root)})
    assert cfg.image_shape == (3, 32, 32) and cfg.num_classes == pooled.num_classes
    again = load_pooled.__wrapped__(name, str(root))  # from the .npy cache
    assert again.fingerprint == pooled.fingerprint and again.mean == pooled.mean
    assert again.source["cache"] and isinstance(again.mean, tuple)


def test_a_cached_set_loads_without_importing_torchvision_datasets(tmp_path):
    """A SuperNode starts a ClientApp process a message: once the set is decoded,
    loading it must not import ``torchvision.datasets`` (~2 s of CPU a process)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    from common.image_sets import expected_files

    for name, cls in (("cifar10", CIFAR10), ("cifar100", CIFAR100)):
        names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        want = [tmp_path / cls.base_folder / n for n in names]
        assert expected_files(name, tmp_path) == want, name
    root, _, _ = cifar_folder(tmp_path / "c10")
    load_pooled("cifar10", str(root))  # decodes into the cache
    code = (
        "from common.data import load_pooled\n"
        f"p = load_pooled('cifar10', {str(root)!r})\n"
        "assert p.source['cache'], p.source"
    )
    assert not fresh_process_imports(code, "torchvision.datasets")


def test_mnist_and_emnist_from_torchvisions_folders(tmp_path):
    root, images, labels = mnist_folder(tmp_path / "mnist")
    pooled = load_pooled("mnist", str(root))
    assert pooled.image_shape == (1, 28, 28) and pooled.num_classes == 10
    np.testing.assert_array_equal(pooled.images, images)
    np.testing.assert_array_equal(pooled.labels, labels)
    assert pooled.mean == round(float(images[:60].mean() / 255.0), 6)  # train only

    root, images, labels = mnist_folder(tmp_path / "emnist", "letters")
    letters = load_pooled("emnist-letters", str(root))
    assert letters.num_classes == 26
    np.testing.assert_array_equal(letters.labels, labels - 1)  # 1..26 -> 0..25
    np.testing.assert_array_equal(letters.images, images.transpose(0, 2, 1))  # upright

    root, images, labels = mnist_folder(tmp_path / "balanced", "balanced")
    balanced = load_pooled("emnist-balanced", str(root))
    assert balanced.num_classes == 47
    np.testing.assert_array_equal(balanced.labels, labels)
    x, _ = balanced.rows(np.arange(4))
    assert x.shape == (4, 1, 28, 28)


def test_image_folder_trees_and_tiny_imagenet(tmp_path):
    tree = image_tree(tmp_path / "tree", classes=3, per_class=4, size=8)
    pooled = load_pooled("folder", str(tree))
    assert pooled.image_shape == (3, 8, 8) and pooled.num_classes == 3
    assert sorted(np.bincount(pooled.labels).tolist()) == [4, 4, 4]
    first = np.asarray(Image.open(tree / "class0" / "0.png"))
    np.testing.assert_array_equal(pooled.images[0], first.transpose(2, 0, 1))
    assert pooled.source["files"][0]["images"] == 12  # the tree, not each file

    splits = tmp_path / "splits"
    image_tree(splits / "train", per_class=4)
    image_tree(splits / "test", per_class=2)
    both = load_pooled("folder", str(splits))
    assert len(both) == 18 and both.num_classes == 3
    train = both.images[:12].astype(np.float64) / 255.0
    np.testing.assert_allclose(both.mean, train.mean(axis=(0, 2, 3)), atol=1e-6)

    tiny = tmp_path / "tiny-imagenet-200"
    for wnid in ("n01443537", "n01629819"):
        image_tree(tiny / "train" / wnid / "images", classes=1, size=16, suffix=".JPEG")
    (tiny / "wnids.txt").write_text("n01443537\nn01629819\n")
    imagenet = load_pooled("tiny-imagenet", str(tiny))
    assert imagenet.image_shape == (3, 16, 16) and imagenet.num_classes == 2
    assert np.bincount(imagenet.labels).tolist() == [4, 4]


def test_npz_takes_channels_last_first_and_grey(tmp_path):
    rng = np.random.default_rng(3)
    hwc = rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
    y = rng.integers(0, 4, 30)
    np.savez(tmp_path / "hwc.npz", x=hwc, y=y)
    np.savez(tmp_path / "chw.npz", x=hwc.transpose(0, 3, 1, 2), y=y)
    np.savez(tmp_path / "grey.npz", x=hwc[..., 0], y=y)
    a, b = load_npz(str(tmp_path / "hwc.npz")), load_npz(str(tmp_path / "chw.npz"))
    assert a.image_shape == b.image_shape == (3, 16, 16)
    assert a.fingerprint.split(":")[1] == b.fingerprint.split(":")[1]
    grey = load_npz(str(tmp_path / "grey.npz"))
    assert grey.image_shape == (1, 16, 16) and isinstance(grey.mean, float)
    np.savez(tmp_path / "odd.npz", x=np.zeros((5, 3, 8, 3), np.uint8), y=y[:5])
    with pytest.raises(DataError, match="cannot tell the channel axis"):
        load_npz(str(tmp_path / "odd.npz"))


# ---- named errors ------------------------------------------------------------------
def test_wrong_or_missing_files_fail_with_named_errors(tmp_path):
    idx_only = tmp_path / "idx"
    idx_only.mkdir()
    write_idx(idx_only / "train-images-idx3-ubyte", np.zeros((2, 28, 28)))
    write_idx(idx_only / "train-labels-idx1-ubyte", np.zeros(2))
    with pytest.raises(DataFormatError, match="holds IDX files .*not cifar10's files"):
        load_pooled("cifar10", str(idx_only))
    with pytest.raises(DataFormatError, match="not tiny-imagenet's") as err:
        load_pooled("tiny-imagenet", str(idx_only))
    assert err.value.key == "data-dir"  # named like a config error

    root, _, _ = cifar_folder(tmp_path / "c10", per_batch=2)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing: .*data_batch_3.*download"):
        load_pooled("cifar10", str(root))
    with pytest.raises(DataFormatError, match="CIFAR-10 batches .*dataset='cifar10'"):
        load_pooled("mnist", str(root))
    with pytest.raises(DataFormatError, match="EMNIST files of splits letters"):
        load_pooled("emnist-balanced", str(mnist_folder(tmp_path / "e", "letters")[0]))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="holds no cifar100 files"):
        load_pooled("cifar100", str(empty))
    with pytest.raises(DatasetNotFoundError, match="needs data-dir"):
        load_pooled("emnist-letters", "")
    with pytest.raises(DatasetNotFoundError, match="holds no images"):
        load_pooled("folder", str(empty))

    mixed = image_tree(tmp_path / "mixed", size=8)
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(mixed / "class1" / "big.png")
    with pytest.raises(DataError, match="images differ in size"):
        load_pooled("folder", str(mixed))


def test_models_follow_the_shape_and_refuse_what_they_cannot_take(tmp_path):
    for name in ("mlp", "lenet5", "cnn", "vit-tiny", "cnn-bn", "mlp-s", "bncnn"):
        model = build_model(name, 100, seed=0, image_shape=(3, 32, 32))
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    # pFedHN's CIFAR target: 5×5 features after two conv-pools, as the authors'
    assert build_model("cnn", image_shape=(3, 32, 32)).fc1.in_features == 32 * 5 * 5
    assert build_model("mlp", image_shape=(3, 32, 32)).net[1].in_features == 3072
    assert model_shape_problem("vit-tiny", (3, 30, 30)) is not None
    assert model_shape_problem("cnn", (1, 14, 14)) is not None
    assert model_shape_problem("lenet5", (1, 14, 14)) is None

    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 40)
    np.savez(tmp_path / "s30.npz", x=rng.integers(0, 256, (40, 30, 30, 3)), y=y)
    with pytest.raises(ConfigError, match="'model': 'vit-tiny' cannot take 3×30×30"):
        parse_run_config(
            {
                "dataset": "npz",
                "data-dir": str(tmp_path / "s30.npz"),
                "model": "vit-tiny",
            }
        )
    np.savez(tmp_path / "s14.npz", x=rng.integers(0, 256, (40, 14, 14)), y=y)
    with pytest.raises(ConfigError, match="'mh-archs': 'cnn' cannot take 1×14×14"):
        parse_run_config(
            {
                "method": "mh-pfedhn",
                "dataset": "npz",
                "data-dir": str(tmp_path / "s14.npz"),
                "mh-archs": "mlp-s,cnn",
            }
        )


def test_class_counts_the_partition_cannot_split_are_config_errors(tmp_path):
    root, _, _ = cifar_folder(tmp_path / "c100", hundred=True, per_batch=4)
    base = {"dataset": "cifar100", "data-dir": str(root)}
    with pytest.raises(ConfigError, match="classes-per-client.*<= 100"):
        parse_run_config({**base, "classes-per-client": 101})
    with pytest.raises(ConfigError, match="divisible by 100"):
        parse_run_config({**base, "partitioner": "class-shares", "num-clients": 7})


def test_the_config_offers_every_dataset_the_loader_reads():
    from common import config, data

    assert config.DATASETS == data.DATASETS


def test_nothing_downloads_unless_asked(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(tv_utils, "download_url", no_network)
    empty = tmp_path / "none"
    empty.mkdir()
    for name in ("cifar10", "mnist", "emnist-letters"):
        with pytest.raises(DatasetNotFoundError, match="download=true"):
            load_pooled(name, str(empty))
    assert parse_run_config({"dataset": "cifar10", "download": True}).download


# ---- a run on colour images --------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "model"),
    [("pfedhn", "lenet5"), ("pfedhn", "cnn"), ("fedavg", "lenet5"), ("fedavg", "cnn")],
)
def test_two_rounds_on_32x32_colour_images(tmp_path, method, model):
    from server.direct_grid import run_in_process

    root, _, _ = cifar_folder(tmp_path / "cifar", per_batch=60)
    summary = run_in_process(
        small_config(
            tmp_path,
            method=method,
            model=model,
            dataset="cifar10",
            **{
                "data-dir": str(root),
                "num-clients": 4,
                "clients-per-round": 2,
                "num-rounds": 2,
                "eval-every": 1,
                "local-steps": 2,
                "batch-size": 16,
                "classes-per-client": 3,
                "embed-dim": 3,
            },
        )
    )
    assert summary is not None
    assert isinstance(summary["participant_acc"], float)
    assert 0.0 <= summary["participant_acc"] <= 1.0
    config = json.loads((tmp_path / "outputs" / "test" / "config.json").read_text())
    data = config["run"]["data"]
    assert data["image-shape"] == [3, 32, 32] and len(data["mean"]) == 3
    if method == "pfedhn" and model == "cnn":
        _personalise_offline(tmp_path)


def _personalise_offline(tmp_path: Path) -> None:
    """A new client's channels-last uint8 images get the run's per-channel
    normalisation; a model file round-trips; another size is a named error."""
    from server.personalize import (
        PersonalizeError,
        load_model,
        load_run,
        personalize,
        read_client_file,
        save_model,
    )

    run_dir = tmp_path / "outputs" / "test"
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "new.npz", x_train=x, y_train=rng.integers(0, 10, 20))
    run = load_run(run_dir)
    data, how = read_client_file(tmp_path / "new.npz", run)
    assert data.x_train.shape == (20, 3, 32, 32) and "mean [" in how
    mean = torch.tensor(run.info["data"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(run.info["data"]["std"]).view(1, 3, 1, 1)
    want = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(data.x_train, want)
    model = personalize(run_dir, tmp_path / "new.npz", rounds=1)
    path = save_model(model, tmp_path / "model.pt", run.cfg)
    assert load_model(path)(data.x_train[:2]).shape == (2, 10)
    np.savez(tmp_path / "small.npz", x_train=x[:, :28, :28], y_train=np.zeros(20, int))
    with pytest.raises(PersonalizeError, match="expected 3×32×32 images in x_train"):
        read_client_file(tmp_path / "small.npz", run)


def test_deepinversion_synthesises_the_datas_shape():
    from common.models.bn import bn_statistics, calibrate_bn
    from server.pfeddsh.deepinversion import InversionWeights, invert

    model = build_model("cnn-bn", 10, seed=0, image_shape=(3, 32, 32))
    calibrate_bn(
        model, torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    )
    params = {k: v.detach() for k, v in model.named_parameters()}
    images, _ = invert(
        model,
        params,
        bn_statistics(model),
        torch.tensor([0, 1, 2, 3]),
        (3, 32, 32),
        InversionWeights(steps=2, lr=0.1),
        torch.Generator().manual_seed(2),
    )
    assert images.shape == (4, 3, 32, 32) and torch.isfinite(images).all()


def test_a_server_without_the_data_learns_shape_and_norm_at_registration(tmp_path):
    from common.data import image_shape_of
    from server.datacheck import agree_on_data

    where = str(tmp_path / "not-here")
    cfg = parse_run_config({"dataset": "folder", "data-dir": where})
    info = {
        "data-fingerprint": "folder:abc",
        "data-norm": [255.0, 0.4, 0.5, 0.6, 0.2, 0.25, 0.3, 7.0],
        "data-shape": [3, 40, 40],
    }
    agreed = agree_on_data({"a": info, "b": dict(info)}, "", cfg)
    assert agreed["mean"] == [0.4, 0.5, 0.6] and agreed["std"] == [0.2, 0.25, 0.3]
    assert agreed["num-classes"] == 7 and agreed["image-shape"] == [3, 40, 40]
    assert image_shape_of("folder", where) == (3, 40, 40) and cfg.num_classes == 7
