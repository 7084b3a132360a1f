"""Registration: map Flower node ids to stable client ids and learn client metadata.

Eager registration (:func:`register_clients`, the default) sends a ``query`` message
to every connected node before round 1. Each client answers with its stable id and
what the methods may use (sample counts, parameter count K_i, class indicator r_i).
Lazy registration (:func:`register_lazily`) registers one client at start-up and
every other when it is first drawn (:meth:`ClientRegistry.draw`,
:func:`register_nodes`), so start-up does not grow with the federation. Either way
a client's role is decided by the seeded holdout split of partition ids, so
non-participants never train.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from common.config import RunConfig
from common.partition import held_out_partitions, split_participants
from common.records import as_int
from server.datacheck import agree_on_data
from server.failures import cause_lines, main_cause
from server.messaging import Exchange, Outgoing, exchange


@dataclass(slots=True)
class ClientInfo:
    """What registration learnt about one client."""

    client_id: str
    node_id: int
    partition_id: int
    participant: bool
    meta: dict[str, Any] = field(default_factory=dict)


#: Up to this many nodes join or leave the pending list one by one (a bisection
#: each); more are merged in, or filtered out, in one pass.
FEW = 32

#: A client's place in the registry's order: partition id, then registration order.
OrderKey = tuple[int, int, str]


@dataclass
class ClientRegistry:
    """All registered clients, by stable client id; with lazy registration, also the
    connected nodes not registered yet (:attr:`pending`).

    Participants and held-out clients are listed in partition-id order. The lists
    and the node index are kept up to date as clients register (a sort of an almost
    sorted list, not of every client), so that registering a round's new clients
    costs about the same with 100 or 100,000 registered.
    """

    clients: dict[str, ClientInfo] = field(default_factory=dict)
    faults: dict[str, str] = field(default_factory=dict)
    #: What the clients' data agreed on (server/datacheck.py): fingerprint, scaling.
    data: dict[str, Any] = field(default_factory=dict)
    #: Lazy registration: registers drawn pending nodes, returning the clients
    #: registered (set by the server loop; see :meth:`draw`, which keeps those of
    #: the role it draws).
    resolver: Callable[[list[int]], list[str]] | None = field(default=None, repr=False)
    _by_node: dict[int, str] | None = field(default=None, repr=False)
    _keys: dict[bool, list[OrderKey]] | None = field(default=None, repr=False)
    _ids: dict[bool, list[str]] = field(default_factory=dict, repr=False)
    _seq: int = field(default=0, repr=False)
    _pending: list[int] = field(default_factory=list, repr=False)
    _pending_set: set[int] = field(default_factory=set, repr=False)

    # ---- order -----------------------------------------------------------------
    def _order(self) -> dict[bool, list[OrderKey]]:
        if self._keys is None or self._seq != len(self.clients):
            keys: dict[bool, list[OrderKey]] = {True: [], False: []}
            for seq, info in enumerate(self.clients.values()):
                keys[info.participant].append((info.partition_id, seq, info.client_id))
            self._keys, self._seq, self._ids = keys, len(self.clients), {}
        return self._keys

    def _listed(self, participant: bool) -> list[str]:
        keys = self._order()[participant]
        ids = self._ids.get(participant)
        if ids is None:
            keys.sort()  # sorted but for the clients added since: a merge
            ids = self._ids[participant] = [k[2] for k in keys]
        return list(ids)

    @property
    def participants(self) -> list[str]:
        """Ids of the clients that train, ordered by partition id."""
        return self._listed(True)

    @property
    def nonparticipants(self) -> list[str]:
        """Ids of the held-out clients that never train."""
        return self._listed(False)

    def order_key(self, client_id: str) -> tuple[int, str]:
        """Where ``client_id`` comes in :attr:`participants` (partition id first)."""
        return self.clients[client_id].partition_id, client_id

    # ---- clients ---------------------------------------------------------------
    def node_of(self, client_id: str) -> int:
        """The Flower node currently serving ``client_id``."""
        return self.clients[client_id].node_id

    def add(self, info: ClientInfo) -> None:
        """Register a client (replacing one of the same id)."""
        cid = info.client_id
        if cid in self.clients:
            self.clients[cid] = info
            self._keys = self._by_node = None  # rebuilt on the next lookup
        else:
            in_order = self._keys is not None and self._seq == len(self.clients)
            self.clients[cid] = info
            if in_order and self._keys is not None:
                self._keys[info.participant].append((info.partition_id, self._seq, cid))
                self._seq += 1
                self._ids.pop(info.participant, None)
            if self._by_node is not None:
                self._by_node[info.node_id] = cid
        self.forget_pending([info.node_id])

    def remove(self, client_id: str) -> None:
        """Forget a client (its registration did not complete)."""
        del self.clients[client_id]
        self._keys = self._by_node = None

    def move(self, client_id: str, node_id: int) -> None:
        """Record that ``client_id`` is now served by ``node_id`` (after a restart)."""
        self.clients[client_id].node_id = node_id
        self._by_node = None
        self.forget_pending([node_id])

    def _node_index(self) -> dict[int, str]:
        if self._by_node is None or len(self._by_node) != len(self.clients):
            self._by_node = {c.node_id: c.client_id for c in self.clients.values()}
        return self._by_node

    def client_on(self, node_id: int) -> str:
        """The client served by ``node_id``, from an index kept up to date as clients
        register, so a lookup costs the same with 5 or 100,000 clients."""
        try:
            return self._node_index()[node_id]
        except KeyError:
            raise KeyError(f"no client registered on node {node_id}") from None

    def known_nodes(self) -> set[int]:
        """The nodes serving a registered client."""
        return set(self._node_index())

    # ---- lazy registration -----------------------------------------------------
    @property
    def pending(self) -> list[int]:
        """Connected nodes not registered yet (lazy registration), ascending."""
        return list(self._pending)

    @property
    def pending_count(self) -> int:
        """How many connected nodes are not registered yet."""
        return len(self._pending)

    def add_pending(self, node_ids: Iterable[int]) -> int:
        """Note connected nodes to register when first drawn: those neither serving
        a registered client, nor pending, nor failed already. Returns how many."""
        known = self._node_index()
        fresh = sorted(
            {
                n
                for n in node_ids
                if n not in known
                and n not in self._pending_set
                and str(n) not in self.faults
            }
        )
        if len(fresh) <= FEW:
            for node in fresh:
                bisect.insort(self._pending, node)
        else:  # two sorted runs: the sort merges them
            self._pending.extend(fresh)
            self._pending.sort()
        self._pending_set.update(fresh)
        return len(fresh)

    def forget_pending(self, node_ids: Iterable[int]) -> None:
        """Nodes that registered, or failed to: no longer pending."""
        gone = {n for n in node_ids if n in self._pending_set}
        self._pending_set -= gone
        if len(gone) <= FEW:
            for node in gone:
                del self._pending[bisect.bisect_left(self._pending, node)]
        else:
            self._pending = [n for n in self._pending if n not in gone]

    def draw(
        self,
        pool: list[str],
        k: int,
        rng: np.random.Generator,
        participant: bool = True,
    ) -> list[str]:
        """``k`` clients of one role (participants, or with ``participant`` False
        held-out clients) drawn uniformly from ``pool`` (registered ones of that
        role) and the pending nodes, registering the drawn pending nodes as they are
        drawn.

        One seeded permutation of pool + pending is walked: registered clients are
        taken as they come, pending nodes are registered in batches
        (:attr:`resolver`) and only those of the role taken, so a client of the
        other role registers (as what it is) but is never returned, and the result
        is a uniform sample of the role's clients. Fewer than ``k`` only when there
        are no more. Ordered like :attr:`participants`.
        """
        pending = self.pending
        if pending and self.resolver is None:
            raise RuntimeError("lazy registration: no resolver to register nodes")
        order = rng.permutation(len(pool) + len(pending))
        picked: list[str] = []
        nodes: list[int] = []
        walk = iter(order.tolist())
        while len(picked) < k:
            for i in walk:
                if i < len(pool):
                    picked.append(pool[i])
                else:
                    nodes.append(pending[i - len(pool)])
                if len(picked) + len(nodes) >= k:
                    break
            if not nodes:
                break
            assert self.resolver is not None
            picked += [
                c
                for c in self.resolver(nodes)
                if c in self.clients and self.clients[c].participant == participant
            ]
            nodes = []
        return sorted(picked[:k], key=self.order_key)

    def snapshot(self) -> dict[str, Any]:
        """The registered clients and failed nodes, for a checkpoint (lazy
        registration: a resumed run must know whom it had registered)."""
        return {
            "clients": [
                (c.client_id, c.node_id, c.partition_id, c.participant, c.meta)
                for c in self.clients.values()
            ],
            "faults": dict(self.faults),
        }

    def restore(self, state: Mapping[str, Any], connected: Iterable[int]) -> None:
        """Re-register the clients of :meth:`snapshot` whose nodes are still
        connected (a client whose SuperNode restarted registers again when drawn)
        and the failures; then the other connected nodes are pending."""
        nodes = set(connected)
        for cid, node, pid, participant, meta in state["clients"]:
            if cid not in self.clients and node in nodes:
                self.add(ClientInfo(cid, node, pid, participant, dict(meta)))
        for node_key, reason in state["faults"].items():
            self.faults.setdefault(node_key, reason)
        self.forget_pending([int(k) for k in state["faults"] if k.isdigit()])
        self.add_pending(nodes)


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


def register_run(
    grid: Grid,
    cfg: RunConfig,
    timeout: float,
    fields: Mapping[str, Sequence[str]] | None = None,
    expected_data: str = "",
) -> ClientRegistry:
    """The run's registration as ``registration`` says: every node before round 1
    (:func:`register_clients`), or lazily (:func:`register_lazily`)."""
    register = register_lazily if cfg.registration == "lazy" else register_clients
    return register(grid, cfg, timeout, fields, expected_data)


#: Nodes tried, one at a time, for lazy registration's first client.
FIRST_CLIENT_TRIES = 5


def register_lazily(
    grid: Grid,
    cfg: RunConfig,
    timeout: float,
    fields: Mapping[str, Sequence[str]] | None = None,
    expected_data: str = "",
) -> ClientRegistry:
    """Lazy registration's start-up: learn the connected nodes' ids (no message) and
    register one client, whatever the federation's size.

    The one client (the lowest node id that answers) tells the run what data the
    clients hold: its fingerprint must equal ``expected_data`` when that is known,
    and a server without the data learns the class count and image shape from it,
    as eager registration does from every client. Every other node is pending: it
    registers when it is first drawn, for training or evaluation
    (:meth:`ClientRegistry.draw`, :func:`register_nodes`), or before the last
    round's evaluation, which is every participant's.
    """
    timeout = max(timeout, MIN_REGISTRATION_TIMEOUT)
    started = time.monotonic()
    _, held_out = split_participants(cfg.num_clients, cfg.holdout, cfg.seed)
    nodes = wait_for_nodes(
        grid, cfg.num_clients, timeout, enough=cfg.min_clients + len(held_out)
    )
    log(
        INFO,
        "lazy registration: %d nodes connected after %.0fs; each registers when "
        "first drawn",
        len(nodes),
        time.monotonic() - started,
    )
    registry = ClientRegistry()
    registry.add_pending(nodes)
    for node in sorted(nodes)[:FIRST_CLIENT_TRIES]:
        registered = register_nodes(grid, registry, cfg, [node], fields, timeout)
        if registered:
            cid = registered[0]
            registry.data = agree_on_data(
                {cid: registry.clients[cid].meta}, expected_data, cfg
            )
            break
    if not registry.clients:
        failed = {f"node {k}": v for k, v in registry.faults.items()}
        raise RegistrationError(
            f"lazy registration: none of the first {len(failed)} nodes registered; "
            + (main_cause(failed, len(failed)) or "no node connected")
        )
    if len(nodes) < cfg.min_clients:
        raise RegistrationError(
            f"lazy registration: {len(nodes)} nodes connected, "
            f"min-clients={cfg.min_clients} needed"
        )
    return registry


def register_nodes(
    grid: Grid,
    registry: ClientRegistry,
    cfg: RunConfig,
    nodes: Sequence[int],
    fields: Mapping[str, Sequence[str]] | None,
    timeout: float,
) -> list[str]:
    """Register ``nodes`` with one query each; return the client ids registered.

    The query names both roles' fields and each client sends its own role's: it
    computes the seeded holdout split from its partition id as the server does
    (``common.partition.held_out``), so a held-out client never sends what its
    method promises it keeps, in one message. The server decides the role itself
    from the partition id the client reports. A client holding other data than the
    run's, or a node that does not answer, is recorded in ``registry.faults``; a
    client id already registered on another node has moved there (a restarted
    SuperNode). Every node queried stops being pending.
    """
    if not nodes:
        return []
    held = held_out_set(cfg)
    roles = {k: list(v) for k, v in (fields or {}).items()}
    record: dict[str, Any] = {"method": cfg.method}
    if roles:  # never empty strings: Flower cannot count an empty str or list
        record["fields"] = ",".join(["client-id", *roles.get("participant", [])])
        record["nonparticipant-fields"] = ",".join(
            ["client-id", *roles.get("nonparticipant", [])]
        )
    result = exchange(
        grid,
        [
            Outgoing(str(n), message_to(n, "query", config=ConfigRecord(record)))
            for n in nodes
        ],
        timeout,
    )
    agreed = registry.data.get("fingerprint")
    registered = []
    for node_key, reply in result.replies.items():
        meta: dict[str, Any] = dict(reply.content.config_records["info"])
        cid, pid = str(meta["client-id"]), as_int(meta["partition-id"])
        found = str(meta.get("data-fingerprint", ""))
        if agreed and found != agreed:
            registry.faults[node_key] = (
                f"client {cid!r} holds other data ({found}) than the run ({agreed})"
            )
            log(WARNING, "node %s left out: %s", node_key, registry.faults[node_key])
            continue
        if cid in registry.clients:
            log(INFO, "client %s is back on node %s; it keeps its state", cid, node_key)
            registry.move(cid, int(node_key))
            continue
        registry.add(ClientInfo(cid, int(node_key), pid, pid not in held, meta))
        registered.append(cid)
    for node_key, reason in result.errors.items():
        registry.faults[node_key] = reason
    for node_key in result.missing:
        registry.faults[node_key] = "no reply to registration"
    registry.forget_pending(nodes)
    return registered


def held_out_set(cfg: RunConfig) -> frozenset[int]:
    """The partition ids the seeded holdout split keeps out of training."""
    return held_out_partitions(cfg.num_clients, cfg.holdout, cfg.seed)


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
    known = registry.known_nodes()
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
