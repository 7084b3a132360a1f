"""Lazy registration: a client registers when first drawn, start-up is flat in N."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Message

from common.config import EMBED_DIM_CAP, ConfigError, parse_run_config
from common.partition import split_participants
from server.direct_grid import build_runner, run_in_process
from server.registry import ClientInfo, ClientRegistry
from server.store import EmbeddingStore
from tests.conftest import small_config

#: DirectGrid's node ids: 1000 + partition id.
BASE = 1000


def held_out_nodes(num_clients: int = 10, holdout: float = 0.2) -> set[int]:
    """The nodes of the clients the seeded split (seed 42) holds out."""
    return {BASE + p for p in split_participants(num_clients, holdout, 42)[1]}


class Recorder:
    """A fault hook that changes nothing and records every message: (type, node,
    round and phase of its config)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int, str]] = []

    def __call__(self, node: int, msg: Message, reply: Message) -> Message:
        config = msg.content["config"]
        self.seen.append(
            (
                msg.metadata.message_type,
                node,
                int(config.get("round", -1)),
                str(config.get("phase", "")),
            )
        )
        return reply


def lazy_run(tmp_path, **extra) -> tuple[dict, Recorder]:
    """A 5-round lazy-registration run of 10 small clients, 2 a round, evaluated
    at the last round (``extra``: more keys, e.g. the method): its summary and every
    message it sent."""
    seen = Recorder()
    summary = run_in_process(
        small_config(
            tmp_path,
            **extra,
            **{
                "registration": "lazy",
                "num-rounds": 5,
                "clients-per-round": 2,
                "eval-every": 5,
            },
        ),
        fault_hook=seen,
    )
    assert summary is not None
    return summary, seen


def kind_of(message_type: str) -> str:
    """A message's action: ``train.hyperfedzero`` -> ``train`` (a method's routed
    handlers), ``train`` -> ``train``."""
    return message_type.split(".")[0]


def check_registered_when_first_drawn(
    tmp_path, seen: Recorder, held: set[int]
) -> dict[int, int]:
    """The lazy-registration checks of a :func:`lazy_run`: start-up registers one
    client, every other registers in the round that first draws it, a held-out
    client never trains, the last round registers the rest and every participant
    evaluates. Returns the round each node first trained in."""
    # the round each message belongs to: a query belongs to the round of the
    # train messages that follow it
    first_train = next(i for i, m in enumerate(seen.seen) if kind_of(m[0]) == "train")
    assert [m[0] for m in seen.seen[:first_train]].count("query") == 2  # start + 1
    registered_in: dict[int, int] = {}
    trained_in: dict[int, int] = {}
    queries: list[int] = []
    for kind, node, rnd, phase in seen.seen:
        if kind == "query":
            queries.append(node)
        elif kind_of(kind) == "train" and phase == "train":
            assert node not in held, f"held-out node {node} trained at round {rnd}"
            for q in queries:
                registered_in.setdefault(q, rnd)
            queries = []
            trained_in.setdefault(node, rnd)
    # every client that trained registered in the round it first trained (the
    # start-up client, node 1000, registered before round 1)
    for node, rnd in trained_in.items():
        assert registered_in.get(node, 1) == rnd, (node, rnd)
    assert max(trained_in.values()) > 1  # some client was first drawn later
    assert len(set(trained_in)) < 8  # not every participant was drawn to train
    rows = rows_of(tmp_path)
    assert sum(r["registered"] for r in rows) == 10 - 1  # the last round: the rest
    assert rows[-1]["eval-clients"] == 8  # every participant, at the last round
    return trained_in


def rows_of(tmp_path, name: str = "test") -> list[dict]:
    path = tmp_path / "outputs" / name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_client_first_drawn_at_round_r_registers_then_and_trains(tmp_path):
    """Start-up registers one client; every other registers in the round that
    first draws it, just before its first train message; a held-out client never
    trains; the last round's evaluation registers the rest (every participant
    evaluates), so the held-out evaluation still covers every held-out client."""
    summary, seen = lazy_run(tmp_path)
    held = held_out_nodes()
    check_registered_when_first_drawn(tmp_path, seen, held)
    assert summary["participant_eval_clients"] == 8
    assert summary["num_participants"] == 8
    evaluated_held_out = {
        node for kind, node, _, phase in seen.seen if phase == "zero-shot"
    }
    assert evaluated_held_out == held
    assert summary["nonparticipant_acc"] is not None


def test_eager_registration_queries_every_node_before_round_one(tmp_path):
    """registration = "eager" (the default) is as before: every node is queried
    before the first train message, and the sampler draws what it always drew."""
    seen = Recorder()
    cfg = small_config(tmp_path, **{"num-rounds": 2, "eval-every": 2})
    runner = build_runner(cfg, fault_hook=seen)
    # eager: every node is queried before round 1 (pFedHN's roles send different
    # fields, so twice: identity, then the role's fields)
    assert {m[0] for m in seen.seen} == {"query"}
    assert {m[1] for m in seen.seen} == set(range(BASE, BASE + 10))
    assert runner.registry.pending_count == 0
    state = runner.strategy.rng.bit_generator.state
    drawn = runner.strategy.sample(1)
    old = np.random.default_rng()
    old.bit_generator.state = state
    pool = runner.registry.participants
    expected = sorted(
        (pool[i] for i in old.choice(len(pool), 4, replace=False)), key=pool.index
    )
    assert drawn == expected


def test_lazy_resume_matches_an_uninterrupted_run(tmp_path):
    """The registered clients are checkpointed: a stopped and resumed lazy run ends
    like an uninterrupted one."""
    base = {"registration": "lazy", "num-rounds": 4, "eval-every": 2}
    whole = run_in_process(small_config(tmp_path, **base, **{"run-name": "whole"}))
    stopped = run_in_process(
        small_config(tmp_path, **base, **{"run-name": "parts", "stop-after-round": 2})
    )
    assert stopped is None
    resumed = run_in_process(
        small_config(tmp_path, **base, **{"run-name": "parts", "resume": True})
    )
    assert whole is not None and resumed is not None
    for key in ("participant_acc", "nonparticipant_acc", "best_round"):
        assert resumed[key] == whole[key], key
    keep = ("round", "sampled", "valid", "train-loss", "registered")
    assert [{k: r.get(k) for k in keep} for r in rows_of(tmp_path, "parts")] == [
        {k: r.get(k) for k in keep} for r in rows_of(tmp_path, "whole")
    ]


@pytest.mark.parametrize("method", ["fedavg", "local"])
def test_reference_methods_run_with_lazy_registration(tmp_path, method):
    """FedAvg and local-only (a model per participant, admitted when it registers,
    and for a chosen round that predates it) run lazily to the same summary shape."""
    summary = run_in_process(
        small_config(
            tmp_path,
            **{
                "method": method,
                "registration": "lazy",
                "num-rounds": 4,
                "eval-every": 2,
                "eval-sample": 3,
                "clients-per-round": 2,
            },
        )
    )
    assert summary is not None
    assert summary["num_participants"] == summary["participant_eval_clients"] == 8
    assert summary["participant_acc"] is not None


def test_lazy_registration_is_refused_where_the_state_needs_every_client():
    with pytest.raises(ConfigError, match="registration") as err:
        parse_run_config({"method": "hyperflora", "registration": "lazy"})
    assert "pfedhn" in str(err.value)
    assert parse_run_config({"registration": "lazy"}).registration == "lazy"


def test_default_embedding_size_stops_at_the_papers_largest_federation():
    """1 + N/4 up to N = 100 (the pFedHN paper's largest), 26 beyond."""
    assert EMBED_DIM_CAP == 26
    for n, d in ((10, 3), (50, 13), (100, 26), (1000, 26), (100_000, 26)):
        assert parse_run_config({"num-clients": n}).resolved_embed_dim == d, n
    assert (
        parse_run_config({"num-clients": 1000, "embed-dim": 40}).resolved_embed_dim
        == 40
    )


def lazy_registry(n: int, holdout: float = 0.2) -> ClientRegistry:
    """A registry of ``n`` pending nodes whose resolver registers them as the
    server would (partition id = node - BASE, role from the seeded split)."""
    held = set(split_participants(n, holdout, 42)[1])
    registry = ClientRegistry()
    registry.add_pending(range(BASE, BASE + n))

    def resolve(nodes: list[int]) -> list[str]:
        out = []
        for node in nodes:
            pid = node - BASE
            registry.add(ClientInfo(f"c{pid}", node, pid, pid not in held))
            if pid not in held:
                out.append(f"c{pid}")
        return out

    registry.resolver = resolve
    return registry


def test_draw_is_seeded_uniform_over_participants_and_never_held_out():
    held = {f"c{p}" for p in split_participants(50, 0.2, 42)[1]}
    a, b = lazy_registry(50), lazy_registry(50)
    first = a.draw([], 10, np.random.default_rng(3))
    assert first == b.draw([], 10, np.random.default_rng(3))
    assert len(first) == 10 and not set(first) & held
    # drawn nodes registered (held-out ones too), the rest still pending
    assert len(a.clients) >= 10 and a.pending_count == 50 - len(a.clients)
    again = a.draw(a.participants, 10, np.random.default_rng(4))
    assert len(again) == 10 and not set(again) & held
    everyone = a.draw(a.participants, 1000, np.random.default_rng(5))
    assert len(everyone) == 40 and a.pending_count == 0
    assert everyone == a.participants


def test_registry_and_store_hold_100000_clients():
    """100,000 clients: the pending nodes, a round's draw, every client registered,
    the ordered lists, the node index and pFedHN's store at the default size."""
    n = 100_000
    registry = lazy_registry(n)
    rng = np.random.default_rng(0)
    drawn = registry.draw([], 10, rng)
    assert len(drawn) == 10 and registry.pending_count < n
    assert len(registry.draw(registry.participants, 10, rng)) == 10
    assert registry.resolver is not None
    registry.resolver(registry.pending)  # the last round registers the rest
    assert registry.pending_count == 0
    assert len(registry.participants) == n - int(0.2 * n)
    assert len(registry.nonparticipants) == int(0.2 * n)
    assert registry.client_on(BASE + n - 1) == f"c{n - 1}"
    cfg = parse_run_config({"num-clients": n})
    store = EmbeddingStore(n, cfg.resolved_embed_dim)
    for info in registry.clients.values():
        store.add(info.client_id, row=info.partition_id)
    assert store.weight.shape == (n, 26)
    assert store.index["c12345"] == 12345
    assert store([f"c{n - 1}"]).shape == (1, 26)
