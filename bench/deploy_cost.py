"""What a deployed round costs, attributed (``python -m bench deploy-cost``).

The same job — pFedHN, Fashion-MNIST, LeNet-5 targets, 50 local steps, every client
in every round — runs

(a) deployed on loopback: ``deploy/run-loopback.sh --insecure`` starts a SuperLink,
    its ServerApp SuperExec and N SuperNodes, each with its own ClientApp SuperExec
    (Flower starts one ``flwr-clientapp`` process per message), for N = 2, 5, 10;
(b) in simulation: ``flwr run`` with Ray (two actors, Flower's default on this
    2-core machine), N virtual SuperNodes.

Every train message is followed through its whole life from measured timestamps, no
estimate: the message's creation on the server (its metadata), the SuperNode's log
(receiving it, having pulled it, sending the reply; ``FLWR_LOG_LEVEL=DEBUG`` adds
timestamps), the ``flwr-clientapp`` process's own log (Flower's start, FAB install,
app loading), the process's start time from ``/proc``, and the ClientApp's timing
marks (:mod:`client.timing`: import done, data loaded, training done, reply built,
process exit). Beside it, fresh processes time what this project's part costs
before and after making it small: ``import client.app`` (every method's handlers
eagerly vs one module on first use) and a client's data load (gathered and
normalised from the dataset cache vs the per-node cache).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import (
    PYTHON,
    ROOT,
    RUNS,
    Job,
    LoadMonitor,
    machine,
    read_rows,
    results_dir,
    run_job,
)
from bench.report import fmt, load_caveat, paragraphs, save_plot, table, write_results
from common.flwr_cli import copy_app_files, run_config_arg

SUITE = "deploy-cost"
SIZES = (2, 5, 10)
#: The job: the default job's method, data and model, every client in every round.
JOB: dict[str, Any] = {
    "method": "pfedhn",
    "dataset": "fashion-mnist",
    "model": "lenet5",
    "partitioner": "classes",
    "classes-per-client": 2,
    "holdout": 0.0,
    "local-steps": 50,
    "novel-rounds": 0,
    "seed": 42,
    "round-timeout": 600.0,
}

#: The stages of one train message, in order: (key, label, whose). Each is the time
#: between two measured points; together they span creation to the reply's send.
STAGES: list[tuple[str, str, str]] = [
    ("pickup", "SuperNode picks the message up (idle poll)", "Flower"),
    (
        "dispatch",
        "SuperNode pulls the message; meanwhile its SuperExec finds the task "
        "(task poll) and starts `flwr-clientapp`",
        "Flower",
    ),
    ("python", "Python + Flower imports in the new process", "Flower"),
    ("task", "task input pulled (message, context, FAB)", "Flower"),
    ("fab", "FAB install (unzip, hash every file)", "Flower"),
    ("load", "Flower loads the app", "Flower"),
    ("imports", "`import client.app` (torch + ours)", "ours"),
    ("handler", "dispatch, plugins, handler module", "ours"),
    ("data", "run config + data load", "ours"),
    ("train", "training (50 local steps)", "ours"),
    ("reply", "reply (delta, metrics)", "ours"),
    ("push", "reply pushed; SuperNode picks it up (reply poll) and sends it", "Flower"),
]

#: Where Flower's per-message costs come from in the installed flwr: (what, file
#: under flwr/, a line's text to find). The page cites the line numbers found.
FLOWER_SITES: list[tuple[str, str, str]] = [
    (
        "an idle SuperNode sleeps 3 s between pulls",
        "supernode/start_client_internal.py",
        "time.sleep(3)",
    ),
    (
        "the SuperNode handles one message at a time: after a pull it waits, "
        "polling every 0.5 s, for the reply before it pulls again",
        "supernode/start_client_internal.py",
        "while not (reply_messages := state.get_messages_legacy(is_reply=True)):",
    ),
    (
        "the ClientApp SuperExec asks for a task, then sleeps "
        "(`FLWR_SUPEREXEC_TASK_POLL_INTERVAL`, default 1 s)",
        "supercore/superexec/run_superexec.py",
        "time.sleep(task_poll_interval)",
    ),
    (
        "default task poll interval",
        "supercore/superexec/run_superexec.py",
        "_DEFAULT_TASK_POLL_INTERVAL_SECONDS = ",
    ),
    (
        "each task is a new `flwr-clientapp` process",
        "supercore/superexec/executor/subprocess_executor.py",
        "subprocess.Popen(args)",
    ),
    (
        "the process pulls its message, context and the whole FAB",
        "supernode/runtime/run_clientapp.py",
        "message, context, run, fab = pull_task_input(client)",
    ),
    (
        "and installs the FAB for every message",
        "supernode/runtime/run_clientapp.py",
        "install_from_fab(fab.content, skip_prompt=True)",
    ),
    (
        "installing unzips every file into a temporary folder",
        "cli/install.py",
        "safe_extract_zip(zipf, tmpdir_path)",
    ),
    (
        "and checks every file's hash",
        "cli/install.py",
        "if not content_file.exists() or not _verify_hashes(",
    ),
    (
        "before finding the app already installed",
        "cli/install.py",
        "if install_path.exists():",
    ),
    (
        "then imports the app (`client.app`) in the fresh process",
        "supernode/runtime/run_clientapp.py",
        "client_app: ClientApp = load_client_app_fn(",
    ),
    (
        "runs one message",
        "supernode/runtime/run_clientapp.py",
        "reply_message = client_app(message=message, context=context)",
    ),
    (
        "pushes the reply and exits",
        "supernode/runtime/run_clientapp.py",
        "push_message(client, reply_message, context)",
    ),
]


#: Deployed runs beside the sizes: (name, nodes, environment, column label).
EXTRA: list[tuple[str, int, dict[str, str], str]] = [
    (
        "deploy-5-poll",
        5,
        {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2"},
        "5 nodes, task poll 0.2 s",
    ),
]


def job_config(nodes: int, rounds: int) -> dict[str, Any]:
    """The run config of one case (every node a client of every round)."""
    return {
        **JOB,
        "num-clients": nodes,
        "clients-per-round": nodes,
        "num-rounds": rounds,
        "eval-every": rounds,
    }


# ---- Flower's source ------------------------------------------------------------
def flower_sources() -> list[dict[str, Any]]:
    """The lines of the installed flwr behind its per-message costs (file, line
    number, text), found by their text so a new flwr version cites its own."""
    import flwr

    base = Path(flwr.__file__).parent
    out = []
    for what, rel, needle in FLOWER_SITES:
        path = base / rel
        line, text = None, ""
        try:
            for number, code in enumerate(path.read_text().splitlines(), start=1):
                if needle in code:
                    line, text = number, code.strip()
                    break
        except OSError:
            pass
        out.append({"what": what, "file": f"flwr/{rel}", "line": line, "code": text})
    return out


# ---- the deployed runs -----------------------------------------------------------
def app_copy(dest: Path) -> Path:
    """The app's files (what git tracks or would track) in a folder of their own:
    ``flwr run`` builds the FAB from it without walking the virtual environment."""
    if dest.exists():
        shutil.rmtree(dest)
    return copy_app_files(ROOT, dest)


def _port_block(nodes: int) -> int:
    """A SuperLink port p with p and p + 10 … p + 10 + nodes free on 127.0.0.1
    (deploy/run-loopback.sh puts SuperNode i's runtime API on p + 10 + i)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + 11 + nodes > 65535:
            continue
        wanted = [base, *range(base + 10, base + 11 + nodes)]
        try:
            socks = []
            for port in wanted:
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free block of ports on 127.0.0.1")


def deploy_once(
    name: str,
    nodes: int,
    rounds: int,
    app: Path,
    env_extra: dict[str, str],
    label: str = "",
) -> dict[str, Any]:
    """One loopback deployment run; its rows, the parsed messages and timings."""
    work = RUNS / SUITE / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    timing = work / "timing.jsonl"
    env = {
        **os.environ,
        "PATH": f"{Path(PYTHON).parent}:{os.environ['PATH']}",
        "FLWR_HOME": str(work / "flwr-home"),
        "HYPERFLOWER_LINK_PORT": str(_port_block(nodes)),
        "HYPERFLOWER_APP_DIR": str(app),
        "FLWR_LOG_LEVEL": "DEBUG",  # timestamps on Flower's log lines
        "HYPERFLOWER_TIMING_LOG": str(timing),
        "HYPERFLOWER_CLIENT_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        **env_extra,
    }
    cfg = {k: v for k, v in job_config(nodes, rounds).items() if k != "num-clients"}
    cmd = [
        "bash",
        str(ROOT / "deploy" / "run-loopback.sh"),
        "--insecure",
        "--nodes",
        str(nodes),
        "--workdir",
        str(work),
        "--run-config",
        run_config_arg(cfg),
    ]
    t0 = time.monotonic()
    with open(work / "suite.log", "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=300 + 120 * rounds * nodes)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            code = proc.wait(timeout=60)
    total = time.monotonic() - t0
    rows = read_rows(work / "outputs" / "loopback")
    messages = follow_messages(work, nodes)
    fab = fab_size(work)
    return {
        "name": name,
        "engine": "deploy",
        "nodes": nodes,
        "label": label,
        "env": env_extra,
        "ok": code == 0,
        "exit_code": code,
        "total_s": total,
        "rounds_s": [r.get("round-s") for r in rows if "round-s" in r],
        "exchange_s": [r.get("exchange-s") for r in rows if "exchange-s" in r],
        "messages": messages,
        "fab": fab,
    }


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(
    r"^(DEBUG|INFO|WARNING|ERROR)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}):\s*(.*)$"
)


def log_events(path: Path) -> list[tuple[float, str]]:
    """(Unix time, message) of every timestamped Flower log line in ``path``."""
    out: list[tuple[float, str]] = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for raw in text.splitlines():
        match = _LINE.match(_ANSI.sub("", raw).strip())
        if match:
            when = datetime.strptime(match.group(2), "%Y-%m-%d %H:%M:%S,%f")
            out.append((when.timestamp(), match.group(3).strip()))
    return out


def supernode_messages(path: Path) -> list[dict[str, Any]]:
    """Per message a SuperNode handled, in order: its type and when it was
    received, fully pulled, and its reply sent."""
    out: list[dict[str, Any]] = []
    for when, text in log_events(path):
        if text.startswith("Receiving:"):
            out.append({"type": text.split()[1], "recv": when})
        elif text.startswith("Received successfully") and out:
            out[-1]["received"] = when
        elif text.startswith("Sending:") and out:
            out[-1]["sent"] = when
    return out


def clientapp_processes(path: Path) -> list[dict[str, float]]:
    """Per ``flwr-clientapp`` process in a ClientApp SuperExec's log, in order: when
    Flower's code started, began the FAB install and began loading the app."""
    out: list[dict[str, float]] = []
    for when, text in log_events(path):
        if text.startswith("Start `flwr-clientapp` process"):
            out.append({"flwr-start": when})
        elif "Start FAB installation" in text and out:
            out[-1]["fab-start"] = when
        elif "Start `ClientApp` Loading" in text and out:
            out[-1]["app-load"] = when
    return out


def timing_records(path: Path) -> tuple[list[dict[str, Any]], dict[int, float]]:
    """The ClientApp's per-message marks and, by process id, its exit times."""
    records, exits = [], {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return [], {}
    for line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "exit" in item and "type" not in item:
            exits[int(item["pid"])] = float(item["exit"])
        else:
            records.append(item)
    return records, exits


def follow_messages(work: Path, nodes: int) -> list[dict[str, Any]]:
    """Every message of a deployed run with its stage durations: the k-th message a
    SuperNode received is the k-th ``flwr-clientapp`` process of its SuperExec and
    the k-th set of marks of its partition (one message at a time per node)."""
    records, exits = timing_records(work / "timing.jsonl")
    out = []
    for node in range(nodes):
        received = supernode_messages(work / f"supernode-{node}.log")
        procs = clientapp_processes(work / f"clientapp-{node}.log")
        marks = sorted(
            (r for r in records if int(r.get("partition-id", -1)) == node),
            key=lambda r: r.get("process-start", r["handler-start"]),
        )
        for k, (got, proc, mark) in enumerate(
            zip(received, procs, marks, strict=False)
        ):
            if got["type"] != mark.get("type"):
                break  # the sequences no longer line up: stop, never guess
            point: dict[str, Any] = {
                "created": mark.get("created"),
                "recv": got.get("recv"),
                "process-start": mark.get("process-start"),
                "flwr-start": proc.get("flwr-start"),
                "fab-start": proc.get("fab-start"),
                "app-load": proc.get("app-load"),
                "import-start": mark.get("import-start"),
                "import-done": mark.get("import-done"),
                "handler-start": mark.get("handler-start"),
                "data-loaded": mark.get("data-loaded"),
                "trained": mark.get("trained", mark.get("reply-built")),
                "reply-built": mark.get("reply-built"),
                "sent": got.get("sent"),
            }
            # the process exits while (or after) its reply is sent: off the path
            ended = exits.get(int(mark["pid"]))
            order = list(point)
            stages: dict[str, float] = {}
            for (key, _, _), a, b in zip(STAGES, order[:-1], order[1:], strict=True):
                start, end = point[a], point[b]
                if start is not None and end is not None:
                    stages[key] = float(end) - float(start)
            out.append(
                {
                    "node": node,
                    "index": k,
                    "type": got["type"],
                    "group": mark.get("group"),
                    "stages": stages,
                    "total": (
                        point["sent"] - point["created"]
                        if point["sent"] and point["created"]
                        else None
                    ),
                    # the SuperNode creates the task before it pulls the
                    # message's arrays, so the process may start during the pull
                    "pull_s": (
                        got["received"] - got["recv"]
                        if got.get("received") and got.get("recv")
                        else None
                    ),
                    "process_s": (
                        ended - point["process-start"]
                        if ended and point["process-start"]
                        else None
                    ),
                    "exit_after_send_s": (
                        ended - point["sent"] if ended and point["sent"] else None
                    ),
                }
            )
    return out


def fab_size(work: Path) -> dict[str, Any]:
    """Files and bytes of the app as installed on SuperNode 0's ClientApp host."""
    apps = work / "hosts" / "clientapp-0" / "apps"
    files = [p for p in apps.rglob("*") if p.is_file()] if apps.exists() else []
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


# ---- the simulated runs ------------------------------------------------------------
def simulate_once(name: str, nodes: int, rounds: int) -> dict[str, Any]:
    """The same job through ``flwr run`` in simulation (Ray, two 1-CPU actors)."""
    work = RUNS / SUITE
    timing = work / f"{name}-timing.jsonl"
    timing.unlink(missing_ok=True)
    job = Job(
        name,
        None,
        job_config(nodes, rounds),
        engine="sim",
        num_supernodes=nodes,
        actor_cpus=1,
        ray_cpus=2,
        timeout=1800,
    )
    before = os.environ.get("HYPERFLOWER_TIMING_LOG")
    os.environ["HYPERFLOWER_TIMING_LOG"] = str(timing)
    try:
        result = run_job(job, work)
    finally:
        if before is None:
            os.environ.pop("HYPERFLOWER_TIMING_LOG", None)
        else:
            os.environ["HYPERFLOWER_TIMING_LOG"] = before
    records, _ = timing_records(timing)
    messages = [
        {
            "node": r.get("partition-id"),
            "type": r.get("type"),
            "group": r.get("group"),
            "stages": {
                k: v
                for k, v in {
                    "data": _span(r, "handler-start", "data-loaded"),
                    "train": _span(r, "data-loaded", "trained"),
                    "reply": _span(r, "trained", "reply-built"),
                }.items()
                if v is not None
            },
        }
        for r in records
    ]
    return {
        "name": name,
        "engine": "sim",
        "nodes": nodes,
        "ok": result.ok,
        "error": result.error,
        "total_s": result.total_s,
        "startup_s": result.startup_s,
        "rounds_s": [r.get("round-s") for r in result.rows if "round-s" in r],
        "exchange_s": [r.get("exchange-s") for r in result.rows if "exchange-s" in r],
        "messages": messages,
    }


def _span(record: dict[str, Any], a: str, b: str) -> float | None:
    if record.get(a) is None or record.get(b) is None:
        return None
    return float(record[b]) - float(record[a])


# ---- our part, in fresh processes ----------------------------------------------------
_IMPORTS = """
import json, time
import flwr.cli.install, flwr.supernode.cli.flwr_clientapp  # loaded before our app
import flwr.supernode.runtime.run_clientapp
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import client.app
t2 = time.perf_counter()
from client.handlers import load_all, load_for
load_for("train")  # what pFedHN's first train message imports
t3 = time.perf_counter()
load_all()  # every method's handlers: what `import client.app` did before
t4 = time.perf_counter()
print(json.dumps({"torch": t1 - t0, "app": t2 - t1, "one": t3 - t2,
                  "rest": t4 - t3}))
"""

_WHOLE_IMPORT = """
import json, time
t0 = time.perf_counter()
import client.app
from client.handlers import load_all
load_all()
print(json.dumps({"whole": time.perf_counter() - t0}))
"""

_DATA = """
import json, sys, time
from common.config import defaults, parse_run_config
from common.partition import load_client_data
from client.checks import with_node_config
run_config = {**defaults(), **json.loads(sys.argv[1])}
cache = sys.argv[2] == "1"
t0 = time.perf_counter()
cfg = with_node_config(parse_run_config(run_config), {"partition-id": 0})
data = load_client_data(cfg, 0, disk_cache=cache)
print(json.dumps({"load": time.perf_counter() - t0, "rows": len(data.y_train)}))
"""


def _fresh(code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``code`` in a fresh Python (one thread) and return its JSON line."""
    proc = subprocess.run(
        [PYTHON, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**(env or os.environ), "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def our_part(reps: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    """Our imports and a client's data load, each in fresh processes, before and
    after making them small (medians of ``reps``)."""
    _fresh(_WHOLE_IMPORT)  # warm-up: the libraries' files into the page cache
    imports = [_fresh(_IMPORTS) for _ in range(reps)]
    whole = [_fresh(_WHOLE_IMPORT) for _ in range(reps)]

    def median(values: list[float]) -> float:
        return statistics.median(values)

    out: dict[str, Any] = {
        "reps": reps,
        "torch_s": median([r["torch"] for r in imports]),
        "app_s": median([r["app"] for r in imports]),
        "one_handler_s": median([r["one"] for r in imports]),
        "other_handlers_s": median([r["rest"] for r in imports]),
        "whole_import_s": median([r["whole"] for r in whole]),
        "data": [],
    }
    for nodes in sizes:
        cfg = json.dumps(job_config(nodes, 1))
        _fresh(_DATA, cfg, "1")  # the per-node cache file exists from here on
        cold = [_fresh(_DATA, cfg, "0") for _ in range(max(2, reps - 2))]
        warm = [_fresh(_DATA, cfg, "1") for _ in range(max(2, reps - 2))]
        out["data"].append(
            {
                "nodes": nodes,
                "rows": cold[0]["rows"],
                "before_s": median([r["load"] for r in cold]),
                "after_s": median([r["load"] for r in warm]),
            }
        )
    with tempfile.TemporaryDirectory() as empty:  # a host that has never run it
        env = {**os.environ, "HYPERFLOWER_DATA": empty}
        first = _fresh(_DATA, json.dumps(job_config(sizes[-1], 1)), "1", env=env)
    out["first_on_host_s"] = first["load"]
    return out


# ---- the suite ----------------------------------------------------------------------
def run(quick: bool = False) -> dict[str, Any]:
    """Run the deploy-cost suite and write its results."""
    sizes = (2,) if quick else SIZES
    rounds = 2 if quick else 3
    app = app_copy(RUNS / SUITE / "app")
    runs: list[dict[str, Any]] = []
    keep = RUNS / SUITE / ("quick-runs.jsonl" if quick else "runs.jsonl")
    keep.unlink(missing_ok=True)

    def kept(result: dict[str, Any]) -> None:
        runs.append(result)  # and on disk, should a later step fail
        with open(keep, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(result) + "\n")

    with LoadMonitor() as load:
        ours = our_part(2 if quick else 5, sizes)
        keep.with_suffix(".ours.json").write_text(json.dumps(ours))
        for nodes in sizes:
            kept(deploy_once(f"deploy-{nodes}", nodes, rounds, app, {}))
            kept(simulate_once(f"sim-{nodes}", nodes, rounds))
        for name, nodes, env, label in [] if quick else EXTRA:
            kept(deploy_once(name, nodes, rounds, app, env, label))
    data = {
        "suite": SUITE,
        "quick": quick,
        "rounds": rounds,
        "job": JOB,
        "sizes": list(sizes),
        "runs": runs,
        "rows": summarise(runs),
        "ours": ours,
        "flower": flower_sources(),
        "machine": machine(),
        "load": load.summary(),
        "notes": NOTES,
    }
    out = results_dir(quick)
    write_results(SUITE, data, render(data), out)
    save_plot(out / f"{SUITE}.png", lambda ax: draw(ax, data), size=(7.5, 4.5))
    return data


def rebuild(quick: bool = False) -> dict[str, Any]:
    """Read the kept runs' logs again (``outputs/bench/deploy-cost/<run>/``) and
    rewrite the results: a change in how the logs are read, or in the notes, needs
    no new runs."""
    out = results_dir(quick)
    data = json.loads((out / f"{SUITE}.json").read_text())
    for run in data["runs"]:
        if run["engine"] == "deploy":
            run["messages"] = follow_messages(RUNS / SUITE / run["name"], run["nodes"])
    data.update(rows=summarise(data["runs"]), flower=flower_sources(), notes=NOTES)
    write_results(SUITE, data, render(data), out)
    save_plot(out / f"{SUITE}.png", lambda ax: draw(ax, data), size=(7.5, 4.5))
    return data


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per deployed run: the median of each stage over its train messages, the rounds'
    times (rounds after the first) deployed and simulated, and their ratio."""
    rows = []
    for dep in (r for r in runs if r["engine"] == "deploy"):
        nodes = dep["nodes"]
        sim = next(
            (r for r in runs if r["engine"] == "sim" and r["nodes"] == nodes), None
        )
        train = [m for m in dep["messages"] if m["type"] == "train"]
        stages = {
            key: _median([m["stages"].get(key) for m in train]) for key, _, _ in STAGES
        }
        flower = sum(stages[k] or 0.0 for k, _, who in STAGES if who == "Flower")
        ours = sum(stages[k] or 0.0 for k, _, who in STAGES if who == "ours")
        sim_train = [m for m in (sim or {}).get("messages", []) if m["type"] == "train"]
        row = {
            "nodes": nodes,
            "label": dep.get("label") or f"{nodes} nodes",
            "train_messages": len(train),
            "stages": stages,
            "flower_s": flower,
            "ours_s": ours,
            "message_s": _median([m["total"] for m in train]),
            "process_s": _median([m.get("process_s") for m in train]),
            "pull_s": _median([m.get("pull_s") for m in train]),
            "deploy_round_s": _median(dep["rounds_s"][1:] or dep["rounds_s"]),
            "deploy_rounds_s": dep["rounds_s"],
            "sim_round_s": _median((sim or {}).get("rounds_s", [None])[1:])
            if sim
            else None,
            "sim_rounds_s": (sim or {}).get("rounds_s"),
            "sim_train_s": _median([m["stages"].get("train") for m in sim_train]),
            "sim_data_s": _median([m["stages"].get("data") for m in sim_train]),
            "deploy_ok": dep["ok"],
            "sim_ok": bool(sim and sim["ok"]),
            "fab": dep.get("fab"),
        }
        if row["deploy_round_s"] and row["sim_round_s"]:
            row["ratio"] = row["deploy_round_s"] / row["sim_round_s"]
        rows.append(row)
    return rows


def _median(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.median(vals) if vals else None


def render(data: dict[str, Any]) -> str:
    """The results page, from the suite's JSON alone."""
    rows, ours = data["rows"], data["ours"]
    head = [
        "stage of one train message (median, s)",
        "whose",
        *[r["label"] for r in rows],
    ]
    body = [
        [label, who, *[fmt(r["stages"].get(key), 2) for r in rows]]
        for key, label, who in STAGES
    ]
    body += [
        [
            "**Flower's part** (sum of its medians)",
            "Flower",
            *[f"**{fmt(r['flower_s'], 2)}**" for r in rows],
        ],
        [
            "**our part** (sum of its medians)",
            "ours",
            *[f"**{fmt(r['ours_s'], 2)}**" for r in rows],
        ],
        [
            "message: created → reply sent (median)",
            "",
            *[fmt(r["message_s"], 2) for r in rows],
        ],
        [
            "of which the SuperNode's pull of the message (overlaps the start)",
            "",
            *[fmt(r.get("pull_s"), 2) for r in rows],
        ],
        [
            "`flwr-clientapp` process: start → exit (median)",
            "",
            *[fmt(r.get("process_s"), 2) for r in rows],
        ],
        [
            "**round, deployed** (rounds 2…, median)",
            "",
            *[f"**{fmt(r['deploy_round_s'], 3)}**" for r in rows],
        ],
        [
            "**round, simulation** (Ray, 2 actors; rounds 2…, median)",
            "",
            *[f"**{fmt(r['sim_round_s'], 3)}**" for r in rows],
        ],
        [
            "deployed / simulated",
            "",
            *[f"×{r['ratio']:.1f}" if r.get("ratio") else "—" for r in rows],
        ],
        [
            "training in simulation (per message, median)",
            "ours",
            *[fmt(r["sim_train_s"], 2) for r in rows],
        ],
        [
            "data load in simulation (warm worker, median)",
            "ours",
            *[fmt(r["sim_data_s"], 2) for r in rows],
        ],
    ]
    before_imports = ours["app_s"] + ours["one_handler_s"] + ours["other_handlers_s"]
    after_imports = ours["app_s"] + ours["one_handler_s"]
    ours_table = table(
        [f"our part, fresh process (median of {ours['reps']})", "before", "after"],
        [
            [
                "`import torch` (after Flower's own imports; cannot go: it trains)",
                fmt(ours["torch_s"], 3),
                fmt(ours["torch_s"], 3),
            ],
            [
                "our modules: `client.app` + handlers (all eagerly → one on first use)",
                fmt(before_imports, 3),
                fmt(after_imports, 3),
            ],
            [
                "`import client.app` in a bare Python, every handler "
                "(the issue's 2.2 s)",
                fmt(ours["whole_import_s"], 3),
                "—",
            ],
            *[
                [
                    f"run config + data load, {d['nodes']} nodes ({d['rows']:,} "
                    "training rows): gathered from the dataset cache → per-node cache",
                    fmt(d["before_s"], 3),
                    fmt(d["after_s"], 3),
                ]
                for d in ours["data"]
            ],
            [
                "first message on a host with no caches (decode, partition, write)",
                fmt(ours["first_on_host_s"], 3),
                "—",
            ],
        ],
    )
    fab = next((r["fab"] for r in rows if r.get("fab")), None)
    sites = [
        f"- {s['what']}: `{s['file']}:{s['line']}` — `{s['code']}`"
        for s in data["flower"]
    ]
    lines = [
        "### What a deployed round costs, attributed",
        "",
        f"pFedHN, Fashion-MNIST, LeNet-5 targets, {data['job']['local-steps']} local "
        f"steps, every client in every round, {data['rounds']} rounds per run; "
        "deployed with `deploy/run-loopback.sh --insecure` (one SuperNode and one "
        "ClientApp SuperExec per node, all on this host) and simulated with `flwr "
        "run` (Ray, two 1-CPU actors, Flower's default here). Stages are measured "
        "per train message from the message's creation time, the SuperNode's and "
        "the `flwr-clientapp` process's Flower logs (DEBUG timestamps), the "
        "process's start time (`/proc`) and the ClientApp's timing marks "
        "(`client/timing.py`); medians over every train message of the run. "
        "Rounds: the loop's `round-s` (send, wait for every reply, aggregate).",
        "",
        table(head, body),
        "",
        ours_table,
        "",
    ]
    if fab:
        lines += [
            f"The FAB a ClientApp installs for every message holds {fab['files']} "
            f"files, {fab['bytes'] / 1e6:.1f} MB.",
            "",
        ]
    lines += [
        f"Flower's part, in the installed flwr {data['machine'].get('flwr', '')}:",
        "",
        *sites,
        "",
    ]
    lines += paragraphs(data.get("notes", []))
    lines.append(load_caveat(data["load"], data["machine"]["cpus"]))
    return "\n".join(lines) + "\n"


def draw(ax: Any, data: dict[str, Any]) -> None:
    """Stacked bars: Flower's and our part of a train message, and the round times."""
    rows = data["rows"]
    xs = list(range(len(rows)))
    labels = [r.get("label") or f"{r['nodes']} nodes" for r in rows]
    flower = [r["flower_s"] or 0.0 for r in rows]
    ours = [r["ours_s"] or 0.0 for r in rows]
    ax.bar([x - 0.3 for x in xs], flower, 0.3, label="message: Flower's part")
    ax.bar([x - 0.3 for x in xs], ours, 0.3, bottom=flower, label="message: our part")
    ax.bar(xs, [r["deploy_round_s"] or 0.0 for r in rows], 0.3, label="round, deployed")
    ax.bar(
        [x + 0.3 for x in xs],
        [r["sim_round_s"] or 0.0 for r in rows],
        0.3,
        label="round, simulation",
    )
    ax.set_xticks(xs)
    ax.set_xticklabels(labels)
    ax.set(ylabel="seconds", title="a deployed round, attributed")
    ax.legend()


#: What the measurements show; kept with the numbers.
NOTES: list[str] = [
    "**Where a message's time goes (2 nodes, the host's CPUs not saturated).** "
    "6.4 s from the message's creation to its reply being sent, for 0.5 s of "
    "training. Flower's part, 4.1 s: the SuperNode, idle, sleeps 3 s between "
    "pulls, so a round's message waits 1.5 s on average (1.9 s here with the pull "
    "itself); its SuperExec finds the task within its 1 s poll and starts a new "
    "`flwr-clientapp` process, whose Python start and Flower imports take 1.1 s "
    "before it pulls its message and installs the FAB (0.04 s for our 0.8 MB "
    "FAB); after the reply is built the SuperNode, polling every 0.5 s, sends it "
    "(0.2 s). Our part, 2.2 s: `import client.app` 1.7 s, nearly all of it torch; "
    "data 0.02 s; training 0.5 s. A round (send, the slowest reply, aggregate) "
    "takes 8.1 s deployed against 0.59 s in simulation (×14): simulation's warm "
    "Ray workers pay no process start, no imports and no polls, and train the "
    "same 50 steps in 0.37 s.",
    "**More SuperNodes on one host.** Every SuperNode of a round starts its "
    "`flwr-clientapp` process at about the same time, and their CPU-bound stages "
    "(Python and Flower imports, `import torch`, training) share this host's 2 "
    "cores: from 2 to 10 nodes the Python/Flower start grows 1.1 → 5.8 s, "
    "`import client.app` 1.7 → 6.8 s and training 0.5 → 1.9 s, and the round 8 → "
    "16 → 35 s, roughly in proportion to nodes per core. The polls do not grow. "
    "With one SuperNode per machine, as deployments are meant to run, a round "
    "stays near the 2-node figure whatever the number of nodes.",
    "**Our part, made small.** `import torch` (1.4 s in a fresh process after "
    "Flower's own imports) cannot go: the ClientApp trains with it. Our own "
    "modules took 0.06 s with every method's handlers imported eagerly; the app "
    "now imports the handler module of a message's action when the message first "
    "needs it (`client.handlers.load_for`): 0.04 s. A client's data (run config, "
    "dataset memory map, every client's split, gather and normalise) took 0.1 s; "
    "a `flwr-clientapp` process now reads its client's ready tensors from a "
    "per-node cache (`common.partition`, keyed by the data's fingerprint, the "
    "partition id and the whole run config, written atomically next to the "
    "dataset cache): 0.02 s. The first message on a host with no caches pays "
    "5.6 s once (decoding the IDX files, partitioning with flwr-datasets, writing "
    "the caches). What is left of ours besides torch and training is ≈ 0.1 s of "
    "a 6 s message.",
    "**Task poll 0.2 s.** `FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.2` on the "
    "ClientApp SuperExecs cut the wait for the process start from 0.54 to 0.12 s, "
    "but five SuperExecs polling five times as often on 2 saturated cores slowed "
    "the CPU-bound stages as much, and the round was not faster (19.6 s against "
    "16.4 s, 3 rounds each). On a host with spare CPU it saves ≈ 0.4 s a message; "
    "the services keep Flower's default.",
    "**Load.** The suite held the machine's timing lock and nothing else ran; the "
    "load average below is the deployment's own processes (SuperLink, ServerApp, "
    "and per node a SuperNode, a SuperExec and a `flwr-clientapp` process), which "
    "is the contention the 5- and 10-node columns measure.",
]


if __name__ == "__main__":  # pragma: no cover
    go = rebuild if "--rebuild" in sys.argv else run
    sys.exit(0 if go(quick="--quick" in sys.argv).get("rows") else 1)
