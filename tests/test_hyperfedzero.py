"""HyperFedZero: NoisyEmbed, the balancing penalty, the generated classifier, the
embedding extra, bad input, the in-process loop and offline personalisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict

from common.config import parse_run_config
from common.models import build_model
from common.models.hyperfedzero import (
    HyperFedZeroNet,
    NoisyEmbed,
    NoUnlabelledDataError,
    balancing_penalty,
)
from common.partition import split_participants
from server.direct_grid import run_in_process
from server.strategies.hyperfedzero import spread
from server.validation import InvalidReply, ReplyExtra, check_train_reply
from tests.conftest import small_config
from tests.test_validation import train_pair

HFZ = {"method": "hyperfedzero"}


# ---- NoisyEmbed ------------------------------------------------------------------
def test_noisy_embed_adds_noise_only_in_training():
    torch.manual_seed(0)
    layer, feats = NoisyEmbed(8, 4), torch.randn(6, 8)
    clean = torch.softmax(layer.f(feats), dim=1)
    layer.train()
    a = layer(feats, torch.Generator().manual_seed(1))
    b = layer(feats, torch.Generator().manual_seed(2))
    assert not torch.allclose(a, b) and not torch.allclose(a, clean)
    assert torch.allclose(a.sum(1), torch.ones(6))
    layer.eval()
    assert torch.equal(layer(feats), clean)
    assert torch.equal(layer(feats), layer(feats))


def test_noisy_embed_off_is_deterministic_in_training():
    layer, feats = NoisyEmbed(8, 4, enabled=False), torch.randn(6, 8)
    layer.train()
    assert torch.equal(layer(feats), torch.softmax(layer.f(feats), dim=1))


def test_noise_scale_is_learnable():
    layer = NoisyEmbed(8, 4)
    layer.train()
    layer(torch.randn(6, 8), torch.Generator().manual_seed(0))[:, 0].sum().backward()
    assert layer.noisy.weight.grad is not None
    assert float(layer.noisy.weight.grad.abs().sum()) > 0


# ---- balancing penalty -------------------------------------------------------------
def test_penalty_on_a_hand_computed_example():
    e = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    # ē = (0.75, 0.25); P·ē = (1.5, 0.5): mean 1, population variance 0.25
    # entropies: 0 (0·log 0 = 0) and ln 2; mean ln(2)/2
    assert float(balancing_penalty(e, 1.0, 0.0)) == pytest.approx(0.25)
    assert float(balancing_penalty(e, 0.0, 1.0)) == pytest.approx(math.log(2) / 2)
    assert float(balancing_penalty(e, 0.1, 0.3)) == pytest.approx(
        0.1 * 0.25 + 0.3 * math.log(2) / 2
    )
    assert float(balancing_penalty(e, 0.0, 0.0)) == 0.0
    uniform = torch.full((3, 4), 0.25)  # even use, maximal entropy
    assert float(balancing_penalty(uniform, 1.0, 0.0)) == pytest.approx(0.0)
    assert float(balancing_penalty(uniform, 0.0, 1.0)) == pytest.approx(math.log(4))


# ---- the generated classifier ------------------------------------------------------
@pytest.mark.parametrize(
    "backbone,feat,layer", [("mlp", 100, "net.3"), ("lenet5", 84, "fc3")]
)
@pytest.mark.parametrize("conditioning", ["generate", "input"])
def test_generated_classifier_shapes_and_plain_model(
    backbone, feat, layer, conditioning
):
    torch.manual_seed(0)
    net = HyperFedZeroNet(backbone, 10, embed_dim=16, conditioning=conditioning)
    assert (net.h is None) == (conditioning == "input")
    x = torch.randn(7, 1, 28, 28)
    e = net.client_embedding(x)
    assert e.shape == (16,) and float(e.sum()) == pytest.approx(1.0, abs=1e-5)
    theta = net.classifier_params(e)
    assert theta["weight"].shape == (10, feat) and theta["bias"].shape == (10,)
    logits, per_sample = net(x)
    assert logits.shape == (7, 10) and per_sample.shape == (7, 16)
    plain = net.personalised(e)
    reference = build_model(backbone, 10)
    assert {k: v.shape for k, v in plain.items()} == {
        k: v.shape for k, v in reference.named_parameters()
    }
    assert torch.equal(plain[f"{layer}.weight"], theta["weight"])
    net.eval()
    assert torch.allclose(net.personalised_model(e)(x), net(x, e)[0], atol=1e-5)


def test_generated_classifier_depends_on_the_embedding():
    torch.manual_seed(0)
    net = HyperFedZeroNet("mlp", 10)
    a = net.classifier_params(torch.softmax(torch.randn(16), 0))["weight"]
    b = net.classifier_params(torch.softmax(torch.randn(16), 0))["weight"]
    assert not torch.allclose(a, b)
    # the size rule: a chunk per class row of the weight, one more for the bias
    assert net.h is not None and net.h.num_chunks == math.ceil(1010 / 100)


def test_gradients_reach_g_f_and_h():
    torch.manual_seed(0)
    net = HyperFedZeroNet("mlp", 10)
    logits, per_sample = net(torch.randn(5, 1, 28, 28))
    loss = torch.nn.functional.cross_entropy(
        logits, torch.arange(5)
    ) + balancing_penalty(per_sample, 0.1, 0.1)
    loss.backward()
    for name in ("g.net.1.weight", "extractor.f.weight", "h.trunk.0.weight"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_noisy_embed_both_gives_the_noise_free_rows():
    torch.manual_seed(0)
    layer, feats = NoisyEmbed(8, 4), torch.randn(6, 8)
    clean = torch.softmax(layer.f(feats), dim=1)
    layer.train()
    noisy, free = layer.both(feats, torch.Generator().manual_seed(1))
    assert torch.equal(free, clean) and not torch.allclose(noisy, clean)
    layer.eval()
    assert all(torch.equal(t, clean) for t in layer.both(feats))


def _penalty_grads(clean: bool) -> tuple[float, float]:
    """|grad| of the penalty alone on f and on the noise scale, one local step."""
    torch.manual_seed(0)
    net = HyperFedZeroNet("mlp", 10)
    net.train()
    _, noisy, free = net.training_outputs(
        torch.randn(8, 1, 28, 28), torch.Generator().manual_seed(0)
    )
    balancing_penalty(free if clean else noisy, 0.0, 1.0).backward()
    grads = dict(net.named_parameters())
    noise_grad = grads["extractor.noisy.weight"].grad
    return (
        float(grads["extractor.f.weight"].grad.abs().sum()),
        0.0 if noise_grad is None else float(noise_grad.abs().sum()),
    )


def test_penalty_on_clean_rows_leaves_the_noise_scale_alone():
    """hfz-penalty-clean: the entropy term sharpens f, it cannot be met by growing
    NoisyEmbed's noise (on the noisy rows it reaches the noise scale)."""
    f_noisy, scale_noisy = _penalty_grads(clean=False)
    f_clean, scale_clean = _penalty_grads(clean=True)
    assert scale_noisy > 0 and scale_clean == 0
    assert f_noisy > 0 and f_clean > 0


def test_shifted_batches_draw_varying_mixes_of_held_classes():
    from client.handlers.hyperfedzero import ShiftedBatches

    labels = torch.tensor([0] * 50 + [3] * 10 + [7] * 5)
    batches = ShiftedBatches(labels, 0.3, torch.Generator().manual_seed(0))
    counts = [torch.bincount(labels[batches.draw(64)], minlength=8) for _ in range(20)]
    assert all(int(c.sum()) == 64 for c in counts)
    assert all(int(c[[1, 2, 4, 5, 6]].sum()) == 0 for c in counts)  # held classes only
    share_of_7 = torch.stack(counts)[:, 7].float() / 64
    # class 7 is 8 % of the data, but a shifted batch may be mostly class 7 or hold none
    assert float(share_of_7.max()) > 0.5 and float(share_of_7.min()) < 0.05
    # a large κ gives batches close to the even mix of the held classes
    even = ShiftedBatches(labels, 1e4, torch.Generator().manual_seed(0))
    share = torch.bincount(labels[even.draw(3000)], minlength=8)[[0, 3, 7]] / 3000
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.05)


def test_shift_and_clean_penalty_run_in_process(tmp_path):
    cfg = small_config(
        tmp_path,
        **HFZ,
        **{
            "num-rounds": 2,
            "eval-every": 2,
            "hfz-shift-batches": 0.3,
            "hfz-penalty-clean": "true",
        },
    )
    summary = run_in_process(cfg)
    assert summary is not None and summary["nonparticipant_acc"] > 0.2
    from bench.hyperfedzero import diagnose

    found = diagnose(tmp_path / "outputs" / "test")
    assert found["spread_class_mix"] > 0 and found["noise_scale"] > 0
    for key in ("own_e", "mean_e", "oracle_prior", "amplified_e_x3", "amplified_e_x10"):
        for group in ("all", "held_out"):
            assert 0 <= found[f"val_{key}_{group}"] <= 1


# ---- bad input ---------------------------------------------------------------------
def test_no_unlabelled_data_is_named():
    net = HyperFedZeroNet("mlp", 10)
    with pytest.raises(NoUnlabelledDataError, match="no unlabelled data"):
        net.client_embedding(torch.zeros(0, 1, 28, 28))


def test_embedding_extra_validated():
    declared = {"embedding": ReplyExtra((4,))}
    sent, reply = train_pair({"embedding": torch.full((4,), 0.25)})
    assert check_train_reply("c", reply, sent, extras=declared).extras[
        "embedding"
    ].shape == (4,)
    for extras, match in [
        ({"embedding": torch.tensor([0.5, float("nan"), 0.25, 0.25])}, "NaN or Inf"),
        ({"embedding": torch.full((5,), 0.2)}, "shape"),
        ({"other": torch.ones(4)}, "differ from the declared"),
        (None, "lacks the declared extras"),
    ]:
        sent, reply = train_pair(extras)
        with pytest.raises(InvalidReply, match=match):
            check_train_reply("c", reply, sent, extras=declared)


def test_spread_of_collapsed_and_spread_embeddings():
    collapsed = spread([torch.full((4,), 0.25)] * 3)
    assert collapsed["embedding-spread"] == pytest.approx(0.0, abs=1e-6)
    apart = spread([torch.eye(4)[i] for i in range(4)])
    assert apart["embedding-spread"] > 0.8 and apart["embedding-dims"] == pytest.approx(
        4.0
    )


def test_settings_parse_and_reject_unknown_backbone(tmp_path):
    cfg = parse_run_config(
        small_config(tmp_path, **HFZ, **{"hfz-noisy": "false", "hfz-alpha": 0.0})
    )
    assert cfg.hfz_noisy is False and cfg.hfz_alpha == 0.0 and cfg.hfz_embed_dim == 16
    with pytest.raises(ValueError, match="hyperfedzero generates"):
        parse_run_config(small_config(tmp_path, **HFZ, model="vit-tiny"))


# ---- the loop, in process ----------------------------------------------------------
def bad_embeddings(node: int, msg: Message, reply: Message) -> Message | None:
    """Node 1000 replies a NaN embedding, node 1001 one of the wrong size."""
    if (
        not msg.metadata.message_type.startswith("train")
        or node not in (1000, 1001)
        or reply.has_error()
    ):
        return reply
    e = np.full(16, np.nan, np.float32) if node == 1000 else np.ones(3, np.float32)
    content = RecordDict(
        {
            "delta": reply.content["delta"],
            "metrics": reply.content["metrics"],
            "extras": ArrayRecord(array_dict={"embedding": Array(e)}),
        }
    )
    return Message(content, reply_to=msg)


def test_zero_shot_run_in_process_with_bad_input(tmp_path, monkeypatch):
    """Bad embeddings are rejected and counted, a client without unlabelled data
    answers a named error, the run goes on; held-out clients never train, yet get
    zACC; offline personalisation reproduces a held-out client's model."""
    import client.handlers.hyperfedzero as handlers

    real_setup = handlers.setup

    def setup(context):  # partition 2 has lost its local data
        cfg, cid, pid, data = real_setup(context)
        if pid == 2:
            data = type(data)(
                data.x_train[:0],
                data.y_train[:0],
                data.x_val,
                data.y_val,
                data.x_test,
                data.y_test,
            )
        return cfg, cid, pid, data

    monkeypatch.setattr(handlers, "setup", setup)
    cfg = small_config(
        tmp_path,
        **HFZ,
        **{
            "num-rounds": 4,
            "eval-every": 2,
            "clients-per-round": 8,
            "round-timeout": 5.0,
        },
    )
    summary = run_in_process(cfg, fault_hook=bad_embeddings)
    out = tmp_path / "outputs" / "test"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    participants, held_out = split_participants(10, 0.2, 42)
    bad = {0, 1, 2} & set(participants)
    assert len(bad) >= 2
    assert sum(r["faults"]["invalid"] + r["faults"]["error"] for r in rows) >= 4 * len(
        bad
    )
    assert all(r["valid"] == len(participants) - len(bad) for r in rows)
    assert all("embedding-spread" in r and "embedding-dims" in r for r in rows)
    # the store holds exactly the participants whose replies were valid
    assert set(summary["embedding_store"]) == {
        str(p) for p in participants if p not in bad
    }
    assert not set(summary["embedding_store"]) & {str(p) for p in held_out}
    for key in (
        "participant_acc",
        "nonparticipant_acc",
        "global_acc",
        "nonparticipant_global_acc",
    ):
        assert summary[key] is not None and summary[key] > 0.3, (key, summary)
    assert (out / "embedding_map.png").exists()

    from common.partition import load_client_data
    from server.personalize import evaluate_on, personalize

    monkeypatch.setattr(handlers, "setup", real_setup)
    assert held_out == [5, 6]  # none of them is a broken client
    accs = []
    for pid in held_out:
        model = personalize(out, partition_id=pid, client_id=str(pid))
        assert model.personalization["embedding"] == "from unlabelled data"
        accs.append(
            evaluate_on(model, load_client_data(parse_run_config(cfg), pid))["test-acc"]
        )
    # offline, no server: the same classifiers the held-out clients made in the run
    assert float(np.mean(accs)) == pytest.approx(
        summary["nonparticipant_acc"], abs=1e-9
    )
    assert float(np.std(accs)) == pytest.approx(
        summary["nonparticipant_acc_std"], abs=1e-9
    )
    # and from the command line, in a fresh process (no server module imported yet)
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "personalize",
            str(out),
            "--partition-id",
            "5",
            "--out",
            str(tmp_path / "m.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "m.pt").exists()
