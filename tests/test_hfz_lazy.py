"""HyperFedZero at scale: lazy registration, the held-out check on a seeded sample,
the store spread on a bounded sample, and the scale-only ``sampled`` partitioner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.config import ConfigError, parse_run_config
from common.partition import (
    client_splits,
    load_client_data,
    sampled_split,
    split_participants,
)
from server.direct_grid import DirectGrid, project_client_app, run_in_process
from server.loop import HELD_OUT_STREAM, evaluation_sample
from tests.conftest import small_config
from tests.test_lazy_registration import (
    BASE,
    Recorder,
    check_registered_when_first_drawn,
    held_out_nodes,
    kind_of,
    lazy_run,
    rows_of,
)

HFZ = {"method": "hyperfedzero"}


def test_hyperfedzero_client_first_drawn_at_round_r_registers_then_and_trains(
    tmp_path,
):
    """Lazy registration with HyperFedZero: start-up registers one client, every
    other registers in the round that first draws it and trains in it; a held-out
    client never trains; at the last round every client has registered, every
    participant evaluates and every held-out client is evaluated."""
    summary, seen = lazy_run(tmp_path, **HFZ)
    held = held_out_nodes()
    trained_in = check_registered_when_first_drawn(tmp_path, seen, held)
    assert summary["num_participants"] == summary["participant_eval_clients"] == 8
    zero_shot = {node for _, node, _, phase in seen.seen if phase == "zero-shot"}
    assert zero_shot == held
    assert summary["nonparticipant_acc"] is not None
    assert summary["global_acc"] is not None
    # the store holds exactly the clients that trained
    assert {BASE + int(c) for c in summary["embedding_store"]} == set(trained_in)


def held_out_checks(seen: Recorder, held: set[int]) -> dict[int, list[int]]:
    """Per round: the held-out nodes sent a per-round held-out check (phase
    "eval" evaluate messages to held-out nodes; each is asked twice, own e and
    mean e)."""
    out: dict[int, list[int]] = {}
    for kind, node, rnd, phase in seen.seen:
        if kind_of(kind) == "evaluate" and phase == "eval" and node in held:
            out.setdefault(rnd, []).append(node)
    return out


@pytest.mark.parametrize("registration", ["eager", "lazy"])
def test_held_out_check_is_a_seeded_bounded_sample_before_the_last_round(
    tmp_path, registration
):
    """20 clients, 10 held out, eval-sample 3: rounds 1 and 2 check 3 held-out
    clients each (own e and mean e: two messages each), a seeded draw per round;
    round 3 (the last) checks all 10."""
    seen = Recorder()
    summary = run_in_process(
        small_config(
            tmp_path,
            **HFZ,
            **{
                "num-clients": 20,
                "holdout": 0.5,
                "num-rounds": 3,
                "eval-every": 1,
                "eval-sample": 3,
                "registration": registration,
            },
        ),
        fault_hook=seen,
    )
    assert summary is not None
    held_pids = split_participants(20, 0.5, 42)[1]
    held = {BASE + p for p in held_pids}
    checks = held_out_checks(seen, held)
    assert sorted(checks) == [1, 2, 3]
    for rnd in (1, 2):
        nodes = checks[rnd]
        assert len(nodes) == 6 and len(set(nodes)) == 3, (rnd, nodes)
    assert sorted(set(checks[3])) == sorted(held) and len(checks[3]) == 20
    assert set(checks[1]) != set(checks[2])  # each round draws anew
    if registration == "eager":  # the loop's seeded sample, on its own stream
        ids = [str(p) for p in held_pids]
        for rnd in (1, 2):
            expected = evaluation_sample(ids, 3, 42, rnd, HELD_OUT_STREAM)
            assert {BASE + int(c) for c in expected} == set(checks[rnd])
    rows = rows_of(tmp_path)
    assert all("heldout-own-e-val-acc" in r for r in rows)


def test_store_spread_is_measured_on_a_bounded_seeded_sample(tmp_path):
    """More stored embeddings than eval-sample: the spread is measured on a seeded
    sample of eval-sample of them (the same store gives the same sample)."""
    from server.direct_grid import build_runner

    runner = build_runner(
        small_config(tmp_path, **HFZ, **{"num-rounds": 1, "eval-sample": 4})
    )
    strategy = runner.strategy
    gen = torch.Generator().manual_seed(0)
    for cid in runner.registry.participants:
        strategy.store[cid] = torch.softmax(torch.randn(16, generator=gen), 0)
    measured = strategy.measured_store()
    assert len(measured) == 4 and set(measured) <= set(strategy.store)
    assert list(measured) == list(strategy.measured_store())
    assert strategy.store_metrics()["embedding-clients"] == 4.0
    strategy.cfg = parse_run_config({**strategy.cfg.to_dict(), "eval-sample": 0})
    assert len(strategy.measured_store()) == len(strategy.store) == 8


# ---- the scale-only partitioner ----------------------------------------------------
def sampled_cfg(n: int, **extra):
    return parse_run_config(
        {
            "dataset": "synthetic",
            "num-clients": n,
            "partitioner": "sampled",
            "samples-per-client": 20,
            **extra,
        }
    )


def test_sampled_partitioner_gives_any_number_of_clients_their_own_rows():
    """Each client's rows come from (seed, partition id) alone: 100,000 clients of
    a 6,000-row set each get train, validation and test rows of their classes,
    disjoint within the client; the split does not depend on the federation."""
    big, small = sampled_cfg(100_000), sampled_cfg(10)
    split = sampled_split(big, 99_999)
    assert (len(split.train), len(split.val), len(split.test)) == (14, 3, 3)
    rows = np.concatenate([split.train, split.val, split.test])
    assert len(set(rows.tolist())) == 20
    for pid in (0, 7):
        a, b = sampled_split(big, pid), sampled_split(small, pid)
        assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
    data = load_client_data(big, 12_345)
    assert len(data.classes()) <= 2
    assert data.y_val.numel() == 3
    assert len(client_splits(small)) == 10
    other = sampled_cfg(10, seed=7)
    assert not np.array_equal(sampled_split(other, 0).train, small_first(small))


def small_first(cfg) -> np.ndarray:
    return sampled_split(cfg, 0).train


def test_sampled_partitioner_needs_a_few_samples_per_client():
    with pytest.raises(ConfigError, match="samples-per-client"):
        parse_run_config({"partitioner": "sampled"})


def test_direct_grid_makes_a_node_context_when_first_messaged():
    """100,000 simulated nodes cost nothing until messaged."""
    grid = DirectGrid(project_client_app(), {}, 100_000)
    nodes = list(grid.get_node_ids())
    assert len(nodes) == 100_000 and nodes[0] == BASE and nodes[-1] == BASE + 99_999
    assert dict.__len__(grid.contexts) == 0
    context = grid.contexts[BASE + 5]
    assert context.node_config["partition-id"] == 5
    assert grid.contexts[BASE + 5] is context
    assert dict.__len__(grid.contexts) == 1
    with pytest.raises(KeyError):
        grid.contexts[BASE + 100_000]


def test_embedding_map_draws_at_most_a_seeded_sample_per_role():
    """The map computes each drawn client's e from its data: with more clients than
    the limit (eval-sample) a seeded sample of that many per role, in order."""
    from server.hfz_embedding_map import _at_most

    ids = [f"c{i}" for i in range(50)]
    picked = _at_most(ids, 10, seed=42)
    assert len(picked) == 10 and picked == sorted(picked, key=ids.index)
    assert picked == _at_most(ids, 10, seed=42)
    assert _at_most(ids, 0, seed=42) == ids == _at_most(ids, 50, seed=42)
