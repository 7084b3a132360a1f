"""A client's local update: the body of a train reply, shared by the ClientApp's
handlers and offline personalisation (:mod:`server.personalize`).

Offline personalisation fits a new client without a server or a ClientApp, and must
train exactly as the client would in a run (same steps, same seeded data order,
same privacy and fault-injection tail), so the code both sides run lives here:

- the tail every method shares: :func:`seed_for`, :func:`local_steps`,
  :func:`train_locally`, :func:`update_metrics`, :func:`finish_update`;
- the update of the methods that send whole models (pFedHN, FedAvg, local-only):
  :func:`local_update`;
- MH-pFedHN's update of a flat parameter vector ``theta`` as the
  client's own architecture: :func:`mh_local_update`, :func:`unflatten_for`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord
from torch import nn

from common.config import RunConfig
from common.faults import fault_for, inject, parse_plan
from common.models import DEFAULT_SHAPE, build_model
from common.models.loading import calibrate_batchnorm, load_parameters
from common.models.zoo import load_flat, to_flat
from common.partition import ClientData
from common.privacy import clip_and_noise
from common.protocol import THETA
from common.records import as_int, from_record
from common.training import ClientSGD, TrainResult, steps_for, train_steps


def seed_for(
    cfg: RunConfig, cid: str, msg_cfg: ConfigRecord, purpose: str = ""
) -> torch.Generator:
    """A generator fixed by (seed, client, round, phase): resumes replay exactly."""
    phase = str(msg_cfg.get("phase", "")) + purpose
    entropy = [
        cfg.seed,
        as_int(msg_cfg.get("round", 0)),
        *[ord(c) for c in cid],
        *[ord(c) for c in phase],
    ]
    state = np.random.SeedSequence(entropy).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def local_steps(cfg: RunConfig, msg_cfg: ConfigRecord, num_samples: int) -> int:
    """Optimiser steps of one local update: the message's ``local-steps`` when the
    server names them (e.g. pre-training epochs), else the run's ``local-epochs`` /
    ``local-steps``."""
    return as_int(
        msg_cfg.get(
            "local-steps",
            steps_for(num_samples, cfg.batch_size, cfg.local_epochs, cfg.local_steps),
        )
    )


def train_locally(
    cfg: RunConfig,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    lr: float | None = None,
    proximal_mu: float = 0.0,
) -> TrainResult:
    """Local SGD with the run's inner settings (``lr`` overrides ``inner-lr``, e.g.
    for LoRA adapters): the one training call every method's handler makes.
    ``proximal_mu`` > 0 adds FedProx's proximal term to the local loss."""
    return train_steps(
        model,
        x,
        y,
        steps,
        cfg.batch_size,
        cfg.inner_lr if lr is None else lr,
        cfg.inner_momentum,
        cfg.inner_weight_decay,
        generator,
        cfg.local_clip_norm,
        proximal_mu,
    )


def proximal_mu_of(msg_cfg: ConfigRecord) -> float:
    """FedProx's μ as the server names it in a train message (``proximal-mu``; only
    the fedprox strategy sends it, so every other method trains with μ = 0)."""
    value = msg_cfg.get("proximal-mu", 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def update_metrics(num_examples: int, result: TrainResult) -> dict[str, Any]:
    """The metrics a train reply carries about its local training."""
    return {
        "num-examples": num_examples,
        "train-loss": result.loss,
        "train-acc": result.accuracy,
        "steps": result.steps,
    }


def finish_update(
    cfg: RunConfig,
    cid: str,
    pid: int,
    msg_cfg: ConfigRecord,
    delta: dict[str, torch.Tensor],
    metrics: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tail every method's update goes through: client-side clipping and noise
    of the delta (``dp-clip``, ``dp-noise``; its norm in ``delta-norm``), then the
    run's fault-injection plan for this client and round, if any."""
    delta, norm = clip_and_noise(
        delta, cfg.dp_clip, cfg.dp_noise, seed_for(cfg, cid, msg_cfg, "dp")
    )
    metrics = {**metrics, "delta-norm": norm}
    fault = (
        fault_for(parse_plan(cfg.fault_injection), pid, as_int(msg_cfg.get("round", 0)))
        if cfg.fault_injection
        else None
    )
    if fault:
        delta, metrics = inject(
            fault, delta, metrics, cfg.round_timeout, cfg.max_reply_mb
        )
    return delta, metrics


def model_from_record(
    cfg: RunConfig, params: ArrayRecord, calibrate_on: torch.Tensor | None = None
) -> torch.nn.Module:
    """The run's target model holding the received parameters. A BatchNorm model's
    running statistics never travel: given ``calibrate_on`` (the client's training
    rows), they are computed from it (:mod:`common.models.loading`)."""
    model = build_model(cfg.model, cfg.num_classes, image_shape=cfg.image_shape)
    if load_parameters(model, from_record(params)) and calibrate_on is not None:
        calibrate_batchnorm(model, calibrate_on)
    return model


def local_update(
    cfg: RunConfig,
    cid: str,
    pid: int,
    data: ClientData,
    msg_cfg: ConfigRecord,
    params: ArrayRecord,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The body of a train reply: (Δ, metrics) after training ``params`` on ``data``.

    Shared by the train handler and offline personalisation, so a new client fitted
    without a server trains exactly as it would in a run.
    """
    model = model_from_record(cfg, params)
    delta, metrics = train_and_diff(cfg, model, from_record(params), data, cid, msg_cfg)
    return finish_update(cfg, cid, pid, msg_cfg, delta, metrics)


def train_and_diff(
    cfg: RunConfig,
    model: torch.nn.Module,
    received: dict[str, torch.Tensor],
    data: ClientData,
    cid: str,
    msg_cfg: ConfigRecord,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train ``model`` (built from ``received``) on the client's training rows for
    the round's local steps; return Δ = trained − received and the update's
    metrics, before clipping/noise (:func:`finish_update`)."""
    steps = local_steps(cfg, msg_cfg, len(data.y_train))
    result = train_locally(
        cfg,
        model,
        data.x_train,
        data.y_train,
        steps,
        seed_for(cfg, cid, msg_cfg),
        proximal_mu=proximal_mu_of(msg_cfg),
    )
    trained = dict(model.named_parameters())
    delta = {k: trained[k].detach() - v for k, v in received.items()}
    return delta, update_metrics(len(data.y_train), result)


def inner_sgd(params: list[torch.nn.Parameter], cfg: RunConfig) -> ClientSGD:
    """SGD with the run's inner (client-side) lr, momentum and weight decay, for
    the methods whose local loss is their own (HyperFedZero's, MH's distillation)."""
    return ClientSGD(
        params,
        lr=cfg.inner_lr,
        momentum=cfg.inner_momentum,
        weight_decay=cfg.inner_weight_decay,
    )


def model_of(
    arch: str,
    num_classes: int,
    theta: torch.Tensor,
    image_shape: tuple[int, int, int] = DEFAULT_SHAPE,
) -> nn.Module:
    """The zoo model ``arch`` (for images of ``image_shape``) holding the flat
    parameters ``theta``."""
    return load_flat(build_model(arch, num_classes, image_shape=image_shape), theta)


def unflatten_for(
    arch: str,
    num_classes: int,
    theta: torch.Tensor,
    image_shape: tuple[int, int, int] = DEFAULT_SHAPE,
) -> dict[str, torch.Tensor]:
    """Named parameters of ``arch`` from its flat vector (offline model files)."""
    model = model_of(arch, num_classes, theta, image_shape)
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
    opt = inner_sgd(params, cfg)
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
    model = model_of(arch, cfg.num_classes, theta, cfg.image_shape)
    steps = local_steps(cfg, msg_cfg, len(data.y_train))
    gen = seed_for(cfg, cid, msg_cfg)
    if teacher is not None and float(cfg.mh_kd_lambda) > 0:
        result = train_kd(
            model,
            model_of(cfg.mh_global_arch, cfg.num_classes, teacher, cfg.image_shape),
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
