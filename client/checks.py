"""What a ClientApp checks and reports about itself: its errors, its data, its host.

- :func:`error_replies` is a Flower mod around every handler: an exception becomes an
  error reply whose reason is ``"<ExceptionType>: <message>"`` on one line, so the
  server can name the real cause (and count the clients that share it) instead of a
  runtime-specific wrapper with a traceback in it (:mod:`common.errors`).
  ``HYPERFLOWER_DEBUG=1`` also logs the traceback on the client.
- :func:`with_node_config` applies a SuperNode's own ``data-dir`` (node config) over
  the run config's: each host of a deployment may keep its data elsewhere.
- :func:`data_identity` is what registration reports about the data the client
  actually loaded: its content fingerprint and preprocessing (the server checks that
  every client holds the same dataset, and that it is the one the config names).
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Mapping
from logging import ERROR
from typing import Any

from flwr.app import Context, Message
from flwr.common import Error
from flwr.common.constant import ErrorCode
from flwr.common.logger import log

from common.config import RunConfig
from common.data import load_pooled
from common.errors import debug_enabled, describe_exception

#: Node-config keys a SuperNode may set for itself, over the run config.
NODE_OVERRIDES = ("data-dir",)


def error_replies(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower mod: turn a handler's exception into an error reply naming its cause."""
    try:
        return call_next(msg, context)
    except Exception as exc:  # noqa: BLE001 - every failure goes back as a reply
        reason = describe_exception(exc)
        log(
            ERROR,
            "ClientApp (%s, partition %s): %s",
            msg.metadata.message_type,
            context.node_config.get("partition-id", "?"),
            reason,
        )
        if debug_enabled():
            log(ERROR, "%s", traceback.format_exc())
        return Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
            reply_to=msg,
        )


def with_node_config(cfg: RunConfig, node_config: Mapping[str, Any]) -> RunConfig:
    """The run config with this SuperNode's own ``data-dir`` (node config) applied."""
    given = {k: node_config[k] for k in NODE_OVERRIDES if k in node_config}
    if not given:
        return cfg
    return dataclasses.replace(cfg, data_dir=str(given["data-dir"]))


def data_identity(cfg: RunConfig) -> dict[str, Any]:
    """The loaded data's fingerprint and preprocessing, for the registration reply.

    It describes the whole dataset every client of the run holds (its content hash,
    scaling, normalisation and class count), nothing of this client's partition.
    """
    pooled = load_pooled(cfg.dataset, cfg.data_dir, cfg.download)
    return {
        "data-fingerprint": pooled.fingerprint,
        # scale, mean(s), std(s), classes: one mean and std per channel for colour
        "data-norm": [*pooled.norm_values(), float(pooled.num_classes)],
        "data-shape": list(pooled.image_shape),
    }
