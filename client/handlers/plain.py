"""Handlers of the methods that send whole models (pFedHN, FedAvg, local-only).

``train``: train the received parameters locally and return Δ = θ_trained −
θ_received; ``evaluate``: evaluate them on this client's validation and test splits.
The server never sees data, labels or per-sample information.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message

from client.runtime import (
    app,
    eval_reply,
    finish_update,
    local_steps,
    seed_for,
    setup,
    train_locally,
    train_reply,
    update_metrics,
)
from common.config import RunConfig
from common.models import build_model
from common.partition import ClientData
from common.records import arrays_of, config_of, from_record


def model_from(cfg: RunConfig, params: ArrayRecord) -> torch.nn.Module:
    """The run's target model holding the received parameters."""
    model = build_model(cfg.model, cfg.num_classes)
    model.load_state_dict(from_record(params), strict=True)
    return model


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received parameters locally and return Δ = θ_trained − θ_received."""
    cfg, cid, pid, data = setup(context)
    delta, metrics = local_update(cfg, cid, pid, data, config_of(msg), arrays_of(msg))
    return train_reply(msg, delta, metrics)


def local_update(
    cfg: RunConfig,
    cid: str,
    pid: int,
    data: ClientData,
    msg_cfg: ConfigRecord,
    params: ArrayRecord,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The body of a train reply: (Δ, metrics) after training ``params`` on ``data``.

    Shared by the train handler and offline personalisation (server/personalize.py),
    so a new client fitted without a server trains exactly as it would in a run.
    """
    received = from_record(params)
    model = model_from(cfg, params)
    steps = local_steps(cfg, msg_cfg, len(data.y_train))
    result = train_locally(
        cfg, model, data.x_train, data.y_train, steps, seed_for(cfg, cid, msg_cfg)
    )
    trained = dict(model.named_parameters())
    delta = {k: trained[k].detach() - v for k, v in received.items()}
    metrics = update_metrics(len(data.y_train), result)
    return finish_update(cfg, cid, pid, msg_cfg, delta, metrics)


@app.evaluate()
def evaluate_model(msg: Message, context: Context) -> Message:
    """Evaluate the received parameters on this client's validation and test splits."""
    cfg, _, _, data = setup(context)
    return eval_reply(msg, model_from(cfg, arrays_of(msg)), data)
