"""pFedDSH: neuron masks freeze earlier batches bit for bit, the sparsity penalty
lowers the neurons a batch uses, the client reports its trained model's BN
statistics, DeepInversion matches BN statistics, config checks, batches and joiners,
and resume across a batch boundary. In process (the real server loop and client
handlers over a DirectGrid); the `flwr run` and deployment cases are
tests/e2e/test_pfeddsh.py and test_deploy_pfeddsh.py."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from torch.func import functional_call

import server.registry
from common.config import ConfigError, parse_run_config
from common.methods.pfeddsh import batch_partitions
from common.models import build_model
from common.models.bn import bn_statistics, calibrate_bn
from common.partition import load_client_data
from common.protocol import DSH, routed
from common.records import from_record, to_record
from server.direct_grid import DirectGrid, build_runner
from server.pfeddsh.deepinversion import BNMatcher, InversionWeights, invert
from server.pfeddsh.masks import NeuronHyperNet, NeuronMasks
from server.update import hypernet_step
from server.validation import extras_of
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
    hnet: NeuronHyperNet,
    bank: NeuronMasks | None,
    batch: int,
    emb: torch.nn.Parameter,
    steps: int,
    seed: int,
    targets: list[dict[str, torch.Tensor]] | None = None,
) -> None:
    """A few shared-update steps of ``batch`` as a round runs them (momentum,
    weight decay and the sparsity penalty through the hook, clipping), with random
    deltas, or the deltas towards fixed ``targets`` (one per client)."""
    gen = torch.Generator().manual_seed(seed)
    if bank:
        bank.start(batch, gen)
    opt = torch.optim.SGD(
        [{"params": list(hnet.parameters())}, {"params": [emb]}],
        lr=0.1,
        momentum=0.9,
        weight_decay=0.0 if bank else 1e-3,
    )
    masks = (lambda: bank.masks(batch)) if bank else (lambda: None)
    hook = (lambda: bank.grad_hook(1e-3)) if bank else None
    for _ in range(steps):
        if targets is None:
            deltas = [
                {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}
                for _ in range(len(emb))
            ]
        else:
            with torch.no_grad():
                now = hnet(emb, masks())
            deltas = [{k: t[k] - now[k][i] for k in t} for i, t in enumerate(targets)]
        hypernet_step(
            lambda e: hnet(e, masks()),
            emb,
            deltas,
            torch.full((len(emb),), 1 / len(emb)),
            opt,
            [*hnet.parameters(), emb],
            5.0,
            grad_hook=hook,
        )


@pytest.mark.parametrize("masks", [True, False])
def test_later_batch_leaves_earlier_generated_parameters_bit_for_bit(masks):
    """Without replay, batch 0's generated models after batch 1 trained (reusing
    some of its neurons, claiming others) are bit for bit those before; a plain
    hypernetwork drifts."""
    torch.manual_seed(0)
    hnet = NeuronHyperNet(3, SHAPES, hidden=16, layers=2)
    bank = NeuronMasks(hnet, penalty=1.0, init_off=0.5, lr=0.05) if masks else None
    first = torch.nn.Parameter(torch.randn(2, 3))
    _train(hnet, bank, 0, first, 5, seed=1)
    if bank:
        report = bank.fix()
        assert report["neurons-used"] == report["neurons-new"] > 0
        assert report["neurons-free"] == 32 - report["neurons-used"] > 0
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
        assert 0 < report["neurons-reused"] < report["neurons-used"]
        assert 0 < report["weights-reused"] < report["weights-used"]


def test_sparsity_penalty_lowers_the_neurons_a_batch_uses():
    """The same tiny batch (clients pulling towards fixed targets) with and without
    sparse mask regularisation: the penalty leaves it fewer neurons on."""

    def used(penalty: float) -> int:
        torch.manual_seed(0)
        hnet = NeuronHyperNet(3, SHAPES, hidden=16, layers=2)
        bank = NeuronMasks(hnet, penalty=penalty, init_off=0.0, lr=0.2)
        gen = torch.Generator().manual_seed(3)
        targets = [
            {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}
            for _ in range(3)
        ]
        emb = torch.nn.Parameter(torch.randn(3, 3, generator=gen))
        _train(hnet, bank, 0, emb, 30, seed=1, targets=targets)
        return bank.fix()["neurons-used"]

    plain, sparse = used(0.0), used(2.0)
    assert sparse < 0.75 * plain, (plain, sparse)


def _used_after(penalty: float, budget: float, steps: int) -> int:
    """Neurons a tiny batch (clients pulling towards fixed targets) keeps on after
    ``steps`` rounds with this penalty and budget."""
    torch.manual_seed(0)
    hnet = NeuronHyperNet(3, SHAPES, hidden=16, layers=2)
    bank = NeuronMasks(hnet, penalty=penalty, budget=budget, init_off=0.0, lr=0.2)
    gen = torch.Generator().manual_seed(3)
    targets = [
        {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()} for _ in range(3)
    ]
    emb = torch.nn.Parameter(torch.randn(3, 3, generator=gen))
    _train(hnet, bank, 0, emb, steps, seed=1, targets=targets)
    return bank.fix()["neurons-used"]


def test_mask_budget_stops_the_penalty_from_emptying_a_mask():
    """The penalty alone empties a mask as the batch goes on; with a budget of ½ it
    spares each layer's top half of scores (2 × 16 units: at most 16 on, and more
    than a quarter kept), and the longer batch keeps about as many."""
    assert _used_after(2.0, 0.0, 60) <= 2
    for steps in (30, 100):
        assert 8 <= _used_after(2.0, 0.5, steps) <= 16, steps


def _new_units_kept(scope: str) -> int:
    """Units a second batch claims new when its reused units score highest and the
    penalty pushes every unit the budget (¼ of each layer) does not spare."""
    hnet = NeuronHyperNet(2, {"w": torch.Size([3])}, hidden=8, layers=2)
    bank = NeuronMasks(hnet, penalty=5.0, budget=0.25, budget_scope=scope, lr=0.2)
    bank.start(0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for s in bank.scores:  # batch 0 uses units 0-3 of each layer
            s.copy_(torch.tensor([1.0] * 4 + [-1.0] * 4))
    bank.fix()
    bank.start(1, torch.Generator().manual_seed(1))
    with torch.no_grad():
        for s in bank.scores:  # reused units score above the free ones
            s.copy_(torch.tensor([2.0] * 4 + [1.0] * 4))
    for step in range(100):
        for s in bank.scores:  # a task gradient that changes sign every round
            s.grad = torch.full_like(s, 0.01 if step % 2 else -0.01)
        bank.step_scores()
    return bank.fix()["neurons-new"]


def test_budget_scope_new_lets_a_later_batch_claim_as_many_new_units():
    """With the budget over every unit ('all') a later batch whose reused units
    score highest keeps those and claims nothing new; counted apart ('new') it
    keeps its top ¼ of the free units as well (2 a layer), as a fresh batch would."""
    assert _new_units_kept("all") == 0
    assert _new_units_kept("new") == 4


def test_capacity_report_counts_reuse_and_free_neurons():
    """Fixed masks by hand: used, reused, new and free neurons, and the weights a
    mask reads (what it freezes) and only it reads (what replay may move)."""
    hnet = NeuronHyperNet(2, {"w": torch.Size([3])}, hidden=4, layers=2)
    bank = NeuronMasks(hnet)
    bank.start(0, torch.Generator().manual_seed(0))
    on = [torch.tensor([1.0, 1, 0, 0]), torch.tensor([1.0, 0, 0, 0])]
    with torch.no_grad():
        for s, m in zip(bank.scores, on, strict=True):
            s.copy_(m * 2 - 1)
    first = bank.fix()
    assert (first["neurons-used"], first["neurons-free"]) == (3, 5)
    bank.start(1, torch.Generator().manual_seed(1))
    on = [torch.tensor([0.0, 1, 1, 0]), torch.tensor([1.0, 1, 0, 0])]
    with torch.no_grad():
        for s, m in zip(bank.scores, on, strict=True):
            s.copy_(m * 2 - 1)
    frozen = bank.frozen()
    # batch 0 reads W_1 rows 0-1 (every input), W_2[0, 0:2], head column 0
    assert int(frozen["trunk.0.weight"].sum()) == 4
    assert frozen["trunk.1.weight"].nonzero().tolist() == [[0, 0], [0, 1]]
    assert (
        frozen["heads.w.weight"][:, 0].all()
        and not frozen["heads.w.weight"][:, 1:].any()
    )
    second = bank.fix()
    assert (second["neurons-used"], second["neurons-reused"]) == (4, 2)
    assert (second["neurons-new"], second["neurons-free"]) == (2, 3)
    only_first = bank.exclusive(0)
    assert (
        only_first["trunk.0.weight"][0].all()
        and not only_first["trunk.0.weight"][1].any()
    )
    assert not only_first["heads.w.weight"].any()  # head column 0: batch 1 reads it too


def test_client_reports_bn_statistics_of_the_model_it_trained(tmp_path):
    """The train reply's extras are the BN statistics of received + Δ (the trained
    model) on the client's own training data, not those of the received model."""
    config = dsh_config(tmp_path)
    cfg = parse_run_config(config)
    from client.app import app as client_app

    grid = DirectGrid(client_app, config, cfg.num_clients)
    model = build_model("cnn-bn", seed=0)
    received = {k: v.detach().clone() for k, v in model.named_parameters()}
    msg = Message(
        RecordDict(
            {
                "params": to_record(received),
                "config": ConfigRecord({"round": 1, "method": "pfeddsh"}),
            }
        ),
        dst_node_id=1000,
        message_type=routed("train", DSH),
    )
    (reply,) = grid.pull_messages(grid.push_messages([msg]))
    stats = extras_of(reply)
    delta = from_record(reply.content.array_records["delta"])
    data = load_client_data(cfg, 0)

    def stats_of(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        net = build_model("cnn-bn", seed=0)
        net.load_state_dict(params, strict=False)
        calibrate_bn(net, data.x_train)
        return bn_statistics(net)

    trained = stats_of({k: received[k] + delta[k] for k in received})
    before = stats_of(received)
    assert set(stats) == set(trained)
    for k in stats:
        assert torch.allclose(stats[k], trained[k], atol=1e-5), k
    assert any(not torch.allclose(stats[k], before[k], atol=1e-3) for k in stats)


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
    base = {"method": "pfeddsh", "model": "cnn-bn"}
    for key, value, why in (
        ("mask-penalty", -0.5, "must be >= 0"),
        ("mask-budget", 1.0, r"must be in \[0, 1\)"),
        ("mask-reuse-cost", 1.5, r"must be in \[0, 1\]"),
        ("mask-sparsity", 1.0, r"must be in \[0, 1\)"),
        ("mask-lr", 0.0, "must be > 0"),
        ("replay-accept", "sometimes", "always"),
        ("batch-learner", "fedprox", "hypernetwork"),
    ):
        with pytest.raises(ConfigError, match=f"'{key}'.*{why}"):
            parse_run_config({**base, key: value})
    with pytest.raises(ConfigError, match="'masks'.*batch-learner"):
        parse_run_config({**base, "batch-learner": "fedavg"})
    with pytest.raises(ConfigError, match="'replay'.*batch-learner"):
        parse_run_config({**base, "batch-learner": "fedavg", "masks": False})
    parse_run_config(
        {**base, "batch-learner": "fedavg", "masks": False, "replay": False}
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
    assert summary["ri_val"] == 0.0  # validation too: batch 0 did not move
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


def test_a_settled_mask_does_not_move():
    """``mask-settle``: in a batch's last rounds the scores take no step (neither the
    task gradient nor the penalty), so the weights train under a fixed mask."""
    hnet = NeuronHyperNet(3, SHAPES, hidden=16, layers=2)
    bank = NeuronMasks(hnet, penalty=1.0, budget=0.5, init_off=0.5, lr=0.2)
    scores = bank.start(0, torch.Generator().manual_seed(0))
    before = [s.detach().clone() for s in scores]
    gen = torch.Generator().manual_seed(1)
    for learning in (False, True):
        bank.learning = learning
        for s in scores:
            s.grad = torch.randn(s.shape, generator=gen)
        bank.step_scores()
        same = all(torch.equal(a, s) for a, s in zip(before, scores, strict=True))
        assert same is not learning
