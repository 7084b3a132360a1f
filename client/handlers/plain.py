"""Handlers of the methods that send whole models (pFedHN, FedAvg, local-only).

``train``: train the received parameters locally and return Δ = θ_trained −
θ_received; ``evaluate``: evaluate them on this client's validation and test splits.
The server never sees data, labels or per-sample information.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message

from client.runtime import app, eval_reply, finish_update, seed_for, setup, train_reply
from client.training import steps_for, train_steps
from common.config import RunConfig
from common.models import build_model
from common.partition import ClientData
from common.records import arrays_of, as_int, config_of, from_record


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
    steps = as_int(
        msg_cfg.get(
            "local-steps",
            steps_for(
                len(data.y_train), cfg.batch_size, cfg.local_epochs, cfg.local_steps
            ),
        )
    )
    result = train_steps(
        model,
        data.x_train,
        data.y_train,
        steps,
        cfg.batch_size,
        cfg.inner_lr,
        cfg.inner_momentum,
        cfg.inner_weight_decay,
        seed_for(cfg, cid, msg_cfg),
        cfg.local_clip_norm,
    )
    trained = dict(model.named_parameters())
    delta = {k: trained[k].detach() - v for k, v in received.items()}
    metrics = {
        "num-examples": len(data.y_train),
        "train-loss": result.loss,
        "train-acc": result.accuracy,
        "steps": result.steps,
    }
    return finish_update(cfg, cid, pid, msg_cfg, delta, metrics)


@app.evaluate()
def evaluate_model(msg: Message, context: Context) -> Message:
    """Evaluate the received parameters on this client's validation and test splits."""
    cfg, _, _, data = setup(context)
    return eval_reply(msg, model_from(cfg, arrays_of(msg)), data)
