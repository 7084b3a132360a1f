"""The ClientApp's pFedDSH handlers: a BatchNorm target model, its BN statistics.

- ``train.dsh``: train the received model locally, then compute the BN statistics
  of the *trained* model on this client's training data (a forward pass, no
  training: what its private data shaped), and return Δ = θ_trained − θ_received
  with those statistics as the declared reply extra. The server knows θ_received,
  so it holds the trained model the statistics belong to, and its DeepInversion
  inverts that pair (no image or label leaves the client). Local training runs
  BN in training mode (batch statistics), so the running statistics the received
  model would have do not change Δ.
- ``evaluate.dsh``: the received parameters carry no BN running statistics (the
  hypernetwork generates weights only), so the client computes them on its own
  training data first, then evaluates on its validation and test splits.
"""

from __future__ import annotations

from flwr.app import Context, Message
from torch import nn

from client.runtime import app, eval_reply, setup, train_reply
from common.config import RunConfig
from common.local_update import finish_update, train_and_diff
from common.models import build_model
from common.models.bn import bn_statistics, calibrate_bn
from common.protocol import DSH
from common.records import arrays_of, config_of, from_record


def model_from(cfg: RunConfig, params: dict) -> nn.Module:
    """The target model holding the received parameters (every trainable tensor,
    nothing else: the BN buffers are the client's own to compute)."""
    model = build_model(cfg.model, cfg.num_classes, image_shape=cfg.image_shape)
    expected = {k for k, _ in model.named_parameters()}
    if set(params) != expected:
        raise ValueError(
            f"received tensors {sorted(set(params) ^ expected)} differ "
            "from the model's parameters"
        )
    model.load_state_dict(params, strict=False)
    return model


@app.train(DSH)
def train_dsh(msg: Message, context: Context) -> Message:
    """Train the received model; return Δ and the trained model's BN statistics
    on this client's training data."""
    cfg, cid, pid, data = setup(context)
    msg_cfg = config_of(msg)
    received = from_record(arrays_of(msg))
    model = model_from(cfg, received)
    delta, metrics = train_and_diff(cfg, model, received, data, cid, msg_cfg)
    calibrate_bn(model, data.x_train)
    stats = bn_statistics(model)
    delta, metrics = finish_update(cfg, cid, pid, msg_cfg, delta, metrics)
    return train_reply(msg, delta, metrics, stats)


@app.evaluate(DSH)
def evaluate_dsh(msg: Message, context: Context) -> Message:
    """BN statistics on this client's training data, then validation and test."""
    cfg, _, _, data = setup(context)
    model = model_from(cfg, from_record(arrays_of(msg)))
    calibrate_bn(model, data.x_train)
    return eval_reply(msg, model, data)
