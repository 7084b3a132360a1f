"""FedAvg reference row: one global model, averaged with Flower's own FedAvg strategy.

Clients return deltas (the shared reply format); Flower's ``FedAvg.aggregate_train``
averages them weighted by ``num-examples`` and the server adds the mean delta to the
global model. Held-out clients get the global model as it is (their zero-shot model).
FedProx is the same server; its train messages name ``proximal-mu``, which the
shared local update adds to the client's loss as μ/2 ‖w − w_global‖².
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from logging import INFO
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from common.config import RunConfig
from common.records import from_record, to_record
from server.paper_cost import whole_model_cost
from server.personalizers import TrainedRun, register_personalizer
from server.strategies.base import HyperflowerStrategy, Params
from server.strategies.pfedhn import novel_phase
from server.validation import ClientUpdate


def train_held_out(
    ops: Any, start: dict[str, Params], cfg: RunConfig
) -> dict[str, Params]:
    """Each held-out client's model after ``heldout-train-rounds`` train exchanges
    from ``start`` (its deltas added after each): the reference that trains a new
    client as long as pFedHN's embedding fit does, with the same message phases
    (so the same data order). A client that does not answer keeps its model."""
    models = dict(start)
    ids = list(models)
    for step in range(cfg.heldout_train_rounds):
        updates = ops.train_exchange(
            ids, [models[c] for c in ids], phase=novel_phase(step)
        )
        for u in updates:
            own = models[u.client_id]
            models[u.client_id] = {k: own[k] + u.delta[k] for k in own}
        log(
            INFO,
            "held-out clients: local training %d/%d (%d replies)",
            step + 1,
            cfg.heldout_train_rounds,
            len(updates),
        )
    return models


def held_out_protocol(cfg: RunConfig, what: str) -> str:
    """``what`` with the held-out training's length, or '' when there is none."""
    rounds = cfg.heldout_train_rounds
    if not rounds:
        return ""
    return f"{what} ({rounds} exchanges of {cfg.local_steps} local steps)"


class FedAvg(HyperflowerStrategy):
    """McMahan et al. (2017): sampled clients train one model; deltas averaged."""

    name = "fedavg"
    averages_replies = True  # Flower's own weighted average of the replies
    has_global_model = True
    accepts_joiners = True  # a joiner simply enters the sampling pool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.global_model: Params = {
            k: p.detach().clone() for k, p in self.template.named_parameters()
        }
        self.averager = FlowerFedAvg(weighted_by_key="num-examples")

    def generate(self, client_ids: Sequence[str]) -> list[Params]:
        return [self.global_model] * len(client_ids)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's FedAvg averages the deltas; the global model moves by the mean."""
        replies = list(replies)
        if not replies:
            return None, None
        mean_delta, metrics = self.averager.aggregate_train(server_round, replies)
        if mean_delta is None:
            return None, metrics
        for key, delta in from_record(mean_delta).items():
            self.global_model[key] = self.global_model[key] + delta
        return to_record(self.global_model), metrics

    def apply_updates(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> dict[str, float]:
        """Weighted mean of deltas added to the global model (direct-call path)."""
        total = sum(u.num_examples for u in updates)
        for key in self.global_model:
            mean = sum(u.delta[key] * (u.num_examples / total) for u in updates)
            self.global_model[key] = self.global_model[key] + mean
        return {}

    def nonparticipant_params(
        self, ops: Any, client_ids: Sequence[str]
    ) -> dict[str, Params] | None:
        """Held-out clients get the global model, fine-tuned with their own data for
        ``heldout-train-rounds`` exchanges (0: as it is)."""
        return train_held_out(ops, {c: self.global_model for c in client_ids}, self.cfg)

    def nonparticipant_protocol(self) -> str:
        """Fine-tuned or not, as this run's ``heldout-train-rounds`` says."""
        return (
            held_out_protocol(self.cfg, "global model fine-tuned on its own data")
            or super().nonparticipant_protocol()
        )

    def final_report(
        self, ops: Any, nonparticipants: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """The paper's communication per round, 2·M_sel·|θ| (beside the bytes the
        loop counts from the records)."""
        return whole_model_cost(
            min(self.cfg.clients_per_round, len(self.registry.participants)),
            self.client_trainable_params(),
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "global": dict(self.global_model)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.global_model = {k: v.clone() for k, v in state["global"].items()}

    def global_params(self) -> Params:
        """The current global model."""
        return self.global_model


class FedProx(FedAvg):
    """Li et al. (2020): FedAvg's server; each train message names ``proximal-mu``
    so the client's local loss gains μ/2 ‖w − w_global‖² (common/training.py)."""

    name = "fedprox"

    def messages(
        self,
        kind: str,
        client_ids: Sequence[str],
        params: Sequence[Params],
        config: ConfigRecord,
        **extra: ArrayRecord | ConfigRecord,
    ) -> list[Message]:
        """FedAvg's messages; train ones carry μ in their config."""
        if kind == "train":
            config = ConfigRecord(
                {**dict(config), "proximal-mu": float(self.cfg.proximal_mu)}
            )
        return super().messages(kind, client_ids, params, config, **extra)


class LocalOnly(HyperflowerStrategy):
    """Reference row: every participant trains only its own model, nothing is shared.

    The server keeps each participant's parameters between its rounds (clients may be
    stateless processes). Held-out clients have nothing to receive: their accuracy is
    reported as null.
    """

    name = "local"
    accepts_joiners = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        init = {k: p.detach().clone() for k, p in self.template.named_parameters()}
        self.models: dict[str, Params] = {
            c: dict(init) for c in self.registry.participants
        }

    def generate(self, client_ids: Sequence[str]) -> list[Params]:
        return [self.models[c] for c in client_ids]

    def admit(self, client_id: str) -> None:
        """A participant that joins starts from the same initial model as the rest
        (one the state already holds keeps its own)."""
        if (
            self.registry.clients[client_id].participant
            and client_id not in self.models
        ):
            self.models[client_id] = {
                k: p.detach().clone() for k, p in self.template.named_parameters()
            }

    def nonparticipant_params(
        self, ops: Any, client_ids: Sequence[str]
    ) -> dict[str, Params] | None:
        """With ``heldout-train-rounds``: a held-out client trains its own model from
        the initial one, as long as pFedHN's new clients fit (else nothing)."""
        if not self.cfg.heldout_train_rounds:
            return None
        init = {k: p.detach().clone() for k, p in self.template.named_parameters()}
        return train_held_out(ops, dict.fromkeys(client_ids, init), self.cfg)

    def nonparticipant_protocol(self) -> str:
        """Trained locally or nothing, as this run's ``heldout-train-rounds`` says."""
        return (
            held_out_protocol(self.cfg, "its own model trained from the initial one")
            or super().nonparticipant_protocol()
        )

    def apply_updates(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> dict[str, float]:
        for u in updates:
            own = self.models[u.client_id]
            self.models[u.client_id] = {k: own[k] + u.delta[k] for k in own}
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "models": {c: dict(m) for c, m in self.models.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.models = {
            c: {k: v.clone() for k, v in m.items()} for c, m in state["models"].items()
        }


@register_personalizer("fedavg", "fedprox")
class FedAvgPersonalizer:
    """A FedAvg (or FedProx) run gives every new client its global model."""

    def __init__(self, run: TrainedRun, device: torch.device) -> None:
        self.global_model = run.state["global"]

    def __call__(self, *_: Any) -> tuple[Params, dict[str, Any]]:
        return (
            {k: v.clone() for k, v in self.global_model.items()},
            {"embedding": None, "fit-rounds": 0},
        )
