"""Handlers of FedProto (Tan et al., AAAI 2022): a model of this client's own
architecture, regularised toward the global prototypes; the reply carries its
per-class mean representations.

The architecture is chosen here as MH-pFedHN's clients choose it
(:func:`client.handlers.mh.own_arch`) and never leaves the client: registration
reports only the parameter count of its FedProto model (``proto-param-count``).
Clients may be stateless processes, so the server keeps, per client, the flat
displacement s_i = θ_i − θ_i⁰ of its model from its seeded initial weights θ_i⁰
(which only the client can build) and sends it each round under ``theta``; the
client trains θ_i⁰ + s_i with CE + λ·MSE(f(x), C̄_y) against the global prototypes
(record ``protos``: ``protos`` C × d, ``present`` C) and returns its flat Δ, with
its local prototypes and class counts as the declared reply extras.
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message

from client.handlers.mh import own_arch
from client.runtime import app, eval_reply, registration_field, setup, train_reply
from common.config import RunConfig
from common.local_update import finish_update, local_steps, seed_for, update_metrics
from common.methods.fedproto import (
    FEDPROTO,
    GLOBAL_PROTOS,
    LOCAL_PROTOS,
    PARAM_COUNT,
    PROTO_COUNTS,
)
from common.models import count_params
from common.models.prototypes import (
    ProtoNet,
    PrototypeClassifier,
    build_proto_model,
    local_prototypes,
    train_fedproto,
)
from common.models.zoo import load_flat, to_flat
from common.partition import ClientData
from common.protocol import THETA
from common.records import config_of, from_record
from common.training import evaluate


def proto_net(cfg: RunConfig, pid: int, arch: str) -> ProtoNet:
    """This client's FedProto model at its initial weights θ⁰ (seeded by the run's
    seed and its partition id, as the MH table's local-only clients)."""
    return build_proto_model(
        arch, cfg.num_classes, cfg.image_shape, cfg.fedproto_dim, cfg.seed + pid
    )


@registration_field(PARAM_COUNT)
def proto_param_count(cfg: RunConfig, data: ClientData, context: Context) -> int:
    """K_i of this client's FedProto model: the length of its flat vector, all the
    server learns of its architecture."""
    pid = int(context.node_config.get("partition-id", 0))
    return count_params(proto_net(cfg, pid, own_arch(cfg, pid, context)))


def _received(msg: Message) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(displacement s_i, global prototypes, their class mask) of a message."""
    records = msg.content.array_records
    theta = from_record(records["params"])[THETA]
    glob = from_record(records[GLOBAL_PROTOS])
    return theta, glob["protos"], glob["present"] > 0.5


def _model(cfg: RunConfig, pid: int, context: Context, s: torch.Tensor) -> ProtoNet:
    """This client's model θ⁰ + s."""
    net = proto_net(cfg, pid, own_arch(cfg, pid, context))
    load_flat(net, to_flat(net) + s.to(torch.float32))
    return net


def fedproto_update(
    cfg: RunConfig,
    cid: str,
    pid: int,
    data: ClientData,
    msg_cfg: ConfigRecord,
    net: ProtoNet,
    protos: torch.Tensor,
    present: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor]]:
    """(flat Δ, metrics, extras) after this round's local steps on ``net``: Δ after
    the shared privacy and fault tail, extras the local prototypes C_i (C × d, of
    the trained model) and class counts |D_i,j|."""
    before = to_flat(net)
    result, reg = train_fedproto(
        net,
        data.x_train,
        data.y_train,
        local_steps(cfg, msg_cfg, len(data.y_train)),
        cfg.batch_size,
        cfg.inner_lr,
        cfg.inner_momentum,
        cfg.inner_weight_decay,
        seed_for(cfg, cid, msg_cfg),
        protos,
        present,
        float(cfg.fedproto_lambda),
        cfg.local_clip_norm,
    )
    mine, counts = local_prototypes(net, data.x_train, data.y_train, cfg.num_classes)
    metrics = {**update_metrics(len(data.y_train), result), "proto-loss": reg}
    delta, metrics = finish_update(
        cfg, cid, pid, msg_cfg, {THETA: to_flat(net) - before}, metrics
    )
    return delta, metrics, {LOCAL_PROTOS: mine, PROTO_COUNTS: counts}


@app.train(FEDPROTO)
def train_proto(msg: Message, context: Context) -> Message:
    """Train this client's model with the prototype regulariser; reply with its
    flat Δ and its local prototypes."""
    cfg, cid, pid, data = setup(context)
    s, protos, present = _received(msg)
    delta, metrics, extras = fedproto_update(
        cfg,
        cid,
        pid,
        data,
        config_of(msg),
        _model(cfg, pid, context, s),
        protos,
        present,
    )
    return train_reply(msg, delta, metrics, extras)


@app.evaluate(FEDPROTO)
def evaluate_proto(msg: Message, context: Context) -> Message:
    """Score this client's model both ways on its validation and test rows: the
    nearest global prototype (the paper's inference) and its own classifier;
    ``fedproto-inference`` says which is ``val-acc``/``test-acc`` (the other is
    reported as ``classifier-*`` / ``proto-*``). Without any global prototype yet
    the classifier is all there is."""
    cfg, _, pid, data = setup(context)
    s, protos, present = _received(msg)
    net = _model(cfg, pid, context, s)
    by_proto = PrototypeClassifier(net, protos, present)
    scores = {}
    for name, model in (("proto", by_proto), ("classifier", net)):
        for split, x, y in (
            ("val", data.x_val, data.y_val),
            ("test", data.x_test, data.y_test),
        ):
            scores[f"{name}-{split}-acc"] = evaluate(model, x, y)[1]
    use_proto = cfg.fedproto_inference == "prototype" and bool(present.any())
    return eval_reply(msg, by_proto if use_proto else net, data, **scores)
