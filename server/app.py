"""The ServerApp: validate the run config, register clients, run the chosen method."""

from __future__ import annotations

import os
from logging import INFO

import torch
from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from common.config import ConfigError, parse_run_config
from server.loop import Runner
from server.outputs import RunOutputs
from server.registry import register_clients
from server.strategies import strategy_for

app = ServerApp()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a config error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "'cuda' requested but no CUDA device is visible")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one federated experiment and write its outputs."""
    torch.set_num_threads(int(os.environ.get("HYPERFLOWER_SERVER_THREADS", "1")))
    cfg = parse_run_config(context.run_config)
    device = resolve_device(cfg.device)
    outputs = RunOutputs(cfg.output_dir, cfg.resolved_run_name)
    log(INFO, "hyperflower: method=%s dataset=%s model=%s clients=%d device=%s -> %s",
        cfg.method, cfg.dataset, cfg.model, cfg.num_clients, device, outputs.dir)
    method = strategy_for(cfg.method)
    registry = register_clients(grid, cfg, cfg.round_timeout,
                                method.registration_fields)
    strategy = method(cfg, registry, device)
    Runner(grid, cfg, registry, strategy, outputs).run()
