"""MH-pFedHN and MH-pFedHNGD's settings (docs/mh-pfedhn.md): one hypernetwork for
clients whose models differ, known to the server only by their parameter counts K_i.

The strategies are server/strategies/mh_pfedhn.py; the client handlers
client/handlers/mh.py. Which architecture a client holds is decided on the client
(:func:`arch_for`): its node config's ``arch`` (deployment) or the run-config rule
``mh-arch-rule`` over ``mh-archs`` (simulation); held-out clients alternate between
the participants' pool and ``mh-unseen-archs`` (architectures no participant has).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.config import ConfigError, RunConfig
from common.methods._hypernet import HYPERNET_SETTINGS
from common.models.zoo import ZOO
from common.partition import split_participants
from common.settings import (
    MethodSpec,
    Setting,
    above,
    at_least,
    in_range,
    register_method,
)


def _arch_list(value: Any) -> str | None:
    names = [n for n in str(value).split(",") if n]
    unknown = [n for n in names if n not in ZOO]
    return (
        f"unknown architectures {unknown}; the zoo has {sorted(ZOO)}"
        if unknown
        else None
    )


def _bounds(value: Any) -> str | None:
    try:
        nums = [int(b) for b in str(value).split(",") if b]
    except ValueError:
        return "must be comma-separated integers"
    return None if nums == sorted(set(nums)) else "must be increasing"


MH_SETTINGS: dict[str, Setting] = {
    **HYPERNET_SETTINGS,
    "mh-archs": Setting(
        "mlp-s,bncnn,lenet5,cnn",
        "participants' architectures (simulation; a node config 'arch' overrides)",
        check=_arch_list,
    ),
    "mh-arch-rule": Setting(
        "round-robin",
        "partition id -> architecture of mh-archs",
        choices=("round-robin", "seeded"),
    ),
    "mh-unseen-archs": Setting(
        "mlp-l",
        "architectures only held-out clients hold "
        "(every other held-out client; '' = none)",
        check=_arch_list,
    ),
    "mh-group-rule": Setting(
        "log2",
        "size groups sharing a head: floor(log2 K), "
        "each distinct K, or mh-group-bounds intervals",
        choices=("log2", "exact", "bounds"),
        fingerprint=True,
    ),
    "mh-group-bounds": Setting(
        "",
        "increasing K bounds of the 'bounds' groups [b_j, b_j+1)",
        check=_bounds,
        fingerprint=True,
    ),
    "mh-max-params": Setting(
        1_000_000, "largest K_i any group accepts", check=at_least(1), fingerprint=True
    ),
    "mh-shared-embedding": Setting(
        False,
        "one embedding per size group (the paper's wording) instead of one per client",
        fingerprint=True,
    ),
    "mh-embed-dim": Setting(
        64, "client embedding size (authors: 64)", check=at_least(1), fingerprint=True
    ),
    "mh-chunk-size": Setting(
        3072,
        "values per generated chunk (authors: 3072)",
        check=at_least(1),
        fingerprint=True,
    ),
    "mh-chunk-embed-dim": Setting(
        16,
        "size of the learnable chunk embeddings",
        check=at_least(1),
        fingerprint=True,
    ),
    "mh-init-std": Setting(
        0.05,
        "scale of generated values at the start (the server "
        "does not know the layers, so one scale for all)",
        check=above(0.0),
        fingerprint=True,
    ),
    "mh-base-lr": Setting(
        0.0,
        "step of each size group's shared base (the heads' per-chunk biases) toward "
        "the mean delta of the round's clients of that group, by plain SGD "
        "(1 = FedAvg's step; 0 = the paper: one Adam for the whole hypernetwork)",
        check=at_least(0.0),
        # > 0 takes the bases out of the server's Adam, so a checkpoint's optimiser
        # state fits only the value it was written with.
        fingerprint=True,
    ),
    "mh-embed-lr": Setting(
        0.0, "server lr of the embeddings (0 = server-lr)", check=at_least(0.0)
    ),
    "mh-novel-rounds": Setting(
        10,
        "exchanges fitting a held-out client's embedding "
        "(and, unseen size, its new head)",
        check=at_least(0),
    ),
    "mh-novel-lr": Setting(
        0.1,
        "Adam learning rate of a new client's embedding (its new head: server-lr)",
        check=above(0.0),
    ),
    "mh-novel-head": Setting(
        True,
        "a held-out client of an unseen size group also "
        "fits its new head (the paper's option)",
    ),
}

GD_SETTINGS: dict[str, Setting] = {
    "mh-global-arch": Setting(
        "lenet5", "the lightweight global model (GD)", check=_arch_list
    ),
    "mh-kd-lambda": Setting(
        0.2,
        "λ of (1−λ)·CE + λ·T²·KL (authors: 0.2)",
        check=in_range(0, 1, closed_high=True),
    ),
    "mh-kd-temperature": Setting(
        15.0, "distillation temperature T (authors: 15)", check=above(0.0)
    ),
}


def _validate(cfg: RunConfig) -> None:
    if not [n for n in str(cfg.mh_archs).split(",") if n]:
        raise ValueError("mh-archs names no architecture")
    if (
        cfg.mh_group_rule == "bounds"
        and len([b for b in str(cfg.mh_group_bounds).split(",") if b]) < 2
    ):
        raise ValueError("mh-group-rule=bounds needs at least two mh-group-bounds")
    _check_shapes(cfg)


def _check_shapes(cfg: RunConfig) -> None:
    """Every architecture a client may hold must take the data's images."""
    from common.data import shape_bound
    from common.models import model_shape_problem

    shape = shape_bound(cfg.dataset, cfg.data_dir)  # None: data not on this host
    if shape is None:
        return
    for key in ("mh-archs", "mh-unseen-archs", "mh-global-arch"):
        for name in [n for n in str(cfg.get(key)).split(",") if n]:
            problem = model_shape_problem(name, shape)
            if problem:
                raise ConfigError(key, f"{name!r} {problem} ({cfg.dataset})")


NONPARTICIPANT = (
    "seen size group: embedding fitted with the hypernetwork frozen; "
    "unseen: embedding and a new head (needs local steps)"
)
MH_PFEDHN = register_method(
    MethodSpec(
        name="mh-pfedhn",
        summary="one multi-head hypernetwork for clients of different architectures",
        settings=MH_SETTINGS,
        nonparticipant_protocol=NONPARTICIPANT,
        personalizable=True,
        validate=_validate,
    )
)
MH_PFEDHNGD = register_method(
    MethodSpec(
        name="mh-pfedhngd",
        summary="MH-pFedHN plus a generated global model distilled into every client",
        settings={**MH_SETTINGS, **GD_SETTINGS},
        nonparticipant_protocol=NONPARTICIPANT,
        personalizable=True,
        validate=_validate,
    )
)


def arch_for(
    cfg: RunConfig, partition_id: int, node_config: Mapping[str, Any] | None = None
) -> str:
    """This client's architecture: node config ``arch`` if given (deployment), else the
    run-config rule. Participants take ``mh-archs`` round-robin over their rank (or a
    seeded draw); held-out clients alternate between ``mh-archs`` and, when set,
    ``mh-unseen-archs``. Decided on the client: the server never learns it."""
    if node_config and node_config.get("arch"):
        name = str(node_config["arch"])
        if name not in ZOO:
            raise ValueError(
                f"node config arch={name!r} is not in the zoo {sorted(ZOO)}"
            )
        return name
    archs = [n for n in str(cfg.mh_archs).split(",") if n]
    unseen = [n for n in str(cfg.mh_unseen_archs).split(",") if n]
    inside, held = split_participants(cfg.num_clients, cfg.holdout, cfg.seed)
    if partition_id in held and unseen:
        rank = sorted(held).index(partition_id)
        if rank % 2 == 1:
            return unseen[(rank // 2) % len(unseen)]
        pool, rank = archs, rank // 2
    else:
        pool = archs
        rank = (
            sorted(inside).index(partition_id)
            if partition_id in inside
            else partition_id
        )
    if cfg.mh_arch_rule == "seeded":
        rng = np.random.default_rng([cfg.seed, 12, partition_id])
        return pool[int(rng.integers(len(pool)))]
    return pool[rank % len(pool)]


def group_of(k: int, rule: str, bounds: str, max_params: int) -> tuple[str, int] | None:
    """The size group accepting a parameter count K and that group's capacity (the
    largest K it generates), or None when no group accepts K."""
    if k < 1 or k > max_params:
        return None
    if rule == "exact":
        return f"k{k}", k
    if rule == "bounds":
        edges = [int(b) for b in str(bounds).split(",") if b]
        for low, high in zip(edges[:-1], edges[1:], strict=True):
            if low <= k < high:
                return f"b{low}-{high}", high - 1
        return None
    b = int(math.floor(math.log2(k)))
    return f"2^{b}", min(2 ** (b + 1) - 1, max_params)
