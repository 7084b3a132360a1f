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
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from torch import nn

from client.runtime import (
    app,
    eval_reply,
    finish_update,
    local_steps,
    registration_field,
    seed_for,
    setup,
    train_locally,
    train_reply,
    update_metrics,
)
from client.training import TrainResult
from common.config import RunConfig
from common.methods.mh_pfedhn import arch_for
from common.models import build_model, count_params
from common.models.zoo import load_flat, to_flat
from common.partition import ClientData
from common.records import config_of, from_record

THETA = "theta"


def own_arch(cfg: RunConfig, pid: int, context: Context) -> str:
    """This client's architecture (node config ``arch``, else the run's rule)."""
    return arch_for(cfg, pid, context.node_config)


@registration_field("mh-param-count")
def mh_param_count(cfg: RunConfig, data: ClientData, context: Context) -> int:
    """K_i, the only thing the server learns of this client's model."""
    node = context.node_config
    pid = int(node.get("partition-id", 0))
    return count_params(build_model(own_arch(cfg, pid, context), cfg.num_classes))


def model_of(arch: str, num_classes: int, theta: torch.Tensor) -> nn.Module:
    """The zoo model ``arch`` holding the flat parameters ``theta``."""
    return load_flat(build_model(arch, num_classes), theta)


def unflatten_for(
    arch: str, num_classes: int, theta: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Named parameters of ``arch`` from its flat vector (offline model files)."""
    model = model_of(arch, num_classes, theta)
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def train_kd(
    model: nn.Module,
    teacher: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    cfg: RunConfig,
    generator: torch.Generator,
) -> TrainResult:
    """SGD on (1−λ)·CE + λ·T²·KL(softmax(z_g/T) ‖ softmax(z_i/T)), the teacher fixed."""
    lam, temp = float(cfg.mh_kd_lambda), float(cfg.mh_kd_temperature)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        params,
        lr=cfg.inner_lr,
        momentum=cfg.inner_momentum,
        weight_decay=cfg.inner_weight_decay,
    )
    model.train()
    teacher.eval()
    total, correct, seen = 0.0, 0, 0
    order, cursor = torch.randperm(len(y), generator=generator), 0
    for _ in range(steps):
        if cursor >= len(order):
            order, cursor = torch.randperm(len(y), generator=generator), 0
        batch = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        logits = model(x[batch])
        with torch.no_grad():
            soft = torch.softmax(teacher(x[batch]) / temp, dim=1)
        kl = nn.functional.kl_div(
            torch.log_softmax(logits / temp, dim=1), soft, reduction="batchmean"
        )
        loss = (1 - lam) * nn.functional.cross_entropy(
            logits, y[batch]
        ) + lam * temp**2 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.local_clip_norm > 0:
            nn.utils.clip_grad_norm_(params, cfg.local_clip_norm)
        opt.step()
        total += loss.item() * len(batch)
        correct += int((logits.argmax(1) == y[batch]).sum())
        seen += len(batch)
    return TrainResult(total / max(seen, 1), correct / max(seen, 1), seen, steps)


def mh_local_update(
    cfg: RunConfig,
    cid: str,
    pid: int,
    data: ClientData,
    msg_cfg: ConfigRecord,
    arch: str,
    theta: torch.Tensor,
    teacher: torch.Tensor | None,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """(flat Δ, metrics) after training ``theta`` as ``arch`` on ``data`` (with
    distillation from ``teacher`` when given). Shared by the train handler and offline
    personalisation, so a new client fitted offline trains exactly as in a run."""
    model = model_of(arch, cfg.num_classes, theta)
    steps = local_steps(cfg, msg_cfg, len(data.y_train))
    gen = seed_for(cfg, cid, msg_cfg)
    if teacher is not None and float(cfg.mh_kd_lambda) > 0:
        result = train_kd(
            model,
            model_of(cfg.mh_global_arch, cfg.num_classes, teacher),
            data.x_train,
            data.y_train,
            steps,
            cfg,
            gen,
        )
    else:
        result = train_locally(cfg, model, data.x_train, data.y_train, steps, gen)
    delta = {THETA: to_flat(model) - theta.to(torch.float32)}
    metrics = update_metrics(len(data.y_train), result)
    return finish_update(cfg, cid, pid, msg_cfg, delta, metrics)


def _theta(record: ArrayRecord) -> torch.Tensor:
    return from_record(record)[THETA]


@app.train("mh")
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


@app.evaluate("mh")
def evaluate_mh(msg: Message, context: Context) -> Message:
    """Evaluate the received flat vector as this client's model (and the global
    model's accuracy on the same test split, when it is sent along)."""
    cfg, _, pid, data = setup(context)
    records = msg.content.array_records
    model = model_of(
        own_arch(cfg, pid, context), cfg.num_classes, _theta(records["params"])
    )
    extra: dict[str, float] = {}
    if "teacher" in records:
        from client.training import evaluate

        glob = model_of(cfg.mh_global_arch, cfg.num_classes, _theta(records["teacher"]))
        _, extra["global-test-acc"], _ = evaluate(glob, data.x_test, data.y_test)
    return eval_reply(msg, model, data, **extra)
