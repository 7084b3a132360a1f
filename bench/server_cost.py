"""Server cost: the hypernetwork's share of a round, per-tensor vs chunked.

Two measurements:

1. **In the loop** — real rounds of the default job (Fashion-MNIST, LeNet-5, 50
   local steps) in process, with 10 and 50 clients per round, for both
   hypernetworks. Per round: the time to make the clients' parameters
   (``configure_train``: sampling, one batched generation, records), the server
   update (``aggregate_train``: batched re-generation, backward of −Δ, clip, step)
   and the whole round; the share is (generation + update) / round.
2. **In isolation** — the same two server operations on random deltas, repeated,
   batched (one forward for all B clients: what the strategy does) against one
   client at a time (a Python loop), to show where batching pays.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.harness import Job, JobResult, LoadMonitor, machine, results_dir, run_jobs
from bench.report import fmt, load_caveat, paragraphs, save_plot, table, write_results

TARGET = 0.05
HYPERNETS = ("pertensor", "chunked")
CHUNKED = {"server-optimizer": "adam", "server-lr": 1e-3}


def jobs(quick: bool) -> list[Job]:
    """One in-process run per (hypernetwork, clients per round)."""
    out = []
    for hnet in HYPERNETS:
        for cpr in (10, 50):
            cfg = {
                "hypernet": hnet,
                "clients-per-round": cpr,
                "num-clients": 63,
                "num-rounds": 2 if quick else 3,
                "eval-every": 100,
                "novel-rounds": 0,
                "seed": 42,
                **(CHUNKED if hnet == "chunked" else {}),
            }
            if quick:
                cfg["local-steps"] = 5
            out.append(
                Job(
                    f"{hnet}-{cpr}",
                    "quickstart",
                    cfg,
                    tags={"hypernet": hnet, "clients": cpr},
                )
            )
    return out


def record(result: JobResult) -> dict[str, Any]:
    """Per-round generation, update and round times of one run."""
    rows = [r for r in result.rows if "round-s" in r]
    gen = result.extra.get("configure-train-s", [])
    update = [r["server-update-s"] for r in rows]
    rounds = [r["round-s"] for r in rows]
    server = [g + u for g, u in zip(gen, update, strict=False)]
    shares = [s / r for s, r in zip(server, rounds, strict=False)]
    return {
        "hypernet": result.job.tags["hypernet"],
        "clients": result.job.tags["clients"],
        "ok": result.ok,
        "error": result.error,
        "hypernet_params": (result.summary or {}).get("hypernet_params"),
        "generate_s": gen,
        "update_s": update,
        "round_s": rounds,
        "share": shares,
        "share_mean": statistics.fmean(shares) if shares else None,
        "update_share_mean": statistics.fmean(
            [u / r for u, r in zip(update, rounds, strict=False)]
        )
        if rounds
        else None,
    }


# ---- isolated timings -------------------------------------------------------------
def _time(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure(
    hnet: torch.nn.Module,
    store: torch.nn.Parameter,
    opt: torch.optim.Optimizer,
    shapes: dict[str, torch.Size],
    b: int,
    repeat: int,
) -> dict[str, float]:
    """Median times of generation and update for ``b`` clients, batched vs loop."""
    from server.update import hypernet_step, round_weights

    params = [*hnet.parameters(), store]
    deltas = [{k: 1e-3 * torch.randn(s) for k, s in shapes.items()} for _ in range(b)]
    w = round_weights([1] * b, "uniform")
    rows = list(range(b))

    def gen_batched() -> Any:
        with torch.no_grad():
            out = hnet(store[rows])
            return [{k: v[i] for k, v in out.items()} for i in range(b)]

    def gen_loop() -> Any:
        with torch.no_grad():
            return [hnet(store[[i]]) for i in rows]

    def step_batched() -> Any:
        return hypernet_step(hnet, store[rows], deltas, w, opt, params, 50.0)

    def step_loop() -> None:
        # one forward + backward per client, then one step (the unbatched way)
        opt.zero_grad(set_to_none=True)
        for i, d in zip(rows, deltas, strict=True):
            theta = hnet(store[[i]])
            torch.autograd.backward(
                [theta[k] for k in d],
                grad_tensors=[-w[i] * d[k].unsqueeze(0) for k in d],
            )
        torch.nn.utils.clip_grad_norm_(params, 50.0)
        opt.step()

    return {
        "generate_batched_s": _time(gen_batched, repeat),
        "generate_loop_s": _time(gen_loop, repeat),
        "update_batched_s": _time(step_batched, repeat),
        "update_loop_s": _time(step_loop, repeat),
    }


def isolated(quick: bool) -> list[dict[str, Any]]:
    """Generation and update on random deltas: batched vs one client at a time."""
    from common.config import parse_run_config
    from common.models import build_model, param_shapes
    from server.strategies.pfedhn import build_hypernet, make_optimizer

    torch.set_num_threads(1)
    shapes = param_shapes(build_model("lenet5"))
    repeat = 3 if quick else 10
    out = []
    for hnet_name in HYPERNETS:
        cfg = parse_run_config({"hypernet": hnet_name, "num-clients": 63})
        hnet = build_hypernet(cfg, shapes)
        store = torch.nn.Parameter(torch.randn(63, cfg.resolved_embed_dim))
        opt = make_optimizer(
            "sgd",
            [{"params": list(hnet.parameters())}, {"params": [store]}],
            1e-3,
            0.9,
            1e-3,
        )
        for b in (10, 50):
            out.append(
                {
                    "hypernet": hnet_name,
                    "clients": b,
                    "hypernet_params": sum(p.numel() for p in hnet.parameters()),
                    **_measure(hnet, store, opt, shapes, b, repeat),
                }
            )
    return out


# ---- results ------------------------------------------------------------------------
def markdown(
    records: list[dict[str, Any]], iso: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    """The suite's results page."""
    loop_table = table(
        [
            "hypernetwork",
            "HS",
            "clients/round",
            "generation + records ms/round",
            "update ms/round",
            "round s",
            f"server share (target ≤ {TARGET:.0%})",
        ],
        [
            [
                r["hypernet"],
                fmt(r["hypernet_params"]),
                r["clients"],
                fmt(1e3 * statistics.fmean(r["generate_s"]))
                if r["generate_s"]
                else "—",
                fmt(1e3 * statistics.fmean(r["update_s"])) if r["update_s"] else "—",
                fmt(statistics.fmean(r["round_s"])) if r["round_s"] else "—",
                (
                    f"**{100 * r['share_mean']:.2f} %**"
                    + (" ✓" if r["share_mean"] <= TARGET else " ✗")
                )
                if r["share_mean"] is not None
                else "—",
            ]
            for r in records
        ],
    )
    iso_table = table(
        [
            "hypernetwork",
            "clients",
            "generate: batched / loop ms",
            "update: batched / loop ms",
            "batching speed-up (update)",
        ],
        [
            [
                r["hypernet"],
                r["clients"],
                f"{1e3 * r['generate_batched_s']:.1f} / "
                f"{1e3 * r['generate_loop_s']:.1f}",
                f"{1e3 * r['update_batched_s']:.1f} / {1e3 * r['update_loop_s']:.1f}",
                f"×{r['update_loop_s'] / r['update_batched_s']:.1f}",
            ]
            for r in iso
        ],
    )
    lines = [
        "### Server cost — the hypernetwork's share of a round",
        "",
        f"Default job (Fashion-MNIST, LeNet-5, 50 local steps, 63 clients), "
        f"{meta['rounds']} rounds in process on one thread; share = (parameter "
        "generation + hypernetwork update) / round time (round = clients' "
        "training + exchange + server work).",
        "",
        loop_table,
        "",
        "The same operations in isolation (random deltas, median of repeats, "
        "one thread): batched = one forward/backward for all clients (what "
        "`server/update.py` does), loop = one client at a time.",
        "",
        iso_table,
        "",
    ]
    lines += paragraphs(meta.get("notes", []))
    lines.append(load_caveat(meta["load"], meta["machine"]["cpus"]))
    return "\n".join(lines) + "\n"


def run(quick: bool = False) -> dict[str, Any]:
    """Run the server-cost suite and write its results."""
    with LoadMonitor() as load:
        results = run_jobs("server-cost", jobs(quick), parallel=1)
        iso = isolated(quick)
    records = [record(r) for r in results]
    meta = {
        "machine": machine(),
        "load": load.summary(),
        "quick": quick,
        "rounds": 2 if quick else 3,
        "notes": NOTES,
    }
    data = {
        "suite": "server-cost",
        "target_share": TARGET,
        "rows": records,
        "isolated": iso,
        **meta,
    }
    out = results_dir(quick)
    write_results("server-cost", data, render(data), out)

    def draw(ax: Any) -> None:
        labels = [f"{r['hypernet']}\n{r['clients']}/round" for r in records]
        shares = [100 * (r["share_mean"] or 0) for r in records]
        ax.bar(labels, shares, color=["C0", "C0", "C1", "C1"][: len(labels)])
        ax.axhline(100 * TARGET, color="red", ls="--", label="target 5 %")
        for i, s in enumerate(shares):
            ax.text(i, s, f"{s:.2f} %", ha="center", va="bottom")
        ax.set(
            ylabel="server share of a round (%)",
            title="hypernetwork generation + update per round",
        )
        ax.legend()

    save_plot(out / "server-cost.png", draw)
    return data


def render(data: dict[str, Any]) -> str:
    """The results page, from the suite's JSON alone."""
    return markdown(data["rows"], data["isolated"], data)


NOTES: list[str] = []
