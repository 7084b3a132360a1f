"""HyperFedZero's server side: FedAvg over the whole client model, an embedding store.

Every sampled participant trains the global model (g, f, noisy, h) and returns its
delta plus its distribution embedding as the declared extra ``embedding`` (P
values, validated: shape, finite). Flower's ``aggregate_arrayrecords`` averages the
deltas weighted by ``num-examples`` (as Flower's FedAvg does; the extras record is
left out of the average), the global model moves by the mean, and the embedding goes
into the store: the latest embedding of each participant, never data. Each round's
metrics row gets the store's spread (``embedding-spread``: mean distance of the
clients' embeddings to their mean; ``embedding-dims``: exp(entropy) of that mean,
the number of embedding dimensions in use), so a collapse is visible in
metrics.jsonl. Where the server can read the clients' data it also gets the same
clients' class-mix spread, the ratio and the pairwise-distance correlation
(server/hfz_collapse.py); and at every evaluation round the held-out clients
evaluate, on their validation rows, the classifier for their own e and the one for
the store's mean e (``heldout-own-e-val-acc``, ``heldout-mean-e-val-acc``): the
collapse metric, in metrics.jsonl, ``collapse.png`` and summary.json's
``collapse``. summary.json's ``hfz_sizes`` lists |θc|, |θf|, |θh| and the ratios
of the size rule (common/models/hyperfedzero.py).

Held-out clients receive the global model and compute their own e (zACC,
``nonparticipant_acc``); participants evaluate with their own e (pACC); after the
held-out evaluation the participants evaluate the global model with e fixed to the
store's mean embedding, pooled over their test sets (gACC, ``global_acc``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from common.models.hyperfedzero import GLOBAL_EMBEDDING, build_net, net_from
from common.protocol import HYPERFEDZERO
from common.records import arrays_of, from_record, metrics_of
from server.hfz_collapse import (
    class_mixes,
    collapse_summary,
    own_vs_mean,
    spread_against_mix,
)
from server.personalizers import PersonalizeError, TrainedRun, register_personalizer
from server.registry import client_at
from server.strategies.base import HyperflowerStrategy, Params
from server.validation import ClientUpdate, ReplyExtra, extras_of

#: The numpy stream of the store sample the spread is measured on (apart from the
#: training sampler's (seed, 1) and the evaluation samples' (seed, 2, …)).
STORE_SAMPLE_STREAM = 3


def spread(
    embeddings: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    mixes: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """How spread the clients' embeddings are: mean L2 distance to their mean, the
    smallest pairwise distance, and exp(entropy) of the mean (dimensions in use);
    given the clients' class mixes (embeddings then keyed by client), also the
    class-mix spread of the same clients, the ratio and the correlation of pairwise
    distances (:func:`server.hfz_collapse.spread_against_mix`)."""
    against: dict[str, float] = {}
    if isinstance(embeddings, Mapping):
        if mixes:
            against = spread_against_mix(embeddings, mixes)
        embeddings = list(embeddings.values())
    if not embeddings:
        return {}
    e = torch.stack([t.float() for t in embeddings])
    mean = e.mean(0)
    dist = torch.cdist(e, e) + torch.eye(len(e)) * 1e9 if len(e) > 1 else None
    entropy = float(-(mean * mean.clamp_min(1e-12).log()).sum())
    return {
        "embedding-spread": float((e - mean).norm(dim=1).mean()),
        "embedding-min-dist": float(dist.min()) if dist is not None else 0.0,
        "embedding-dims": math.exp(entropy),
        "embedding-clients": float(len(e)),
        **against,
    }


class HyperFedZero(HyperflowerStrategy):
    """FedAvg of g, f, noisy and h; the store of participants' embeddings."""

    name = "hyperfedzero"
    averages_replies = True  # Flower's own weighted average of the replies
    action = HYPERFEDZERO
    accepts_joiners = True  # a joiner simply enters the sampling pool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        net = build_net(self.cfg, seed=self.cfg.seed)
        self.global_model: Params = {
            k: v.detach().clone() for k, v in net.state_dict().items()
        }
        self.trainable = sum(p.numel() for p in net.parameters())
        self.h_size = sum(p.numel() for p in net.h.parameters()) if net.h else 0
        self.sizes = net.size_report()
        log(
            INFO,
            "hyperfedzero: |θc| = %d, |θf| = %d, |θh| = %d (hidden %d, chunk %d, "
            "chunk embedding %d, %s generator): (|θf| + |θh|) / |θc| = %.2f, "
            "model / FedAvg's = %.3f",
            self.sizes["theta_c"],
            self.sizes["theta_f"],
            self.sizes["theta_h"],
            self.sizes["hidden"],
            self.sizes["chunk_size"],
            self.sizes["chunk_embed_dim"],
            self.sizes["generator"],
            self.sizes["f_plus_h_over_c"],
            self.sizes["model_over_fedavg"],
        )
        #: clients' class mixes, each read once where the server can read their
        #: data (only the clients whose embeddings are measured); None: not
        #: readable here
        self.mixes: dict[str, torch.Tensor] | None = {}
        # P is a run-config value: the declared extra is set per instance (the loop
        # reads it from the strategy object)
        self.reply_extras = {"embedding": ReplyExtra((self.cfg.hfz_embed_dim,))}
        self.store: dict[str, torch.Tensor] = {}

    # ---- what clients get -------------------------------------------------------
    def generate(self, client_ids: Sequence[str]) -> list[Params]:
        return [self.global_model] * len(client_ids)

    def nonparticipant_params(
        self, ops: Any, client_ids: Sequence[str]
    ) -> dict[str, Params] | None:
        """Held-out clients get the global model; they make their own classifier."""
        return {c: self.global_model for c in client_ids}

    # ---- aggregation ------------------------------------------------------------
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's weighted average of the deltas; embeddings into the store."""
        replies = list(replies)
        if not replies:
            return None, None
        contents = [
            RecordDict({"delta": arrays_of(r, "delta"), "metrics": metrics_of(r)})
            for r in replies
        ]
        mean = from_record(aggregate_arrayrecords(contents, "num-examples"))
        for key, delta in mean.items():
            self.global_model[key] = self.global_model[key] + delta.to(
                self.global_model[key].dtype
            )
        for r in replies:
            cid = client_at(self.registry, r.metadata.src_node_id)
            self.store[cid] = extras_of(r)["embedding"].float()
        return None, MetricRecord(dict(self.store_metrics()))

    def apply_updates(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> dict[str, float]:
        """Weighted mean of deltas added to the global model (direct-call path)."""
        total = sum(u.num_examples for u in updates)
        for key in self.global_model:
            self.global_model[key] = self.global_model[key] + sum(
                u.delta[key] * (u.num_examples / total) for u in updates
            )
        for u in updates:
            self.store[u.client_id] = u.extras["embedding"].float()
        return self.store_metrics()

    def store_metrics(self) -> dict[str, float]:
        """The embedding store's spread, against the class mixes where they can be
        read (metrics.jsonl, every round); over a seeded sample of ``eval-sample``
        of the stored embeddings when there are more (the pairwise distances cost
        the square of the clients measured)."""
        measured = self.measured_store()
        return spread(measured, self.class_mixes(list(measured)))

    def measured_store(self) -> dict[str, torch.Tensor]:
        """The stored embeddings the spread is measured on: all of them, or when
        there are more than ``eval-sample`` (> 0) a sample of that many, seeded by
        the run's seed and the store's size (the same store gives the same
        sample)."""
        size = self.cfg.eval_sample
        if size <= 0 or len(self.store) <= size:
            return self.store
        ids = list(self.store)
        rng = np.random.default_rng([self.cfg.seed, STORE_SAMPLE_STREAM, len(ids)])
        picked = sorted(rng.choice(len(ids), size, replace=False))
        return {ids[i]: self.store[ids[i]] for i in picked}

    def class_mixes(self, client_ids: Sequence[str]) -> dict[str, torch.Tensor]:
        """The class mixes of ``client_ids``, each read once from its partition
        when first needed (with lazy registration the server never reads every
        client's); {} (with one warning) where the server cannot read the clients'
        data."""
        if self.mixes is None:
            return {}
        missing = {
            c: self.registry.clients[c].partition_id
            for c in client_ids
            if c not in self.mixes
        }
        if missing:
            try:
                self.mixes.update(class_mixes(self.cfg, missing))
            except Exception as exc:  # noqa: BLE001 - a metric never fails a run
                log(WARNING, "class-mix spread not measured: %s", exc)
                self.mixes = None
                return {}
        return {c: self.mixes[c] for c in client_ids}

    def extra_evaluation(self, ops: Any, server_round: int) -> dict[str, Any]:
        """Held-out clients' validation accuracy with the classifier for their own
        e and with the one for the store's mean e (the collapse metric's second
        half); nothing when there are no held-out clients.

        Before the last round the clients are a seeded sample of ``eval-sample``
        held-out clients (:meth:`server.loop.Runner.held_out_sample`; with lazy
        registration a drawn node registers now), so the check does not grow with
        the federation; at the last round every held-out client."""
        held = ops.held_out_sample(server_round)
        if not held:
            return {}
        own = ConfigRecord(
            {"round": server_round, "phase": "eval", "method": self.cfg.method}
        )
        mean = ConfigRecord(
            {
                "round": server_round,
                "phase": "eval",
                "method": self.cfg.method,
                GLOBAL_EMBEDDING: [float(v) for v in self.mean_embedding()],
            }
        )
        got: dict[str, dict[str, dict[str, float]]] = {}
        for label, config in (("own", own), ("mean", mean)):
            got[label] = {}
            for batch in ops.client_batches(held):
                ops.refresh()
                answered, _ = ops.evaluate_clients(
                    self.messages("evaluate", batch, self.generate(batch), config),
                    f"held-out, {label} e, eval {server_round}",
                )
                got[label].update(answered)
        return own_vs_mean(got["own"], got["mean"])

    def mean_embedding(self) -> torch.Tensor:
        """The participants' mean embedding: the global model's e."""
        if not self.store:
            return torch.full((self.cfg.hfz_embed_dim,), 1 / self.cfg.hfz_embed_dim)
        return torch.stack(list(self.store.values())).mean(0)

    # ---- after the run ----------------------------------------------------------
    def final_report(
        self, ops: Any, nonparticipants: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """gACC on the participants' pooled test sets (and the same global model on
        the held-out clients'), the store, the embedding map."""
        e = self.mean_embedding()
        config = ConfigRecord(
            {
                "round": ops.best_round,
                "phase": "global",
                "method": self.cfg.method,
                GLOBAL_EMBEDDING: [float(v) for v in e],
            }
        )
        pooled = {}
        for group, ids in (
            ("participants", self.registry.participants),
            ("nonparticipants", self.registry.nonparticipants),
        ):
            correct = count = 0.0
            for batch in ops.client_batches(ids):
                ops.refresh()
                got, _ = ops.evaluate_clients(
                    self.messages("evaluate", batch, self.generate(batch), config),
                    f"global model ({group})",
                )
                for m in got.values():
                    correct += m["test-acc"] * m["num-examples"]
                    count += m["num-examples"]
            pooled[group] = correct / count if count else None
        report: dict[str, Any] = {
            "global_acc": pooled["participants"],
            # the same global model on the held-out clients' pooled test sets: what
            # zACC gains (or loses) over not personalising at all
            "nonparticipant_global_acc": pooled["nonparticipants"],
            "global_embedding": [float(v) for v in e],
            "embedding_store": {
                c: [float(v) for v in t] for c, t in self.store.items()
            },
            **{k.replace("-", "_"): v for k, v in self.store_metrics().items()},
            "hfz_sizes": dict(self.sizes),
            "collapse": collapse_summary(ops.history, ops.best_round),
        }
        try:
            from server.hfz_embedding_map import plot_embedding_map

            report["embedding_map"] = str(
                plot_embedding_map(
                    ops.run_dir,
                    self.cfg,
                    self.global_model,
                    self.registry,
                    limit=self.cfg.eval_sample,
                )
            )
        except Exception as exc:  # noqa: BLE001 - a plot never fails a run
            log(WARNING, "embedding map not drawn: %s", exc)
        try:
            from server.hfz_collapse import plot_collapse

            report["collapse_plot"] = str(
                plot_collapse(ops.run_dir, ops.history, self.cfg.method)
            )
        except Exception as exc:  # noqa: BLE001 - a plot never fails a run
            log(WARNING, "collapse plot not drawn: %s", exc)
        return report

    # ---- sizes and state --------------------------------------------------------
    def client_trainable_params(self) -> int:
        """g, f, noisy and h: the whole model is trained and sent back."""
        return self.trainable

    def hypernet_params(self) -> int:
        """h, the classifier generator (it is part of the client model)."""
        return self.h_size

    def global_params(self) -> Params:
        """The current global model (state dict of the HyperFedZero network)."""
        return self.global_model

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "global": dict(self.global_model),
            "store": dict(self.store),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.global_model = {k: v.clone() for k, v in state["global"].items()}
        self.store = {c: v.clone() for c, v in state["store"].items()}


@register_personalizer("hyperfedzero")
class HyperFedZeroPersonalizer:
    """``hyperflower personalize`` for HyperFedZero: e from the new client's own
    unlabelled data, the classifier from h, no training; a participant without
    data gets the classifier for its stored embedding."""

    def __init__(self, run: TrainedRun, device: torch.device) -> None:
        self.cfg = run.cfg
        self.net = net_from(run.cfg, run.state["global"])
        self.store: dict[str, torch.Tensor] = run.state.get("store", {})

    def __call__(
        self,
        client_id: str,
        partition_id: int,
        data: Any,
        rounds: int | None,
        lr: float | None,
    ) -> tuple[Params, dict[str, Any]]:
        if data is None:
            if client_id not in self.store:
                raise PersonalizeError(
                    "hyperfedzero needs the new client's unlabelled "
                    "data (a data file or a partition id)"
                )
            e, how = self.store[client_id], "stored (trained participant)"
        else:
            if len(data.x_train) == 0:
                raise PersonalizeError(
                    "no unlabelled data: the client's file holds "
                    "no samples to compute its embedding from"
                )
            e, how = self.net.client_embedding(data.x_train), "from unlabelled data"
        return self.net.personalised(e), {
            "embedding": how,
            "fit-rounds": 0,
            "embedding-values": [float(v) for v in e],
        }
