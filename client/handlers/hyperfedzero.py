"""HyperFedZero's client side: train g, f, noisy and h together; zero-shot evaluation.

``train.hyperfedzero``: local SGD on cross-entropy + the balancing penalty, the
classifier of every batch generated from the batch's mean embedding; the reply is
Δ of the whole model (FedAvg-aggregated by the server) and, as the declared extra
``embedding``, this client's distribution embedding (mean e_x over its data, no
noise) — never data or labels. ``evaluate.hyperfedzero``: compute e from this
client's own unlabelled data (or use the server's mean embedding for the global
model), generate the classifier and evaluate: nothing leaves but metrics. A client
without unlabelled data answers with an error naming the reason
(:class:`NoUnlabelledDataError`), which the server counts.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message
from torch import nn

from client.runtime import app, eval_reply, setup, train_reply
from common.config import RunConfig
from common.local_update import finish_update, inner_sgd, local_steps, seed_for
from common.models.hyperfedzero import (
    GLOBAL_EMBEDDING,
    NoUnlabelledDataError,
    balancing_penalty,
    net_from,
)
from common.partition import ClientData
from common.protocol import HYPERFEDZERO
from common.records import arrays_of, config_of, from_record


def unlabelled(data: ClientData) -> torch.Tensor:
    """The inputs a client computes its embedding from: its local (training) pool,
    labels unused; :class:`NoUnlabelledDataError` when it has none."""
    if len(data.x_train) == 0:
        raise NoUnlabelledDataError(
            "no unlabelled data: this client holds no local "
            "samples to compute its distribution embedding"
        )
    return data.x_train


class ShiftedBatches:
    """Label-shifted local batches (``hfz-shift-batches`` = κ > 0).

    Each batch gets its own class mix q ~ Dirichlet(κ) over the classes this client
    holds and draws ``size`` samples with replacement in those proportions (uniform
    within a class). The batch's embedding — and so the classifier h makes for it —
    then varies with q from step to step, so h must map e to a classifier that fits
    that mix: under plain local SGD on the client's own mix the shared parameters
    absorb the client's prior within a few steps and h's e-dependent part gets
    almost no gradient (docs/hyperfedzero.md, "Why zACC ties FedAvg").
    """

    def __init__(
        self, labels: torch.Tensor, kappa: float, generator: torch.Generator
    ) -> None:
        self.labels, self.kappa, self.gen = labels, kappa, generator
        self.classes = torch.unique(labels)
        self.counts = torch.bincount(labels)
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        self.rng = np.random.default_rng(seed)

    def mix(self) -> torch.Tensor:
        """q, one class mix over the classes held (sums to 1)."""
        q = self.rng.dirichlet(np.full(len(self.classes), self.kappa))
        return torch.as_tensor(q, dtype=torch.float64)

    def draw(self, size: int) -> torch.Tensor:
        """Indices of one batch drawn with a fresh class mix."""
        weight = torch.zeros(len(self.counts), dtype=torch.float64)
        weight[self.classes] = self.mix() / self.counts[self.classes].double()
        per_sample = weight[self.labels]
        if float(per_sample.sum()) <= 0:  # every drawn weight underflowed
            per_sample = torch.ones(len(self.labels), dtype=torch.float64)
        return torch.multinomial(per_sample, size, replacement=True, generator=self.gen)


def local_update(
    cfg: RunConfig,
    cid: str,
    pid: int,
    data: ClientData,
    msg_cfg: ConfigRecord,
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, float], torch.Tensor]:
    """(Δ, metrics, embedding) after training the received model on ``data``.

    Each step: e_x for the batch (with NoisyEmbed's noise), e = their mean, the
    classifier generated from e, loss = CE + α·balance + β·entropy (the penalty on
    the noisy rows, or on the noise-free ones with ``hfz-penalty-clean``). Plain SGD
    with the run's inner optimiser settings, batches drawn as ``common.training``
    does, or label-shifted (:class:`ShiftedBatches`) with ``hfz-shift-batches``.
    """
    x = unlabelled(data)
    net = net_from(cfg, state)
    gen = seed_for(cfg, cid, msg_cfg)
    steps = local_steps(cfg, msg_cfg, len(data.y_train))
    params = [p for p in net.parameters() if p.requires_grad]
    opt = inner_sgd(params, cfg)
    net.train()
    total_loss = total_pen = 0.0
    correct = seen = 0
    order, cursor = torch.randperm(len(x), generator=gen), 0
    # built only when used: its seed draw would otherwise move the default runs'
    # random stream (and their committed figures)
    shifted = (
        ShiftedBatches(data.y_train, cfg.hfz_shift_batches, gen)
        if cfg.hfz_shift_batches > 0
        else None
    )
    for _ in range(steps):
        if shifted is not None:
            batch = shifted.draw(cfg.batch_size)
        else:
            if cursor >= len(order):
                order, cursor = torch.randperm(len(x), generator=gen), 0
            batch = order[cursor : cursor + cfg.batch_size]
            cursor += cfg.batch_size
        logits, noisy, clean = net.training_outputs(x[batch], generator=gen)
        ce = nn.functional.cross_entropy(logits, data.y_train[batch])
        penalty = balancing_penalty(
            clean if cfg.hfz_penalty_clean else noisy, cfg.hfz_alpha, cfg.hfz_beta
        )
        loss = ce + penalty
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.local_clip_norm > 0:
            nn.utils.clip_grad_norm_(params, cfg.local_clip_norm)
        opt.step()
        total_loss += ce.item() * len(batch)
        total_pen += penalty.item() * len(batch)
        correct += int((logits.argmax(1) == data.y_train[batch]).sum())
        seen += len(batch)
    trained = net.state_dict()
    delta = {k: trained[k].detach() - v for k, v in state.items()}
    metrics = {
        "num-examples": len(data.y_train),
        "train-loss": total_loss / max(seen, 1),
        "train-acc": correct / max(seen, 1),
        "penalty": total_pen / max(seen, 1),
        "steps": steps,
    }
    embedding = net.client_embedding(x)
    delta, metrics = finish_update(cfg, cid, pid, msg_cfg, delta, metrics)
    return delta, metrics, embedding


@app.train(HYPERFEDZERO)
def train(msg: Message, context: Context) -> Message:
    """Train the received model; reply Δ and this client's embedding (the extra)."""
    cfg, cid, pid, data = setup(context)
    delta, metrics, embedding = local_update(
        cfg, cid, pid, data, config_of(msg), from_record(arrays_of(msg))
    )
    return train_reply(msg, delta, metrics, {"embedding": embedding})


@app.evaluate(HYPERFEDZERO)
def evaluate(msg: Message, context: Context) -> Message:
    """Zero-shot: e from this client's unlabelled data (or the server's mean
    embedding, for the global model), classifier from h, then evaluate."""
    cfg, _, _, data = setup(context)
    net = net_from(cfg, from_record(arrays_of(msg)))
    given = config_of(msg).get(GLOBAL_EMBEDDING)
    if isinstance(given, list):
        embedding = torch.tensor([float(v) for v in given])
        if embedding.shape != (net.embed_dim,) or not torch.isfinite(embedding).all():
            raise ValueError(
                f"'{GLOBAL_EMBEDDING}' must hold {net.embed_dim} finite values"
            )
    else:
        embedding = net.client_embedding(unlabelled(data))
    entropy = float(-(embedding * embedding.clamp_min(1e-12).log()).sum())
    return eval_reply(
        msg, net.personalised_model(embedding), data, **{"embedding-entropy": entropy}
    )
