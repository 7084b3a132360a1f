"""The HyperFLoRA paper's baselines: pFedHN from r_i (zero-shot bystanders), FedProx,
and the paper's communication formula against the bytes counted from the records.

Every run is tiny (synthetic data, MLP, 2 rounds) through the real server loop and
client handlers in process (server.direct_grid), a few seconds each.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from flwr.app import Message

from common.partition import split_participants
from common.records import from_record
from common.training import train_steps
from server.direct_grid import build_runner, run_in_process
from server.paper_cost import hyperflora_cost, pfedhn_cost, whole_model_cost
from server.runstate import end_run
from tests.conftest import small_config

Seen = list[tuple[int, Message, Message]]
#: What a client always sends at registration: who it is and which dataset it holds
#: (its fingerprint, normalisation and image shape: nothing of its own partition).
IDENTITY = {"client-id", "partition-id", "data-fingerprint", "data-norm", "data-shape"}
TINY = {"num-rounds": 2, "eval-every": 1, "local-steps": 5}


def recorder() -> tuple[Seen, object]:
    """A DirectGrid fault hook that records every (node, message, reply)."""
    seen: Seen = []

    def record(node: int, msg: Message, reply: Message) -> Message:
        seen.append((node, msg, reply))
        return reply

    return seen, record


def bystander_nodes(cfg: dict) -> set[int]:
    """DirectGrid node ids (1000 + partition id) of the held-out clients."""
    _, held_out = split_participants(cfg["num-clients"], cfg["holdout"], 42)
    return {1000 + pid for pid in held_out}


@pytest.fixture(scope="module")
def pfedhn_ri(tmp_path_factory):
    """A pFedHN-Parallel run whose hypernetwork reads r_i; the runner is kept so the
    test can regenerate h(r_i) with the best round's φ."""
    tmp = tmp_path_factory.mktemp("pfedhn-ri")
    cfg = small_config(
        tmp,
        method="pfedhn",
        **{**TINY, "pfedhn-input": "class-indicator", "run-name": "ri"},
    )
    seen, hook = recorder()
    runner = build_runner(cfg, hook)
    summary = runner.run()
    end_run(runner.outputs, summary, runner.cfg)
    return cfg, summary, seen, runner, tmp / "outputs" / "ri"


def test_bystander_is_never_trained_and_sends_only_r_i(pfedhn_ri):
    cfg, summary, seen, _, _ = pfedhn_ri
    bystanders = bystander_nodes(cfg)
    to_them = [(m, r) for node, m, r in seen if node in bystanders]
    kinds = Counter(m.metadata.message_type for m, _ in to_them)
    # registration, then one evaluation of h(r_i): no train message, no fit
    assert set(kinds) == {"query", "evaluate"}, kinds
    assert kinds["evaluate"] == len(bystanders)
    for msg, reply in to_them:
        if msg.metadata.message_type == "query":
            info = set(reply.content.config_records["info"])
            assert info - IDENTITY <= {"classes"}, info
    assert summary["nonparticipant_protocol"].startswith(
        "model generated zero-shot from its class indicator r_i"
    )
    assert summary["pfedhn_input"] == "class-indicator"


def test_zero_shot_pfedhn_serves_each_bystander_h_of_r_i(pfedhn_ri):
    cfg, summary, seen, runner, _ = pfedhn_ri
    strategy, registry = runner.strategy, runner.registry
    by_node = {registry.node_of(c): c for c in registry.nonparticipants}
    served = {
        by_node[node]: from_record(m.content["params"])
        for node, m, _ in seen
        if node in by_node and m.metadata.message_type == "evaluate"
    }
    assert set(served) == set(registry.nonparticipants)
    # the loop evaluated bystanders with the best round's φ, which it left loaded
    expected = dict(zip(served, strategy.generate(list(served)), strict=True))
    for cid, params in served.items():
        r = strategy.indicators([cid])
        assert r.shape == (1, 10) and set(r.flatten().tolist()) <= {0.0, 1.0}
        assert all(torch.equal(params[k], expected[cid][k]) for k in params)
    assert summary["nonparticipant_acc"] is not None
    assert 0.0 <= summary["nonparticipant_acc"] <= 1.0
    # the hypernetwork reads K = 10 inputs; no embedding is trained
    assert strategy.hnet.trunk[0].in_features == 10
    assert len(strategy.optimizer.param_groups) == 1


def test_offline_personalisation_from_r_i_equals_the_in_run_bystanders(pfedhn_ri):
    import numpy as np

    from common.config import parse_run_config
    from common.partition import load_client_data
    from server.personalize import evaluate_on, personalize

    cfg, summary, _, _, run_dir = pfedhn_ri
    parsed = parse_run_config(cfg)
    _, held_out = split_participants(cfg["num-clients"], cfg["holdout"], 42)
    accs = [
        evaluate_on(
            personalize(run_dir, partition_id=pid, client_id=str(pid)),
            load_client_data(parsed, pid),
        )["test-acc"]
        for pid in held_out
    ]
    assert float(np.mean(accs)) == summary["nonparticipant_acc"]


def test_pfedhn_default_input_is_still_the_fitted_embedding(tmp_path):
    cfg = small_config(tmp_path, method="pfedhn", **{**TINY, "novel-rounds": 1})
    seen, hook = recorder()
    summary = run_in_process(cfg, fault_hook=hook)
    kinds = Counter(
        m.metadata.message_type for n, m, _ in seen if n in bystander_nodes(cfg)
    )
    assert kinds["train"] == len(bystander_nodes(cfg))  # one embedding-fit exchange
    assert summary["pfedhn_input"] == "embedding"
    assert summary["paper_comm_terms"]["r"] == 0.0


def test_train_steps_proximal_term_is_exact_at_zero_and_pulls_toward_start():
    def run(mu: float | None) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 3))
        x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
        extra = {} if mu is None else {"proximal_mu": mu}
        gen = torch.Generator().manual_seed(1)
        train_steps(model, x, y, 10, 8, 0.5, 0.9, 0.0, gen, **extra)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Linear(5, 3)).state_dict()
    plain, zero, strong = run(None), run(0.0), run(5.0)
    assert all(torch.equal(plain[k], zero[k]) for k in plain)

    def dist(w: dict[str, torch.Tensor]) -> float:
        return float(sum(((w[k] - start[k]) ** 2).sum() for k in w))

    assert dist(strong) < dist(plain)


def global_model(out: Path) -> dict[str, torch.Tensor]:
    """The global model of a FedAvg/FedProx run's last checkpoint (its last round)."""
    state = torch.load(
        out / "checkpoint" / "state.pt", map_location="cpu", weights_only=False
    )
    return state["strategy"]["global"]


def test_fedprox_equals_fedavg_at_mu_zero_and_differs_above(tmp_path):
    runs = {
        "fedavg": {"method": "fedavg"},
        "prox0": {"method": "fedprox", "proximal-mu": 0.0},
        "prox1": {"method": "fedprox", "proximal-mu": 1.0},
    }
    models, summaries = {}, {}
    for name, over in runs.items():
        cfg = small_config(tmp_path, **{**TINY, **over, "run-name": name})
        summaries[name] = run_in_process(cfg)
        models[name] = global_model(tmp_path / "outputs" / name)
    a, b, c = models["fedavg"], models["prox0"], models["prox1"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        summaries["fedavg"]["participant_acc"] == summaries["prox0"]["participant_acc"]
    )
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert summaries["prox1"]["nonparticipant_protocol"] == "global model, no training"


def test_fedprox_sends_mu_only_in_its_train_messages(tmp_path):
    seen, hook = recorder()
    cfg = small_config(
        tmp_path, method="fedprox", **{**TINY, "num-rounds": 1, "proximal-mu": 0.3}
    )
    run_in_process(cfg, fault_hook=hook)
    for _, msg, _ in seen:
        kind = msg.metadata.message_type
        if kind in ("train", "evaluate"):
            got = msg.content["config"].get("proximal-mu")
            assert got == (0.3 if kind == "train" else None), (kind, got)


def test_whole_model_formula_against_counted_bytes(tmp_path):
    cfg = small_config(tmp_path, method="fedavg", **TINY)
    s = run_in_process(cfg)
    theta, m = s["client_trainable_params"], cfg["clients-per-round"]
    assert s["paper_comm_values_per_round"] == 2 * m * theta
    assert s["paper_comm_formula"] == "2·M_sel·|θ|"
    counted = s["bytes_down_per_round"] + s["bytes_up_per_round"]
    # float32 payload = 4 bytes a value; the rest is Flower's framing of each array
    # and record and the message configs / reply metrics (a few hundred bytes a
    # message), which the paper's count leaves out
    payload = 4 * s["paper_comm_values_per_round"]
    assert payload <= counted <= payload + 2 * m * 4000


def test_hyperflora_formula_against_counted_values(tmp_path):
    cfg = small_config(
        tmp_path,
        method="hyperflora",
        **{
            "partitioner": "shards",
            "shards-per-client": 4,
            "num-rounds": 1,
            "eval-every": 1,
            "pretrain-rounds": 1,
            "local-steps": 3,
            "inner-lr": 0.05,
            "finetune-steps": 0,
            "pair-exchanges": 2,
            "local-clip-norm": 5.0,
        },
    )
    s = run_in_process(cfg)
    rho, k, e = s["client_trainable_params"], 10, cfg["pair-exchanges"]
    m, pairs, hops = (
        s["paper_comm_terms"]["m_sel"],
        s["pairs_per_round"],
        s["relay_hops_per_round"],
    )
    assert m == cfg["clients-per-round"] and pairs == m // 2
    assert s["paper_comm_values_per_round"] == pytest.approx(
        2 * m * k + (2 * m + 4 * e * pairs) * rho
    )
    # counted: every train.lora message carries ρ down and Δρ up, a relay hop also
    # r_ij (K values) down; r_i itself travelled once, at registration. The paper
    # charges 2·M_sel·|r| a round and 2E hops per pair (a hop to a client holding
    # none of r_ij's classes is skipped here).
    assert s["values_per_round"] == pytest.approx(2 * (m + hops) * rho + hops * k)
    assert s["paper_comm_values_per_round"] - s["values_per_round"] == pytest.approx(
        2 * m * k - hops * k + 2 * (2 * e * pairs - hops) * rho
    )
    assert s["bytes_per_round"] >= 4 * s["values_per_round"]


def test_cost_functions_reproduce_the_papers_lenet_numbers():
    # Table 1 (LeNet-CIFAR10): M_sel = 8, |θ| = 64.1k, |ρ| = 850, K = 10, E = 3
    assert whole_model_cost(8, 64_100)["paper_comm_values_per_round"] == 1_025_600
    paired = hyperflora_cost(8, 10, 850, 3, 4, paired=True)
    assert paired["paper_comm_values_per_round"] == 54_560  # the paper's 5.46E4
    nocp = hyperflora_cost(8, 10, 850, 3, 0, paired=False)
    assert nocp["paper_comm_values_per_round"] == 8 * 10 + 2 * 8 * 850
    assert pfedhn_cost(8, 64_100, 10)["paper_comm_values_per_round"] == 1_025_680


def test_a_table_with_the_papers_columns_names_our_pfedhn_and_its_formulas():
    import json

    from bench import hyperflora as hfl
    from bench.harness import RESULTS

    data = json.loads((RESULTS / "hyperflora-lenet-fmnist.json").read_text())
    # the committed rows plus a fitted-embedding pFedHN row (made up from Pretrain's)
    pretrain = next(r for r in data["rows"] if r["row"] == "Pretrain (FedAvg)")
    rows = [
        {**r, "paper_values_per_round": 1.0}
        for r in [*data["rows"], {**pretrain, "row": "pFedHN"}]
    ]
    meta = {k: data[k] for k in ("machine", "load", "parallel", "quick")}
    page = hfl.markdown(hfl.PRESETS["lenet"], rows, data["runs"], meta, {})
    assert "| Comm./round, paper (values) | paper formula |" in page
    assert "| pFedHN, fitted embedding (ours) |" in page
    assert "2M_sel r + (2M_sel + 4E M_pair) ρ" in page
    # an older table (no paper column) renders without the paper's columns
    old = [{k: v for k, v in r.items() if k != "paper_values_per_round"} for r in rows]
    assert not hfl.paper_layout(old)
    assert "paper formula" not in hfl.markdown(
        hfl.PRESETS["lenet"], old, data["runs"], meta, {}
    )
