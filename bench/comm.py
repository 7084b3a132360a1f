"""Communication: bytes per round counted from the records sent, vs the formulas.

Every method runs two short rounds of the default job's setting (LeNet-5, 10
clients per round); the loop counts the bytes of the records each train message
and reply really carried (``common.records.message_bytes``: array payloads, keys
and config values). The papers' formulas count 4-byte floats only:

- pFedHN (Shamsian et al.): each sampled client downloads θ_i and uploads Δθ_i:
  down = up = m · |θ| · 4 B per round.
- FedAvg (McMahan et al.): the same, m · |θ| · 4 B each way.
- Local only: nothing travels in the paper's setting; here the server keeps every
  participant's model (clients may be stateless processes), so m · |θ| · 4 B too.
- HyperFLoRA (Lu et al.): a sampled participant downloads its adapter ρ_i and
  uploads Δρ_i: m · |ρ| · 4 B each way (``standard``); pairing adds relay hops
  (each hop one adapter down and one up), so ``paired`` sends more.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.harness import Job, JobResult, LoadMonitor, machine, results_dir, run_jobs
from bench.report import fmt, load_caveat, paragraphs, save_plot, table, write_results

SHORT = {
    "num-rounds": 2,
    "eval-every": 100,
    "local-steps": 2,
    "novel-rounds": 0,
    "seed": 42,
}

METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("pFedHN (per-tensor)", "quickstart", {}),
    (
        "pFedHN (chunked)",
        "quickstart",
        {"hypernet": "chunked", "server-optimizer": "adam", "server-lr": 1e-3},
    ),
    ("FedAvg", "fedavg-fmnist", {}),
    ("Local only", "local-fmnist", {}),
    (
        "HyperFLoRA (standard)",
        "quickstart",
        {
            "method": "hyperflora",
            "hyperflora-variant": "standard",
            "pretrain-rounds": 1,
            "local-epochs": 0,
            "finetune-steps": 0,
        },
    ),
    (
        "HyperFLoRA (paired, E=3)",
        "quickstart",
        {
            "method": "hyperflora",
            "hyperflora-variant": "paired",
            "pretrain-rounds": 1,
            "local-epochs": 0,
            "finetune-steps": 0,
        },
    ),
]


def available(overrides: dict[str, Any]) -> bool:
    """Whether this checkout has the method (HyperFLoRA may be absent)."""
    from server.strategies import STRATEGIES

    return overrides.get("method", "pfedhn") in STRATEGIES


def jobs(quick: bool) -> list[Job]:
    """Two short rounds per method."""
    from bench.accuracy import slug

    return [
        Job(f"{slug(label)}", preset, {**overrides, **SHORT}, tags={"method": label})
        for label, preset, overrides in METHODS
        if available(overrides)
    ]


def formula(label: str, ctwc: int, sampled: float) -> float:
    """Bytes one way per round by the paper's count: m · (trained weights) · 4."""
    return sampled * ctwc * 4


def record(result: JobResult) -> dict[str, Any]:
    """Measured bytes per round next to the formula."""
    s = result.summary or {}
    rows = [r for r in result.rows if "bytes-down" in r]
    label = result.job.tags["method"]
    ctwc = s.get("client_trainable_params")
    # HyperFLoRA's rows count clients and pairs ("sampled" = units) and relay hops
    sampled = (
        statistics.fmean(r.get("clients", r.get("sampled", 0)) for r in rows)
        if rows
        else None
    )
    transfers = (
        statistics.fmean(
            r.get("clients", r.get("sampled", 0)) + r.get("relay-hops", 0) for r in rows
        )
        if rows
        else None
    )
    rec: dict[str, Any] = {
        "method": label,
        "ok": result.ok,
        "error": result.error,
        "ctwc": ctwc,
        "sampled": sampled,
        "transfers": transfers,
        "bytes_down": s.get("bytes_down_per_round"),
        "bytes_up": s.get("bytes_up_per_round"),
    }
    if ctwc and sampled and transfers:
        rec["formula"] = formula(label, ctwc, sampled)
        rec["formula_transfers"] = formula(label, ctwc, transfers)
        rec["down_vs_formula"] = rec["bytes_down"] / rec["formula_transfers"]
        rec["up_vs_formula"] = rec["bytes_up"] / rec["formula_transfers"]
    return rec


def markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The suite's results page."""
    ok = [r for r in records if r["ok"] and r.get("formula")]
    body = table(
        [
            "method",
            "clients/round m",
            "trained weights (CTWC)",
            "paper: m·CTWC·4 B",
            "transfers/round t",
            "measured ↓ B/round",
            "measured ↑ B/round",
            "measured / (t·CTWC·4) (↓, ↑)",
        ],
        [
            [
                r["method"],
                fmt(r["sampled"], 3),
                fmt(r["ctwc"]),
                fmt(r["formula"]),
                fmt(r["transfers"], 3),
                fmt(r["bytes_down"]),
                fmt(r["bytes_up"]),
                f"{r['down_vs_formula']:.4f}, {r['up_vs_formula']:.4f}",
            ]
            for r in ok
        ],
    )
    lines = [
        "### Communication — bytes per round: measured vs the papers' formulas",
        "",
        "Two rounds of each method at the default job's size (LeNet-5, "
        "10 clients per round); bytes counted from the records actually sent "
        "and received (array payloads plus keys and config values).",
        "",
        body,
        "",
        *paragraphs(meta.get("notes", [])),
    ]
    failed = [r for r in records if not r["ok"]]
    if failed:
        lines.append(
            "Not measured: "
            + "; ".join(f"{r['method']} ({r['error']})" for r in failed)
            + "."
        )
    lines.append(load_caveat(meta["load"], meta["machine"]["cpus"]))
    return "\n".join(lines) + "\n"


NOTES = [
    "t = parameter sets sent per round: m, plus HyperFLoRA's relay hops (each hop "
    "an adapter to the next client of a pair and its update back). "
    "A ratio slightly above 1 is the records' keys and the config values "
    "(round, phase, method) each message carries. pFedHN and FedAvg send the whole "
    "model both ways, so their bytes are equal at equal m; the chunked hypernetwork "
    "changes only the server's size, not what travels. Local only pays the same "
    "here because the server keeps the stateless clients' models. HyperFLoRA sends "
    "only the adapters, about 70× fewer bytes than pFedHN at the same m; pairing "
    "multiplies its transfers (and bytes) by about 4 at E = 3, and each hop also "
    "carries the pair's class indicator r_ij.",
]


def run(quick: bool = False) -> dict[str, Any]:
    """Run the communication suite and write its results."""
    with LoadMonitor() as load:
        results = run_jobs("comm", jobs(quick), parallel=2)
    records = [record(r) for r in results]
    meta = {
        "machine": machine(),
        "load": load.summary(),
        "quick": quick,
        "notes": NOTES,
    }
    data = {"suite": "comm", "rows": records, **meta}
    out = results_dir(quick)
    write_results("comm", data, render(data), out)
    ok = [r for r in records if r["ok"] and r.get("formula")]

    def draw(ax: Any) -> None:
        labels = [r["method"] for r in ok]
        xs = range(len(ok))
        ax.bar(
            [x - 0.2 for x in xs],
            [r["formula"] / 1e6 for r in ok],
            0.4,
            label="formula m·CTWC·4 B",
        )
        ax.bar(
            [x + 0.2 for x in xs],
            [r["bytes_down"] / 1e6 for r in ok],
            0.4,
            label="measured (down)",
        )
        ax.set_yscale("log")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=15, ha="right")
        ax.set(ylabel="MB per round (one way)", title="bytes per round")
        ax.legend()

    save_plot(out / "comm.png", draw, size=(7.5, 4.5))
    return data


def render(data: dict[str, Any]) -> str:
    """The results page, from the suite's JSON alone."""
    return markdown(data["rows"], data)
