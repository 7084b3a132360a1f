"""One in-process run for the harness: ``python -m bench.worker '<run config JSON>'``.

Runs the ServerApp's code path over :class:`server.direct_grid.DirectGrid` (the real
ClientApp handlers, called in this process) and writes ``bench-worker.json`` beside
the run's outputs: start-up time and, per training round, the time spent making the
clients' parameters (``configure_train``: sampling, generation, records).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

T0 = time.monotonic()


def instrument(strategy: Any, timings: dict[str, list[float]]) -> None:
    """Time ``configure_train`` (and the ``generate`` inside it) on this instance."""
    configure, generate = strategy.configure_train, strategy.generate
    inside = {"train": False}

    def timed_generate(client_ids: Any) -> Any:
        start = time.perf_counter()
        out = generate(client_ids)
        if inside["train"]:
            timings["generate-s"].append(time.perf_counter() - start)
        return out

    def timed_configure(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        inside["train"] = True
        try:
            return list(configure(*args, **kwargs))
        finally:
            inside["train"] = False
            timings["configure-train-s"].append(time.perf_counter() - start)

    strategy.generate = timed_generate
    strategy.configure_train = timed_configure


def rss_mb() -> float:
    """This process's resident memory in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def track_rounds(runner: Any, timings: dict[str, list[float]]) -> None:
    """Record this process's RSS after every training round."""
    train_round = runner.train_round

    def timed_round(rnd: int) -> Any:
        row = train_round(rnd)
        timings["rss-mb"].append(rss_mb())
        return row

    runner.train_round = timed_round


def state_bytes(state: Any) -> int:
    """Bytes of all tensors in a (nested) state dict."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(state_bytes(v) for v in state)
    return 0


def main(argv: list[str]) -> int:
    """Run one config in process and record the timings the suites need."""
    import torch

    from server.direct_grid import build_runner

    torch.set_num_threads(1)
    config = json.loads(argv[0])
    imported = time.monotonic() - T0
    runner = build_runner(config)
    built = time.monotonic() - T0
    timings: dict[str, list[float]] = {
        "generate-s": [],
        "configure-train-s": [],
        "rss-mb": [],
    }
    instrument(runner.strategy, timings)
    track_rounds(runner, timings)
    rss_start = rss_mb()
    runner.run()
    out = Path(runner.outputs.dir) / "bench-worker.json"
    out.write_text(
        json.dumps(
            {
                "import-s": imported,
                "startup-s": built,
                "total-s": time.monotonic() - T0,
                "rss-after-startup-mb": rss_start,
                "server-state-bytes": state_bytes(runner.strategy.state_dict()),
                **timings,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
