"""What Flower's simulation engine costs per virtual SuperNode, measured on its own.

``python -m bench.flower_probe N`` runs, in this process, the three per-node steps
of Flower's simulation engine (flwr 1.42, ``flwr/server/superlink/fleet/vce/
vce_api.py``) for N nodes and prints one JSON line:

- ``_register_nodes``: a LinkState node per SuperNode (``state.create_node``);
- ``_register_node_info_stores``: a ``DeprecatedRunInfoStore`` and a Context per
  node, each built by ``register_context``
  (``flwr/compat/client/run_info_store.py``), which with an app folder reads and
  fuses the app's ``pyproject.toml`` once per node;
- ``grid.get_node_ids()`` as the ServerApp calls it (the in-memory LinkState's
  ``get_nodes``: every node's record filtered under the state's lock);
- one sweep of ``add_messages_to_queue``: ``state.get_message_ins(node_id, limit=1)``
  for every node, which the engine repeats every 0.1 s while the run lasts, with
  the LinkState holding no message and then holding ``messages`` (a round's
  train messages, waiting to be delivered): each call walks the whole message
  store.

Time and RSS growth of each step; the scale suite's page reads them to say which
part of a simulation's start-up and round is Flower's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """This process's resident memory in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def probe(num_nodes: int, messages: int = 10) -> dict[str, Any]:
    """Time and memory of Flower's per-node simulation steps for ``num_nodes``."""
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.run import Run
    from flwr.superlink.federation import NoOpFederationManager

    out: dict[str, Any] = {"n": num_nodes, "rss_start_mb": rss_mb()}
    factory = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    )
    t0 = time.perf_counter()
    mapping = vce_api._register_nodes(num_nodes, factory)
    out["register_nodes_s"] = time.perf_counter() - t0
    out["rss_after_nodes_mb"] = rss_mb()
    run = Run.create_empty(1)
    run.federation_id = NOOP_FEDERATION_ID  # the simulation's one federation
    t0 = time.perf_counter()
    stores = vce_api._register_node_info_stores(mapping, run, app_dir=str(ROOT))
    out["register_contexts_s"] = time.perf_counter() - t0
    out["rss_after_contexts_mb"] = rss_mb()
    out["run_config_keys"] = len(
        next(iter(stores.values())).retrieve_context(1).run_config
    )
    state = factory.state()
    nodes = list(mapping)

    def sweep() -> float:
        start = time.perf_counter()
        for node in nodes:
            state.get_message_ins(node_id=node, limit=1)
        return time.perf_counter() - start

    out["sweep_empty_s"] = sweep()
    # what the ServerApp's grid.get_node_ids() costs (InMemoryGrid -> get_nodes)
    state.run_ids[1] = _run_record(run)
    t0 = time.perf_counter()
    out["nodes_listed"] = len(state.get_nodes(1))
    out["get_node_ids_s"] = time.perf_counter() - t0
    # a round's train messages waiting in the store (to nodes at the sweep's end,
    # so a sweep walks them at every node before it delivers any)
    try:
        from flwr.supercore.task_identity import TaskIdentity

        # as the simulation does (flwr/simulation/run_simulation.py): the run is
        # registered with the LinkState; the messages are put in its store as
        # ``InMemoryLinkState.store_message_ins`` would after its checks
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        for i, node in enumerate(nodes[-messages:]):
            msg = Message(
                RecordDict({"config": ConfigRecord({"i": i})}),
                dst_node_id=node,
                message_type="query",
            )
            msg.metadata.__dict__["_message_id"] = f"probe-{i}"
            state.message_ins_store[f"probe-{i}"] = msg
        out["messages_waiting"] = len(state.message_ins_store)
        out["sweep_with_messages_s"] = sweep()
        out["messages_after_sweep"] = len(state.message_ins_store)
    except Exception as exc:  # noqa: BLE001 - a probe reports what it could not do
        out["sweep_with_messages_error"] = f"{type(exc).__name__}: {exc}"
    out["rss_end_mb"] = rss_mb()
    return out


def _run_record(run: Any) -> Any:
    """The in-memory LinkState's record of a run (its type moved between versions)."""
    from flwr.server.superlink.linkstate import in_memory_linkstate as mem

    return mem.RunRecord(run=run)


def main(argv: list[str]) -> int:
    """Probe each size given on the command line; one JSON line each."""
    for arg in argv:
        print(json.dumps(probe(int(arg))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
