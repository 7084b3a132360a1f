"""The ServerApp: validate the run config, check the data, register clients, run the
chosen method, record how the run ended."""

from __future__ import annotations

import os
from logging import INFO

import torch
from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from common.config import ConfigError, parse_run_config
from common.errors import debug_enabled
from server.loop import Runner
from server.registry import register_run
from server.runstate import check_data, end_run, fail_run, open_run, record_clients_data
from server.strategies import strategy_for

app = ServerApp()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a config error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "'cuda' requested but no CUDA device is visible")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def is_local(grid: Grid) -> bool:
    """Whether the clients run on this host (simulation, in-process): then the
    server can check the data itself before contacting any client."""
    return type(grid).__name__ in ("InMemoryGrid", "DirectGrid")


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one federated experiment and write its outputs.

    The run's id, data and outcome are recorded (server/runstate.py): a failure ends
    with ``status.json`` naming its cause and one log line, then re-raises so that
    Flower marks the run failed.
    """
    torch.set_num_threads(int(os.environ.get("HYPERFLOWER_SERVER_THREADS", "1")))
    cfg = parse_run_config(context.run_config)
    outputs = open_run(cfg)
    try:
        expected = check_data(cfg, outputs, is_local(grid))
        device = resolve_device(cfg.device)
        log(
            INFO,
            "hyperflower: method=%s dataset=%s model=%s clients=%d device=%s -> %s",
            cfg.method,
            cfg.dataset,
            cfg.model,
            cfg.num_clients,
            device,
            outputs.dir,
        )
        method = strategy_for(cfg.method)
        registry = register_run(
            grid,
            cfg,
            cfg.round_timeout,
            method.registration_fields,
            expected_data=expected,
        )
        record_clients_data(outputs, registry.data)
        strategy = method(cfg, registry, device)
        summary = Runner(grid, cfg, registry, strategy, outputs).run()
    except Exception as exc:
        error = fail_run(outputs, exc)
        if debug_enabled():
            raise error from exc
        raise error from None
    end_run(outputs, summary, cfg)
