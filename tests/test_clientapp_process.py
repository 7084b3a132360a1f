"""What a per-message ClientApp process pays, kept small and measured.

- Timing marks (client/timing.py): written only when asked, one JSON line per
  message, the process's start and import marks on its first message.
- Lazy handlers (client/handlers): ``import client.app`` imports no method's
  handlers; a train or evaluate message imports the one module of its action.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from client import timing

ROOT = Path(__file__).resolve().parents[1]


def _msg(kind: str = "train") -> SimpleNamespace:
    meta = SimpleNamespace(message_type=kind, group_id="3", created_at=time.time())
    return SimpleNamespace(metadata=meta)


def test_marks_are_written_per_message_only_when_asked(tmp_path, monkeypatch):
    log = tmp_path / "timing.jsonl"
    context = SimpleNamespace(node_config={"partition-id": 1})

    def handler(msg, ctx):
        timing.mark("data-loaded")
        timing.mark("trained")
        return "reply"

    monkeypatch.delenv(timing.TIMING_LOG_ENV, raising=False)
    monkeypatch.setattr(timing, "_handled", 0)
    monkeypatch.setattr(timing, "_marks", {"process-start": 1.0, "import-done": 2.0})
    assert timing.timing_mod(_msg(), context, handler) == "reply"
    assert not log.exists()  # nothing is written unless the variable names a file

    monkeypatch.setenv(timing.TIMING_LOG_ENV, str(log))
    monkeypatch.setattr(timing, "_handled", 0)
    monkeypatch.setattr(timing, "_marks", {"process-start": 1.0, "import-done": 2.0})
    timing.timing_mod(_msg(), context, handler)
    timing.timing_mod(_msg("evaluate"), context, handler)
    first, second = (json.loads(line) for line in log.read_text().splitlines())
    assert first["first"] and first["process-start"] == 1.0
    assert first["type"] == "train" and first["partition-id"] == 1
    assert (
        first["handler-start"]
        <= first["data-loaded"]
        <= first["trained"]
        <= first["reply-built"]
    )
    # a later message in the same process (a simulation worker) pays no imports
    assert not second["first"] and "import-done" not in second
    assert second["type"] == "evaluate"


def test_process_start_is_in_the_past():
    start = timing.process_start()
    assert start is None or time.time() - 3600 * 24 * 365 < start <= time.time()


def test_every_handler_module_is_listed_under_the_actions_it_registers():
    """client.handlers.ACTION_MODULES names, for each action, the module whose
    ``@app.train(...)`` / ``@app.evaluate(...)`` registers it (read from source)."""
    import common.protocol
    from client.handlers import ACTION_MODULES
    from common.methods.fedproto import FEDPROTO

    names = {**vars(common.protocol), "FEDPROTO": FEDPROTO}
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "client" / "handlers").glob("[!_]*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if not (
                isinstance(node, ast.Call)
                and isinstance(func, ast.Attribute)
                and func.attr in ("train", "evaluate")
                and isinstance(func.value, ast.Name)
                and func.value.id == "app"
            ):
                continue
            arg = node.args[0] if node.args else None
            action = (
                ""
                if arg is None
                else arg.value
                if isinstance(arg, ast.Constant)
                else names[arg.id]
            )
            found.setdefault(action, set()).add(path.stem)
    assert all(len(m) == 1 for m in found.values()), found
    assert {a: min(m) for a, m in found.items()} == ACTION_MODULES


def test_importing_the_app_imports_no_handlers_until_a_message_needs_them():
    code = (
        "import sys\n"
        "import client.app\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('client.handlers.'))\n"
        "assert not loaded, loaded\n"
        "from client.handlers import load_for\n"
        "load_for('train')\n"
        "load_for('evaluate.lora')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('client.handlers.'))\n"
        "assert loaded == ['client.handlers.' + m for m in ('hyperflora', 'plain')]\n"
        "load_for('query')\n"
        "assert 'client.handlers.mh' in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_pickled_copy_of_the_app_dispatches_to_lazily_loaded_handlers():
    """Simulation ships each Ray worker a pickled copy of the app taken before any
    handler module was imported: the copy must still reach the handler."""
    code = """
import cloudpickle
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
import client.app
from common.config import defaults

copy = cloudpickle.loads(cloudpickle.dumps(client.app.app))
assert copy is not client.app.app
TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1
msg = Message(RecordDict(), dst_node_id=1, message_type="train")
run_config = {**defaults(), "dataset": "synthetic", "num-clients": 2}
ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 0},
              state=RecordDict(), run_config=run_config)
reply = copy(msg, ctx)  # the plain handler runs and finds no config record
assert reply.has_error() and "KeyError" in reply.error.reason, reply.error.reason
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
