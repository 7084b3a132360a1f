"""pFedDSH's settings: client batches, neuron masks over the hypernetwork with sparse
mask regularisation, data-free replay, and the FedAvg row on the same batch schedule.

The strategy is server/strategies/pfeddsh.py, the client handlers
client/handlers/pfeddsh.py, the method page docs/pfeddsh.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from common.methods._hypernet import HYPERNET_SETTINGS
from common.methods.pfedhn import PFEDHN
from common.partition import split_participants
from common.settings import (
    MethodSpec,
    Setting,
    above,
    at_least,
    in_range,
    register_method,
)

if TYPE_CHECKING:
    from common.config import RunConfig

#: Target models with BatchNorm (DeepInversion inverts BN statistics).
BN_MODELS = ("cnn-bn",)


def batch_partitions(
    num_clients: int, holdout: float, batches: int, seed: int
) -> list[list[int]]:
    """The participants' partition ids in each client batch (seeded, near-equal).

    Every process (server, tests, a deployment script choosing which SuperNodes to
    start later) gets the same split from the same keys.
    """
    participants, _ = split_participants(num_clients, holdout, seed)
    order = np.random.default_rng([seed, 4243]).permutation(participants)
    return [sorted(int(p) for p in part) for part in np.array_split(order, batches)]


def _validate(cfg: RunConfig) -> None:
    from common.config import ConfigError

    if cfg.model == "resnet18":
        raise ConfigError(
            "model",
            "pFedDSH's masked hypernetwork has one head per target tensor (hn-hidden "
            "× |θ| weights and as many mask scores): for resnet18's 11.2M weights "
            "that is over a billion; a chunked masked generator is not built yet, "
            "use cnn-bn",
        )
    if cfg.model not in BN_MODELS:
        raise ConfigError(
            "model",
            f"pFedDSH inverts BatchNorm statistics: use a "
            f"model with BN ({', '.join(BN_MODELS)})",
        )
    batches = cfg.client_batches
    if batches > cfg.participants_count:
        raise ConfigError(
            "client-batches", f"must be <= the {cfg.participants_count} participants"
        )
    if cfg.num_rounds % batches:
        raise ConfigError(
            "num-rounds",
            f"must be a multiple of client-batches "
            f"({batches}): each batch trains num-rounds / "
            "client-batches rounds",
        )
    if cfg.batch_learner == "fedavg":
        for key, on in (("masks", cfg.masks), ("replay", cfg.replay)):
            if on:
                raise ConfigError(
                    key,
                    'must be false with batch-learner = "fedavg": FedAvg on the '
                    "batch schedule has one global model, no hypernetwork to mask "
                    "or replay into",
                )
    if (cfg.num_rounds // batches) % cfg.eval_every:
        raise ConfigError(
            "eval-every",
            "must divide the rounds of a batch "
            f"({cfg.num_rounds // batches}), so every batch ends with "
            "an evaluation",
        )


PFEDDSH = register_method(
    MethodSpec(
        name="pfeddsh",
        summary="clients join in batches; batch masks over one hypernetwork, "
        "data-free replay from BN statistics",
        settings={
            **HYPERNET_SETTINGS,
            "embed-dim": PFEDHN.settings["embed-dim"],
            "client-batches": Setting(
                3,
                "batches the participants join in (each trains "
                "num-rounds / client-batches rounds)",
                check=at_least(1),
                fingerprint=True,
            ),
            "batch-learner": Setting(
                "hypernetwork",
                "what learns on the batch schedule: pFedDSH's hypernetwork, or "
                "one FedAvg global model (the paper's FedAvg row; needs "
                "masks = false, replay = false)",
                choices=("hypernetwork", "fedavg"),
                fingerprint=True,
            ),
            "masks": Setting(
                True,
                "batch-specific binary masks over the hypernetwork trunk's "
                "neurons (false: one plain shared hypernetwork)",
                fingerprint=True,
            ),
            "mask-penalty": Setting(
                1.0,
                "sparse mask regularisation: weight λ of λ ḡ Σ_u c_u σ(s_u) over "
                "the trunk's units, relative to the layer's mean unit gradient ḡ "
                "(0: masks learn without a sparsity push)",
                check=at_least(0.0),
                fingerprint=True,
            ),
            "mask-budget": Setting(
                0.0,
                "sparsity target: the share of each trunk layer's units of highest "
                "score the penalty spares (0: it pushes every unit, and a mask "
                "keeps shrinking while its batch trains)",
                check=in_range(0, 1),
                fingerprint=True,
            ),
            "mask-budget-scope": Setting(
                "all",
                "what the budget counts: 'all' (a batch keeps at most β of each "
                "layer, reused units included) or 'new' (a diagnostic: at most β "
                "of the units no earlier batch uses, plus at most β of those it "
                "reuses, so a later batch may claim as many new units as a "
                "fresh hypernetwork)",
                choices=("all", "new"),
                fingerprint=True,
            ),
            "mask-settle": Setting(
                0.0,
                "share of each batch's last rounds in which its mask no longer "
                "learns (the weights train under a fixed mask; 0: it learns to the "
                "end)",
                check=in_range(0, 1),
                fingerprint=True,
            ),
            "mask-reuse-cost": Setting(
                0.5,
                "c_u of a unit an earlier batch already uses, as a share of a "
                "free unit's (1): reuse is cheaper than claiming",
                check=in_range(0, 1, closed_high=True),
                fingerprint=True,
            ),
            "mask-sparsity": Setting(
                0.5,
                "share of each trunk layer's units a new batch's mask scores "
                "start off (seeded); the scores then learn which units it needs",
                check=in_range(0, 1),
                fingerprint=True,
            ),
            "mask-lr": Setting(
                0.1,
                "Adam learning rate of the mask scores (they start at ±0.5)",
                check=above(0.0),
                fingerprint=True,
            ),
            "replay": Setting(
                True,
                "data-free replay: DeepInversion from a new batch's trained "
                "models and their BN statistics, then fine-tuning for earlier "
                "batches",
                fingerprint=True,
            ),
            "di-steps": Setting(
                200, "DeepInversion optimisation steps per model", check=at_least(1)
            ),
            "di-images": Setting(
                32, "synthetic images per model of the new batch", check=at_least(1)
            ),
            "di-lr": Setting(
                0.1, "Adam learning rate of the synthetic images", check=above(0.0)
            ),
            "di-bn-weight": Setting(
                1.0, "weight of BN-statistic matching", check=at_least(0.0)
            ),
            "di-tv-weight": Setting(
                1e-3, "weight of the total-variation prior", check=at_least(0.0)
            ),
            "di-l2-weight": Setting(
                1e-4, "weight of the L2 prior on images", check=at_least(0.0)
            ),
            "replay-steps": Setting(
                20,
                "fine-tuning steps per earlier batch on the synthetic images",
                check=at_least(0),
            ),
            "replay-lr": Setting(
                0.01, "SGD learning rate of that fine-tuning", check=above(0.0)
            ),
            "replay-accept": Setting(
                "always",
                "keep every replay (always, as the paper), or only a batch's "
                "whose clients' validation accuracy does not drop (val: our "
                "gate, an ablation)",
                choices=("always", "val"),
                fingerprint=True,
            ),
            "pa-reference": Setting(
                True,
                "also train an independent learner (same settings) on "
                "each new batch alone (same rounds) for PA",
            ),
        },
        nonparticipant_protocol="the mean participant embedding through the last "
        "batch's mask; BN statistics from a forward pass on the "
        "client's own data (no training)",
        validate=_validate,
    )
)
