"""What every method shares, as a Flower strategy: sampling, messages, evaluation.

A method subclasses :class:`HyperflowerStrategy` and adds only what is its own:
how parameters are produced for a client (:meth:`generate`), how validated deltas
change the server state (:meth:`apply_updates`), what a non-participant gets, and its
state for checkpoints. Registration, reply validation, evaluation, metrics and
checkpointing live once in :mod:`server.loop` and here. The loop asks the strategy
what differs between methods instead of assuming it: who trains (:meth:`sample`) and
who is evaluated (:meth:`evaluated`) this round, whether a client that appears
mid-run is admitted (:attr:`accepts_joiners`, :meth:`admit`), what else a train
reply carries (:attr:`reply_extras`), and whether clients share one model
architecture (:attr:`shared_model`). A subclass with a ``name`` registers itself
in :data:`STRATEGIES`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from logging import INFO
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common.config import RunConfig
from common.models import build_model, count_params, param_shapes
from common.protocol import routed
from common.records import (
    arrays_of,
    as_int,
    from_record,
    metrics_of,
    numeric,
    to_record,
)
from common.settings import METHOD_SPECS, MethodSpec
from server.registry import ClientRegistry, client_at, message_to
from server.validation import ClientUpdate, ReplyExtra, extras_of

if TYPE_CHECKING:
    from server.ops import ServerOps

Params = dict[str, torch.Tensor]

#: Every method's strategy class by its run-config name (filled by subclassing).
STRATEGIES: dict[str, type[HyperflowerStrategy]] = {}


class HyperflowerStrategy(Strategy):
    """Base of every method: per-client train/evaluate messages over a registry."""

    name: ClassVar[str] = ""
    #: True when the method has one global model (its accuracy is ``global_acc``).
    has_global_model: ClassVar[bool] = False
    #: True when every client trains the same architecture (``model``), so the
    #: server may build it; False when clients differ and the server knows a
    #: client's model only by what it registered (e.g. its parameter count).
    shared_model: ClassVar[bool] = True
    #: True: the run's result is the evaluated round with the best participants'
    #: validation accuracy; False: the last evaluated round (e.g. clients that join
    #: in batches, where earlier rounds evaluate fewer clients).
    best_by_validation: ClassVar[bool] = True
    #: Whether evaluation rounds before the last may evaluate a seeded sample of
    #: :meth:`evaluated` (``eval-sample``); False: every one, for a method whose
    #: per-round reports compare groups of clients before and after a change.
    sampled_evaluation: ClassVar[bool] = True
    #: Whether a client that first appears mid-run (a late SuperNode with a new
    #: client id) is registered and given a role; see :meth:`admit`.
    accepts_joiners: ClassVar[bool] = False
    #: Extra arrays a train reply carries besides its delta, by name (validated
    #: like deltas: names, shapes, finite values, the reply size cap).
    reply_extras: dict[str, ReplyExtra] = {}  # noqa: RUF012 (read-only; set per instance)
    #: The Flower action of the method's client handlers (``@app.train(action)``);
    #: empty: the plain ``train`` / ``evaluate`` handlers.
    action: ClassVar[str] = ""
    #: Whether the strategy averages a round's replies with Flower's own functions
    #: (it overrides :meth:`aggregate_train`, which takes the messages) instead of
    #: applying the decoded updates (:meth:`apply_updates`).
    averages_replies: ClassVar[bool] = False
    #: Metrics every train reply must carry besides ``num-examples``.
    reply_metrics: ClassVar[tuple[str, ...]] = ()
    #: Registration metadata each role may send (the client sends nothing else).
    registration_fields: ClassVar[dict[str, tuple[str, ...]]] = {
        role: ("num-train", "num-val", "num-test", "param-count", "classes")
        for role in ("participant", "nonparticipant")
    }

    def __init__(
        self, cfg: RunConfig, registry: ClientRegistry, device: torch.device
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.device = device
        if self.shared_model:
            self.template = build_model(
                cfg.model, cfg.num_classes, seed=cfg.seed, image_shape=cfg.image_shape
            )
            self.shapes = param_shapes(self.template)
        self.rng = np.random.default_rng([cfg.seed, 1])

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            STRATEGIES[cls.name] = cls

    @property
    def spec(self) -> MethodSpec:
        """The method's declared settings and promises (common/methods/)."""
        return METHOD_SPECS[self.name]

    # ---- what a method defines -------------------------------------------------
    @abstractmethod
    def generate(self, client_ids: Sequence[str]) -> list[Params]:
        """The parameters each of ``client_ids`` should train or be evaluated with."""

    @abstractmethod
    def apply_updates(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> dict[str, float]:
        """Change the server state from a round's validated updates; return metrics."""

    def nonparticipant_params(
        self, ops: ServerOps, client_ids: Sequence[str]
    ) -> dict[str, Params] | None:
        """What each of these held-out clients gets without training (None: nothing
        to give). Called a batch of clients at a time (``eval-clients-per-batch``)."""
        return None

    def nonparticipant_protocol(self) -> str:
        """What a held-out client gets, in words, as this run's settings make it
        (the summary and the tables print it beside the held-out accuracy)."""
        return self.spec.nonparticipant_protocol

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this method's server state."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.rng.bit_generator.state = state["rng"]

    def hypernet_params(self) -> int:
        """Size of the server-side hypernetwork(s) (HS); 0 when there is none."""
        return 0

    def client_trainable_params(self) -> int:
        """Weights a client trains and sends back (CTWC)."""
        return count_params(self.template)

    # ---- optional hooks (multi-phase and multi-exchange methods, e.g. HyperFLoRA) ----
    def prepare(self, ops: ServerOps) -> None:
        """Work before round 1 of a fresh run (e.g. a pre-training phase); none here."""

    def run_round(
        self, ops: ServerOps, server_round: int, config: ConfigRecord
    ) -> dict[str, Any] | None:
        """Run a round made of several exchanges (e.g. relays between clients) and
        return its metrics row; None, the default, runs the loop's usual round."""
        return None

    def final_report(
        self, ops: ServerOps, nonparticipants: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """Extra summary.json entries, computed after the held-out evaluation."""
        return {}

    def pool(self) -> list[str]:
        """The participants this method trains and evaluates: all of them, unless a
        method leaves some out (e.g. a parameter count no size group accepts)."""
        return self.registry.participants

    def evaluated(self, server_round: int) -> list[str]:
        """The clients evaluated this round: the pool (a method whose clients
        arrive over time evaluates only those that have arrived)."""
        return self.pool()

    def evaluation_metrics(
        self, server_round: int, results: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """Extra metrics row entries from this round's per-client evaluation (e.g.
        per group of clients); none by default."""
        return {}

    def extra_evaluation(self, ops: ServerOps, server_round: int) -> dict[str, Any]:
        """Extra metrics row entries measured at every evaluation round after the
        participants' evaluation (e.g. held-out clients' validation accuracy under
        two settings; never used to choose the best round); none by default."""
        return {}

    def admit(self, client_id: str) -> None:
        """Give a client that joined mid-run what it needs (it is already in the
        registry, with its role); called only when :attr:`accepts_joiners`.

        Called again for a client the state already knows it changes nothing: with
        lazy registration the loop re-admits every registered client after loading
        an earlier round's state, which predates the clients registered since."""

    # ---- shared ---------------------------------------------------------------
    def sample(self, server_round: int) -> list[str]:
        """The participants that train this round (seeded, without replacement).

        With lazy registration and nodes not registered yet, they are drawn from
        the registered participants and those nodes together, and a drawn node
        registers now (:meth:`server.registry.ClientRegistry.draw`): a client first
        drawn at round r registers at round r and trains in it.
        """
        pool = self.pool()
        if self.registry.pending_count:
            return self.registry.draw(pool, self.cfg.clients_per_round, self.rng)
        k = min(self.cfg.clients_per_round, len(pool))
        return [pool[i] for i in sorted(self.rng.choice(len(pool), k, replace=False))]

    def messages(
        self,
        kind: str,
        client_ids: Sequence[str],
        params: Sequence[Params],
        config: ConfigRecord,
        **extra: ArrayRecord | ConfigRecord,
    ) -> list[Message]:
        """One message per client, each with its own parameters (and ``extra``
        records), routed to the method's own handlers when it names an
        :attr:`action` (``train.<action>``, ``evaluate.<action>``)."""
        return [
            message_to(
                self.registry.node_of(c),
                routed(kind, self.action),
                params=to_record(p),
                config=config,
                **extra,
            )
            for c, p in zip(client_ids, params, strict=True)
        ]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample this round's clients and send each its own parameters."""
        client_ids = self.sample(server_round)
        return self.messages("train", client_ids, self.generate(client_ids), config)

    def aggregate_updates(
        self,
        server_round: int,
        updates: list[ClientUpdate],
        replies: list[Message],
    ) -> dict[str, Any]:
        """Apply a round's validated updates to the server state; what the strategy
        reports of its update (e.g. ``grad-norm``).

        The loop's call: ``updates`` are decoded once, by validation, and passed on;
        ``replies`` are the same replies as Flower messages, in the same order, for
        a strategy that aggregates them with Flower's own functions
        (:attr:`averages_replies`: its :meth:`aggregate_train` over the messages).
        """
        if self.averages_replies:
            _, metrics = self.aggregate_train(server_round, replies)
            return dict(metrics or {})
        return dict(self.apply_updates(server_round, updates)) if updates else {}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's API over validated train replies: decode them into updates and
        apply them (:meth:`aggregate_updates`; the loop calls that directly with the
        updates validation decoded)."""
        replies = list(replies)
        updates = [
            ClientUpdate(
                client_at(self.registry, r.metadata.src_node_id),
                from_record(arrays_of(r, "delta")),
                as_int(metrics_of(r)["num-examples"]),
                numeric(metrics_of(r)),
                extras_of(r),
            )
            for r in replies
        ]
        return None, MetricRecord(
            self.aggregate_updates(server_round, updates, replies)
        )

    def evaluate_messages(
        self, client_ids: Sequence[str], config: ConfigRecord
    ) -> list[Message]:
        """Evaluate messages for ``client_ids``, each with the parameters made for it.

        The loop asks for ``eval-clients-per-batch`` clients at a time, so the server
        never holds every participant's model at once (thousands of clients).
        """
        return self.messages("evaluate", client_ids, self.generate(client_ids), config)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Every participant evaluates the parameters made for it (Flower's API, all
        at once; the loop uses :meth:`evaluate_messages` in batches instead)."""
        return self.evaluate_messages(self.registry.participants, config)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Mean and spread of the clients' evaluation metrics (one vote each)."""
        per_client = [numeric(metrics_of(r)) for r in replies]
        return MetricRecord(dict(summarise(per_client))) if per_client else None

    def summary(self) -> None:
        """Log what this strategy is and its sizes."""
        log(
            INFO,
            "strategy %s: %d participants, %d held out, CTWC %d, HS %d",
            self.name,
            len(self.registry.participants),
            len(self.registry.nonparticipants),
            self.client_trainable_params(),
            self.hypernet_params(),
        )


def summarise(per_client: Sequence[dict[str, float]]) -> dict[str, float]:
    """Unweighted mean and std over clients of val/test accuracy and loss."""
    out: dict[str, float] = {}
    for key in ("val-acc", "val-loss", "test-acc", "test-loss"):
        values = np.array([m[key] for m in per_client if key in m], dtype=float)
        if values.size:
            out[key] = float(values.mean())
            out[f"{key}-std"] = float(values.std())
    out["clients"] = float(len(per_client))
    return out
