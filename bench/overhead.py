"""Framework overhead: the same rounds through `flwr run` and as a plain loop.

Each case runs the same config (same clients, local steps and seed) twice, back to
back, in one benchmark run:

(a) ``flwr run . local`` — Flower's simulation runtime: a local SuperLink, the
    ServerApp in its own process talking to it over gRPC, clients as Ray actors;
(b) ``bench/worker.py`` — the ServerApp's loop over :class:`DirectGrid`: the same
    strategy, loop and ClientApp handlers called directly in one process.

Both sides run one client at a time on one thread (Ray gets one CPU, so one actor),
so the ratio measures the framework, not parallelism; a Ray run with two actors
(Flower's default resources on this 2-core machine) is reported beside it.
Reported: start-up (launch to the first round: for (a) SuperLink, ServerApp, Ray
and registration; for (b) imports, data and registration), per-round time of the
training rounds after round 1 and their ratio, round 1 on its own, and whether both
sides reached the same accuracy (they should: same seed, same functions).
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.harness import Job, JobResult, LoadMonitor, machine, results_dir, run_jobs
from bench.report import fmt, load_caveat, paragraphs, save_plot, table, write_results

TARGET = 1.15

CASES: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    # name: (label, preset, overrides)
    "pfedhn-lenet": (
        "pFedHN, default job (Fashion-MNIST, LeNet-5, 10 × 50 steps)",
        "quickstart",
        {},
    ),
    "fedavg-lenet": (
        "FedAvg, default job (Fashion-MNIST, LeNet-5, 10 × 50 steps)",
        "fedavg-fmnist",
        {},
    ),
    "pfedhn-tiny": (
        "pFedHN, tiny (synthetic, MLP, 10 × 5 steps): per-message floor",
        None,
        {
            "method": "pfedhn",
            "dataset": "synthetic",
            "model": "mlp",
            "num-clients": 20,
            "local-steps": 5,
        },
    ),
}


def jobs(quick: bool) -> list[Job]:
    """Direct and simulated runs of every case, interleaved (ABBA over repeats)."""
    rounds = 3 if quick else 8
    reps = 1 if quick else 2
    out = []
    for case, (_, preset, overrides) in CASES.items():
        cfg = {
            **overrides,
            "num-rounds": rounds,
            "eval-every": rounds,
            "novel-rounds": 0,
            "seed": 42,
        }
        if quick:
            cfg["local-steps"] = 5
        for rep in range(reps):
            pair = [
                Job(
                    f"{case}-direct-{rep}",
                    preset,
                    cfg,
                    engine="direct",
                    tags={"case": case, "engine": "direct", "rep": rep},
                ),
                Job(
                    f"{case}-sim-{rep}",
                    preset,
                    cfg,
                    engine="sim",
                    ray_cpus=1,
                    tags={"case": case, "engine": "sim", "rep": rep},
                ),
            ]
            out += pair if rep % 2 == 0 else pair[::-1]
        if not quick:
            out.append(
                Job(
                    f"{case}-sim2-0",
                    preset,
                    cfg,
                    engine="sim",
                    ray_cpus=2,
                    tags={"case": case, "engine": "sim-2-actors", "rep": 0},
                )
            )
    return out


def record(result: JobResult) -> dict[str, Any]:
    """Per-run timings: start-up, round 1, later rounds, whole run."""
    rows = [r for r in result.rows if "round-s" in r]
    s = result.summary or {}
    return {
        "case": result.job.tags["case"],
        "engine": result.job.tags["engine"],
        "rep": result.job.tags["rep"],
        "ok": result.ok,
        "error": result.error,
        "startup_s": result.startup_s,
        "total_s": result.total_s,
        "round1_s": rows[0]["round-s"] if rows else None,
        "rounds_s": [r["round-s"] for r in rows[1:]],
        "exchange_s": [r.get("exchange-s") for r in rows[1:]],
        "server_update_s": [r.get("server-update-s") for r in rows],
        "wall_s": s.get("wall_s"),
        "participant_acc": s.get("participant_acc"),
        "train_loss": [r.get("train-loss") for r in rows],
        # rounds 2…N-1 seen from outside: wall and CPU of the whole process tree
        "outside": result.extra.get("after-round-1"),
        "bytes_down_per_round": s.get("bytes_down_per_round"),
    }


def compare(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: mean per-round time after round 1 on each side, and the ratios."""
    out = []
    for case in CASES:
        mine = [r for r in records if r["case"] == case and r["ok"]]
        by = {
            e: [r for r in mine if r["engine"] == e]
            for e in ("direct", "sim", "sim-2-actors")
        }
        if not by["direct"] or not by["sim"]:
            continue

        def per_round(runs: list[dict[str, Any]]) -> float | None:
            values = [v for r in runs for v in r["rounds_s"]]
            return statistics.fmean(values) if values else None

        def mean(runs: list[dict[str, Any]], key: str) -> float | None:
            values = [r[key] for r in runs if r[key] is not None]
            return statistics.fmean(values) if values else None

        def cpu_per_round(runs: list[dict[str, Any]]) -> float | None:
            values = [
                r["outside"]["cpu_s"] / r["outside"]["rounds"]
                for r in runs
                if r.get("outside")
            ]
            return statistics.fmean(values) if values else None

        def exchange_per_round(runs: list[dict[str, Any]]) -> float | None:
            values = [
                v for r in runs for v in r.get("exchange_s") or [] if v is not None
            ]
            return statistics.fmean(values) if values else None

        direct, sim = per_round(by["direct"]), per_round(by["sim"])
        cpu_direct, cpu_sim = cpu_per_round(by["direct"]), cpu_per_round(by["sim"])
        pairs = [
            (s, d)
            for s, d in zip(by["sim"], by["direct"], strict=False)
            if s["rounds_s"] and d["rounds_s"]
        ]
        row = {
            "case": case,
            "label": CASES[case][0],
            "direct_round_s": direct,
            "sim_round_s": sim,
            "ratio": sim / direct if sim and direct else None,
            "ratio_per_rep": [
                statistics.fmean(s["rounds_s"]) / statistics.fmean(d["rounds_s"])
                for s, d in pairs
            ],
            "overhead_per_round_s": sim - direct if sim and direct else None,
            "direct_exchange_s": exchange_per_round(by["direct"]),
            "sim_exchange_s": exchange_per_round(by["sim"]),
            "direct_cpu_round_s": cpu_direct,
            "sim_cpu_round_s": cpu_sim,
            "cpu_ratio": cpu_sim / cpu_direct if cpu_sim and cpu_direct else None,
            "direct_startup_s": mean(by["direct"], "startup_s"),
            "sim_startup_s": mean(by["sim"], "startup_s"),
            "direct_round1_s": mean(by["direct"], "round1_s"),
            "sim_round1_s": mean(by["sim"], "round1_s"),
            "same_accuracy": len(
                {
                    round(r["participant_acc"], 6)
                    for r in mine
                    if r["participant_acc"] is not None
                }
            )
            == 1,
            "same_losses": len(
                {tuple(round(x, 5) for x in r["train_loss"]) for r in mine}
            )
            == 1,
            "sim2_round_s": per_round(by["sim-2-actors"]),
            "sim2_startup_s": mean(by["sim-2-actors"], "startup_s"),
        }
        row["sim2_ratio"] = (
            row["sim2_round_s"] / direct if row["sim2_round_s"] and direct else None
        )
        row["sim_cpu_by_process_s"] = by_process(by["sim"])
        row["direct_cpu_by_process_s"] = by_process(by["direct"])
        out.append(row)
    return out


def by_process(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean CPU seconds per round of each kind of process, over the runs."""
    parts = [
        {
            k: v / r["outside"]["rounds"]
            for k, v in r["outside"].get("cpu_by_process_s", {}).items()
        }
        for r in runs
        if r.get("outside")
    ]
    kinds = dict.fromkeys(k for p in parts for k in p)
    return {k: statistics.fmean(p.get(k, 0.0) for p in parts) for k in kinds}


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The suite's results page."""
    body = table(
        [
            "case",
            "in-process s/round",
            "`flwr run` s/round",
            f"ratio (target ≤ {TARGET})",
            "overhead s/round",
            "of which exchange s/round: in-process / `flwr run`",
            "CPU s/round: in-process / `flwr run` (ratio)",
            "start-up in-process s",
            "start-up `flwr run` s",
            "round 1 in-process / `flwr run` s",
            "same accuracy",
            "`flwr run`, 2 actors: s/round (ratio)",
        ],
        [
            [
                r["label"],
                fmt(r["direct_round_s"]),
                fmt(r["sim_round_s"]),
                f"**{r['ratio']:.3f}**" + (" ✓" if r["ratio"] <= TARGET else " ✗"),
                fmt(r["overhead_per_round_s"], 2),
                (
                    f"{fmt(r['direct_exchange_s'])} / {fmt(r['sim_exchange_s'])}"
                    if r.get("sim_exchange_s")
                    else "—"
                ),
                (
                    f"{fmt(r['direct_cpu_round_s'])} / {fmt(r['sim_cpu_round_s'])} "
                    f"({r['cpu_ratio']:.2f})"
                    if r.get("cpu_ratio")
                    else "—"
                ),
                fmt(r["direct_startup_s"]),
                fmt(r["sim_startup_s"]),
                f"{fmt(r['direct_round1_s'])} / {fmt(r['sim_round1_s'])}",
                "yes" if r["same_accuracy"] and r["same_losses"] else "no",
                (
                    f"{fmt(r['sim2_round_s'])} ({r['sim2_ratio']:.2f})"
                    if r["sim2_round_s"]
                    else "—"
                ),
            ]
            for r in rows
        ],
    )
    lines = [
        "### Framework overhead — `flwr run` vs the same functions in process",
        "",
        f"{meta['rounds']} rounds per run, {meta['reps']} repetitions per side, "
        "run back to back in one benchmark run (order alternated); per-round "
        "time = the loop's `round-s` (configure, exchange, validate, server "
        "update) of rounds 2…N. Both sides: one client at a time, one thread, "
        "each run in its own session (see docs/benchmarks.md on autogroup). "
        "CPU = user + system time of the run's whole process tree (for `flwr "
        "run`: CLI, SuperLink, ServerApp process, Ray's GCS, raylet and actor) "
        "per round, rounds 2…N−1: unlike wall time it does not depend on "
        "other load on the machine.",
        "",
        body,
        "",
    ]
    for r in rows:
        sim = r.get("sim_cpu_by_process_s") or {}
        if not sim:
            continue
        direct = sum((r.get("direct_cpu_by_process_s") or {}).values())
        lines.append(
            f"CPU seconds per round by process, `flwr run`, {r['case']}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in sim.items())
            + f" (in process: {direct:.3f} in all)."
        )
    lines.append("")
    lines += paragraphs(meta.get("notes", []))
    lines.append(load_caveat(meta["load"], meta["machine"]["cpus"]))
    return "\n".join(lines) + "\n"


def run(quick: bool = False) -> dict[str, Any]:
    """Run the overhead suite and write its results."""
    todo = jobs(quick)
    with LoadMonitor() as load:
        results = run_jobs("overhead", todo, parallel=1, sample_rss=True)
    records = [record(r) for r in results]
    rows = compare(records)
    meta = {
        "machine": machine(),
        "load": load.summary(),
        "quick": quick,
        "rounds": 3 if quick else 8,
        "reps": 1 if quick else 2,
        "notes": NOTES,
    }
    data = {
        "suite": "overhead",
        "target_ratio": TARGET,
        "rows": rows,
        "runs": records,
        **meta,
    }
    out = results_dir(quick)
    write_results("overhead", data, render(data), out)

    def draw(ax: Any) -> None:
        labels = [r["case"] for r in rows]
        xs = range(len(rows))
        ax.bar(
            [x - 0.2 for x in xs],
            [r["direct_round_s"] for r in rows],
            0.4,
            label="in process",
        )
        ax.bar(
            [x + 0.2 for x in xs],
            [r["sim_round_s"] for r in rows],
            0.4,
            label="flwr run (simulation)",
        )
        for x, r in zip(xs, rows, strict=True):
            ax.text(
                x + 0.2,
                r["sim_round_s"],
                f"×{r['ratio']:.2f}",
                ha="center",
                va="bottom",
            )
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels)
        ax.set(
            ylabel="seconds per round (after round 1)",
            title="framework overhead per round",
        )
        ax.legend()

    save_plot(out / "overhead.png", draw)
    return data


def render(data: dict[str, Any]) -> str:
    """The results page, from the suite's JSON alone."""
    return markdown(data["rows"], data)


#: What the profile showed; kept with the numbers (see docs/benchmarks.md).
NOTES: list[str] = [
    "**Target.** At the default job's size (0.5 s of local training per client "
    "message) `flwr run` costs 7–10 % more wall time per round than the plain loop "
    "(1.07 pFedHN, 1.10 FedAvg, on a quiet machine) and ≈ 18 % more CPU: the target "
    "(≤ 1.15) is met. Nearly all of the difference is in the exchange (waiting on "
    "clients), not in the server's work. For a tiny round (≈ 10 ms of training per "
    "message) Flower's per-message cost dominates: the exchange takes 0.24 s "
    "instead of 0.085 s, ≈ 16 ms per client message (ratio 1.9). Flower with two "
    "Ray actors (its default resources here) runs two clients at once and beats "
    "the 1-thread plain loop by 1.6× at the default job's size.",
    "**Profile (py-spy, the tiny case, 150 rounds through `flwr run`).** The "
    "ServerApp thread spends 51 % of its time waiting for replies in "
    "`server/messaging.py`'s `exchange`, 31 % writing the per-round checkpoint "
    "(ours, outside `round-s`, the same in process), 8 % in the hypernetwork "
    "update and ≈ 5 % generating, packing and validating. The Ray actor running "
    "the ClientApp is idle 79 % of the time, waiting for its next message; when "
    "busy it runs our training (Ray's deserialisation ≈ 3 %). So the extra time "
    "per exchange is delivery, not work: Flower's simulation engine looks for new "
    "messages by polling its state for every node and then sleeping 0.1 s "
    "(`flwr/server/superlink/fleet/vce/vce_api.py`, `add_messages_to_queue`), so a "
    "pushed round waits 50 ms on average before its first client starts; then "
    "each message is a Ray task (the message and the node's context pickled both "
    "ways) and its reply is stored in the SuperLink's state. That is Flower's and "
    "Ray's own cost; the rest of the CPU difference is per second of run "
    "(SuperLink heartbeats and log streaming, Ray's raylet, GCS, dashboard and "
    "agents: ≈ 0.3 CPU-s per round at the default job's size). Start-up "
    "(SuperLink, SuperExec, simulation process, Ray, registration) is ≈ 22 s "
    "against 3–4 s in process.",
    "**Ours, fixed.** The reply poll backed off to 250 ms between pulls "
    "(`server/messaging.py`): ≈ 0.1 s of idle wait per exchange, 13 % of a tiny "
    "round; now capped at 20 ms (a pull is one in-memory or gRPC call). The "
    "per-round checkpoint with fsync (hypernetwork, optimiser and the best "
    "round's copy: 95 MB for per-tensor LeNet-5) is the largest server cost of a "
    "small round: `checkpoint-every` (default 1) now spaces it out. The runs above "
    "use the defaults.",
    "**Ours, left.** Each reply's arrays are deserialised twice (`from_record` in "
    "validation and again in the strategy's `aggregate_train`, which takes "
    "Flower's messages): 1.5 % of the server thread in the tiny case.",
]
