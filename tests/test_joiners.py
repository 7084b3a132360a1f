"""Clients that appear mid-run: admitted by methods that accept joiners, left out
(and reported once) by the others. In process, with the real server loop and client
handlers; the deployment case is tests/e2e/test_deploy_joiner.py."""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import pytest
import torch
from flwr.app import Message

import server.registry
from common.config import parse_run_config
from server.direct_grid import DirectGrid
from server.loop import Runner
from server.outputs import RunOutputs
from server.registry import register_clients
from server.strategies import strategy_for
from server.strategies.fedavg import FedAvg
from tests.conftest import small_config

LATE = 1004  # node (partition 4) that connects after round 2


class LateGrid(DirectGrid):
    """A DirectGrid whose last node connects only once round 2 has trained."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connected = False

    def get_node_ids(self):
        return [n for n in self.contexts if n != LATE or self.connected]


class NoJoiners(FedAvg):
    """FedAvg that refuses joiners (no ``name``: not a registered method)."""

    accepts_joiners = False


def run(tmp_path, method: str, strategy_cls=None) -> tuple[Runner, list[dict]]:
    config = small_config(
        tmp_path,
        **{
            "method": method,
            "num-clients": 5,
            "holdout": 0.0,
            "clients-per-round": 5,
            "num-rounds": 4,
            "eval-every": 4,
            "run-name": method,
        },
    )
    cfg = parse_run_config(config)
    from client.app import app as client_app

    grid = LateGrid(client_app, config, cfg.num_clients)

    def connect_after_round_2(node: int, msg: Message, reply: Message) -> Message:
        if msg.content["config"].get("round") == 2 and node == 1003:
            grid.connected = True
        return reply

    grid.fault_hook = connect_after_round_2
    cls = strategy_cls or strategy_for(method)
    registry = register_clients(grid, cfg, cfg.round_timeout, cls.registration_fields)
    assert len(registry.clients) == 4
    runner = Runner(
        grid,
        cfg,
        registry,
        cls(cfg, registry, torch.device("cpu")),
        RunOutputs(cfg.output_dir, cfg.resolved_run_name),
    )
    runner.run()
    rows = [
        json.loads(x)
        for x in (tmp_path / "outputs" / method / "metrics.jsonl")
        .read_text()
        .splitlines()
    ]
    return runner, rows


@pytest.fixture(autouse=True)
def _no_settle_wait(monkeypatch):
    """Registration goes on with the nodes that are there without waiting 20 s."""
    monkeypatch.setattr(
        server.registry,
        "wait_for_nodes",
        functools.partial(server.registry.wait_for_nodes, settle=0.0),
    )


@pytest.mark.parametrize("method", ["fedavg", "pfedhn", "local"])
def test_joiner_trains_from_the_next_round(tmp_path, method):
    runner, rows = run(tmp_path, method)
    assert [r["valid"] for r in rows] == [4, 4, 5, 5]
    assert "4" in runner.registry.participants
    assert runner.faults["joined"] == 1
    if method == "pfedhn":
        assert runner.strategy.store.index["4"] == 4


def test_method_without_joiners_reports_once_and_goes_on(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="flwr")  # flwr propagates to root
    runner, rows = run(tmp_path, "fedavg", NoJoiners)
    assert [r["valid"] for r in rows] == [4, 4, 4, 4]
    assert runner.faults["joiner-refused"] == 1
    refused = [r for r in caplog.records if "does not accept joiners" in r.getMessage()]
    assert len(refused) == 1
    assert "4" not in runner.registry.clients


class _SlowNodes:
    """A grid whose SuperNodes connect one by one, each ``gap`` polls apart."""

    def __init__(self, total: int, gap: int) -> None:
        self.total, self.gap, self.polls = total, gap, 0

    def get_node_ids(self) -> list[int]:
        self.polls += 1
        return list(range(min(self.total, 1 + self.polls // self.gap)))


def test_registration_waits_for_a_slow_node_it_cannot_do_without(monkeypatch):
    """Fewer nodes than min-clients plus the held-out ones are never 'settled': a
    SuperNode slow to start on a busy host is waited for (a flake once: two of three
    nodes, one of them held out, and min-clients 2)."""
    monkeypatch.setattr(server.registry.time, "sleep", lambda s: None)
    grid = _SlowNodes(total=3, gap=50)  # a node every 50 polls: ~50 s apart
    assert len(server.registry.wait_for_nodes(grid, 3, 1e9, settle=0.0, enough=3)) == 3
    grid = _SlowNodes(total=3, gap=50)
    # with two enough, a settled pair is taken (a node that is down is not awaited)
    assert len(server.registry.wait_for_nodes(grid, 3, 1e9, settle=0.0, enough=2)) == 2
