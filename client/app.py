"""The ClientApp: register, train what the server sends and return the delta, evaluate.

A client holds only its own partition (decided by dataset, partitioner, seed and its
``partition-id``). Every handler replies with plain records: the server never sees
data, labels or per-sample information.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from client.checks import data_identity, error_replies, with_node_config
from client.faults import inject
from client.privacy import clip_and_noise
from client.training import evaluate, steps_for, train_steps
from common.config import RunConfig, parse_run_config
from common.faults import fault_for, parse_plan
from common.models import build_model, count_params
from common.partition import ClientData, class_indicator, load_client_data
from common.records import from_record, to_record

app = ClientApp(mods=[error_replies])  # exceptions become one-line error replies
torch.set_num_threads(int(os.environ.get("HYPERFLOWER_CLIENT_THREADS", "1")))


def client_identity(context: Context, cfg: RunConfig) -> tuple[str, int]:
    """This client's stable id and partition id, from the node config.

    ``client-id`` (deployment) survives a SuperNode restart, unlike Flower's node id;
    without it the partition id is the client id.
    """
    node = context.node_config
    if "partition-id" not in node:
        raise ValueError("node config lacks 'partition-id' (pass --node-config "
                         "\"partition-id=0 num-partitions=N\" to the SuperNode)")
    pid = int(node["partition-id"])
    parts = int(node.get("num-partitions", cfg.num_clients))
    if parts != cfg.num_clients:
        raise ValueError(f"node config num-partitions={parts} but run config "
                         f"num-clients={cfg.num_clients}; they must match")
    return str(node.get("client-id", pid)), pid


def _setup(context: Context) -> tuple[RunConfig, str, ClientData]:
    cfg = with_node_config(parse_run_config(context.run_config), context.node_config)
    cid, pid = client_identity(context, cfg)
    return cfg, cid, load_client_data(cfg, pid)


def _seed(cfg: RunConfig, cid: str, msg_cfg: ConfigRecord,
          purpose: str = "") -> torch.Generator:
    """A generator fixed by (seed, client, round, phase): resumes replay exactly."""
    phase = str(msg_cfg.get("phase", "")) + purpose
    entropy = [cfg.seed, int(msg_cfg.get("round", 0)),
               *[ord(c) for c in cid], *[ord(c) for c in phase]]
    state = np.random.SeedSequence(entropy).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _model_from(cfg: RunConfig, params: ArrayRecord) -> torch.nn.Module:
    model = build_model(cfg.model, cfg.num_classes)
    model.load_state_dict(from_record(params), strict=True)
    return model


@app.query()
def register(msg: Message, context: Context) -> Message:
    """Registration: stable id, and of sample counts, parameter count K_i and class
    indicator r_i only what the server's query names in ``fields``."""
    cfg, cid, data = _setup(context)
    _, pid = client_identity(context, cfg)
    available = {
        "num-train": lambda: len(data.y_train), "num-val": lambda: len(data.y_val),
        "num-test": lambda: len(data.y_test),
        "param-count": lambda: count_params(build_model(cfg.model, cfg.num_classes)),
        "classes": lambda: class_indicator(data.y_train, cfg.num_classes),
    }
    # only what the server asks for leaves the client (a method that promises
    # "r_i only" asks for nothing else); no list means everything above
    asked = str(msg.content["config"].get("fields", ",".join(available))).split(",")
    info = {"client-id": cid, "partition-id": pid, **data_identity(cfg)}
    info.update({k: available[k]() for k in asked if k in available})
    return Message(RecordDict({"info": ConfigRecord(info)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received parameters locally and return Δ = θ_trained − θ_received."""
    cfg, cid, data = _setup(context)
    _, pid = client_identity(context, cfg)
    delta, metrics = local_update(cfg, cid, pid, data, msg.content["config"],
                                  msg.content["params"])
    return Message(RecordDict({"delta": to_record(delta),
                               "metrics": MetricRecord(metrics)}), reply_to=msg)


def local_update(cfg: RunConfig, cid: str, pid: int, data: ClientData,
                 msg_cfg: ConfigRecord, params: ArrayRecord
                 ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The body of a train reply: (Δ, metrics) after training ``params`` on ``data``.

    Shared by the train handler and offline personalisation (server/personalize.py),
    so a new client fitted without a server trains exactly as it would in a run.
    """
    received = from_record(params)
    model = _model_from(cfg, params)
    steps = int(msg_cfg.get("local-steps", steps_for(
        len(data.y_train), cfg.batch_size, cfg.local_epochs, cfg.local_steps)))
    result = train_steps(model, data.x_train, data.y_train, steps, cfg.batch_size,
                         cfg.inner_lr, cfg.inner_momentum, cfg.inner_weight_decay,
                         _seed(cfg, cid, msg_cfg), cfg.local_clip_norm)
    trained = dict(model.named_parameters())
    delta = {k: trained[k].detach() - v for k, v in received.items()}
    delta, norm = clip_and_noise(delta, cfg.dp_clip, cfg.dp_noise,
                                 _seed(cfg, cid, msg_cfg, "dp"))
    metrics = {"num-examples": len(data.y_train), "train-loss": result.loss,
               "train-acc": result.accuracy, "steps": result.steps, "delta-norm": norm}
    fault = fault_for(parse_plan(cfg.fault_injection), pid,
                      int(msg_cfg.get("round", 0))) if cfg.fault_injection else None
    if fault:
        delta, metrics = inject(fault, delta, metrics, cfg.round_timeout,
                                cfg.max_reply_mb)
    return delta, metrics


@app.evaluate()
def evaluate_model(msg: Message, context: Context) -> Message:
    """Evaluate the received parameters on this client's validation and test splits."""
    cfg, _, data = _setup(context)
    model = _model_from(cfg, msg.content["params"])
    val_loss, val_acc, n_val = evaluate(model, data.x_val, data.y_val)
    test_loss, test_acc, n_test = evaluate(model, data.x_test, data.y_test)
    metrics = MetricRecord({"val-loss": val_loss, "val-acc": val_acc, "num-val": n_val,
                            "test-loss": test_loss, "test-acc": test_acc,
                            "num-examples": n_test})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


from client import lora as _lora_handlers  # noqa: E402,F401  (HyperFLoRA actions)
