"""FedProto (Tan et al., AAAI 2022): the model-heterogeneous baseline of MH-pFedHN's
table (docs/mh-pfedhn.md, "FedProto").

Clients hold models of different architectures (the MH keys decide which, on the
client) and share no weights. A round: the sampled clients receive the global
prototypes C̄ (one d-vector per class, ``fedproto-dim``), train their own model on
CE + λ·MSE(f(x), C̄_y) (``fedproto-lambda``) and reply with their local prototypes
C_i^(j) (the mean of f(x) over their rows of class j) and class counts |D_i,j|. The
server averages them per class (:func:`common.models.prototypes.aggregate_prototypes`,
``fedproto-weighting``); a class none of the round's clients holds keeps its previous
prototype.

What the server keeps of a client: its parameter count K_i (registration) and the
flat displacement s_i of its model from the initial weights only the client can
build, which it sends back each round (clients may be stateless processes; the
server never reads or mixes these vectors, as local-only's server keeps each
client's model). A reply whose Δ has another length is rejected by validation
(shape against what was sent); one whose K_i no model could have (not a positive
integer) leaves that client out of the run (``fedproto-unaccepted-param-count``).

Held-out clients train their own model from its initial weights for
``fedproto-novel-rounds`` exchanges against the final global prototypes (their
prototypes are never aggregated); the summary splits them by whether a participant
holds a model of their K (``seen`` / ``unseen`` size, as MH-pFedHN's).
"""

from __future__ import annotations

from collections.abc import Sequence
from logging import INFO, WARNING
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common.logger import log

from common.methods.fedproto import (
    FEDPROTO,
    GLOBAL_PROTOS,
    LOCAL_PROTOS,
    PARAM_COUNT,
    PROTO_COUNTS,
)
from common.models.prototypes import aggregate_prototypes
from common.protocol import THETA
from common.records import to_record
from server.strategies.base import HyperflowerStrategy, Params
from server.strategies.pfedhn import novel_phase
from server.validation import ClientUpdate, ReplyExtra

if TYPE_CHECKING:
    from server.ops import ServerOps


class FedProto(HyperflowerStrategy):
    """Per-class prototypes averaged across clients of any architecture."""

    name = "fedproto"
    action = FEDPROTO
    shared_model = False
    registration_fields: ClassVar[dict[str, tuple[str, ...]]] = {
        role: ("num-train", "num-val", "num-test", PARAM_COUNT)
        for role in ("participant", "nonparticipant")
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        classes, dim = self.cfg.num_classes, self.cfg.fedproto_dim
        self.reply_extras = {
            LOCAL_PROTOS: ReplyExtra((classes, dim)),
            PROTO_COUNTS: ReplyExtra((classes,)),
        }
        self.k: dict[str, int] = {}
        self.rejected: dict[str, str] = {}
        for cid, info in self.registry.clients.items():
            try:
                k = int(info.meta.get(PARAM_COUNT))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                k = 0
            if k < 1:
                self.rejected[cid] = f"parameter count {info.meta.get(PARAM_COUNT)!r}"
                log(
                    WARNING, "fedproto: client %s left out: %s", cid, self.rejected[cid]
                )
                continue
            self.k[cid] = k
        self.models: dict[str, torch.Tensor] = {
            c: torch.zeros(self.k[c]) for c in self.participants
        }
        self.protos = torch.zeros(classes, dim)
        self.present = torch.zeros(classes, dtype=torch.bool)
        self.novel_kind: dict[str, str] = {}

    @property
    def participants(self) -> list[str]:
        """Participants with an accepted parameter count."""
        return [c for c in self.registry.participants if c in self.k]

    def prepare(self, ops: ServerOps) -> None:
        """Count the clients left out for their parameter count."""
        ops.count_faults({"fedproto-unaccepted-param-count": len(self.rejected)})

    def pool(self) -> list[str]:
        """Only the participants with an accepted parameter count train and are
        evaluated."""
        return self.participants

    # ---- messages and updates ----------------------------------------------------
    def generate(self, client_ids: Sequence[str]) -> list[Params]:
        """Each client's displacement s_i from its own initial weights."""
        return [{THETA: self.models[c]} for c in client_ids]

    def global_record(self) -> ArrayRecord:
        """The global prototypes and the mask of classes that have one."""
        return to_record({"protos": self.protos, "present": self.present.float()})

    def messages(
        self,
        kind: str,
        client_ids: Sequence[str],
        params: Sequence[Params],
        config: ConfigRecord,
        **extra: ArrayRecord | ConfigRecord,
    ) -> list[Message]:
        """``train.fedproto`` / ``evaluate.fedproto`` messages, each carrying the
        global prototypes beside the client's own vector."""
        return super().messages(
            kind,
            client_ids,
            params,
            config,
            **{**extra, GLOBAL_PROTOS: self.global_record()},
        )

    def apply_updates(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> dict[str, float]:
        """Move each client's stored model by its Δ; average the round's local
        prototypes per class into the global ones."""
        good = [
            u
            for u in updates
            if u.client_id in self.models
            and u.delta[THETA].shape == (self.k[u.client_id],)
        ]
        if not good:
            return {}
        for u in good:
            self.models[u.client_id] = self.models[u.client_id] + u.delta[THETA]
        before = self.protos.clone()
        self.protos, self.present = aggregate_prototypes(
            [u.extras[LOCAL_PROTOS] for u in good],
            [u.extras[PROTO_COUNTS] for u in good],
            self.cfg.fedproto_weighting,
            self.protos,
            self.present,
        )
        return {
            "proto-classes": float(self.present.sum()),
            "proto-shift": float((self.protos - before).norm()),
            "proto-loss": float(
                np.mean([u.metrics.get("proto-loss", 0.0) for u in good])
            ),
        }

    def evaluation_metrics(
        self, server_round: int, results: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """Test accuracy per parameter count K, and both inferences' means."""
        out: dict[str, Any] = {}
        for k in sorted({self.k[c] for c in results if c in self.k}):
            accs = [m["test-acc"] for c, m in results.items() if self.k.get(c) == k]
            out[f"test-acc-K{k}"] = float(np.mean(accs))
        for key in (
            "proto-val-acc",
            "proto-test-acc",
            "classifier-val-acc",
            "classifier-test-acc",
        ):
            vals = [m[key] for m in results.values() if key in m]
            if vals:
                out[key] = float(np.mean(vals))
        return out

    # ---- held-out clients ------------------------------------------------------
    def nonparticipant_params(
        self, ops: ServerOps, client_ids: Sequence[str]
    ) -> dict[str, Params] | None:
        """Each held-out client's own model after ``fedproto-novel-rounds``
        exchanges of local training from its initial weights, regularised by the
        final global prototypes (which its replies do not change)."""
        ids = [c for c in client_ids if c in self.k]
        seen = {self.k[c] for c in self.participants}
        models = {c: torch.zeros(self.k[c]) for c in ids}
        for c in ids:
            self.novel_kind[c] = "seen" if self.k[c] in seen else "unseen"
        for step in range(self.cfg.fedproto_novel_rounds):
            got = ops.train_exchange(
                ids, [{THETA: models[c]} for c in ids], phase=novel_phase(step)
            )
            for u in got:
                if u.delta[THETA].shape == models[u.client_id].shape:
                    models[u.client_id] = models[u.client_id] + u.delta[THETA]
            log(
                INFO,
                "held-out clients: FedProto local training %d/%d (%d replies)",
                step + 1,
                self.cfg.fedproto_novel_rounds,
                len(got),
            )
        return {c: {THETA: models[c]} for c in ids}

    def final_report(
        self, ops: ServerOps, nonparticipants: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """New-client accuracy by seen and unseen size, per K, and the prototypes'
        share of the traffic (what the paper counts: C × d values each way)."""
        out: dict[str, Any] = {
            "fedproto_param_counts": sorted({self.k[c] for c in self.participants}),
            "fedproto_classes_with_prototype": int(self.present.sum()),
            "fedproto_rejected": len(self.rejected),
        }
        for kind in ("seen", "unseen"):
            accs = [
                m["test-acc"]
                for c, m in nonparticipants.items()
                if self.novel_kind.get(c) == kind
            ]
            out[f"nonparticipant_{kind}_acc"] = float(np.mean(accs)) if accs else None
            out[f"nonparticipant_{kind}_clients"] = len(accs)
        out["nonparticipant_acc_by_K"] = {
            str(k): float(
                np.mean(
                    [
                        m["test-acc"]
                        for c, m in nonparticipants.items()
                        if self.k.get(c) == k
                    ]
                )
            )
            for k in sorted({self.k[c] for c in nonparticipants if c in self.k})
        }
        clients = min(self.cfg.clients_per_round, len(self.participants))
        values = self.cfg.num_classes * (self.cfg.fedproto_dim + 1)
        out["fedproto_proto_bytes_per_round"] = 2 * clients * values * 4
        return out

    # ---- sizes and state ----------------------------------------------------------
    def client_trainable_params(self) -> int:
        ks = [self.k[c] for c in self.participants]
        return int(np.mean(ks)) if ks else 0

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "models": {c: m.clone() for c, m in self.models.items()},
            "protos": self.protos.clone(),
            "present": self.present.clone(),
            "k": dict(self.k),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.models = {c: m.clone() for c, m in state["models"].items()}
        self.protos = state["protos"].clone()
        self.present = state["present"].clone()
