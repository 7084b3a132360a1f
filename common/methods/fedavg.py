"""The reference rows: FedAvg (one global model) and local-only training.

They own no settings beyond the shared ones; their strategies are in
server/strategies/fedavg.py and clients use the plain handlers.
"""

from __future__ import annotations

from common.settings import MethodSpec, register_method

FEDAVG = register_method(
    MethodSpec(
        name="fedavg",
        summary="McMahan et al. (2017): one global model, deltas averaged",
        nonparticipant_protocol="global model, no training",
        personalizable=True,
    )
)

LOCAL = register_method(
    MethodSpec(
        name="local",
        summary="every participant trains only its own model",
        nonparticipant_protocol="none: a client that never trains has no model",
        personalizable=False,
    )
)
