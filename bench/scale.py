"""Scale: 100, 1,000 and 5,000 registered clients, 10 sampled per round.

A round's cost must follow the clients *sampled*, not those *registered*: the
server holds one embedding row per registered client (looked up by index) and no
per-client model. Each size runs pFedHN for a few rounds with tiny clients (an MLP,
5 local steps of 8 samples: the same work per sampled client at every size):

- through ``flwr run`` (Ray simulation, one virtual SuperNode per client), the
  ServerApp's process RSS sampled from outside;
- in process (:class:`DirectGrid`), RSS after every round, and once more with
  the pFedHN paper's embedding size d = 1 + N/4 (set explicitly: the default is
  capped at 26 since issue 30), whose store grows as N².

Client data: Fashion-MNIST cut in 2 shards per client (flwr-datasets
``ShardPartitioner``); the synthetic set (6,000 samples) cannot give 5,000 clients
a train, validation and test sample each. Registration (one query per node) and the
last round's evaluation (every participant) necessarily grow with N; they are
reported apart from the training rounds.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.harness import Job, JobResult, LoadMonitor, machine, results_dir, run_jobs
from bench.report import fmt, load_caveat, paragraphs, save_plot, table, write_results

SIZES = (100, 1000, 5000)
EMBED_DIM = 32


def base_config(n: int, rounds: int) -> dict[str, Any]:
    """pFedHN, tiny clients, 10 per round, no held-out fitting, long timeouts."""
    return {
        "method": "pfedhn",
        "dataset": "fashion-mnist",
        "model": "mlp",
        "num-clients": n,
        "partitioner": "shards",
        "shards-per-client": 2,
        "holdout": 0.2,
        "clients-per-round": 10,
        "local-steps": 5,
        "batch-size": 8,
        "num-rounds": rounds,
        "eval-every": 1000,
        "novel-rounds": 0,
        "embed-dim": EMBED_DIM,
        "round-timeout": 1800.0,
        "seed": 42,
    }


def jobs(quick: bool) -> list[Job]:
    """Per size: simulation, in process, and in process with d = 1 + N/4."""
    sizes = (20, 50) if quick else SIZES
    rounds = 3 if quick else 6
    out = []
    for n in sizes:
        cfg = base_config(n, rounds)
        # no final evaluation through Ray (it is every participant, O(N) by design,
        # and measured in process below): stop after the last training round
        sim_cfg = {**cfg, "num-rounds": rounds + 1, "stop-after-round": rounds}
        out.append(
            Job(
                f"sim-{n}",
                None,
                sim_cfg,
                engine="sim",
                ray_cpus=2,
                timeout=5400,
                tags={"engine": "sim", "n": n},
            )
        )
        out.append(
            Job(
                f"direct-{n}",
                None,
                cfg,
                engine="direct",
                tags={"engine": "direct", "n": n},
            )
        )
        out.append(
            Job(
                f"direct-default-d-{n}",
                None,
                {**cfg, "embed-dim": 1 + n // 4},  # the paper's, uncapped
                engine="direct",
                tags={"engine": "direct-default-d", "n": n},
            )
        )
    return out


def record(result: JobResult) -> dict[str, Any]:
    """Round times, start-up and memory of one run."""
    rows = [r for r in result.rows if "round-s" in r]
    later = [r["round-s"] for r in rows[1:]]
    rec: dict[str, Any] = {
        "engine": result.job.tags["engine"],
        "n": result.job.tags["n"],
        "ok": result.ok,
        "error": result.error,
        "startup_s": result.startup_s,
        "total_s": result.total_s,
        "round1_s": rows[0]["round-s"] if rows else None,
        "round_s": statistics.fmean(later) if later else None,
        "rounds_s": [r["round-s"] for r in rows],
        "server_update_s": statistics.fmean(r["server-update-s"] for r in rows)
        if rows
        else None,
        "hypernet_params": (result.summary or {}).get("hypernet_params"),
        "wall_s": (result.summary or {}).get("wall_s"),
    }
    extra = result.extra
    if "rss-mb" in extra:  # in process: RSS after every round, measured inside
        rec["rss_rounds_mb"] = extra["rss-mb"]
        rec["rss_startup_mb"] = extra.get("rss-after-startup-mb")
        rec["server_state_bytes"] = extra.get("server-state-bytes")
    samples = extra.get("rss-samples") or []
    if samples and "rss-mb" not in extra:  # simulation: sampled from outside
        start = result.startup_s or 0.0
        during = [v for t, v in samples if t >= start]
        rec["rss_rounds_mb"] = [max(during)] if during else []
        rec["rss_startup_mb"] = max((v for t, v in samples if t < start), default=None)
    rec["rss_mb"] = max(rec["rss_rounds_mb"]) if rec.get("rss_rounds_mb") else None
    rec["rss_peak_mb"] = extra.get("rss-peak-mb")
    outside = extra.get("after-round-1")  # rounds 2…N-1: wall, CPU by process
    if outside:
        rec["cpu_per_round_by_process_s"] = {
            k: v / outside["rounds"] for k, v in outside["cpu_by_process_s"].items()
        }
        rec["wall_per_round_s"] = outside["wall_s"] / outside["rounds"]
    return rec


def markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The suite's results page."""
    names = {
        "sim": "`flwr run` (Ray)",
        "direct": "in process",
        "direct-default-d": "in process, d = 1 + N/4",
    }
    body = table(
        [
            "path",
            "registered N",
            "s/round, median (mean), rounds 2…",
            "round 1 s",
            "server update ms",
            "start-up s (incl. registration)",
            "HS",
            "server RSS MB (rounds)",
            "peak RSS MB (whole run)",
            "server state MB",
        ],
        [
            [
                names[r["engine"]],
                f"{r['n']:,}",
                f"{fmt(statistics.median(r['rounds_s'][1:]))} ({fmt(r['round_s'])})"
                if len(r["rounds_s"]) > 1
                else "—",
                fmt(r["round1_s"]),
                fmt(1e3 * r["server_update_s"]) if r["server_update_s"] else "—",
                fmt(r["startup_s"]),
                fmt(r["hypernet_params"]),
                fmt(r["rss_mb"], 4),
                fmt(r["rss_peak_mb"], 4),
                fmt(r["server_state_bytes"] / 2**20, 3)
                if r.get("server_state_bytes")
                else "—",
            ]
            for r in records
            if r["ok"]
        ],
    )
    lines = [
        "### Scale — registered vs sampled clients",
        "",
        f"pFedHN, 10 clients sampled per round, {meta['rounds']} rounds, MLP "
        "target, 5 local steps of 8 samples, embedding d = "
        f"{EMBED_DIM} unless noted; Fashion-MNIST in 2 shards per client.",
        "",
        body,
        "",
    ]
    failed = [r for r in records if not r["ok"]]
    if failed:
        lines.append(
            "Did not finish: "
            + "; ".join(
                f"{names[r['engine']]} N={r['n']:,} ({r['error']})" for r in failed
            )
            + "."
        )
    sim = [
        r
        for r in records
        if r["engine"] == "sim" and r["ok"] and r.get("cpu_per_round_by_process_s")
    ]
    if sim:
        lines.append(
            "CPU seconds per round of the `flwr run` processes (rounds "
            "2…N−1): "
            + "; ".join(
                f"N={r['n']:,}: "
                + ", ".join(
                    f"{k.split(' (')[0]} {v:.3f}"
                    for k, v in r["cpu_per_round_by_process_s"].items()
                    if v >= 0.001
                )
                for r in sim
            )
            + "."
        )
        lines.append("")
    lines += paragraphs(meta.get("notes", []))
    lines.append(load_caveat(meta["load"], meta["machine"]["cpus"]))
    return "\n".join(lines) + "\n"


def run(quick: bool = False) -> dict[str, Any]:
    """Run the scale suite and write its results."""
    with LoadMonitor() as load:
        results = run_jobs("scale", jobs(quick), parallel=1, sample_rss=True)
    records = [record(r) for r in results]
    meta = {
        "machine": machine(),
        "load": load.summary(),
        "quick": quick,
        "rounds": 3 if quick else 6,
        "notes": NOTES,
    }
    data = {"suite": "scale", "rows": records, **meta}
    out = results_dir(quick)
    write_results("scale", data, render(data), out)

    def curve(key: str, ylabel: str, title: str) -> Any:
        def draw(ax: Any) -> None:
            for engine, label in (
                ("sim", "flwr run (Ray)"),
                ("direct", "in process"),
                ("direct-default-d", "in process, d = 1 + N/4"),
            ):
                pts = [
                    (r["n"], r[key])
                    for r in records
                    if r["engine"] == engine and r["ok"] and r[key] is not None
                ]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=label)
            ax.set_xscale("log")
            ax.set(
                xlabel="registered clients N (10 sampled per round)",
                ylabel=ylabel,
                title=title,
            )
            ax.set_ylim(bottom=0)
            ax.legend()

        return draw

    save_plot(
        out / "scale-round-time.png",
        curve("round_s", "seconds per round", "round time vs registered"),
    )
    save_plot(
        out / "scale-rss.png",
        curve("rss_mb", "server RSS (MB)", "server memory vs registered"),
    )
    return data


def render(data: dict[str, Any]) -> str:
    """The results page, from the suite's JSON alone."""
    return markdown(data["rows"], data)


NOTES: list[str] = [
    "**Training rounds follow the sampled clients.** In process, a round costs the "
    "same at 100, 1,000 and 5,000 registered clients (median 0.17–0.18 s) and the "
    "RSS during rounds is flat (1,031 → 1,049 MB: +18 MB for 50× the clients, the "
    "registry and the 5,000 × 32 embedding store). A profile of five rounds at "
    "5,000 clients finds no per-client work in our loop (sorting the registry's "
    "participants, 3 ms per round, is the only O(N) step): the server holds one "
    "embedding row per client, looked up by index, and no per-client model.",
    "**Evaluation rounds are bounded too.** They evaluate every participant, "
    "`eval-clients-per-batch` (256) clients per exchange, so the server holds one "
    "batch's generated models at a time: peak RSS of the whole run at 5,000 "
    "clients (4,000 participants evaluated) is 1.3 GB, against 3.5 GB when every "
    "participant's model was generated at once (this suite's previous run).",
    "**Through `flwr run`** the round grows with registered nodes, 0.33 → 0.51 s "
    "from 100 to 5,000, and so does the simulation process's CPU (0.32 → 0.56 s "
    "per round): Flower's simulation engine polls its state for every registered "
    "node every 0.1 s (`flwr/server/superlink/fleet/vce/vce_api.py`, "
    "`add_messages_to_queue`), Flower's own cost. Its RSS grows by ≈ 100 MB for "
    "5,000 nodes (Flower's per-node contexts and state, and our registry).",
    "**What must grow with N:** start-up, because registration queries every node "
    "once (22 → 75 s through Ray, 4 → 11 s in process), and the evaluation rounds' "
    "time (every participant evaluates). The `flwr run` jobs stop after their last "
    "training round (`stop-after-round`) to leave that evaluation out; 5,000 Ray "
    "virtual SuperNodes were feasible here.",
    "**The pFedHN paper's d = 1 + N/4** makes the store grow as N·d = N²/4: at 5,000 "
    "clients d = 1,251, 110 MB of server state instead of 63 MB (+96 MB RSS); the "
    "suite fixes d = 32 to isolate the runtime, and `embed-dim = 0` now stops at "
    "26 (docs/pfedhn.md).",
]
