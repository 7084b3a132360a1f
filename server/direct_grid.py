"""An in-process Grid that hands messages straight to a ClientApp.

Not a deployment path: it exists so unit tests can drive the real server loop and
client handlers without starting Ray or gRPC, and so the framework-overhead benchmark
can compare `flwr run` with the same functions called directly. A per-node hook may
replace a reply, which is how tests inject faulty clients.

The ClientApp is the one the app's ``pyproject.toml`` names
(``[tool.flwr.app.components] clientapp``), loaded by that reference as Flower's
simulation loads it (:func:`project_client_app`): no server module imports the
client package (docs/architecture.md, "Layering").
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import Error
from flwr.serverapp import Grid
from flwr.supercore.object_ref import load_app
from flwr.supercore.task_identity import TaskIdentity

#: A fault hook: (node_id, incoming message, normal reply) -> reply to deliver, or None
#: for "never answers".
FaultHook = Callable[[int, Message, Message], Message | None]

#: The app's project folder (a checkout: its pyproject.toml names the components).
PROJECT_DIR = Path(__file__).resolve().parent.parent


def project_client_app(project_dir: Path = PROJECT_DIR) -> ClientApp:
    """The ClientApp the project's ``pyproject.toml`` names (``clientapp``), loaded
    by its reference as Flower's runtime loads it, so the server side names no client
    module and a run in process uses exactly the app ``flwr run`` would."""
    with (project_dir / "pyproject.toml").open("rb") as file:
        components = tomllib.load(file)["tool"]["flwr"]["app"]["components"]
    app = load_app(components["clientapp"], ValueError, project_dir)
    if not isinstance(app, ClientApp):
        raise TypeError(f"{components['clientapp']!r} is not a ClientApp")
    return app


class NodeContexts(dict[int, Context]):
    """The simulated nodes' Flower contexts by node id (1000 + partition id), each
    made when first looked up: iterating gives every node id, but a node never
    messaged holds no context (100,000 nodes cost nothing until drawn)."""

    def __init__(self, num_nodes: int, run_config: dict[str, Any]) -> None:
        super().__init__()
        self.num_nodes, self.run_config = num_nodes, run_config

    def __missing__(self, node: int) -> Context:
        partition = node - 1000
        if not 0 <= partition < self.num_nodes:
            raise KeyError(node)
        context = self[node] = Context(
            run_id=1,
            node_id=node,
            node_config={"partition-id": partition, "num-partitions": self.num_nodes},
            state=RecordDict(),
            run_config=dict(self.run_config),
        )
        return context

    def __iter__(self) -> Iterator[int]:
        return iter(range(1000, 1000 + self.num_nodes))

    def __len__(self) -> int:
        return self.num_nodes

    def __contains__(self, node: object) -> bool:
        return isinstance(node, int) and 0 <= node - 1000 < self.num_nodes


class DirectGrid(Grid):
    """Delivers each pushed message to ``client_app`` in this process, in order."""

    def __init__(
        self,
        client_app: ClientApp,
        run_config: dict[str, Any],
        num_nodes: int,
        fault_hook: FaultHook | None = None,
    ) -> None:
        self.client_app = client_app
        self.fault_hook = fault_hook
        # Messages read their run and sender from the process's task identity, which
        # Flower's runtime sets; here the server is node 0 of run 1.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.contexts = NodeContexts(num_nodes, run_config)
        self._inbox: dict[str, Message] = {}

    def set_run(self, run: Any) -> None:  # noqa: D102 - Grid API, nothing to set
        pass

    @property
    def run(self) -> Any:  # noqa: D102 - Grid API
        return None

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Grid API (deprecated upstream): build a message for ``dst_node_id``."""
        return Message(content, dst_node_id=dst_node_id, message_type=message_type)

    def get_node_ids(self) -> Iterable[int]:
        """All simulated nodes."""
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Assign ids and queue the messages."""
        ids = []
        for msg in messages:
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid
            self._inbox[mid] = msg
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Run the ClientApp on each queued message and return the replies."""
        replies = []
        for mid in list(message_ids):
            msg = self._inbox.pop(mid, None)
            if msg is None:
                continue
            node = msg.metadata.dst_node_id
            reply: Message | None
            try:
                reply = self.client_app(msg, self.contexts[node])
            except Exception as exc:  # noqa: BLE001 - a raising ClientApp is a reply
                reply = Message(Error(code=2, reason=repr(exc)), reply_to=msg)
            if self.fault_hook is not None:
                reply = self.fault_hook(node, msg, reply)
            if reply is not None:
                replies.append(reply)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push then pull everything (no waiting: delivery is synchronous)."""
        return self.pull_messages(self.push_messages(messages))


def run_in_process(
    run_config: dict[str, Any], fault_hook: FaultHook | None = None, device: str = "cpu"
) -> dict[str, Any] | None:
    """Run the ServerApp's code path over a DirectGrid; return the summary (or None
    when the run stopped early through ``stop-after-round``)."""
    from server.runstate import end_run

    runner = build_runner(run_config, fault_hook, device)
    summary = runner.run()
    end_run(runner.outputs, summary, runner.cfg)
    return summary


def build_runner(
    run_config: dict[str, Any], fault_hook: FaultHook | None = None, device: str = "cpu"
) -> Any:
    """The server loop (:class:`server.loop.Runner`) wired to a DirectGrid."""
    import torch

    from common.config import parse_run_config
    from server.loop import Runner
    from server.registry import register_run
    from server.runstate import check_data, open_run, record_clients_data
    from server.strategies import strategy_for

    cfg = parse_run_config(run_config)
    grid = DirectGrid(project_client_app(), run_config, cfg.num_clients, fault_hook)
    outputs = open_run(cfg)
    method = strategy_for(cfg.method)
    registry = register_run(
        grid,
        cfg,
        cfg.round_timeout,
        method.registration_fields,
        expected_data=check_data(cfg, outputs, local=True),
    )
    record_clients_data(outputs, registry.data)
    strategy = method(cfg, registry, torch.device(device))
    return Runner(grid, cfg, registry, strategy, outputs)
