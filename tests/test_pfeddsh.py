"""pFedDSH: masks freeze earlier batches bit for bit, DeepInversion matches BN
statistics, batches and joiners, and resume across a batch boundary. In process (the
real server loop and client handlers over a DirectGrid); the `flwr run` and
deployment cases are tests/e2e/test_pfeddsh.py and test_deploy_pfeddsh.py."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch.func import functional_call

import server.registry
from common.config import ConfigError, parse_run_config
from common.hypernets.masked import MaskBank, MaskedHyperNet
from common.methods.pfeddsh import batch_partitions
from common.models import build_model
from common.models.bn import bn_statistics, calibrate_bn
from server.direct_grid import build_runner
from server.pfeddsh.deepinversion import BNMatcher, InversionWeights, invert
from server.update import hypernet_step
from tests.conftest import small_config

SHAPES = {"w": torch.Size([4, 3]), "b": torch.Size([4])}


def dsh_config(tmp_path, **overrides) -> dict:
    """Two batches of 4 clients, 2 rounds each, small replay, no PA reference."""
    return small_config(
        tmp_path,
        **{
            "method": "pfeddsh",
            "model": "cnn-bn",
            "client-batches": 2,
            "num-rounds": 4,
            "eval-every": 2,
            "local-steps": 5,
            "clients-per-round": 3,
            "di-steps": 15,
            "di-images": 8,
            "replay-steps": 3,
            "pa-reference": False,
            **overrides,
        },
    )


@pytest.fixture(autouse=True)
def _no_settle_wait(monkeypatch):
    """Registration goes on with the nodes that are there without waiting 20 s."""
    monkeypatch.setattr(
        server.registry,
        "wait_for_nodes",
        functools.partial(server.registry.wait_for_nodes, settle=0.0),
    )


def _train(
    hnet: MaskedHyperNet,
    bank: MaskBank | None,
    batch: int,
    emb: torch.nn.Parameter,
    steps: int,
    seed: int,
) -> None:
    """A few shared-update steps of ``batch`` with random deltas, as a round runs
    them: momentum, weight decay through the hook, clipping."""
    gen = torch.Generator().manual_seed(seed)
    scores = bank.start(batch, gen) if bank else []
    opt = torch.optim.SGD(
        [{"params": list(hnet.parameters())}, {"params": [emb]}, {"params": scores}],
        lr=0.1,
        momentum=0.9,
        weight_decay=0.0 if bank else 1e-3,
    )
    masks = (lambda: bank.masks(batch)) if bank else (lambda: None)
    hook = (lambda: bank.freeze_grads(1e-3)) if bank else None
    for _ in range(steps):
        deltas = [
            {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}
            for _ in range(len(emb))
        ]
        hypernet_step(
            lambda e: hnet(e, masks()),
            emb,
            deltas,
            torch.full((len(emb),), 1 / len(emb)),
            opt,
            [*hnet.parameters(), emb, *scores],
            5.0,
            grad_hook=hook,
        )


@pytest.mark.parametrize("masks", [True, False])
def test_later_batch_leaves_earlier_generated_parameters_bit_for_bit(masks):
    torch.manual_seed(0)
    hnet = MaskedHyperNet(3, SHAPES, hidden=16, layers=2)
    bank = MaskBank(hnet, 0.5) if masks else None
    first = torch.nn.Parameter(torch.randn(2, 3))
    _train(hnet, bank, 0, first, 5, seed=1)
    if bank:
        report = bank.fix()
        assert report["weights-used"] == report["weights-new"] > 0
    frozen = first.detach().clone()
    before = {
        k: v.detach().clone()
        for k, v in hnet(frozen, bank.masks(0) if bank else None).items()
    }
    _train(hnet, bank, 1, torch.nn.Parameter(torch.randn(2, 3)), 5, seed=2)
    after = hnet(frozen, bank.masks(0) if bank else None)
    same = all(torch.equal(before[k], after[k]) for k in before)
    assert same is masks  # with masks nothing moved; a plain hypernetwork drifts
    if bank:
        report = bank.fix()
        assert 0 < report["weights-reused"] < report["weights-used"]


def bn_distance(model, params, stats, x):
    """Σ_l distance between the BN-input statistics of ``x`` and ``stats`` (the
    matcher DeepInversion's loss uses)."""
    matcher = BNMatcher(model, stats)
    try:
        model.eval()
        with torch.no_grad():
            functional_call(model, {**params, **stats}, (x,))
        return float(matcher.take())
    finally:
        matcher.close()


def test_deepinversion_moves_bn_statistics_towards_the_targets():
    model = build_model("cnn-bn", seed=0)
    real = (
        0.5 * torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(1))
        + 1.0
    )
    calibrate_bn(model, real)
    stats = bn_statistics(model)
    params = {k: v.detach() for k, v in model.named_parameters()}
    labels = torch.tensor([0, 1] * 8)
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn((16, 1, 28, 28), generator=torch.Generator().manual_seed(2))
    images, report = invert(
        model,
        params,
        stats,
        labels,
        (1, 28, 28),
        InversionWeights(steps=60, lr=0.1),
        gen,
    )
    start, end = (bn_distance(model, params, stats, x) for x in (noise, images))
    assert end < 0.3 * start, (start, end)
    assert report["bn-last"] < report["bn-first"]
    assert report["ce-last"] < report["ce-first"]


def test_config_checks_name_the_key():
    with pytest.raises(ConfigError, match="'model'.*BatchNorm"):
        parse_run_config({"method": "pfeddsh", "model": "lenet5"})
    with pytest.raises(ConfigError, match="'num-rounds'.*multiple of client-batches"):
        parse_run_config(
            {
                "method": "pfeddsh",
                "model": "cnn-bn",
                "num-rounds": 10,
                "client-batches": 3,
            }
        )
    parts = batch_partitions(10, 0.2, 3, 42)
    assert sorted(p for part in parts for p in part) == sorted(
        server.registry.split_participants(10, 0.2, 42)[0]
    )
    assert [len(p) for p in parts] == [3, 3, 2]


def test_two_batches_masks_without_replay_keep_batch_zero_exactly(tmp_path):
    trained: dict[int, set[int]] = {}

    def record(node, msg, reply):
        if msg.metadata.message_type.startswith("train"):
            trained.setdefault(int(msg.content["config"]["round"]), set()).add(
                node - 1000
            )
        return reply

    runner = build_runner(dsh_config(tmp_path, replay=False), fault_hook=record)
    summary = runner.run()
    parts = batch_partitions(10, 0.2, 2, 42)
    first, second = summary["batches"]
    assert [first["clients"], second["clients"]] == [[str(p) for p in q] for q in parts]
    for rnd, pids in trained.items():  # only the round's batch trains
        assert pids <= set(parts[(rnd - 1) // 2]), (rnd, pids)
    assert second["before"] == second["after"] and summary["ri"] == 0.0
    assert 0 < second["weights_reused"] < second["weights_used"]
    rows = [
        json.loads(x)
        for x in (tmp_path / "outputs" / "test" / "metrics.jsonl")
        .read_text()
        .splitlines()
    ]
    assert "batch-0-test-acc" in rows[1] and "batch-1-test-acc" not in rows[1]
    assert rows[3]["batch-1-test-acc"] == second["acc"]
    assert rows[3]["batch-0-test-acc"] == first["acc"]  # bit for bit: same number
    assert (tmp_path / "outputs" / "test" / "batch-accuracy.png").exists()
    assert runner.strategy.assigned == {
        c: b for b, r in enumerate(summary["batches"]) for c in r["clients"]
    }


def test_resume_across_a_batch_boundary_ends_like_an_uninterrupted_run(tmp_path):
    whole = build_runner(dsh_config(tmp_path, **{"run-name": "whole"}))
    expected = whole.run()
    stopped = build_runner(
        dsh_config(tmp_path, **{"run-name": "parts", "stop-after-round": 2})
    )
    assert stopped.run() is None
    resumed = build_runner(
        dsh_config(tmp_path, **{"run-name": "parts", "resume": True})
    )
    got = resumed.run()
    for key in (
        "ri",
        "participant_acc",
        "nonparticipant_acc",
        "final_acc",
        "final_batch_acc",
    ):
        assert got[key] == expected[key], key
    assert (
        got["batches"][1]["replay"]["accepted"]
        == expected["batches"][1]["replay"]["accepted"]
    )
    a, b = whole.strategy.hnet.state_dict(), resumed.strategy.hnet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "outputs" / "parts" / "synthetic-batch-1.png").exists()


def test_client_appearing_mid_batch_joins_the_next_batch(tmp_path):
    """A batch-0 client whose node connects only after round 1 (batch 0 has started)
    is admitted into batch 1 and trains from round 3."""
    from client.app import app as client_app
    from server.direct_grid import DirectGrid
    from server.loop import Runner
    from server.outputs import RunOutputs
    from server.registry import register_clients
    from server.strategies.pfeddsh import PFedDSH

    config = dsh_config(
        tmp_path,
        **{"num-clients": 6, "holdout": 0.0, "replay": False, "clients-per-round": 4},
    )
    late = batch_partitions(6, 0.0, 2, 42)[0][0]
    cfg = parse_run_config(config)
    trained: dict[int, set[int]] = {}

    class Late(DirectGrid):
        connected = False

        def get_node_ids(self):
            return [n for n in self.contexts if n != 1000 + late or self.connected]

    def hook(node, msg, reply):
        if msg.metadata.message_type.startswith("train"):
            rnd = int(msg.content["config"]["round"])
            trained.setdefault(rnd, set()).add(node - 1000)
            grid.connected = grid.connected or rnd == 1
        return reply

    grid = Late(client_app, config, cfg.num_clients, hook)
    registry = register_clients(
        grid, cfg, cfg.round_timeout, PFedDSH.registration_fields
    )
    strategy = PFedDSH(cfg, registry, torch.device("cpu"))
    runner = Runner(
        grid, cfg, registry, strategy, RunOutputs(cfg.output_dir, cfg.resolved_run_name)
    )
    summary = runner.run()
    assert strategy.assigned[str(late)] == 1
    assert str(late) in summary["batches"][1]["clients"]
    assert late not in trained[1] | trained[2]
    assert late in trained[3] | trained[4]
    assert runner.faults["joined"] == 1
