"""What every ClientApp handler shares: the app, setup, identity, seeding, replies.

Handlers of each method live in their own module under ``client/handlers/`` and
register on :data:`app` (``@app.train("lora")`` …); this module imports none of them,
so there is no import cycle. Every handler starts with :func:`setup` (validated run
config, stable client id, this client's data), seeds its randomness with
:func:`seed_for`, and ends a train reply with :func:`train_reply`, which applies the
same privacy (clipping and noise of deltas) and fault-injection tail for every
method. Registration (:func:`register`) is shared too: a method adds what its
clients may report with :func:`registration_field`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from flwr.app import (
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from client.checks import data_identity, error_replies, with_node_config
from client.timing import mark, timing_mod
from common.config import RunConfig, load_plugins, parse_run_config
from common.models import build_model, count_params
from common.partition import (
    ClientData,
    class_indicator,
    held_out_partitions,
    load_client_data,
)
from common.protocol import EXTRAS
from common.records import config_of, to_record
from common.training import evaluate


class LazyClientApp(ClientApp):
    """Flower's ClientApp that imports a message's handler module on first use
    (:func:`client.handlers.load_for`): a per-message deployment process then
    imports one method's handlers, not every method's.

    Handler modules register on this process's :data:`app`. A simulation hands
    each Ray worker a pickled copy of the app loaded in its driver (registered
    before any handler module was imported), so every call dispatches through the
    process's own :data:`app`, never through a copy's empty registry.
    """

    def __init__(self, mods: list[Any]) -> None:
        super().__init__(mods=mods)
        self._prepared: set[str] = set()

    def __call__(self, message: Message, context: Context) -> Message:
        """Register what the message needs (the run's plugins, then its handler
        module) and let Flower dispatch it through this process's app."""
        own = app
        kind = message.metadata.message_type
        if kind not in own._prepared:
            load_plugins(context.run_config)
            from client.handlers import load_for  # they import this module

            load_for(kind)
            own._prepared.add(kind)
        return ClientApp.__call__(own, message, context)


# timing marks (written only when asked); exceptions become one-line error replies
app = LazyClientApp(mods=[timing_mod, error_replies])
torch.set_num_threads(int(os.environ.get("HYPERFLOWER_CLIENT_THREADS", "1")))


@app.lifespan()
def _plugins(context: Context) -> Iterator[None]:
    """Import the run's plugin modules before Flower looks up a message's handler,
    so a method defined outside this package can register its handlers."""
    load_plugins(context.run_config)
    yield


def client_identity(context: Context, cfg: RunConfig) -> tuple[str, int]:
    """This client's stable id and partition id, from the node config.

    ``client-id`` (deployment) survives a SuperNode restart, unlike Flower's node id;
    without it the partition id is the client id.
    """
    node = context.node_config
    if "partition-id" not in node:
        raise ValueError(
            "node config lacks 'partition-id' (pass --node-config "
            '"partition-id=0 num-partitions=N" to the SuperNode)'
        )
    pid = int(node["partition-id"])
    parts = int(node.get("num-partitions", cfg.num_clients))
    if parts != cfg.num_clients:
        raise ValueError(
            f"node config num-partitions={parts} but run config "
            f"num-clients={cfg.num_clients}; they must match"
        )
    return str(node.get("client-id", pid)), pid


def setup(context: Context) -> tuple[RunConfig, str, int, ClientData]:
    """The validated run config, this client's id and partition id, and its data."""
    cfg = with_node_config(parse_run_config(context.run_config), context.node_config)
    cid, pid = client_identity(context, cfg)
    data = load_client_data(cfg, pid)
    mark("data-loaded")
    return cfg, cid, pid, data


def train_reply(
    msg: Message,
    delta: dict[str, torch.Tensor],
    metrics: dict[str, Any],
    extras: dict[str, torch.Tensor] | None = None,
) -> Message:
    """A train reply: the delta, the metrics and, when the method declares them,
    extra arrays (validated by the server like the delta)."""
    mark("trained")
    records: dict[str, Any] = {
        "delta": to_record(delta),
        "metrics": MetricRecord(metrics),
    }
    if extras:
        records[EXTRAS] = to_record(extras)
    return Message(RecordDict(records), reply_to=msg)


def eval_reply(
    msg: Message, model: torch.nn.Module, data: ClientData, **extra: float
) -> Message:
    """An evaluate reply: loss and accuracy on this client's validation and test
    splits (and any extra metrics the handler adds)."""
    val_loss, val_acc, n_val = evaluate(model, data.x_val, data.y_val)
    test_loss, test_acc, n_test = evaluate(model, data.x_test, data.y_test)
    metrics = MetricRecord(
        {
            "val-loss": val_loss,
            "val-acc": val_acc,
            "num-val": n_val,
            "test-loss": test_loss,
            "test-acc": test_acc,
            "num-examples": n_test,
            **extra,
        }
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


#: What a client may report at registration, by field name: (run config, client
#: data, Flower context) -> value. A method's handler module adds its own fields.
RegistrationField = Callable[[RunConfig, ClientData, Context], Any]
REGISTRATION_FIELDS: dict[str, RegistrationField] = {
    "num-train": lambda cfg, data, ctx: len(data.y_train),
    "num-val": lambda cfg, data, ctx: len(data.y_val),
    "num-test": lambda cfg, data, ctx: len(data.y_test),
    "param-count": lambda cfg, data, ctx: count_params(
        build_model(cfg.model, cfg.num_classes, image_shape=cfg.image_shape)
    ),
    "classes": lambda cfg, data, ctx: class_indicator(data.y_train, cfg.num_classes),
}


def registration_field(name: str) -> Callable[[RegistrationField], RegistrationField]:
    """Register a field a method's clients may report at registration."""

    def decorate(fn: RegistrationField) -> RegistrationField:
        REGISTRATION_FIELDS[name] = fn
        return fn

    return decorate


@app.query()
def register(msg: Message, context: Context) -> Message:
    """Registration: stable id, and of the registration fields (sample counts,
    parameter count K_i, class indicator r_i, …) only what the server's query names
    in ``fields``; a held-out client sends ``nonparticipant-fields`` instead when the
    query names them (lazy registration asks both roles in one query, and the
    client knows its role from the seeded holdout split, as the server does)."""
    cfg, cid, pid, data = setup(context)
    # only what the server asks for leaves the client (a method that promises
    # "r_i only" asks for nothing else); no list means every field
    query = config_of(msg)
    asked = str(query.get("fields", ",".join(REGISTRATION_FIELDS)))
    if "nonparticipant-fields" in query and pid in held_out_partitions(
        cfg.num_clients, cfg.holdout, cfg.seed
    ):
        asked = str(query["nonparticipant-fields"])
    # the data's fingerprint and preprocessing always: the server checks that every
    # client holds the dataset the config names
    info: dict[str, Any] = {"client-id": cid, "partition-id": pid, **data_identity(cfg)}
    info.update(
        {
            k: REGISTRATION_FIELDS[k](cfg, data, context)
            for k in asked.split(",")
            if k in REGISTRATION_FIELDS
        }
    )
    return Message(RecordDict({"info": ConfigRecord(info)}), reply_to=msg)
