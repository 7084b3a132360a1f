"""Scale: 1,000, 10,000 and 100,000 registered clients, 10 sampled per round.

A round's cost must follow the clients *sampled*, not those *registered*. Each size
runs pFedHN and HyperFedZero with lazy registration (a client registers the round it
is first drawn) and a bounded evaluation sample (``eval-sample``), for a few rounds
with tiny clients (an MLP, 5 local steps of 8 samples: the same work per sampled
client at every size):

- in process (:class:`DirectGrid`): the server loop and the real client handlers in
  one process, RSS after every round;
- through ``flwr run`` (Ray simulation, one virtual SuperNode per client): the
  ``flwr-simulation`` process (ServerApp, Flower's simulation engine, Ray driver)
  sampled from outside, CPU per process.

Client data: partitioner ``sampled`` (a scale-only setting, common/partition.py):
each client draws 20 rows of 2 seeded classes of Fashion-MNIST on its own, so
100,000 clients fit 70,000 images (clients may share rows). The jobs stop after
their last measured round (``stop-after-round``): the last round of a run evaluates
every participant and registers every client, O(N) by design and not what this
suite measures.

Flower's own per-node costs are measured apart (:mod:`bench.flower_probe`): node
and Context registration at start-up, and the engine's polling sweep.

The earlier suite (eager registration, pFedHN only, 100 / 1,000 / 5,000 clients) is
kept in the JSON and the page as history (``eager_history``), not re-run.

``python -m bench scale`` runs everything; ``python -m bench.scale --engines direct
--sizes 1000 --methods pfedhn`` runs a subset and merges it into the committed
results (``--render`` only re-renders them; ``--probe`` re-runs only the probe).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from bench.harness import (
    PYTHON,
    ROOT,
    Job,
    JobResult,
    LoadMonitor,
    machine,
    results_dir,
    run_jobs,
)
from bench.report import fmt, load_caveat, paragraphs, save_plot, table, write_results

SIZES = (1_000, 10_000, 100_000)
METHODS = ("pfedhn", "hyperfedzero")
ENGINES = ("direct", "sim")
ROUNDS = 6
EVAL_EVERY = 3
EVAL_SAMPLE = 100
SAMPLES_PER_CLIENT = 20
#: ``flwr run`` jobs: the most a job may take (start-up included), by size.
SIM_TIMEOUT = {1_000: 900.0, 10_000: 1200.0, 100_000: 1500.0}
#: Sizes probed for Flower's own per-node costs.
PROBE_SIZES = (1_000, 10_000, 30_000, 100_000)
NAMES = {"sim": "`flwr run` (Ray)", "direct": "in process"}
METHOD_NAMES = {"pfedhn": "pFedHN", "hyperfedzero": "HyperFedZero"}


def base_config(method: str, n: int, rounds: int) -> dict[str, Any]:
    """Tiny clients, 10 per round, lazy registration, a bounded evaluation sample;
    stops after ``rounds`` (the run's last round, every participant, is not run)."""
    cfg: dict[str, Any] = {
        "method": method,
        "dataset": "fashion-mnist",
        "model": "mlp",
        "num-clients": n,
        "partitioner": "sampled",
        "samples-per-client": SAMPLES_PER_CLIENT,
        "classes-per-client": 2,
        "holdout": 0.2,
        "clients-per-round": 10,
        "local-steps": 5,
        "batch-size": 8,
        "registration": "lazy",
        "eval-sample": EVAL_SAMPLE,
        "eval-every": EVAL_EVERY,
        "num-rounds": rounds + 1,
        "stop-after-round": rounds,
        "round-timeout": 1800.0,
        "seed": 42,
    }
    if method == "pfedhn":
        cfg["novel-rounds"] = 0
    return cfg


def jobs(
    quick: bool,
    engines: Sequence[str] = ENGINES,
    sizes: Sequence[int] | None = None,
    methods: Sequence[str] = METHODS,
) -> list[Job]:
    """Per size and method: in process and through ``flwr run``."""
    sizes = sizes or ((20, 50) if quick else SIZES)
    rounds = 3 if quick else ROUNDS
    out = []
    for n in sizes:
        for method in methods:
            for engine in engines:
                cfg = base_config(method, n, rounds)
                if engine == "sim":
                    # no evaluation round through Ray: each exchange there waits
                    # for Flower's polling sweep, whose cost grows with nodes ×
                    # messages waiting (the probe), and an evaluation sample's
                    # registrations and messages would take minutes at 100,000
                    cfg["eval-every"] = rounds + 1
                tags = {"engine": engine, "n": n, "method": method}
                if engine == "sim":
                    out.append(
                        Job(
                            f"sim-{method}-{n}",
                            None,
                            cfg,
                            engine="sim",
                            ray_cpus=2,
                            timeout=SIM_TIMEOUT.get(n, 900.0),
                            tags=tags,
                        )
                    )
                else:
                    out.append(
                        Job(
                            f"direct-{method}-{n}",
                            None,
                            cfg,
                            engine="direct",
                            timeout=1800.0,
                            tags=tags,
                        )
                    )
    return out


def record(result: JobResult) -> dict[str, Any]:
    """Start-up, round times, evaluation times, memory and CPU of one run."""
    rows = [r for r in result.rows if "round-s" in r]
    later = [r["round-s"] for r in rows[1:]]
    rec: dict[str, Any] = {
        "engine": result.job.tags["engine"],
        "n": result.job.tags["n"],
        "method": result.job.tags["method"],
        "registration": "lazy",
        "ok": result.ok,
        "error": result.error,
        "startup_s": result.startup_s,
        "total_s": result.total_s,
        "rounds_done": len(rows),
        "round1_s": rows[0]["round-s"] if rows else None,
        "round_s_median": statistics.median(later) if later else None,
        "round_s": statistics.fmean(later) if later else None,
        "rounds_s": [r["round-s"] for r in rows],
        "eval_s": [r["eval-s"] for r in rows if "eval-s" in r],
        "eval_clients": [r["eval-clients"] for r in rows if "eval-clients" in r],
        "registered": [r.get("registered") for r in rows],
        "server_update_s": statistics.fmean(r["server-update-s"] for r in rows)
        if rows
        else None,
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
    if not result.ok:
        rec["log_tail"] = _log_tail(result)
    return rec


def _log_tail(result: JobResult, lines: int = 6) -> list[str]:
    """The last lines of a failed job's log (where it stopped)."""
    try:
        text = result.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line[:300] for line in text[-lines:]]


def flower_probe(sizes: Sequence[int] = PROBE_SIZES) -> list[dict[str, Any]]:
    """Flower's per-node simulation costs (:mod:`bench.flower_probe`), one fresh
    process per size so each RSS figure is its own."""
    out = []
    for n in sizes:
        proc = subprocess.run(
            [PYTHON, "-m", "bench.flower_probe", str(n)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        out.append(
            json.loads(lines[-1])
            if lines
            else {"n": n, "error": (proc.stderr or "no output").strip()[-300:]}
        )
    return out


# ---- the page ------------------------------------------------------------------
def key(r: dict[str, Any]) -> tuple[str, str, int]:
    """A record's identity: engine, method, size."""
    return r["engine"], r.get("method", "pfedhn"), r["n"]


def cpu_text(r: dict[str, Any]) -> str:
    """CPU seconds per round by process kind (rounds 2…), largest first."""
    cpu = r.get("cpu_per_round_by_process_s") or {}
    return ", ".join(
        f"{k.split(' (')[0]} {v:.2f}" for k, v in cpu.items() if v >= 0.005
    )


def lazy_table(records: list[dict[str, Any]]) -> str:
    """The lazy-registration rows: one per path, method and size."""
    rows = []
    for r in sorted(
        records, key=lambda r: (r["method"], r["engine"] != "direct", r["n"])
    ):
        rows.append(
            [
                METHOD_NAMES.get(r["method"], r["method"]),
                NAMES[r["engine"]],
                f"{r['n']:,}",
                "yes" if r["ok"] else f"no: {r['error']}",
                fmt(r["startup_s"]),
                fmt(r["round_s_median"]),
                fmt(r["round1_s"]),
                " / ".join(fmt(v) for v in r["eval_s"]) or "—",
                fmt(r["rss_mb"], 4),
                fmt(r["rss_peak_mb"], 4),
                cpu_text(r) or "—",
            ]
        )
    return table(
        [
            "method",
            "path",
            "registered N",
            "finished",
            "start-up s",
            "s/round, median of rounds 2…",
            "round 1 s",
            f"evaluation rounds s (sample {EVAL_SAMPLE})",
            "server RSS MB (rounds)",
            "peak RSS MB",
            "CPU s per round by process (rounds 2…)",
        ],
        rows,
    )


def probe_table(probe: list[dict[str, Any]]) -> str:
    """Flower's per-node simulation costs."""
    rows = []
    for p in probe:
        if "error" in p:
            rows.append([f"{p['n']:,}", p["error"], "", "", "", "", "", ""])
            continue
        rows.append(
            [
                f"{p['n']:,}",
                fmt(p["register_nodes_s"]),
                fmt(p["register_contexts_s"]),
                fmt(p["rss_after_contexts_mb"] - p["rss_start_mb"], 4),
                fmt(p.get("get_node_ids_s")),
                fmt(p["sweep_empty_s"]),
                fmt(p.get("sweep_with_messages_s")),
                fmt(p.get("run_config_keys")),
            ]
        )
    return table(
        [
            "virtual SuperNodes",
            "`_register_nodes` s",
            "`_register_node_info_stores` s",
            "RSS growth MB",
            "`grid.get_node_ids()` s",
            "one polling sweep s (no message)",
            "one polling sweep s (10 messages waiting)",
            "run-config keys per Context",
        ],
        rows,
    )


def eager_table(history: dict[str, Any]) -> str:
    """The earlier run's rows (eager registration, pFedHN), as it printed them."""
    names = {**NAMES, "direct-default-d": "in process, d = 1 + N/4"}
    return table(
        [
            "path",
            "registered N",
            "s/round, median (mean), rounds 2…",
            "start-up s (incl. registration)",
            "server RSS MB (rounds)",
            "peak RSS MB (whole run)",
        ],
        [
            [
                names.get(r["engine"], r["engine"]),
                f"{r['n']:,}",
                f"{fmt(statistics.median(r['rounds_s'][1:]))} ({fmt(r['round_s'])})"
                if len(r["rounds_s"]) > 1
                else "—",
                fmt(r["startup_s"]),
                fmt(r["rss_mb"], 4),
                fmt(r["rss_peak_mb"], 4),
            ]
            for r in history.get("rows", [])
            if r["ok"]
        ],
    )


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None."""
    return a / b if a is not None and b else None


def targets(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets per path and method: start-up within 1.5× and s/round
    within 1.2× from 1,000 to 100,000 registered clients, server RSS < 4 GiB at
    100,000 (None where a run is missing)."""
    by = {key(r): r for r in records if r["ok"]}
    out = []
    for engine in ENGINES:
        for method in METHODS:
            small, big = (
                by.get((engine, method, 1_000)),
                by.get((engine, method, 100_000)),
            )
            if small is None and big is None:
                continue
            startup = ratio(big and big["startup_s"], small and small["startup_s"])
            per_round = ratio(
                big and big["round_s_median"], small and small["round_s_median"]
            )
            rss = big["rss_mb"] if big else None
            out.append(
                {
                    "engine": engine,
                    "method": method,
                    "startup_ratio": startup,
                    "startup_ok": startup is not None and startup <= 1.5,
                    "round_ratio": per_round,
                    "round_ok": per_round is not None and per_round <= 1.2,
                    "rss_100k_mb": rss,
                    "rss_ok": rss is not None and rss < 4 * 1024,
                }
            )
    return out


def targets_table(rows: list[dict[str, Any]]) -> str:
    """The targets as a table: measured ratio and whether it is met."""

    def cell(value: float | None, ok: bool, unit: str = "×") -> str:
        if value is None:
            return "not measured"
        return f"{fmt(value)}{unit} ({'met' if ok else 'missed'})"

    return table(
        [
            "path",
            "method",
            "start-up 100,000 / 1,000 (≤ 1.5×)",
            "s/round 100,000 / 1,000 (≤ 1.2×)",
            "server RSS at 100,000 (< 4 GiB)",
        ],
        [
            [
                NAMES[t["engine"]],
                METHOD_NAMES[t["method"]],
                cell(t["startup_ratio"], t["startup_ok"]),
                cell(t["round_ratio"], t["round_ok"]),
                cell(t["rss_100k_mb"], t["rss_ok"], " MB"),
            ]
            for t in rows
        ],
    )


def markdown(data: dict[str, Any]) -> str:
    """The suite's results page, from its JSON alone."""
    records = data["rows"]
    lines = [
        "### Scale — registered vs sampled clients (lazy registration)",
        "",
        f"10 clients sampled per round, {data['rounds']} rounds (the jobs stop "
        "before the run's last round, which evaluates every participant), MLP "
        'target, 5 local steps of 8 samples, `registration = "lazy"`, '
        f"`eval-sample = {EVAL_SAMPLE}` (in process an evaluation every "
        f"{EVAL_EVERY} rounds, HyperFedZero's held-out check also on a sample of "
        "that many; through `flwr run` no evaluation round, see below), pFedHN's "
        "default embedding (d = 26); Fashion-MNIST, partitioner `sampled` "
        f"({SAMPLES_PER_CLIENT} rows of 2 classes per client, drawn per client). "
        "s/round is the training round (`round-s`, rounds 2…); evaluation rounds "
        "are timed apart (`eval-s`, the lazy registration of the drawn clients "
        "included). Start-up: launch to the first round (process start, imports, "
        "data, registration; through `flwr run` also the SuperLink, Ray and "
        "Flower's virtual SuperNodes). Server RSS: in process the one process "
        "(server and the in-process clients), through `flwr run` the "
        "`flwr-simulation` process (ServerApp, Flower's simulation engine, Ray "
        "driver).",
        "",
        lazy_table(records),
        "",
        "**Targets (issue 30).**",
        "",
        targets_table(data.get("targets") or targets(records)),
        "",
    ]
    if data.get("flower_probe"):
        lines += [
            "**Flower's own per-node costs** (`python -m bench.flower_probe N`: "
            "the simulation engine's per-node steps run on their own, flwr "
            f"{data['machine'].get('flwr', '')}):",
            "",
            probe_table(data["flower_probe"]),
            "",
        ]
    lines += paragraphs(data.get("notes", []))
    history = data.get("eager_history")
    if history:
        lines += [
            "**History: the earlier suite** (eager registration: every node queried "
            "before round 1; pFedHN only, d = 32, 2 shards per client, "
            f"{history.get('rounds')} rounds; not re-run):",
            "",
            eager_table(history),
            "",
        ]
    lines.append(load_caveat(data["load"], data["machine"]["cpus"]))
    return "\n".join(lines) + "\n"


def render(data: dict[str, Any]) -> str:
    """The results page, from the suite's JSON alone (the earlier suite's JSON,
    eager registration, renders as it did)."""
    rows = data.get("rows") or []
    if rows and "registration" not in rows[0]:
        return eager_markdown(rows, data)
    return markdown(data)


#: The earlier suite's embedding size (its JSON does not name it).
EAGER_EMBED_DIM = 32


def eager_markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The earlier suite's page (eager registration, pFedHN), for its JSON."""
    names = {**NAMES, "direct-default-d": "in process, d = 1 + N/4"}
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
        f"{EAGER_EMBED_DIM} unless noted; Fashion-MNIST in 2 shards per client.",
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


def notes(records: list[dict[str, Any]], probe: list[dict[str, Any]]) -> list[str]:
    """The page's prose, from the measured numbers of this JSON."""
    by = {key(r): r for r in records}
    out = []
    verdicts = []
    for t in targets(records):
        checks = {
            "start-up": (t["startup_ok"], t["startup_ratio"], "×"),
            "s/round": (t["round_ok"], t["round_ratio"], "×"),
            "RSS": (t["rss_ok"], t["rss_100k_mb"], " MB"),
        }
        missed = [
            f"{name} {fmt(value)}{unit}"
            for name, (ok, value, unit) in checks.items()
            if value is not None and not ok
        ]
        unmeasured = [n for n, (_, value, _) in checks.items() if value is None]
        verdicts.append(
            f"{NAMES[t['engine']]}, {METHOD_NAMES[t['method']]}: "
            + ("every target met" if not missed else "missed: " + ", ".join(missed))
            + (f" (not measured: {', '.join(unmeasured)})" if unmeasured else "")
        )
    if verdicts:
        out.append(
            "**Targets, measured.** "
            + "; ".join(verdicts)
            + ". Where `flwr run` misses one, the paragraph on Flower's part below "
            "says which per-node work of Flower's simulation engine it is."
        )
    direct = [by.get(("direct", m, n)) for m in METHODS for n in SIZES]
    done = [r for r in direct if r and r["ok"]]
    if done:
        parts = []
        for m in METHODS:
            got = [by.get(("direct", m, n)) for n in SIZES]
            if all(r and r["ok"] for r in got):
                parts.append(
                    f"{METHOD_NAMES[m]}: start-up "
                    + " → ".join(fmt(r["startup_s"]) for r in got if r)
                    + " s, s/round "
                    + " → ".join(fmt(r["round_s_median"]) for r in got if r)
                    + ", RSS "
                    + " → ".join(fmt(r["rss_mb"], 4) for r in got if r)
                    + " MB"
                )
        if parts:
            out.append(
                "**In process, 1,000 → 10,000 → 100,000 registered clients.** "
                + "; ".join(parts)
                + ". Lazy registration makes start-up one query (one client) at "
                "every size; a round queries only the clients it draws for the "
                "first time, and an evaluation round a bounded sample."
            )
    sims = [by.get(("sim", m, n)) for m in METHODS for n in SIZES]
    ok_sims = [r for r in sims if r and r["ok"]]
    failed = [r for r in sims if r and not r["ok"]]
    if ok_sims:
        out.append(
            "**Through `flwr run`:** "
            + "; ".join(
                f"{METHOD_NAMES[r['method']]} at {r['n']:,}: start-up "
                f"{fmt(r['startup_s'])} s, {fmt(r['round_s_median'])} s/round, "
                f"`flwr-simulation` RSS {fmt(r['rss_mb'], 4)} MB"
                for r in ok_sims
            )
            + "."
        )
    if failed:
        out.append(
            "**Where Flower's simulation stopped:** "
            + "; ".join(
                f"{METHOD_NAMES[r['method']]} at {r['n']:,} ({r['error']}; "
                f"{r['rounds_done']} rounds done"
                + (f", start-up {fmt(r['startup_s'])} s" if r["startup_s"] else "")
                + ")"
                for r in failed
            )
            + "."
        )
    good = [p for p in probe if "error" not in p]
    if good:
        last = good[-1]
        per_node_ms = 1e3 * last["register_contexts_s"] / last["n"]
        per_node_kb = (
            1024 * (last["rss_after_contexts_mb"] - last["rss_start_mb"]) / last["n"]
        )
        sweep = last.get("sweep_with_messages_s")
        out.append(
            "**Which part is Flower's.** Flower's simulation engine does per-node "
            "work that no app setting removes (flwr "
            "1.42): at start-up `_register_node_info_stores` "
            "(`flwr/server/superlink/fleet/vce/vce_api.py`, lines 80–103) builds a "
            "`DeprecatedRunInfoStore` and a Context for every virtual SuperNode, and "
            "`register_context` (`flwr/compat/client/run_info_store.py`, lines "
            "53–92) reads and fuses the app's `pyproject.toml` for each one and "
            f"keeps two copies of its {last.get('run_config_keys')} run-config "
            f"keys: {per_node_ms:.2f} ms and {per_node_kb:.0f} KB per node "
            f"measured at {last['n']:,} nodes ({fmt(last['register_contexts_s'])} s, "
            f"{fmt(last['rss_after_contexts_mb'] - last['rss_start_mb'], 4)} MB). "
            "While the run lasts, `add_messages_to_queue` (vce_api.py, lines "
            "168–180) calls `state.get_message_ins(node_id, limit=1)` for every "
            "node every 0.1 s, and the in-memory LinkState's `get_message_ins` "
            "(`flwr/server/superlink/linkstate/in_memory_linkstate.py`, lines "
            "239–272) walks the whole message store for each node: one sweep "
            f"over {last['n']:,} nodes takes {fmt(last['sweep_empty_s'])} s with no "
            "message waiting and "
            + (f"{fmt(sweep)} s with a round's 10" if sweep is not None else "—")
            + ", so a message waits up to a sweep before delivery and the "
            "`flwr-simulation` process (which also runs the ServerApp, sharing "
            "its interpreter lock) spends a core on polling. And each "
            "`grid.get_node_ids()` (the ServerApp lists the nodes before every "
            "exchange, to notice new ones) walks every node's record under the "
            "state's lock (`in_memory_linkstate.py`, lines 600–616): "
            f"{fmt(last.get('get_node_ids_s'))} s at {last['n']:,} nodes."
        )
        out += flower_share(by, last)
    evals = [
        (
            m,
            [
                v
                for n in SIZES
                for v in (by.get(("direct", m, n)) or {}).get("eval_s", [])
            ],
        )
        for m in METHODS
    ]
    evals = [(m, v) for m, v in evals if v]
    if evals:
        out.append(
            "**Evaluation rounds are bounded.** In process an evaluation round "
            f"(a sample of {EVAL_SAMPLE} participants; HyperFedZero also "
            f"{EVAL_SAMPLE} held-out clients, twice: own e and mean e; the drawn "
            "nodes registering then) took "
            + "; ".join(
                f"{METHOD_NAMES[m]} {fmt(min(v))}–{fmt(max(v))} s"
                + (f" (100,000 / 1,000: {fmt(g)}× for the slower round)" if g else "")
                for m, v, g in ((m, v, eval_growth(by, m)) for m, v in evals)
            )
            + " over the three sizes: the cost follows the sample, not N."
        )
    return out


def eval_growth(
    by: dict[tuple[str, str, int], dict[str, Any]], method: str
) -> float | None:
    """The slower in-process evaluation round at 100,000 over that at 1,000."""
    small, big = by.get(("direct", method, 1_000)), by.get(("direct", method, 100_000))
    if not (small and big and small.get("eval_s") and big.get("eval_s")):
        return None
    return float(max(big["eval_s"]) / max(small["eval_s"]))


def flower_share(
    by: dict[tuple[str, str, int], dict[str, Any]], probe: dict[str, Any]
) -> list[str]:
    """How much of `flwr run`'s growth from 1,000 to the probe's size the probe's
    Flower-only figures account for, per method (start-up, RSS), and what the same
    server loop costs in process at that size (s/round)."""
    n = probe["n"]
    flower_startup = probe["register_nodes_s"] + probe["register_contexts_s"]
    flower_rss = probe["rss_after_contexts_mb"] - probe["rss_start_mb"]
    parts = []
    for m in METHODS:
        small, big = by.get(("sim", m, 1_000)), by.get(("sim", m, n))
        inproc = by.get(("direct", m, n))
        if not (small and big and small["ok"] and big["ok"]):
            continue
        text = (
            f"{METHOD_NAMES[m]}: start-up +{fmt(big['startup_s'] - small['startup_s'])}"
            f" s, of which Flower's node and Context registration alone take "
            f"{fmt(flower_startup)} s; `flwr-simulation` RSS "
            f"+{fmt(big['rss_mb'] - small['rss_mb'], 4)} MB, of which the Contexts "
            f"{fmt(flower_rss, 4)} MB"
        )
        if inproc and inproc["ok"]:
            text += (
                f"; {fmt(big['round_s_median'])} s/round against "
                f"{fmt(inproc['round_s_median'])} s for the same server loop and "
                f"clients in process at {n:,}"
            )
        parts.append(text)
    if not parts:
        return []
    return [
        f"**Flower's share, 1,000 → {n:,} virtual SuperNodes.** Flower's simulation "
        f"held {n:,} virtual SuperNodes here (no run stopped); what grows is "
        "Flower's: "
        + "; ".join(parts)
        + ". Each training round is two exchanges through the engine (the "
        "registration query of the round's newly drawn clients, then their train "
        "messages), and each waits for the polling sweep above; our loop's own "
        "per-round work at this size is one `grid.get_node_ids()` and the "
        "registry's bookkeeping."
    ]


# ---- running -------------------------------------------------------------------
def committed() -> dict[str, Any]:
    """The committed results (empty when there are none)."""
    path = results_dir(False) / "scale.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run(
    quick: bool = False,
    engines: Sequence[str] = ENGINES,
    sizes: Sequence[int] | None = None,
    methods: Sequence[str] = METHODS,
    probe: bool = True,
    merge: bool = False,
) -> dict[str, Any]:
    """Run the scale suite (or a part of it, ``merge``-d into the committed
    results) and write its results."""
    old = committed() if not quick else {}
    history = old.get("eager_history") or (
        old if old.get("rows") and "registration" not in old["rows"][0] else None
    )
    if history is not None:
        history = {
            k: history[k]
            for k in ("rows", "rounds", "machine", "load", "notes")
            if k in history
        }
    with LoadMonitor() as load:
        todo = jobs(quick, engines, sizes, methods)
        results = run_jobs("scale", todo, parallel=1, sample_rss=True) if todo else []
        probed = flower_probe((200, 500) if quick else PROBE_SIZES) if probe else []
    records = [record(r) for r in results]
    lazy_old = merge and bool(old.get("rows")) and "registration" in old["rows"][0]
    if lazy_old:
        fresh = {key(r) for r in records}
        records = [r for r in old["rows"] if key(r) not in fresh] + records
        probed = probed or old.get("flower_probe", [])
    records.sort(key=lambda r: (r["method"], r["engine"], r["n"]))
    meta = {
        "machine": machine(),
        "load": merged_load(load.summary(), old.get("load", {}) if lazy_old else {}),
        "quick": quick,
        "rounds": 3 if quick else ROUNDS,
    }
    data = {
        "suite": "scale",
        "rows": records,
        **meta,
        "flower_probe": probed,
        "targets": targets(records),
        "notes": notes(records, probed),
        "eager_history": history,
    }
    write(data, quick)
    return data


def merged_load(new: dict[str, float], old: dict[str, float]) -> dict[str, float]:
    """The load caveat over the invocations merged into one page: the higher
    mean and the higher maximum (the busier run is the one to warn about)."""
    if not new or not old:
        return new or old
    return {k: max(new.get(k, 0.0), old.get(k, 0.0)) for k in set(new) | set(old)}


def write(data: dict[str, Any], quick: bool = False) -> None:
    """Write the JSON, the page and the plots."""
    out = results_dir(quick)
    write_results("scale", data, render(data), out)
    records = [r for r in data["rows"] if r["ok"]]

    def curve(field: str, ylabel: str, title: str) -> Any:
        def draw(ax: Any) -> None:
            for engine in ENGINES:
                for method in METHODS:
                    pts = [
                        (r["n"], r[field])
                        for r in records
                        if key(r)[:2] == (engine, method) and r.get(field) is not None
                    ]
                    if pts:
                        ax.plot(
                            *zip(*pts, strict=True),
                            marker="o",
                            label=f"{METHOD_NAMES[method]}, "
                            + ("flwr run (Ray)" if engine == "sim" else "in process"),
                        )
            ax.set_xscale("log")
            ax.set(
                xlabel="registered clients N (10 sampled per round)",
                ylabel=ylabel,
                title=title,
            )
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)

        return draw

    save_plot(
        out / "scale-round-time.png",
        curve("round_s_median", "seconds per round (median, rounds 2…)", "round time"),
    )
    save_plot(
        out / "scale-startup.png",
        curve("startup_s", "start-up seconds", "start-up vs registered"),
    )
    save_plot(
        out / "scale-rss.png",
        curve("rss_mb", "server RSS (MB)", "server memory vs registered"),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.scale``: a part of the suite, merged into the results."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=ENGINES)
    parser.add_argument("--sizes", nargs="+", type=int, default=None)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--probe", action="store_true", help="only Flower's probe")
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument("--render", action="store_true", help="re-render only")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.render:
        data = committed()
        data["targets"] = targets(data["rows"])
        data["notes"] = notes(data["rows"], data.get("flower_probe", []))
        write(data)
        return 0
    run(
        quick=args.quick,
        engines=[] if args.probe else args.engines,
        sizes=args.sizes,
        methods=args.methods,
        probe=not args.no_probe,
        merge=not args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
