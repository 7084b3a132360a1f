"""Handlers of MH-pFedHN and MH-pFedHNGD: a model of this client's own architecture,
filled from and answered with one flat vector.

The architecture is chosen here (:func:`common.methods.mh_pfedhn.arch_for`: node
config ``arch``, else the run-config rule) and never leaves the client: registration
reports only the parameter count K_i (``mh-param-count``); a train message carries
``theta`` (K_i values) and the reply its flat Δ. GD's messages say which model to
train: ``phase=global`` is the public global architecture (``mh-global-arch``);
``phase=personal`` trains this client's own model with (1−λ)·CE + λ·T²·KL against
the global model sent as ``teacher``.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message

from client.runtime import app, eval_reply, registration_field, setup, train_reply
from common.config import RunConfig
from common.local_update import (
    mh_local_update,
    model_of,
)
from common.methods.mh_pfedhn import arch_for
from common.models import build_model, count_params
from common.partition import ClientData
from common.protocol import MH, THETA
from common.records import config_of, from_record


def own_arch(cfg: RunConfig, pid: int, context: Context) -> str:
    """This client's architecture (node config ``arch``, else the run's rule)."""
    return arch_for(cfg, pid, context.node_config)


@registration_field("mh-param-count")
def mh_param_count(cfg: RunConfig, data: ClientData, context: Context) -> int:
    """K_i, the only thing the server learns of this client's model."""
    node = context.node_config
    pid = int(node.get("partition-id", 0))
    return count_params(
        build_model(
            own_arch(cfg, pid, context), cfg.num_classes, image_shape=cfg.image_shape
        )
    )


def _theta(record: ArrayRecord) -> torch.Tensor:
    return from_record(record)[THETA]


@app.train(MH)
def train_mh(msg: Message, context: Context) -> Message:
    """Train the received flat vector as this client's model (or, GD's first phase,
    as the global model) and return the flat Δ."""
    cfg, cid, pid, data = setup(context)
    msg_cfg = config_of(msg)
    is_global = str(msg_cfg.get("phase", "")) == "global"
    arch = cfg.mh_global_arch if is_global else own_arch(cfg, pid, context)
    records = msg.content.array_records
    teacher = _theta(records["teacher"]) if "teacher" in records else None
    delta, metrics = mh_local_update(
        cfg, cid, pid, data, msg_cfg, arch, _theta(records["params"]), teacher
    )
    return train_reply(msg, delta, metrics)


@app.evaluate(MH)
def evaluate_mh(msg: Message, context: Context) -> Message:
    """Evaluate the received flat vector as this client's model (and the global
    model's accuracy on the same test split, when it is sent along)."""
    cfg, _, pid, data = setup(context)
    records = msg.content.array_records
    model = model_of(
        own_arch(cfg, pid, context),
        cfg.num_classes,
        _theta(records["params"]),
        cfg.image_shape,
    )
    extra: dict[str, float] = {}
    if "teacher" in records:
        from common.training import evaluate

        glob = model_of(
            cfg.mh_global_arch,
            cfg.num_classes,
            _theta(records["teacher"]),
            cfg.image_shape,
        )
        _, extra["global-test-acc"], _ = evaluate(glob, data.x_test, data.y_test)
    return eval_reply(msg, model, data, **extra)
