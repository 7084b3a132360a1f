"""Personalisation latency: a client's model from a trained checkpoint, on CPU.

A short pFedHN run (LeNet-5) leaves a checkpoint; then, with no server running,
:mod:`server.personalize` (the offline path a user calls) is timed:

- **cold**: read the run folder (config and checkpoint) and build the frozen
  hypernetwork and embedding store (``load_run`` + ``Personalizer``), once per
  process;
- **model from a loaded checkpoint** (target < 50 ms): a new client's parameters
  generated from the starting embedding (the participants' mean: what a new client
  gets before any fitting, ``rounds=0``) plus the ready ``nn.Module`` — one
  hypernetwork forward for one embedding and a ``load_state_dict``;
- the same for a participant's own trained embedding;
- for reference, the full pFedHN new-client protocol, which first fits the
  embedding with ``novel-rounds`` local trainings on the client's data (that is
  local training, not generation, and is not held to the 50 ms target).

Every timing is the median (and 90th percentile) of repeats, one thread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.harness import RUNS, Job, LoadMonitor, machine, results_dir, run_jobs
from bench.report import fmt, load_caveat, save_plot, table, write_results

TARGET_S = 0.050
HYPERNETS = {
    "pertensor": {},
    "chunked": {"hypernet": "chunked", "server-optimizer": "adam", "server-lr": 1e-3},
}


def _times(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    fn()  # warm-up (first-call allocations, lazy imports)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return {
        "median_s": statistics.median(samples),
        "p90_s": samples[min(len(samples) - 1, int(0.9 * len(samples)))],
        "repeats": repeat,
    }


def measure(run_dir: str, repeat: int, fit_repeat: int) -> dict[str, Any]:
    """Time the offline personalisation steps on one finished run."""
    from common.partition import load_client_data
    from server.personalize import Personalizer, load_run, model_from

    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    out["cold_load_s"] = _times(lambda: Personalizer(load_run(run_dir)), 3)
    run = load_run(run_dir)
    pers = Personalizer(run)
    cfg = run.cfg
    participant = pers.method.participants[0]
    held_out = next(
        i for i in range(cfg.num_clients) if str(i) not in pers.method.participants
    )
    data = load_client_data(cfg, held_out)

    def new_client_zero_shot() -> torch.nn.Module:
        params, _ = pers.params(data, partition_id=held_out, rounds=0)
        return model_from(cfg, params)

    def own_embedding() -> torch.nn.Module:
        params, _ = pers.params(client_id=participant)
        return model_from(cfg, params)

    def fitted() -> torch.nn.Module:
        params, _ = pers.params(data, partition_id=held_out)
        return model_from(cfg, params)

    out["new_client_s"] = _times(new_client_zero_shot, repeat)
    out["participant_s"] = _times(own_embedding, repeat)
    out["fitted_new_client_s"] = _times(fitted, fit_repeat)
    out["novel_rounds"] = cfg.novel_rounds
    out["local_steps"] = cfg.local_steps
    out["hypernet_params"] = sum(p.numel() for p in pers.method.hnet.parameters())
    out["checkpoint_mb"] = (
        RUNS / "latency" / run.dir.name / "checkpoint" / "state.pt"
    ).stat().st_size / 2**20
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Train two short runs, time personalisation from their checkpoints, write."""
    # two rounds are enough for a checkpoint; local steps and the held-out fit are
    # the default job's (50 steps, 10 fit rounds), so the fitted time is realistic
    cfg = {"num-rounds": 2, "eval-every": 2, "seed": 42}
    if quick:
        cfg.update({"local-steps": 5, "novel-rounds": 2})
    todo = [
        Job(f"pfedhn-{name}", "quickstart", {**cfg, **extra}, tags={"hypernet": name})
        for name, extra in HYPERNETS.items()
    ]
    with LoadMonitor() as load:
        results = run_jobs("latency", todo, parallel=2)
        rows = []
        for result in results:
            row: dict[str, Any] = {
                "hypernet": result.job.tags["hypernet"],
                "ok": result.ok,
                "error": result.error,
            }
            if result.ok:
                row.update(
                    measure(
                        str(RUNS / "latency" / result.job.name),
                        repeat=5 if quick else 30,
                        fit_repeat=1 if quick else 3,
                    )
                )
            rows.append(row)
    meta = {"machine": machine(), "load": load.summary(), "quick": quick}
    data = {"suite": "latency", "target_s": TARGET_S, "rows": rows, **meta}
    out = results_dir(quick)
    write_results("latency", data, render(data), out)

    ok = [r for r in rows if r["ok"]]

    def draw(ax: Any) -> None:
        labels = [r["hypernet"] for r in ok]
        xs = range(len(ok))
        for i, (key, name) in enumerate(
            (("new_client_s", "new client (no fit)"), ("participant_s", "participant"))
        ):
            ax.bar(
                [x + (i - 0.5) * 0.4 for x in xs],
                [1e3 * r[key]["median_s"] for r in ok],
                0.4,
                label=name,
            )
        ax.axhline(1e3 * TARGET_S, color="red", ls="--", label="target 50 ms")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels)
        ax.set(ylabel="ms (median)", title="model from a loaded checkpoint (CPU)")
        ax.legend()

    save_plot(out / "latency.png", draw)
    return data


def render(data: dict[str, Any]) -> str:
    """The results page, from the suite's JSON alone."""
    return markdown(data["rows"], data)


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The suite's results page."""
    ok = [r for r in rows if r["ok"]]

    def ms(r: dict[str, Any], key: str) -> str:
        t = r[key]
        return f"{1e3 * t['median_s']:.1f} (p90 {1e3 * t['p90_s']:.1f})"

    body = table(
        [
            "hypernetwork",
            "HS",
            "checkpoint MB",
            "cold: load run + build, ms",
            f"new client's model, ms (target < {1e3 * TARGET_S:.0f})",
            "participant's model, ms",
            "new client with embedding fit, s",
        ],
        [
            [
                r["hypernet"],
                fmt(r["hypernet_params"]),
                fmt(r["checkpoint_mb"], 3),
                ms(r, "cold_load_s"),
                ms(r, "new_client_s")
                + (" ✓" if r["new_client_s"]["median_s"] < TARGET_S else " ✗"),
                ms(r, "participant_s"),
                f"{r['fitted_new_client_s']['median_s']:.2f} ({r['novel_rounds']} × "
                f"{r['local_steps']} local steps)",
            ]
            for r in ok
        ],
    )
    lines = [
        "### Personalisation latency — a client's model from a checkpoint (CPU)",
        "",
        "LeNet-5 target; `server/personalize.py` (offline, no server); "
        "median of repeats on one thread, after one warm-up call. *New "
        "client* = parameters generated from the starting embedding (the "
        "participants' mean) and loaded into a ready `nn.Module`; the full "
        "pFedHN protocol first fits that embedding with local training on the "
        "client (last column; local training, not generation).",
        "",
        body,
        "",
    ]
    failed = [r for r in rows if not r["ok"]]
    if failed:
        lines.append(
            "Not measured: "
            + "; ".join(f"{r['hypernet']} ({r['error']})" for r in failed)
            + "."
        )
    lines.append(load_caveat(meta["load"], meta["machine"]["cpus"]))
    return "\n".join(lines) + "\n"
