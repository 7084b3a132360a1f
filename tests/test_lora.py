"""LoRA math: a fresh adapter changes nothing; merged weights compute the same."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.models import build_model, count_params
from common.models.lora import (
    LoRAConv2d,
    LoRALinear,
    add_lora,
    generated_tensors,
    head_name,
    lora_parameters,
    merge_lora,
    pack,
    select_targets,
    unpack,
)


def randomise_adapters(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model).values():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def test_linear_zero_init_equals_base_and_merge_matches():
    torch.manual_seed(0)
    base = nn.Linear(7, 5)
    lora = LoRALinear.from_layer(base, rank=2, alpha=4.0)
    x = torch.randn(3, 7)
    assert torch.count_nonzero(lora.lora_B) == 0
    torch.testing.assert_close(lora(x), base(x), rtol=0, atol=0)
    randomise_adapters(lora)
    assert torch.count_nonzero(lora.lora_B) > 0
    expected = base(x) + 2.0 * x @ lora.lora_A.T @ lora.lora_B.T  # (α/r) B A x
    torch.testing.assert_close(lora(x), expected)
    merged = lora.merged()
    torch.testing.assert_close(
        merged.weight, base.weight + 2.0 * lora.lora_B @ lora.lora_A
    )
    torch.testing.assert_close(merged(x), lora(x))
    assert torch.equal(lora.weight, base.weight)  # the base weights are untouched


def test_conv_zero_init_equals_base_and_merge_matches():
    torch.manual_seed(1)
    base = nn.Conv2d(3, 6, 5, padding=2, stride=2)
    lora = LoRAConv2d.from_layer(base, rank=1, alpha=1.0)
    x = torch.randn(2, 3, 12, 12)
    torch.testing.assert_close(lora(x), base(x), rtol=0, atol=0)
    randomise_adapters(lora)
    assert not torch.allclose(lora(x), base(x))
    torch.testing.assert_close(lora.merged()(x), lora(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lenet5", "vit-tiny"])
def test_adapted_models_start_as_base_and_merge_exactly(name):
    base = build_model(name, seed=3)
    model = build_model(name, seed=3)
    adapted = add_lora(model, "auto", rank=1, alpha=1.0)
    x = torch.randn(4, 1, 28, 28)
    base.eval(), model.eval()
    torch.testing.assert_close(model(x), base(x), rtol=0, atol=0)
    # base weights keep their names: a pre-trained state dict loads unchanged
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.endswith(("lora_A", "lora_B")) for k in missing)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lora_parameters(model))
    randomise_adapters(model)
    assert not torch.allclose(model(x), base(x))
    merged = merge_lora(model)
    assert not any(isinstance(m, LoRALinear | LoRAConv2d) for m in merged.modules())
    torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
    # merged model has the base architecture: it loads into a plain model
    plain = build_model(name)
    plain.load_state_dict(merged.state_dict())
    torch.testing.assert_close(plain(x), model(x), rtol=1e-5, atol=1e-5)
    assert head_name(base) in adapted


def test_lenet_rank1_ctwc_is_fc1_to_fc3():
    model = build_model("lenet5")
    assert add_lora(model, "auto", rank=1) == ["fc1", "fc2", "fc3"]
    # (400 + 120) + (120 + 84) + (84 + 10): the paper's LeNet CTWC (850 on CIFAR)
    assert sum(p.numel() for p in lora_parameters(model).values()) == 818
    assert count_params(model) == 818  # only adapters require gradients


def test_vit_targets_attention_mlp_and_head():
    model = build_model("vit-tiny")
    assert 200_000 < count_params(model) < 210_000
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    names = add_lora(model, "auto", rank=1)
    per_block = {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.fc1", "mlp.fc2"}
    assert set(names) == {f"blocks.{b}.{n}" for b in range(4) for n in per_block} | {
        "head"
    }
    assert head_name(model) == "head"
    only_attention = build_model("vit-tiny")
    add_lora(only_attention, "blocks.*.attn.*,head", rank=1)
    # the paper's ViT-CIFAR10 CTWC, 2.12E3: q, k, v, o in 4 blocks plus the head
    assert sum(p.numel() for p in lora_parameters(only_attention).values()) == 2122


def test_targets_patterns_and_errors():
    model = build_model("lenet5")
    assert select_targets(model, "conv*,fc3") == ["conv1", "conv2", "fc3"]
    with pytest.raises(ValueError, match="matches no Linear"):
        select_targets(model, "fc9")
    add_lora(model, "conv1", rank=2)
    assert isinstance(model.conv1, LoRAConv2d)
    assert model.conv1.lora_A.shape == (2, 1, 5, 5)
    with pytest.raises(ValueError, match="rank"):
        add_lora(build_model("lenet5"), "auto", rank=0)


def test_generated_tensors_and_packing_round_trip():
    model = build_model("lenet5")
    add_lora(model, "auto", rank=1)
    adapters = generated_tensors(model)
    assert list(adapters) == [f"fc{i}.lora_{m}" for i in (1, 2, 3) for m in "AB"]
    with_head = generated_tensors(model, generate_head=True)
    assert "fc3.lora_A" not in with_head and {"fc3.weight", "fc3.bias"} <= set(
        with_head
    )
    assert sum(v.numel() for v in with_head.values()) == 520 + 204 + 850
    flat = pack(with_head, list(with_head))
    assert flat.shape == (1574,)
    back = unpack(flat, {k: v.shape for k, v in with_head.items()})
    assert list(back) == list(with_head)
    for k, v in with_head.items():
        assert torch.equal(back[k], v)
    with pytest.raises(ValueError, match="packed vector"):
        unpack(flat[:-1], {k: v.shape for k, v in with_head.items()})
