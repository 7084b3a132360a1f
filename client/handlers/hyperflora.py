"""The ClientApp's HyperFLoRA handlers: LoRA adapters on a frozen, cached base model.

Registered on :data:`client.runtime.app` under Flower's named actions:

- ``evaluate.lora``: evaluate θ_pret with the received tensors (adapters, or the
  generated head of "+θ_hd") on this client's validation and test splits. With
  ``finetune-steps`` in its config the client first fine-tunes them on its own
  training data (the participants' upper reference; nothing is sent back).
- ``train.lora``: train exactly the received tensors with θ_pret frozen and return
  Δ = ρ_trained − ρ_received. With ``classes`` (a 0/1 vector) in its config the
  client trains only on its samples of those classes: one hop of pair training.

The base model θ_pret travels once: a message that carries a ``base`` ArrayRecord
stores it in ``context.state`` (kept per node by Flower, in simulation and in
deployment), tagged with the server's ``base-id``; later messages name the id and
carry adapters only. A client without the named base answers with an error, and the
server sends the base again with its next message. A bystander only ever receives
``evaluate.lora`` messages; the ``lora-train-messages`` count it reports shows it.
"""

from __future__ import annotations

import torch
from flwr.app import ConfigRecord, Context, Message
from torch import nn

from client.runtime import app, eval_reply, setup, train_reply
from common.config import RunConfig
from common.local_update import finish_update, seed_for, train_locally, update_metrics
from common.models import build_model
from common.models.lora import add_lora, generated_tensors, pack, unpack
from common.protocol import LORA, RHO
from common.records import arrays_of, as_int, config_of, from_record
from common.training import steps_for

BASE_KEY, BASE_META, COUNTERS = "lora-base", "lora-base-meta", "lora-counters"


def cached_base(msg: Message, context: Context) -> dict[str, torch.Tensor]:
    """θ_pret: stored from this message if it carries it, else from the node's state."""
    base_id = str(msg.content["config"].get("base-id", ""))
    state = context.state
    if "base" in msg.content.array_records:
        state[BASE_KEY] = msg.content.array_records["base"]
        state[BASE_META] = ConfigRecord({"base-id": base_id})
    if (
        BASE_KEY not in state.array_records
        or state.config_records[BASE_META].get("base-id") != base_id
    ):
        raise ValueError(
            f"no cached base model {base_id!r} on this node; the server "
            "must send it again"
        )
    return from_record(state.array_records[BASE_KEY])


def lora_model(
    cfg: RunConfig, base: dict[str, torch.Tensor], packed: dict[str, torch.Tensor]
) -> tuple[nn.Module, list[str]]:
    """θ_pret with adapters on ``lora-targets``, the received tensors loaded into it;
    returns the model and the received names in packing order.

    The message carries the generated tensors packed in one array (``rho``), in the
    order :func:`~common.models.lora.generated_tensors` gives for this model and
    variant, the same on the server. Exactly the received tensors are trainable (the
    adapters, or for "+θ_hd" the encoder adapters and the head); adapters not
    received stay at B = 0 (no effect). No ``rho``: θ_pret alone.
    """
    model = build_model(cfg.model, cfg.num_classes, image_shape=cfg.image_shape)
    model.load_state_dict(base, strict=True)
    add_lora(model, cfg.lora_targets, cfg.lora_rank, cfg.lora_alpha)
    spec = {
        k: v.shape
        for k, v in generated_tensors(model, cfg.hyperflora_variant == "head").items()
    }
    unknown = sorted(set(packed) - {RHO})
    if unknown:
        raise ValueError(f"unexpected records in params: {unknown}")
    received = unpack(packed[RHO], spec) if RHO in packed else {}
    params = dict(model.named_parameters())
    unknown = sorted(set(received) - set(params))
    if unknown:
        raise ValueError(f"received tensors the adapted model does not have: {unknown}")
    with torch.no_grad():
        for name, value in received.items():
            if params[name].shape != value.shape:
                raise ValueError(
                    f"'{name}' has shape {tuple(value.shape)}, the model "
                    f"expects {tuple(params[name].shape)}"
                )
            params[name].copy_(value)
    for name, param in params.items():
        param.requires_grad_(name in received)
    return model, list(received)


def restrict(
    x: torch.Tensor, y: torch.Tensor, classes: list[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples whose label is marked 1 in ``classes`` (all of them when None)."""
    if classes is None:
        return x, y
    keep = torch.tensor([bool(c) for c in classes], dtype=torch.bool)[y]
    return x[keep], y[keep]


def lora_lr(cfg: RunConfig) -> float:
    """The adapters' local learning rate: ``lora-lr``, or ``inner-lr`` when it is 0."""
    return cfg.lora_lr or cfg.inner_lr


def _count(context: Context, what: str) -> int:
    """Increment and return this node's count of HyperFLoRA messages of a kind."""
    if COUNTERS not in context.state.config_records:
        context.state[COUNTERS] = ConfigRecord({})
    counters = context.state.config_records[COUNTERS]
    counters[what] = as_int(counters.get(what, 0)) + 1
    return as_int(counters[what])


def _counted(context: Context, what: str) -> int:
    record = context.state.config_records.get(COUNTERS)
    return as_int(record.get(what, 0)) if record is not None else 0


@app.train(LORA)
def train_lora(msg: Message, context: Context) -> Message:
    """Train the received adapters on θ_pret (frozen); return Δρ = ρ_fin − ρ_init."""
    cfg, cid, pid, data = setup(context)
    _count(context, "train")
    msg_cfg = config_of(msg)
    packed = from_record(arrays_of(msg))
    model, names = lora_model(cfg, cached_base(msg, context), packed)
    if not names:
        raise ValueError("a train.lora message without adapters")
    received = {
        k: v.detach().clone() for k, v in model.named_parameters() if k in names
    }
    classes = msg_cfg.get("classes")
    x, y = restrict(
        data.x_train,
        data.y_train,
        None if not isinstance(classes, list) else [as_int(c) for c in classes],
    )
    if len(y) == 0:
        raise ValueError(
            "none of this client's training samples is in the classes "
            "of the pseudo-client"
        )
    steps = steps_for(len(y), cfg.batch_size, cfg.local_epochs, cfg.local_steps)
    result = train_locally(
        cfg, model, x, y, steps, seed_for(cfg, cid, msg_cfg), lora_lr(cfg)
    )
    trained = dict(model.named_parameters())
    delta = {
        RHO: pack({k: trained[k].detach() - v for k, v in received.items()}, names)
    }
    metrics = update_metrics(len(y), result)
    return train_reply(msg, *finish_update(cfg, cid, pid, msg_cfg, delta, metrics))


@app.evaluate(LORA)
def evaluate_lora(msg: Message, context: Context) -> Message:
    """Evaluate θ_pret + received tensors (optionally fine-tuned locally first)."""
    cfg, cid, _, data = setup(context)
    msg_cfg = config_of(msg)
    packed = (
        from_record(arrays_of(msg)) if "params" in msg.content.array_records else {}
    )
    model, names = lora_model(cfg, cached_base(msg, context), packed)
    finetune = as_int(msg_cfg.get("finetune-steps", 0))
    if finetune > 0:
        if not names:
            raise ValueError("finetune-steps needs adapters to fine-tune")
        train_locally(
            cfg,
            model,
            data.x_train,
            data.y_train,
            finetune,
            seed_for(cfg, cid, msg_cfg, "finetune"),
            lora_lr(cfg),
        )
    return eval_reply(
        msg, model, data, **{"lora-train-messages": _counted(context, "train")}
    )
