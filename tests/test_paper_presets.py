"""The papers' models and presets (issue 28, parts 3 and 4).

Every ``conf/paper/*.toml`` is a valid run config (through ``parse_run_config``, no
data needed: the official sets' shapes and class counts are known) whose model(s)
build at the data's shape on the ``meta`` device, with ``device = "auto"`` and a
header naming the files it needs. The models' weight counts at their papers' inputs
are the ones docs/models.md gives.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from common.config import ConfigError, parse_run_config
from common.models import build_model, count_params
from common.models.lora import add_lora, lora_parameters

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "conf" / "paper").glob("*.toml"))
#: What each dataset's data-dir must hold, as the presets' headers say.
LAYOUT = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "mnist": "MNIST/raw",
}

#: (model, input, classes) -> weights, as docs/models.md's table gives them.
COUNTS = {
    ("cnn", (3, 32, 32), 10): 121_182,
    ("cnn", (3, 32, 32), 100): 128_832,
    ("lenet5-hf", (3, 32, 32), 10): 64_102,
    ("lenet5", (3, 32, 32), 10): 83_126,
    ("lenet5", (1, 28, 28), 10): 61_706,
    ("vit-tiny-p4", (3, 32, 32), 10): 208_074,
    ("vit-tiny-p4", (3, 32, 32), 100): 213_924,
    ("vit-tiny", (1, 28, 28), 10): 205_066,
    ("resnet18", (3, 32, 32), 10): 11_173_962,
    ("cnn-bn", (3, 32, 32), 10): 11_666,
    ("mlp", (1, 28, 28), 10): 79_510,
    ("mlp-s", (3, 32, 32), 100): 101_636,
    ("bncnn", (3, 32, 32), 100): 18_084,
    ("lenet5", (3, 32, 32), 100): 90_776,
    ("mlp-l", (3, 32, 32), 100): 644_800,
}


def _meta(name: str, classes: int, shape: tuple[int, int, int]) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(name, classes, image_shape=shape)


def test_there_is_a_preset_for_each_papers_headline_setting():
    names = {p.stem for p in PRESETS}
    assert {
        "pfedhn-cifar10",
        "hyperfedzero-mnist-n10",
        "hyperfedzero-mnist-n50",
        "mh-pfedhn-cifar100",
        "hyperflora-lenet-cifar10",
        "hyperflora-vit-cifar10",
        "pfeddsh-cifar10",
    } <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_each_preset_is_valid_and_its_models_build_at_the_datas_shape(preset: Path):
    text = preset.read_text()
    raw = tomllib.loads(text)
    cfg = parse_run_config(raw)
    assert raw["device"] == "auto" and cfg.device == "auto"
    assert LAYOUT[cfg.dataset] in text, "the header names the files data-dir holds"
    shape, classes = cfg.image_shape, cfg.num_classes
    if cfg.method.startswith("mh-"):
        names = [n for n in str(cfg.mh_archs).split(",") if n]
    else:
        names = [cfg.model]
    for name in names:
        model = _meta(name, classes, shape)
        assert count_params(model) > 0
        if cfg.method == "hyperflora":
            add_lora(model, cfg.lora_targets, cfg.lora_rank, cfg.lora_alpha)
            assert lora_parameters(model)


def test_hyperfedzero_presets_hold_out_m_clients():
    n10 = parse_run_config(
        tomllib.loads((ROOT / "conf/paper/hyperfedzero-mnist-n10.toml").read_text())
    )
    n50 = parse_run_config(
        tomllib.loads((ROOT / "conf/paper/hyperfedzero-mnist-n50.toml").read_text())
    )
    assert (n10.participants_count, n10.num_clients - n10.participants_count) == (
        10,
        5,
    )
    assert n50.participants_count == 50 and n10.dirichlet_alpha == 1.0


def test_weight_counts_at_the_papers_inputs_are_the_documented_ones():
    docs = (ROOT / "docs" / "models.md").read_text()
    for (name, shape, classes), expected in COUNTS.items():
        assert count_params(_meta(name, classes, shape)) == expected, name
        assert f"{expected:,}" in docs, f"docs/models.md lacks {name}'s {expected:,}"


@pytest.mark.parametrize(
    ("model", "targets", "ctwc"),
    [("vit-tiny-p4", "blocks.*.attn.*,head", 2_122), ("lenet5-hf", "auto", 850)],
)
def test_lora_matches_the_papers_client_trainable_count(model, targets, ctwc):
    net = _meta(model, 10, (3, 32, 32))
    add_lora(net, targets, rank=1, alpha=1.0)
    assert sum(p.numel() for p in lora_parameters(net).values()) == ctwc


def test_resnet18_has_a_cifar_stem_and_bn_and_runs_on_32x32():
    model = build_model("resnet18", 10, seed=0, image_shape=(3, 32, 32))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    from common.models.bn import bn_layers, bn_stat_shapes

    assert len(bn_layers(model)) == 20  # 1 stem + 16 in blocks + 3 downsample
    assert bn_stat_shapes(model)["layer4.1.bn2.running_mean"] == (512,)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_pfeddsh_refuses_resnet18_and_says_why():
    raw = tomllib.loads((ROOT / "conf/paper/pfeddsh-cifar10.toml").read_text())
    with pytest.raises(ConfigError, match="chunked masked generator"):
        parse_run_config({**raw, "model": "resnet18"})


def test_the_benchmarks_sample_has_the_presets_shape_and_only_rounds_change(
    tmp_path: Path,
):
    from bench.paper_presets import bench_config, write_sample
    from common.data import load_pooled

    for dataset, shape, classes in (
        ("cifar100", (3, 32, 32), 100),
        ("mnist", (1, 28, 28), 10),
    ):
        folder, count = write_sample(dataset, tmp_path / dataset, 0.002)
        pooled = load_pooled(dataset, str(folder))
        assert pooled.image_shape == shape and len(pooled) == count
        assert int(pooled.labels.max()) < classes
    load_pooled.cache_clear()
    for preset in PRESETS:
        raw = tomllib.loads(preset.read_text())
        cfg = parse_run_config(bench_config(raw, tmp_path, 2, tmp_path, preset.stem))
        assert cfg.num_rounds == 2 and cfg.clients_per_round == raw["clients-per-round"]
        assert (cfg.model, cfg.method) == (raw.get("model", cfg.model), raw["method"])


def test_cnn_is_pfedhns_cnntarget_at_cifars_shape():
    from common.models import param_shapes

    shapes = {
        k: tuple(v) for k, v in param_shapes(_meta("cnn", 10, (3, 32, 32))).items()
    }
    assert (
        shapes
        == {  # the authors' CNNTarget(in_channels=3, n_kernels=16, out_dim=10)
            "conv1.weight": (16, 3, 5, 5),
            "conv1.bias": (16,),
            "conv2.weight": (32, 16, 5, 5),
            "conv2.bias": (32,),
            "fc1.weight": (120, 32 * 5 * 5),
            "fc1.bias": (120,),
            "fc2.weight": (84, 120),
            "fc2.bias": (84,),
            "fc3.weight": (10, 84),
            "fc3.bias": (10,),
        }
    )
