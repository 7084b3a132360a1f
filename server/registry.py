"""Registration: map Flower node ids to stable client ids and learn client metadata.

The server sends a ``query`` message to every connected node. Each client answers
with its stable id and what the methods may use (sample counts, parameter count K_i,
class indicator r_i). Which clients participate is decided here, once, by the seeded
holdout split of partition ids, so non-participants never train.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from common.config import RunConfig
from common.partition import split_participants
from common.records import as_int
from server.datacheck import agree_on_data
from server.failures import cause_lines, main_cause
from server.messaging import Exchange, Outgoing, exchange


@dataclass
class ClientInfo:
    """What registration learnt about one client."""

    client_id: str
    node_id: int
    partition_id: int
    participant: bool
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClientRegistry:
    """All registered clients, by stable client id."""

    clients: dict[str, ClientInfo] = field(default_factory=dict)
    faults: dict[str, str] = field(default_factory=dict)
    #: What the clients' data agreed on (server/datacheck.py): fingerprint, scaling.
    data: dict[str, Any] = field(default_factory=dict)
    _by_node: dict[int, str] = field(default_factory=dict, repr=False)

    def _ordered(self) -> list[ClientInfo]:
        return sorted(self.clients.values(), key=lambda c: c.partition_id)

    @property
    def participants(self) -> list[str]:
        """Ids of the clients that train, ordered by partition id."""
        return [c.client_id for c in self._ordered() if c.participant]

    @property
    def nonparticipants(self) -> list[str]:
        """Ids of the held-out clients that never train."""
        return [c.client_id for c in self._ordered() if not c.participant]

    def node_of(self, client_id: str) -> int:
        """The Flower node currently serving ``client_id``."""
        return self.clients[client_id].node_id

    def add(self, info: ClientInfo) -> None:
        """Register a client (the node index is rebuilt on the next lookup)."""
        self.clients[info.client_id] = info
        self._by_node = {}

    def remove(self, client_id: str) -> None:
        """Forget a client (its registration did not complete)."""
        del self.clients[client_id]
        self._by_node = {}

    def move(self, client_id: str, node_id: int) -> None:
        """Record that ``client_id`` is now served by ``node_id`` (after a restart)."""
        self.clients[client_id].node_id = node_id
        self._by_node = {}

    def client_on(self, node_id: int) -> str:
        """The client served by ``node_id``, from an index rebuilt only when the
        mapping changes, so a lookup costs the same with 5 or 5,000 clients."""
        if not self._by_node:
            self._by_node = {c.node_id: c.client_id for c in self.clients.values()}
        try:
            return self._by_node[node_id]
        except KeyError:
            raise KeyError(f"no client registered on node {node_id}") from None


def message_to(node_id: int, kind: str, **records: Any) -> Message:
    """A Message of type ``kind`` ("train", "evaluate", "query") for one node.

    ``kind`` may name an action, e.g. "train.lora", which Flower routes to the
    handler registered with ``@app.train("lora")``.
    """
    category, dot, action = kind.partition(".")
    mtype = {
        "train": MessageType.TRAIN,
        "evaluate": MessageType.EVALUATE,
        "query": MessageType.QUERY,
    }[category]
    return Message(
        RecordDict(records), dst_node_id=node_id, message_type=f"{mtype}{dot}{action}"
    )


def wait_for_nodes(
    grid: Grid,
    expected: int,
    timeout: float,
    settle: float = 20.0,
    enough: int = 1,
) -> list[int]:
    """Node ids once ``expected`` nodes are connected; or, when at least ``enough``
    are there but no more arrive for ``settle`` seconds (a node that is down), those;
    or at timeout. ``enough`` is the count below which going on could not work (a
    slow SuperNode on a busy host is waited for, not taken for a dead one)."""
    deadline = time.monotonic() + timeout
    nodes = list(grid.get_node_ids())
    changed = time.monotonic()
    while len(nodes) < expected and time.monotonic() < deadline:
        if len(nodes) >= max(enough, 1) and time.monotonic() - changed > settle:
            break
        time.sleep(1.0)
        now = list(grid.get_node_ids())
        if len(now) != len(nodes):
            nodes, changed = now, time.monotonic()
    return nodes


#: Registration waits at least this long: a ClientApp's first message starts a process
#: that imports torch and loads its partition, which can take a while on a busy host.
MIN_REGISTRATION_TIMEOUT = 120.0


class RegistrationError(RuntimeError):
    """Too few clients registered for the run to go on; the message names why."""


def register_clients(
    grid: Grid,
    cfg: RunConfig,
    timeout: float,
    fields: Mapping[str, Sequence[str]] | None = None,
    expected_data: str = "",
) -> ClientRegistry:
    """Query every node, build the registry and decide participants (seeded holdout).

    ``fields`` names the metadata each role ("participant", "nonparticipant") may
    send (default: all). When the roles differ and somebody is held out, a first
    query asks only for the identity and a second one asks each client for its
    role's fields, so a held-out client never sends what its method promises it
    keeps; with nobody held out one query asks for the participants' fields.

    Failed registrations are logged once per cause with their count; fewer
    participants than ``min-clients`` stop the run with the most common cause, and
    clients whose data differ from each other or from ``expected_data`` (a data
    fingerprint) stop it too (:func:`server.datacheck.agree_on_data`).
    """
    timeout = max(timeout, MIN_REGISTRATION_TIMEOUT)
    started = time.monotonic()
    participants, held_out = split_participants(cfg.num_clients, cfg.holdout, cfg.seed)
    # min-clients participants are possible only once that many nodes beyond the
    # held-out ones are there (held-out nodes may be the first to connect)
    nodes = wait_for_nodes(
        grid, cfg.num_clients, timeout, enough=cfg.min_clients + len(held_out)
    )
    waited = time.monotonic() - started
    if len(nodes) < cfg.num_clients:
        log(
            WARNING,
            "only %d of %d nodes connected after %.0fs; going on with them",
            len(nodes),
            cfg.num_clients,
            waited,
        )
    elif waited > 5.0:  # a slow start-up shows where its time went
        log(INFO, "all %d nodes connected after %.0fs", len(nodes), waited)
    roles = {k: list(v) for k, v in (fields or {}).items()}
    chosen = set(participants)
    # with nobody held out every client is a participant: one query asks for the
    # participants' fields (a message less per node; each starts a process on a
    # SuperNode)
    same = not held_out or len({tuple(v) for v in roles.values()}) <= 1
    first = (roles.get("participant") if roles else None) if same else []
    result = _query(grid, nodes, cfg, first, timeout)
    registry = ClientRegistry()
    for node_key, reply in result.replies.items():
        info: dict[str, Any] = dict(reply.content.config_records["info"])
        cid, pid = str(info["client-id"]), as_int(info["partition-id"])
        if cid in registry.clients:
            registry.faults[node_key] = f"duplicate client id {cid!r}"
            continue
        registry.add(ClientInfo(cid, int(node_key), pid, pid in chosen, info))
    for node_key, reason in result.errors.items():
        registry.faults[node_key] = reason
    for node_key in result.missing:
        registry.faults[node_key] = "no reply to registration"
    if not same:
        _ask_roles(grid, registry, cfg, roles, timeout)
    failed = {f"node {k}": v for k, v in registry.faults.items()}
    for line in cause_lines(failed, len(nodes)):
        log(WARNING, "registration: %s", line)
    if len(registry.participants) < cfg.min_clients:
        cause = main_cause(failed, len(nodes))
        raise RegistrationError(
            f"registration: {len(registry.participants)} participating clients "
            f"registered, min-clients={cfg.min_clients} needed; "
            + (cause or "check that the SuperNodes' partition ids match num-clients")
        )
    registry.data = agree_on_data(
        {c: i.meta for c, i in registry.clients.items()}, expected_data, cfg
    )
    log(
        INFO,
        "registered %d clients (%d participants, %d held out)",
        len(registry.clients),
        len(registry.participants),
        len(registry.nonparticipants),
    )
    return registry


def _query(
    grid: Grid,
    nodes: Sequence[int],
    cfg: RunConfig,
    fields: list[str] | None,
    timeout: float,
) -> Exchange:
    """One registration query to each node (``fields`` None: all metadata)."""
    record: dict[str, Any] = {"method": cfg.method}
    if fields is not None:  # never empty: Flower cannot count an empty str or list
        record["fields"] = ",".join(["client-id", *fields])
    return exchange(
        grid,
        [
            Outgoing(str(n), message_to(n, "query", config=ConfigRecord(record)))
            for n in nodes
        ],
        timeout,
    )


def _ask_roles(
    grid: Grid,
    registry: ClientRegistry,
    cfg: RunConfig,
    roles: dict[str, list[str]],
    timeout: float,
) -> None:
    """Second registration step: each client sends only its role's fields."""
    for role, participant in (("participant", True), ("nonparticipant", False)):
        clients = [c for c in registry.clients.values() if c.participant == participant]
        if not clients:
            continue
        result = _query(
            grid, [c.node_id for c in clients], cfg, roles.get(role, []), timeout
        )
        for reply in result.replies.values():
            info = dict(reply.content.config_records["info"])
            registry.clients[str(info["client-id"])].meta.update(info)
        for node_key in [*result.errors, *result.missing]:
            registry.faults[node_key] = "no reply to the metadata query"
            registry.remove(registry.client_on(int(node_key)))


def client_at(registry: ClientRegistry, node_id: int) -> str:
    """The client id served by ``node_id`` (KeyError if no client registered there)."""
    return registry.client_on(node_id)


def refresh_nodes(
    grid: Grid, registry: ClientRegistry, timeout: float
) -> dict[str, str]:
    """Re-map clients whose SuperNode came back under a new node id; return the
    nodes that serve a client id not seen before (node id -> client id).

    A restarted SuperNode gets a new Flower node id, but it reports the same
    ``client-id``, so it keeps its embedding and its participant status. What to do
    with a new client id (admit it, or leave it out) is the method's decision
    (:func:`admit_joiners`); either way the caller records it, so a node is asked
    once.
    """
    known = {c.node_id for c in registry.clients.values()}
    fresh = [
        n
        for n in grid.get_node_ids()
        if n not in known and str(n) not in registry.faults
    ]
    if not fresh:
        return {}
    query = ConfigRecord({"method": "refresh"})
    result = exchange(
        grid,
        [Outgoing(str(n), message_to(n, "query", config=query)) for n in fresh],
        timeout,
    )
    joiners = {}
    for node_key, reply in result.replies.items():
        cid = str(reply.content.config_records["info"]["client-id"])
        if cid in registry.clients:
            old = registry.clients[cid].node_id
            registry.move(cid, int(node_key))
            log(
                INFO,
                "client %s is back on node %s (was %s); it keeps its state",
                cid,
                node_key,
                old,
            )
        else:
            joiners[node_key] = cid
    return joiners


def admit_joiners(
    grid: Grid,
    registry: ClientRegistry,
    cfg: RunConfig,
    joiners: Mapping[str, str],
    fields: Mapping[str, Sequence[str]] | None,
    timeout: float,
) -> list[str]:
    """Register clients that appeared mid-run, as registration would have: the
    seeded holdout split of partition ids decides their role, and each sends only
    its role's fields. Returns the ids admitted (a duplicate id or a node that does
    not answer is recorded in ``registry.faults``)."""
    participants, _ = split_participants(cfg.num_clients, cfg.holdout, cfg.seed)
    chosen = set(participants)
    roles = {k: list(v) for k, v in (fields or {}).items()}
    identity = _query(grid, [int(n) for n in joiners], cfg, [], timeout)
    by_role: dict[bool, list[int]] = {True: [], False: []}
    agreed = registry.data.get("fingerprint")
    for node_key, reply in identity.replies.items():
        info = reply.content.config_records["info"]
        found = str(info.get("data-fingerprint", ""))
        if agreed and found != agreed:
            registry.faults[node_key] = (
                f"client {info['client-id']!r} holds other "
                f"data ({found}) than the run ({agreed})"
            )
            log(
                WARNING,
                "joiner on node %s refused: %s",
                node_key,
                registry.faults[node_key],
            )
            continue
        by_role[as_int(info["partition-id"]) in chosen].append(int(node_key))
    admitted = []
    for participant, nodes in by_role.items():
        role = "participant" if participant else "nonparticipant"
        result = _query(grid, nodes, cfg, roles.get(role) if roles else None, timeout)
        for node_key, reply in result.replies.items():
            meta: dict[str, Any] = dict(reply.content.config_records["info"])
            cid = str(meta["client-id"])
            if cid in registry.clients:
                registry.faults[node_key] = f"duplicate client id {cid!r}"
                continue
            registry.add(
                ClientInfo(
                    cid, int(node_key), as_int(meta["partition-id"]), participant, meta
                )
            )
            admitted.append(cid)
            log(
                INFO,
                "client %s joined on node %s as a %s",
                cid,
                node_key,
                "participant" if participant else "held-out client",
            )
        for node_key in [*result.errors, *result.missing]:
            registry.faults[node_key] = "no reply to the joiner's registration"
    for node_key in [*identity.errors, *identity.missing]:
        registry.faults[node_key] = "no reply to the joiner's registration"
    return admitted
