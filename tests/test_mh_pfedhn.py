"""MH-pFedHN and MH-pFedHNGD in process: zoo, groups, wire, bad input, GD round."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict

from common.config import parse_run_config
from common.hypernets.multihead import MultiHeadHyperNet
from common.methods.mh_pfedhn import arch_for, group_of
from common.models import build_model, count_params
from common.models.zoo import ZOO, load_flat, to_flat
from server.direct_grid import build_runner, run_in_process
from server.validation import ClientUpdate
from tests.conftest import small_config


def mh_config(tmp_path, **overrides):
    base = {
        "method": "mh-pfedhn",
        "server-optimizer": "adam",
        "server-lr": 1e-3,
        "mh-novel-rounds": 2,
        "num-rounds": 4,
        "eval-every": 2,
        "mh-chunk-size": 1024,
    }
    return small_config(tmp_path, **{**base, **overrides})


@pytest.mark.parametrize("name", sorted(ZOO))
def test_flat_round_trip_for_every_zoo_model(name):
    model = build_model(name, 10, seed=1)
    flat = to_flat(model)
    assert flat.shape == (count_params(model),)
    other = load_flat(build_model(name, 10, seed=2), flat)
    for (k, a), (_, b) in zip(
        model.named_parameters(), other.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), k
    assert torch.equal(to_flat(other), flat)
    with torch.no_grad():  # the loaded model owns its values: θ is not changed
        next(other.parameters()).add_(1.0)
    assert torch.equal(flat, to_flat(model))
    out = other(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)
    with pytest.raises(ValueError):
        load_flat(build_model(name, 10), flat[:-1])


def test_zoo_sizes_differ_clearly():
    """The first hetero preset's architectures: one per size group."""
    sizes = sorted(
        count_params(build_model(n, 10))
        for n in ("bncnn", "mlp-s", "lenet5", "cnn", "mlp-l")
    )
    assert all(b > 1.3 * a for a, b in zip(sizes, sizes[1:], strict=False))


def test_shared_zoo_puts_different_architectures_in_one_size_group():
    """Issue 27: the shared preset's size groups each hold two structurally
    different architectures (a CNN with an MLP, two CNNs of different depth); every
    zoo K is distinct, so mh-group-rule=exact is a head per architecture."""
    import tomllib
    from pathlib import Path

    raw = tomllib.loads(
        (Path(__file__).parents[1] / "conf/mh-pfedhn-shared-fmnist.toml").read_text()
    )
    k = {n: count_params(build_model(n, 10)) for n in ZOO}
    assert len(set(k.values())) == len(ZOO)
    groups: dict[str, list[str]] = {}
    for name in raw["mh-archs"].split(","):
        groups.setdefault(group_of(k[name], "log2", "", 10**6)[0], []).append(name)
    assert groups == {"2^15": ["lenet5", "cnn3"], "2^16": ["cnn", "mlp-m"]}
    convs = {
        n: sum(isinstance(m, torch.nn.Conv2d) for m in build_model(n, 10).modules())
        for n in ("lenet5", "cnn3", "cnn", "mlp-m")
    }
    assert convs == {"lenet5": 2, "cnn3": 3, "cnn": 2, "mlp-m": 0}
    unseen = group_of(k[raw["mh-unseen-archs"]], "log2", "", 10**6)[0]
    assert unseen not in groups


def test_two_architectures_of_one_group_get_slices_of_one_heads_output(tmp_path):
    """lenet5 and cnn3 clients share the 2^15 head: with one embedding the shorter
    model's θ is the longer's prefix (one head output, cut to each K); a delta from
    either moves that head, never the other group's; the summary's groups list
    their members by K only. With mh-group-rule=exact each has a head of its own."""
    cfg = mh_config(
        tmp_path,
        **{"mh-archs": "lenet5,cnn3,cnn,mlp-m", "mh-unseen-archs": "mlp-xl"},
    )
    strategy = build_runner(cfg).strategy
    by_k = {strategy.k[c]: c for c in strategy.participants}
    lenet, cnn3 = by_k[61706], by_k[64134]
    assert strategy.group[lenet] == strategy.group[cnn3] == "2^15"
    assert strategy.group[by_k[85822]] == strategy.group[by_k[86096]] == "2^16"
    assert strategy.group_members() == {
        "2^15": {"61706": 2, "64134": 2},
        "2^16": {"85822": 2, "86096": 2},
    }
    v = strategy.embeddings[[0]].detach()
    with torch.no_grad():
        short, long = strategy.hnet.generate(
            torch.cat([v, v]), ["2^15", "2^15"], [61706, 64134]
        )
        whole = strategy.hnet.head("2^15")(strategy.hnet.trunk(v), 64134)[0]
    assert torch.equal(short, long[:61706])  # one output, cut to each K
    assert torch.allclose(long, whole, atol=1e-6)  # that of the shared head
    own = strategy.hnet.head("2^15")
    other = strategy.hnet.head("2^16")
    for cid in (lenet, cnn3):
        mine = [p.detach().clone() for p in own.parameters()]
        theirs = [p.detach().clone() for p in other.parameters()]
        delta = torch.full((strategy.k[cid],), 0.01)
        strategy.apply_updates(1, [ClientUpdate(cid, {"theta": delta}, 10, {})])
        assert not all(
            torch.equal(a, b) for a, b in zip(mine, own.parameters(), strict=True)
        )
        assert all(
            torch.equal(a, b) for a, b in zip(theirs, other.parameters(), strict=True)
        )
    apart = build_runner(
        mh_config(
            tmp_path / "exact",
            **{
                "mh-archs": "lenet5,cnn3,cnn,mlp-m",
                "mh-unseen-archs": "mlp-xl",
                "mh-group-rule": "exact",
            },
        )
    ).strategy
    assert apart.group[lenet] != apart.group[cnn3]
    assert len({apart.group[c] for c in apart.participants}) == 4


def test_group_assignment_rules():
    assert group_of(6186, "log2", "", 10**6) == ("2^12", 8191)
    assert group_of(8191, "log2", "", 10**6)[0] == group_of(4096, "log2", "", 10**6)[0]
    assert group_of(8192, "log2", "", 10**6)[0] != group_of(8191, "log2", "", 10**6)[0]
    assert group_of(10**6 + 1, "log2", "", 10**6) is None
    assert group_of(0, "exact", "", 10**6) is None
    assert group_of(500, "exact", "", 10**6) == ("k500", 500)
    assert group_of(50, "bounds", "10,100,1000", 10**6) == ("b10-100", 99)
    assert group_of(100, "bounds", "10,100,1000", 10**6) == ("b100-1000", 999)
    assert group_of(5, "bounds", "10,100,1000", 10**6) is None
    assert group_of(1000, "bounds", "10,100,1000", 10**6) is None


def test_architecture_rule_and_node_config(tmp_path):
    cfg = parse_run_config(mh_config(tmp_path, **{"num-clients": 10}))
    archs = [arch_for(cfg, p) for p in range(10)]
    assert set(archs) == {"mlp-s", "bncnn", "lenet5", "cnn", "mlp-l"}
    assert arch_for(cfg, 3, {"arch": "cnn"}) == "cnn"
    seeded = parse_run_config(mh_config(tmp_path, **{"mh-arch-rule": "seeded"}))
    assert [arch_for(seeded, p) for p in range(10)] == [
        arch_for(seeded, p) for p in range(10)
    ]
    with pytest.raises(ValueError):
        arch_for(cfg, 0, {"arch": "resnet-1000"})


def test_heads_shared_by_group_and_output_cut_to_k():
    hnet = MultiHeadHyperNet(8, 16, 1, 100, 4, 0.05)
    hnet.add_head("a", 350)
    hnet.add_head("b", 1000)
    out = hnet.generate(torch.randn(3, 8), ["a", "b", "a"], [350, 999, 201])
    assert [t.shape[0] for t in out] == [350, 999, 201]
    assert len(hnet.heads) == 2
    sizes = {g: sum(p.numel() for p in hnet.head(g).parameters()) for g in "ab"}
    assert sizes["b"] > sizes["a"]


def wire_recorder(seen: list):
    def hook(node: int, msg: Message, reply: Message | None) -> Message | None:
        seen.append((msg, reply))
        return reply

    return hook


def strings_of(message: Message) -> list[str]:
    out = []
    for record in message.content.config_records.values():
        out += [f"{k}={v}" for k, v in record.items()]
    for record in message.content.metric_records.values():
        out += list(record.keys())
    return out


def test_nothing_about_architectures_on_the_wire(tmp_path):
    seen: list = []
    summary = run_in_process(
        mh_config(tmp_path, **{"num-rounds": 2}), fault_hook=wire_recorder(seen)
    )
    assert summary is not None
    shapes = {
        tuple(p.shape)
        for n in ZOO
        for p in build_model(n, 10).parameters()
        if p.dim() > 1
    }
    names = set(ZOO) | {
        k for n in ZOO for k, _ in build_model(n, 10).named_parameters()
    }
    kinds = set()
    for msg, reply in seen:
        kinds.add(msg.metadata.message_type)
        for m in (msg, reply):
            if m is None or m.has_error():
                continue
            text = " ".join(strings_of(m))
            assert not any(n in text for n in names if len(n) > 2), text
            for record in m.content.array_records.values():
                assert set(record.keys()) == {"theta"}
                for arr in record.values():
                    assert len(arr.shape) == 1 and tuple(arr.shape) not in shapes
        if msg.metadata.message_type == "query":
            info = dict(reply.content.config_records["info"])
            assert "mh-param-count" in info and "param-count" not in info
            assert not any(isinstance(v, str) and v in ZOO for v in info.values())
    assert {"query", "train.mh", "evaluate.mh"} <= kinds


def truncate(nodes: tuple[int, ...]):
    def hook(node: int, msg: Message, reply: Message | None) -> Message | None:
        if (
            reply is None
            or not msg.metadata.message_type.startswith("train")
            or node not in nodes
        ):
            return reply
        theta = reply.content["delta"]["theta"].numpy()[:-1].copy()
        return Message(
            RecordDict(
                {
                    "delta": ArrayRecord(array_dict={"theta": Array(theta)}),
                    "metrics": reply.content["metrics"],
                }
            ),
            reply_to=msg,
        )

    return hook


def test_wrong_length_replies_and_unaccepted_counts(tmp_path):
    cfg = mh_config(
        tmp_path,
        **{
            "num-rounds": 2,
            "clients-per-round": 8,
            "mh-archs": "mlp-s,lenet5,mlp-l",
            "mh-max-params": 100_000,
            "mh-novel-rounds": 1,
        },
    )
    summary = run_in_process(cfg, fault_hook=truncate((1000, 1001)))
    assert summary["faults"]["invalid"] >= 2
    assert summary["mh_faults"]["mh-unaccepted-param-count"] >= 1
    assert 178110 not in summary["mh_param_counts"]
    rows = [
        json.loads(x)
        for x in open(tmp_path / "outputs" / "test" / "metrics.jsonl", encoding="utf-8")
    ]
    assert all(r["valid"] < r["sampled"] for r in rows)


def test_wrong_length_delta_does_not_move_the_hypernetwork(tmp_path):
    runner = build_runner(mh_config(tmp_path, **{"num-rounds": 1}))
    strategy = runner.strategy
    cid = strategy.participants[0]
    before = [p.detach().clone() for p in strategy.hnet.parameters()]
    emb = strategy.embeddings.detach().clone()
    bad = ClientUpdate(cid, {"theta": torch.zeros(strategy.k[cid] + 3)}, 10, {})
    assert strategy.apply_updates(1, [bad]) == {}
    assert strategy.counts["mh-wrong-length"] == 1
    assert all(
        torch.equal(a, b)
        for a, b in zip(before, strategy.hnet.parameters(), strict=True)
    )
    assert torch.equal(emb, strategy.embeddings)
    good = ClientUpdate(cid, {"theta": torch.ones(strategy.k[cid])}, 10, {})
    strategy.apply_updates(1, [good])
    assert not torch.equal(emb, strategy.embeddings)


def test_gd_round_has_two_phases_and_new_clients_are_reported(tmp_path):
    seen: list = []
    summary = run_in_process(
        mh_config(
            tmp_path,
            **{"method": "mh-pfedhngd", "num-rounds": 2, "mh-global-arch": "mlp-s"},
        ),
        fault_hook=wire_recorder(seen),
    )
    phases = [
        str(m.content["config"]["phase"])
        for m, _ in seen
        if m.metadata.message_type == "train.mh"
    ]
    assert phases[:8] == ["global"] * 4 + ["personal"] * 4
    teacher = [
        m
        for m, _ in seen
        if m.metadata.message_type == "train.mh"
        and "teacher" in m.content.array_records
    ]
    assert teacher and all(
        str(m.content["config"]["phase"]) == "personal" for m in teacher
    )
    k_global = count_params(build_model("mlp-s", 10))
    for m, _ in seen:
        if (
            m.metadata.message_type == "train.mh"
            and str(m.content["config"]["phase"]) == "global"
        ):
            assert tuple(m.content["params"]["theta"].shape) == (k_global,)
    rows = [
        json.loads(x)
        for x in open(tmp_path / "outputs" / "test" / "metrics.jsonl", encoding="utf-8")
    ]
    assert all(r["global-valid"] == 4 and r["personal-valid"] == 4 for r in rows)
    assert "global-test-acc" in rows[-1]
    assert summary["nonparticipant_seen_clients"] == 1
    assert summary["nonparticipant_unseen_clients"] == 1
    assert summary["nonparticipant_unseen_acc"] is not None
    assert np.isfinite(summary["participant_acc"])


def test_personalize_serves_seen_and_unseen_new_clients(tmp_path):
    from common.partition import split_participants
    from server.personalize import evaluate_on, personalize

    cfg = mh_config(tmp_path, **{"num-rounds": 2})
    summary = run_in_process(cfg)
    parsed = parse_run_config(cfg)
    _, held = split_participants(parsed.num_clients, parsed.holdout, parsed.seed)
    kinds = {}
    for pid in held:
        model = personalize(tmp_path / "outputs" / "test", partition_id=pid)
        info = model.personalization
        kinds[info["embedding"]] = info["model"]
        assert count_params(model) == info["param-count"]
        from common.partition import load_client_data

        acc = evaluate_on(model, load_client_data(parsed, pid))["test-acc"]
        assert acc == pytest.approx(
            summary["nonparticipant_acc_by_K"][str(info["param-count"])], abs=1e-6
        )
    assert set(kinds) == {"fitted (seen size group)", "fitted (unseen size group)"}
    assert kinds["fitted (unseen size group)"] == "mlp-l"

    # a new client given as its own data file names its architecture (--arch): the
    # same data and id as a held-out client reproduce that client's model exactly
    from server.cli import main as cli_main

    run_dir = str(tmp_path / "outputs" / "test")
    pid = held[0]
    arch = arch_for(parsed, pid)
    own = load_client_data(parsed, pid)
    npz = tmp_path / "new.npz"
    np.savez(
        npz,
        **{
            k: getattr(own, k).numpy()
            for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        },
    )
    out = tmp_path / "new.pt"
    base = ["personalize", run_dir, "--data", str(npz), "--normalized"]
    assert (
        cli_main([*base, "--arch", arch, "--client-id", str(pid), "--out", str(out)])
        == 0
    )
    from server.personalize import load_model

    model = load_model(out)
    assert model.personalization["model"] == arch
    reference = personalize(run_dir, partition_id=pid)
    for mine, theirs in zip(
        model.state_dict().values(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, theirs)
    # a data file without an architecture, or one the zoo lacks: a one-line error
    assert cli_main(base) == 2
    assert cli_main([*base, "--arch", "resnet-1000"]) == 2


def test_shared_embedding_per_group_option(tmp_path):
    runner = build_runner(mh_config(tmp_path, **{"mh-shared-embedding": True}))
    strategy = runner.strategy
    groups = {strategy.group[c] for c in strategy.participants}
    assert set(strategy.rows) == {f"group:{g}" for g in groups}
    a, b = [
        c
        for c in strategy.participants
        if strategy.group[c] == strategy.group[strategy.participants[0]]
    ][:2]
    first, second = strategy.generate([a, b])
    assert torch.equal(first["theta"], second["theta"])  # same K, same embedding


def test_base_lr_moves_each_group_base_by_its_clients_mean_delta(tmp_path):
    """mh-base-lr: a size group's shared base takes mh-base-lr × the mean delta of
    the round's clients of that group (1 = FedAvg's step), whatever the other groups
    sent; the rest of φ still takes its Adam step; 0 leaves the paper's one Adam."""
    runner = build_runner(mh_config(tmp_path, **{"num-rounds": 1, "mh-base-lr": 0.5}))
    strategy = runner.strategy
    by_group: dict[str, list[str]] = {}
    for cid in strategy.participants:
        by_group.setdefault(strategy.group[cid], []).append(cid)
    group, mates = next((g, c) for g, c in by_group.items() if len(c) >= 2)
    other = next(c[0] for g, c in by_group.items() if g != group)
    a, b = mates[:2]
    k = strategy.k[a]
    base = strategy.hnet.head(group).chunk_bias
    before = base.detach().flatten()[:k].clone()
    trunk = [p.detach().clone() for p in strategy.hnet.trunk.parameters()]
    updates = [
        ClientUpdate(a, {"theta": torch.full((k,), 0.2)}, 10, {}),
        ClientUpdate(b, {"theta": torch.full((k,), 0.4)}, 30, {}),
        ClientUpdate(other, {"theta": torch.ones(strategy.k[other])}, 10, {}),
    ]
    strategy.apply_updates(1, updates)
    moved = base.detach().flatten()[:k] - before
    assert torch.allclose(moved, torch.full((k,), 0.5 * 0.3), atol=1e-6)  # mean 0.3
    assert base.grad is None
    assert not all(
        torch.equal(x, y)
        for x, y in zip(trunk, strategy.hnet.trunk.parameters(), strict=True)
    )
    off = build_runner(mh_config(tmp_path / "off", **{"num-rounds": 1})).strategy
    assert any(
        p is off.hnet.head(group).chunk_bias
        for g in off.optimizer.param_groups
        for p in g["params"]
    )


def test_gd_global_deltas_leave_the_bases_to_the_groups_clients(tmp_path):
    """GD with mh-base-lr: the global model's deltas move φ (trunk, head weights) and
    v_g by Adam but not its size group's base, which only that group's clients move;
    no base gradient is left over for the next step."""
    cfg = mh_config(
        tmp_path,
        **{
            "method": "mh-pfedhngd",
            "num-rounds": 1,
            "mh-base-lr": 1.0,
            "mh-global-arch": "mlp-s",
        },
    )
    strategy = build_runner(cfg).strategy
    k = strategy.k_global
    base = strategy.hnet.head(strategy.global_group).chunk_bias
    before = base.detach().clone()
    trunk = [p.detach().clone() for p in strategy.hnet.trunk.parameters()]
    ids = strategy.participants[:2]
    strategy.global_step(
        [ClientUpdate(c, {"theta": torch.full((k,), 0.3)}, 10, {}) for c in ids]
    )
    assert torch.equal(base.detach(), before)
    assert all(b.grad is None for b in strategy._bases())
    assert not all(
        torch.equal(x, y)
        for x, y in zip(trunk, strategy.hnet.trunk.parameters(), strict=True)
    )


def test_novel_lr_sweep_offline_scores_seen_new_clients_on_validation(tmp_path):
    """``bench.mh_pfedhn --tune-novel`` refits a finished run's seen-size held-out
    clients at each mh-novel-lr and chooses on their validation rows."""
    from bench.mh_pfedhn import tune_novel

    cfg = mh_config(tmp_path)
    run_in_process(cfg)
    folder = tmp_path / "outputs" / "test"
    out = tmp_path / "results"
    tune_novel(
        ["--tune-novel", str(folder), "--grid", "mh-novel-lr=0.1,1", "--out", str(out)]
    )
    data = json.loads((out / "tune-mh-novel.json").read_text())
    assert [r["point"] for r in data["rows"]] == ["mh-novel-lr=0.1", "mh-novel-lr=1"]
    assert sum(bool(r.get("chosen")) for r in data["rows"]) == 1
    assert data["score"] == "nonparticipant_val_acc"
    assert all(run["clients"] and 0 <= run["val_acc"] <= 1 for run in data["runs"])
