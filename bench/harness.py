"""Running benchmark jobs: in-process workers or `flwr run` simulations, two at a time.

A *job* is one run of the server loop: a preset (``conf/*.toml``) plus overrides
and a seed. It runs either

- ``direct``: ``python -m bench.worker`` — the ServerApp's code path over
  :class:`server.direct_grid.DirectGrid` (the real client handlers called in the
  same process, no Ray, no gRPC), one torch thread; or
- ``sim``: ``flwr run . local`` in an isolated Flower environment (own
  ``FLWR_HOME`` and ports; the local SuperLink it leaves is stopped by PID).

:func:`run_jobs` runs up to ``parallel`` jobs at once (two 1-thread runs use both
cores of this machine better than one run with two threads: the clients' small
LeNet batches do not scale across threads) and shows a progress line read from the
jobs' ``metrics.jsonl``.

Every job starts in its own session. Linux's autogroup scheduler (on here) shares
the CPU between sessions, not processes: a run inside the caller's session would get
one share for all its processes, while ``flwr run``'s SuperLink starts its own
sessions, so under other load the two engines would not get comparable CPU.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.flwr_cli import flwr_env, free_ports
from server.localsim import local_superlink_pids

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RUNS = ROOT / "outputs" / "bench"
PYTHON = sys.executable
#: The job processes running now; each leads its own session (process group).
_LIVE: set[subprocess.Popen[bytes]] = set()


def results_dir(quick: bool) -> Path:
    """Where a suite writes: ``bench/results`` (committed), or for ``--quick``
    smoke runs ``outputs/bench/quick-results`` (never committed)."""
    return RUNS / "quick-results" if quick else RESULTS


# ---- jobs --------------------------------------------------------------------
@dataclass
class Job:
    """One run: a preset plus overrides, on an engine, with a name for its folder."""

    name: str
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    engine: str = "direct"  # "direct" (in-process) or "sim" (flwr run)
    num_supernodes: int | None = None  # sim: defaults to num-clients
    actor_cpus: int = 1  # sim: CPUs per Ray actor
    ray_cpus: int | None = None  # sim: CPUs Ray may use (actors = this / above)
    timeout: float = 3600.0
    tags: dict[str, Any] = field(default_factory=dict)

    def config(self, out_root: Path) -> dict[str, Any]:
        """The full run config (preset, then overrides, then output location)."""
        cfg = load_preset(self.preset) if self.preset else {}
        cfg.update(self.overrides)
        cfg["run-name"] = self.name
        cfg["output-dir"] = str(out_root)
        return cfg


@dataclass
class JobResult:
    """What a finished job left: its summary, per-round rows and timings."""

    job: Job
    ok: bool
    summary: dict[str, Any] | None
    rows: list[dict[str, Any]]
    startup_s: float | None  # launch -> first round starts (config.json written)
    total_s: float  # launch -> process exit
    extra: dict[str, Any]  # worker-side measurements (direct engine)
    log_path: Path
    error: str = ""
    reused: bool = False  # a finished run of an earlier invocation (``--reuse``)


def load_preset(preset: str) -> dict[str, Any]:
    """A ``conf/*.toml`` preset as a dict (a path, or a name under ``conf/``)."""
    path = Path(preset)
    if not path.is_absolute() and not path.exists():
        path = (
            ROOT / "conf" / (preset if preset.endswith(".toml") else f"{preset}.toml")
        )
    return tomllib.loads(path.read_text())


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The per-round rows of a run so far (empty while it has none)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a row being written
            break
    return rows


# ---- an isolated Flower environment -------------------------------------------
def isolated_env(home: Path) -> dict[str, str]:
    """Environment for one `flwr run`: own FLWR_HOME and ports, no installs,
    no telemetry (:func:`common.flwr_cli.flwr_env` over a copy of this one)."""
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    link, http, control = free_ports(3)
    env.update(
        {
            "FLWR_HOME": str(home),
            "HYPERFLOWER_LINK_PORT": str(link),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http),
            "FLWR_LOCAL_CONTROL_API_PORT": str(control),
            "PATH": f"{Path(PYTHON).parent}:{env['PATH']}",
        }
    )
    return flwr_env(env)


def superlink_pids(env: Mapping[str, str]) -> list[int]:
    """PIDs of the local SuperLink started for this environment (by its port)."""
    return local_superlink_pids(env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"])


def descendants(pid: int) -> list[int]:
    """All descendant PIDs of ``pid`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_superlink(env: Mapping[str, str]) -> None:
    """Stop this environment's local SuperLink and what it started, by PID."""
    for pid in superlink_pids(env):
        family = [pid, *descendants(pid)]
        for p in family:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in family):
            time.sleep(0.2)
        for p in family:
            if _alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1]
    except OSError:
        return False
    return state.split()[0] != "Z"


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MB (0 when it is gone)."""
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cmdline(pid: int) -> str:
    """A process's command line ('' when it is gone)."""
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


# ---- running one job -------------------------------------------------------------
PROCESS_KINDS = (
    ("bench.worker", "in-process run"),
    ("ClientAppActor", "Ray actor (ClientApp)"),
    ("flwr-simulation", "flwr-simulation (ServerApp, simulation engine, Ray driver)"),
    ("flower-superlink", "SuperLink"),
    ("flower-superexec", "SuperExec"),
    ("bin/flwr run", "flwr run --stream (CLI)"),
    ("ray", "Ray daemons (raylet, GCS, log monitor, dashboard, agents)"),
)


def process_kind(command: str) -> str:
    """What a process of a run is, from its command line (for CPU breakdowns)."""
    for needle, kind in PROCESS_KINDS:
        if needle in command:
            return kind
    return "other"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 when it is gone)."""
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1]
    except OSError:
        return 0.0
    parts = fields.split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class ProcSampler:
    """Samples, every ``period`` s: rounds finished, CPU time of the run's whole
    process tree, and RSS of the process that runs the ServerApp.

    ``direct``: the worker process is both. ``sim``: the tree is ``flwr run``, the
    local SuperLink and everything it started (the ``flwr-simulation`` process,
    which runs the ServerApp, Ray's GCS, raylet and actor workers); the server is
    the ``flwr-simulation`` process. CPU time is robust to other load on the machine
    (wall time is not), so the overhead suite reports both.
    """

    def __init__(
        self,
        find_server: Callable[[], int | None],
        find_tree: Callable[[], list[int]],
        rows_path: Path,
        period: float = 0.25,
    ) -> None:
        self.find_server, self.find_tree = find_server, find_tree
        self.rows_path, self.period = rows_path, period
        self.samples: list[tuple[float, int, float, float]] = []
        self._seen: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._at_rows: dict[int, dict[int, float]] = {}  # rows -> per-pid CPU
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcSampler:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _rows(self) -> int:
        try:
            return self.rows_path.read_bytes().count(b"\n")
        except OSError:
            return 0

    def _loop(self) -> None:
        server = None
        while not self._stop.wait(self.period):
            if server is None or not _alive(server):
                server = self.find_server()
            for pid in self.find_tree():
                cpu = cpu_seconds(pid)
                if cpu:  # keep the last value of processes that have exited
                    self._seen[pid] = cpu
                    command = cmdline(pid)  # Ray workers rename themselves
                    if command:
                        self._names[pid] = process_kind(command)
            rss = rss_mb(server) if server is not None else 0.0
            rows = self._rows()
            self._at_rows.setdefault(rows, dict(self._seen))
            self.samples.append(
                (time.monotonic() - self.t0, rows, sum(self._seen.values()), rss)
            )

    @property
    def peak(self) -> float | None:
        """Largest server RSS seen (MB)."""
        return max((s[3] for s in self.samples if s[3]), default=None)

    def between_rows(self, first: int, last: int) -> dict[str, float] | None:
        """Wall and tree CPU seconds from round ``first`` ending to ``last`` ending
        (as first seen in the samples); None when the run never got there."""

        def at(n: int) -> tuple[float, int, float, float] | None:
            return next((s for s in self.samples if s[1] >= n), None)

        a, b = at(first), at(last)
        if a is None or b is None or b[1] != last or a[1] != first:
            return None
        by_kind: dict[str, float] = {}
        start, end = self._at_rows.get(first, {}), self._at_rows.get(last, {})
        for pid, cpu in end.items():
            kind = self._names.get(pid, "other")
            by_kind[kind] = by_kind.get(kind, 0.0) + cpu - start.get(pid, 0.0)
        return {
            "wall_s": b[0] - a[0],
            "cpu_s": b[2] - a[2],
            "rounds": last - first,
            "cpu_by_process_s": {
                k: round(v, 3)
                for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])
            },
        }


def run_job(job: Job, out_root: Path, sample_rss: bool = False) -> JobResult:
    """Run one job to completion and collect its outputs and timings."""
    cfg = job.config(out_root)
    run_dir = out_root / job.name
    log_path = out_root / f"{job.name}.log"
    out_root.mkdir(parents=True, exist_ok=True)
    for stale in (
        "metrics.jsonl",
        "summary.json",
        "config.json",
        "bench-worker.json",
        "status.json",
    ):
        (run_dir / stale).unlink(missing_ok=True)
    ckpt = run_dir / "checkpoint" / "state.pt"
    ckpt.unlink(missing_ok=True)
    env: dict[str, str] | None = None
    start_wall = time.time()
    t0 = time.monotonic()
    error = ""
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            if job.engine == "direct":
                proc = subprocess.Popen(
                    [PYTHON, "-m", "bench.worker", json.dumps(cfg)],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={
                        **os.environ,
                        "HYPERFLOWER_CLIENT_THREADS": "1",
                        "HYPERFLOWER_SERVER_THREADS": "1",
                        "OMP_NUM_THREADS": "1",
                    },
                )

                def find() -> int | None:
                    return proc.pid

                def tree() -> list[int]:
                    return [proc.pid, *descendants(proc.pid)]
            else:
                env = isolated_env(out_root / f".flwr-{job.name}")
                env.update(
                    {
                        "HYPERFLOWER_CLIENT_THREADS": "1",
                        "HYPERFLOWER_SERVER_THREADS": "1",
                        "OMP_NUM_THREADS": "1",
                    }
                )
                nodes = job.num_supernodes or int(cfg.get("num-clients", 50))
                fed = (
                    f"num-supernodes={nodes} client-resources-num-cpus={job.actor_cpus}"
                )
                if job.ray_cpus:
                    fed += f" init-args-num-cpus={job.ray_cpus}"
                from common.flwr_cli import run_config_arg

                proc = subprocess.Popen(
                    [
                        "flwr",
                        "run",
                        str(ROOT),
                        "local",
                        "--stream",
                        "--run-config",
                        run_config_arg(cfg),
                        "--federation-config",
                        fed,
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                sim_env = env

                links: list[int] = []

                def superlinks() -> list[int]:
                    if not links:  # found once (a scan of /proc per call)
                        links.extend(superlink_pids(sim_env))
                    return links

                def find() -> int | None:
                    for link in superlinks():
                        for pid in descendants(link):
                            if "flwr-simulation" in cmdline(pid):
                                return pid
                    return None

                def tree() -> list[int]:
                    pids = [proc.pid, *descendants(proc.pid)]
                    for link in superlinks():
                        pids += [link, *descendants(link)]
                    return pids

            sampler = (
                ProcSampler(find, tree, run_dir / "metrics.jsonl")
                if sample_rss
                else None
            )
            if sampler:
                sampler.__enter__()
            _LIVE.add(proc)
            try:
                proc.wait(timeout=job.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                error = f"timed out after {job.timeout:.0f}s"
            finally:
                _LIVE.discard(proc)
                if sampler:
                    sampler.__exit__(None, None, None)
        total = time.monotonic() - t0
        # `flwr run --stream` returns when the run ends; the summary may trail it.
        summary_path = run_dir / "summary.json"
        deadline = time.monotonic() + (30 if job.engine == "sim" else 0)
        while not summary_path.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        if env is not None:
            stop_superlink(env)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    config_path = run_dir / "config.json"
    startup = config_path.stat().st_mtime - start_wall if config_path.exists() else None
    extra_path = run_dir / "bench-worker.json"
    extra = json.loads(extra_path.read_text()) if extra_path.exists() else {}
    if sample_rss and sampler is not None:
        extra["rss-peak-mb"] = sampler.peak
        extra["rss-samples"] = [(t, rss) for t, _, _, rss in sampler.samples if rss]
        n = len(read_rows(run_dir))
        extra["after-round-1"] = sampler.between_rows(1, n - 1) if n > 2 else None
    rows = read_rows(run_dir)
    # a run told to stop after round k (``stop-after-round``) ends without a summary
    stop = int(cfg.get("stop-after-round", 0) or 0)
    ok = summary is not None or bool(stop and len(rows) >= stop and not error)
    if not ok and not error:
        error = f"no summary.json; see {log_path}"
    return JobResult(job, ok, summary, rows, startup, total, extra, log_path, error)


# ---- many jobs, with progress ----------------------------------------------------
def _fmt_s(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """One status line: jobs done, what runs (with its round), elapsed and ETA."""

    def __init__(self, suite: str, jobs: Sequence[Job], out_root: Path) -> None:
        self.suite, self.jobs, self.out_root = suite, list(jobs), out_root
        self.running: dict[str, float] = {}
        self.done: list[tuple[str, float, bool]] = []
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def _rounds(self, job: Job) -> str:
        rows = read_rows(self.out_root / job.name)
        total = job.config(self.out_root).get("num-rounds", "?")
        return f"{job.name} r{rows[-1]['round'] if rows else 0}/{total}"

    def line(self) -> str:
        """The current status text."""
        elapsed = time.monotonic() - self.t0
        running = [self._rounds(j) for j in self.jobs if j.name in self.running]
        n_done = len(self.done)
        eta = ""
        if n_done:
            per_job = sum(d for _, d, _ in self.done) / n_done
            left = (len(self.jobs) - n_done) * per_job / max(1, len(self.running) or 1)
            eta = f", eta ~{_fmt_s(max(0.0, left))}"
        failed = sum(1 for *_, ok in self.done if not ok)
        return (
            f"[{self.suite}] {n_done}/{len(self.jobs)} done"
            + (f" ({failed} failed)" if failed else "")
            + (f" | running: {', '.join(running)}" if running else "")
            + f" | {_fmt_s(elapsed)}{eta}"
        )

    def show(self, force: bool = False) -> None:
        """Print the line (rewritten in place on a terminal, every 15 s in a log)."""
        now = time.monotonic()
        if not force and now - self._last < (1.0 if self.tty else 15.0):
            return
        self._last = now
        text = self.line()
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + text[:200])
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        """The final line, on its own."""
        self.show(force=True)
        if self.tty:
            sys.stderr.write("\n")


def run_jobs(
    suite: str, jobs: Sequence[Job], parallel: int = 2, sample_rss: bool = False
) -> list[JobResult]:
    """Run ``jobs`` with up to ``parallel`` at once; results in the jobs' order."""
    out_root = RUNS / suite
    progress = Progress(suite, jobs, out_root)
    results: dict[str, JobResult] = {}
    lock = threading.Lock()
    queue = list(jobs)

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop(0)
                progress.running[job.name] = time.monotonic()
            result = run_job(job, out_root, sample_rss)
            with lock:
                started = progress.running.pop(job.name)
                progress.done.append((job.name, time.monotonic() - started, result.ok))
                results[job.name] = result
            if not result.ok:
                sys.stderr.write(f"\n[{suite}] {job.name} failed: {result.error}\n")

    threads = [
        threading.Thread(target=worker, daemon=True)
        for _ in range(max(1, min(parallel, len(jobs))))
    ]
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_jobs) if main else None
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            progress.show()
            time.sleep(0.5)
    except KeyboardInterrupt:
        _kill_live()
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    progress.finish()
    return [results[j.name] for j in jobs]


def _kill_live() -> None:
    """Stop every running job's whole process group: jobs run in sessions of their
    own (so a job's Ray or SuperLink children go with it), which a signal to the
    suite would not reach."""
    for proc in list(_LIVE):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


def _stop_jobs(signum: int, _frame: Any) -> None:
    """SIGTERM to a suite: its jobs stop with it instead of running on orphaned."""
    _kill_live()
    raise SystemExit(128 + signum)


# ---- the machine ------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy the machine was."""
    import torch

    try:
        import flwr

        flwr_version = flwr.__version__ if hasattr(flwr, "__version__") else ""
    except ImportError:  # pragma: no cover
        flwr_version = ""
    if not flwr_version:
        from importlib.metadata import version

        flwr_version = version("flwr")
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flwr": flwr_version,
        "platform": platform.platform(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg": list(os.getloadavg()),
    }


class LoadMonitor:
    """Samples the 1-minute load average while a suite runs (the caveat it needs)."""

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        self.samples.append(os.getloadavg()[0])
        while not self._stop.wait(self.period):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        """Mean and max 1-minute load average seen."""
        if not self.samples:
            return {}
        return {
            "load1-mean": sum(self.samples) / len(self.samples),
            "load1-max": max(self.samples),
        }


#: Run-config keys that say where a run writes, or how often it saves, and do not
#: change its numbers.
NOT_RESULT_KEYS = (
    "output-dir",
    "run-name",  # names the folder only: a run of another suite may be reused
    "checkpoint-every",
    "eval-clients-per-batch",
    "run-id",
    "run",
)  # run: identity and data record (config.json)


#: Keys read by one method only (by prefix): for a run of another method they change
#: nothing, so a later change of their defaults must not force a re-run.
METHOD_ONLY_KEYS = {"hfz-": ("hyperfedzero",)}


def same_run(used: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether a finished run's resolved config describes the wanted run: keys that
    do not change results aside (and other methods' own keys), and a key the older
    run did not know counted as its default (it ran with the behaviour that default
    keeps)."""
    from common.config import defaults

    known = defaults()
    method = wanted.get("method", known.get("method"))
    keys = {
        k
        for k in (set(used) | set(wanted)) - set(NOT_RESULT_KEYS)
        if not any(
            k.startswith(prefix) and method not in methods
            for prefix, methods in METHOD_ONLY_KEYS.items()
        )
    }
    return all(used.get(k, known.get(k)) == wanted.get(k, known.get(k)) for k in keys)


def run_or_reuse(
    suite: str,
    jobs: Sequence[Job],
    parallel: int,
    reuse: bool,
    reuse_from: Sequence[str] = (),
) -> list[JobResult]:
    """Run the jobs; with ``reuse`` a finished run of the same config is kept
    instead (adding a row to a suite need not re-run the others), looked up under
    the job's own name and then among the runs of the suites ``reuse_from`` (the
    same runs scored another way, e.g. a sweep read on held-out clients)."""
    from common.config import parse_run_config

    kept: dict[str, JobResult] = {}
    root = RUNS / suite

    def finished(run_dir: Path) -> dict[str, Any] | None:
        """The config a finished run used (None: not finished)."""
        used = run_dir / "config.json"
        if not ((run_dir / "summary.json").exists() and used.exists()):
            return None
        return json.loads(used.read_text())

    if reuse:
        # the other suites' finished runs, read once for every job
        others = [
            (run_dir, used)
            for other in reuse_from
            for run_dir in sorted((RUNS / other).glob("*"))
            if (used := finished(run_dir)) is not None
        ]
        for job in jobs:
            own = finished(root / job.name)
            candidates = ([(root / job.name, own)] if own is not None else []) + others
            if not candidates:
                continue
            wanted = json.loads(
                json.dumps(parse_run_config(job.config(root)).to_dict())
            )
            for run_dir, used in candidates:
                if same_run(used, wanted):
                    kept[job.name] = JobResult(
                        job,
                        True,
                        json.loads((run_dir / "summary.json").read_text()),
                        read_rows(run_dir),
                        None,
                        0.0,
                        {},
                        run_dir.parent / f"{run_dir.name}.log",
                        reused=True,
                    )
                    break
        if kept:
            print(
                f"[{suite}] reusing {len(kept)} finished run(s) with the same config",
                file=sys.stderr,
            )
    fresh = run_jobs(suite, [j for j in jobs if j.name not in kept], parallel)
    by_name = {r.job.name: r for r in fresh} | kept
    return [by_name[j.name] for j in jobs]
