"""FedProto's settings (Tan et al., AAAI 2022; docs/mh-pfedhn.md, "FedProto"): the
model-heterogeneous baseline of MH-pFedHN's table.

Clients of different architectures share no weights: each sends, per class, the mean
of its representations f_i(x) (its local prototypes) and their counts; the server
averages them per class into global prototypes, which regularise every client's
next local training, CE + λ·MSE(f_i(x), C̄_y). Which architecture a client holds is
decided on the client by the MH keys (``mh-archs``, ``mh-arch-rule``,
``mh-unseen-archs``; :func:`common.methods.mh_pfedhn.arch_for`), so a FedProto run
and an MH-pFedHN run of the same split give every client the same architecture.

The strategy is server/strategies/fedproto.py, the client handlers
client/handlers/fedproto.py, the model split and prototype arithmetic
common/models/prototypes.py.
"""

from __future__ import annotations

from common.config import ConfigError, RunConfig
from common.methods.mh_pfedhn import MH_SETTINGS
from common.settings import MethodSpec, Setting, at_least, register_method

#: The Flower action of FedProto's handlers (``train.fedproto``,
#: ``evaluate.fedproto``).
FEDPROTO = "fedproto"
#: Record of a train/evaluate message holding the global prototypes.
GLOBAL_PROTOS = "protos"
#: Reply extras: the client's local prototypes (C × d) and class counts (C).
LOCAL_PROTOS = "protos"
PROTO_COUNTS = "proto-counts"
#: Registration field: the parameter count of the client's FedProto model (its
#: flat vector's length; the server learns nothing else of the architecture).
PARAM_COUNT = "proto-param-count"

FEDPROTO_SETTINGS: dict[str, Setting] = {
    **{k: MH_SETTINGS[k] for k in ("mh-archs", "mh-arch-rule", "mh-unseen-archs")},
    "fedproto-lambda": Setting(
        1.0,
        "λ of CE + λ·MSE(f(x), global prototype of y) (the authors' code: ld = 1)",
        check=at_least(0.0),
    ),
    "fedproto-dim": Setting(
        84,
        "the representation width every client shares (the input of its final "
        "linear layer; an architecture of another width gets a projection to it)",
        check=at_least(1),
        fingerprint=True,
    ),
    "fedproto-inference": Setting(
        "prototype",
        "what val-acc/test-acc score: the nearest global prototype (the paper's "
        "inference) or the client's own classifier (the other is reported beside)",
        choices=("prototype", "classifier"),
    ),
    "fedproto-weighting": Setting(
        "samples",
        "global prototype of a class: clients' prototypes weighted by their sample "
        "counts of it (the paper's equation) or uniform (the authors' code)",
        choices=("samples", "uniform"),
    ),
    "fedproto-novel-rounds": Setting(
        10,
        "exchanges of local steps a held-out client trains its own model from its "
        "init, regularised by the global prototypes, before it is evaluated",
        check=at_least(0),
    ),
}


def _validate(cfg: RunConfig) -> None:
    """Architectures named and buildable at the data's shape."""
    if not [n for n in str(cfg.mh_archs).split(",") if n]:
        raise ConfigError("mh-archs", "names no architecture")
    from common.data import shape_bound
    from common.models import model_shape_problem

    shape = shape_bound(cfg.dataset, cfg.data_dir)  # None: data not on this host
    if shape is None:
        return
    for key in ("mh-archs", "mh-unseen-archs"):
        for name in [n for n in str(cfg.get(key)).split(",") if n]:
            problem = model_shape_problem(name, shape)
            if problem:
                raise ConfigError(key, f"{name!r} {problem} ({cfg.dataset})")


FEDPROTO_SPEC = register_method(
    MethodSpec(
        name="fedproto",
        summary="Tan et al. (2022): clients of any architecture exchange per-class "
        "mean representations (prototypes), never weights",
        settings=FEDPROTO_SETTINGS,
        nonparticipant_protocol="its own model trained from its init with the "
        "global prototypes' regulariser (needs local steps)",
        personalizable=False,
        validate=_validate,
    )
)
