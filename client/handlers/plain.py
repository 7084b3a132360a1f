"""Handlers of the methods that send whole models (pFedHN, FedAvg, local-only).

``train``: train the received parameters locally and return Δ = θ_trained −
θ_received; ``evaluate``: evaluate them on this client's validation and test splits.
The server never sees data, labels or per-sample information.
"""

from __future__ import annotations

from flwr.app import Context, Message

from client.runtime import app, eval_reply, setup, train_reply
from common.local_update import local_update, model_from_record
from common.records import arrays_of, config_of


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received parameters locally and return Δ = θ_trained − θ_received."""
    cfg, cid, pid, data = setup(context)
    delta, metrics = local_update(cfg, cid, pid, data, config_of(msg), arrays_of(msg))
    return train_reply(msg, delta, metrics)


@app.evaluate()
def evaluate_model(msg: Message, context: Context) -> Message:
    """Evaluate the received parameters on this client's validation and test splits
    (a BatchNorm model with statistics of this client's training rows)."""
    cfg, _, _, data = setup(context)
    model = model_from_record(cfg, arrays_of(msg), calibrate_on=data.x_train)
    return eval_reply(msg, model, data)
