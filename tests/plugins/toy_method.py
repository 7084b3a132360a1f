"""A throwaway method defined entirely here, with no edit of any shared module.

``toy`` keeps one global model like FedAvg, but moves it by ``toy-step`` × the mean
delta (its own setting), its clients train under their own action (``train.toy``)
and each reply carries a declared extra array (the client's label histogram), which
the strategy keeps and reports. Loaded with ``plugins="tests.plugins.toy_method"``
by the server and every client (tests/e2e/test_new_method.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message

from client.runtime import app, setup, train_reply
from common.local_update import local_update
from common.records import to_record
from common.settings import MethodSpec, Setting, above, register_method
from server.registry import message_to
from server.strategies.base import HyperflowerStrategy, Params
from server.validation import ClientUpdate, ReplyExtra

register_method(
    MethodSpec(
        name="toy",
        summary="a global model moved by toy-step × the mean delta",
        settings={
            "toy-step": Setting(1.0, "scale of the mean delta", check=above(0.0))
        },
        nonparticipant_protocol="the global model",
        personalizable=False,
    )
)


class Toy(HyperflowerStrategy):
    """The toy method's server side."""

    name = "toy"
    has_global_model = True
    accepts_joiners = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reply_extras = {"histogram": ReplyExtra((self.cfg.num_classes,))}
        self.model = {
            k: p.detach().clone() for k, p in self.template.named_parameters()
        }
        self.histograms: dict[str, list[float]] = {}

    def generate(self, client_ids: Sequence[str]) -> list[Params]:
        return [self.model] * len(client_ids)

    def messages(
        self,
        kind: str,
        client_ids: Sequence[str],
        params: Sequence[Params],
        config: ConfigRecord,
    ) -> list[Message]:
        action = "train.toy" if kind == "train" else kind
        return [
            message_to(
                self.registry.node_of(c), action, params=to_record(p), config=config
            )
            for c, p in zip(client_ids, params, strict=True)
        ]

    def apply_updates(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> dict[str, float]:
        step = self.cfg.toy_step
        for key in self.model:
            mean = torch.stack([u.delta[key] for u in updates]).mean(0)
            self.model[key] = self.model[key] + step * mean
        for u in updates:
            self.histograms[u.client_id] = u.extras["histogram"].tolist()
        return {"toy-histograms": float(len(self.histograms))}

    def nonparticipant_params(
        self, ops: Any, client_ids: Sequence[str]
    ) -> dict[str, Params] | None:
        return {c: self.model for c in client_ids}

    def final_report(self, ops: Any, nonparticipants: dict) -> dict[str, Any]:
        return {"toy_histograms": self.histograms}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "model": dict(self.model),
            "histograms": dict(self.histograms),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.model = dict(state["model"])
        self.histograms = dict(state["histograms"])


@app.train("toy")
def train_toy(msg: Message, context: Context) -> Message:
    """Train like any client, and report this client's label histogram."""
    cfg, cid, pid, data = setup(context)
    delta, metrics = local_update(
        cfg, cid, pid, data, msg.content["config"], msg.content["params"]
    )
    histogram = torch.bincount(data.y_train, minlength=cfg.num_classes).float()
    return train_reply(msg, delta, metrics, {"histogram": histogram})
