"""The reference rows: FedAvg (one global model), FedProx and local-only training.

FedProx owns ``proximal-mu``; the others no settings beyond the shared ones. Their
strategies are in server/strategies/fedavg.py and clients use the plain handlers.
"""

from __future__ import annotations

from common.settings import MethodSpec, Setting, at_least, register_method

#: The held-out reference of a method that trains its new clients (pFedHN's
#: embedding fit): the same number of exchanges of the same local steps.
HELD_OUT = {
    "heldout-train-rounds": Setting(
        0,
        "held-out clients train this many exchanges of local-steps before they "
        "are evaluated: FedAvg fine-tunes its global model, local-only trains "
        "from the initial model (0 = FedAvg's global model as it is, local-only "
        "nothing); set it to novel-rounds for a like-for-like row beside "
        "pFedHN's embedding fit",
        check=at_least(0),
    ),
}

FEDAVG = register_method(
    MethodSpec(
        name="fedavg",
        summary="McMahan et al. (2017): one global model, deltas averaged",
        settings=HELD_OUT,
        nonparticipant_protocol="global model, no training",
        personalizable=True,
        lazy_registration=True,
    )
)

LOCAL = register_method(
    MethodSpec(
        name="local",
        summary="every participant trains only its own model",
        settings=HELD_OUT,
        nonparticipant_protocol="none: a client that never trains has no model",
        personalizable=False,
        lazy_registration=True,
    )
)

FEDPROX = register_method(
    MethodSpec(
        name="fedprox",
        summary="Li et al. (2020): FedAvg with the proximal term μ/2 ‖w − w_global‖² "
        "in each client's local loss",
        settings={
            **HELD_OUT,
            "proximal-mu": Setting(
                0.01,
                "FedProx's μ: weight of μ/2 ‖w − w_global‖² in the local loss "
                "(0 = FedAvg exactly)",
                check=at_least(0.0),
            ),
        },
        nonparticipant_protocol="global model, no training",
        personalizable=True,
        lazy_registration=True,
    )
)
