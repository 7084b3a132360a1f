"""HyperFLoRA's settings (Lu et al.): LoRA shape, pairing, pre-training.

The strategy is server/strategies/hyperflora.py, the client handlers client/lora.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.methods._hypernet import HYPERNET_SETTINGS
from common.settings import MethodSpec, Setting, above, at_least, register_method

if TYPE_CHECKING:
    from common.config import RunConfig


def _targets(value: str) -> str | None:
    return (
        None
        if value.strip(", ")
        else (
            "must be 'auto' or module name patterns separated by commas, e.g. "
            "'fc1,fc2,fc3'"
        )
    )


def _validate(cfg: RunConfig) -> None:
    from common.config import ConfigError

    if cfg.pretrain_rounds == 0 and not cfg.pretrained_model:
        raise ConfigError(
            "pretrain-rounds",
            "HyperFLoRA needs a pre-trained base: "
            "pretrain-rounds >= 1 or a pretrained-model file",
        )


HYPERFLORA = register_method(
    MethodSpec(
        name="hyperflora",
        summary="a hypernetwork generates LoRA adapters from class indicators",
        settings={
            **HYPERNET_SETTINGS,
            "lora-rank": Setting(1, "LoRA rank r", check=at_least(1), fingerprint=True),
            "lora-alpha": Setting(
                1.0, "LoRA scale α (update α/r · B A)", check=above(0.0)
            ),
            "lora-targets": Setting(
                "auto",
                "adapted modules ('auto' or name patterns)",
                check=_targets,
                fingerprint=True,
            ),
            "lora-lr": Setting(
                0.0, "adapters' local learning rate (0 = inner-lr)", check=at_least(0.0)
            ),
            "hyperflora-variant": Setting(
                "paired",
                "pairing variant",
                choices=("standard", "sequential", "paired", "head"),
                fingerprint=True,
            ),
            "pair-exchanges": Setting(
                3, "relays i → j per pair and round", check=at_least(1)
            ),
            "pretrain-rounds": Setting(
                20, "FedAvg rounds of phase 1", check=at_least(0)
            ),
            "pretrain-epochs": Setting(
                0, "local epochs a phase-1 round (0 = local-steps)", check=at_least(0)
            ),
            "pretrained-model": Setting(
                "", "a pretrained.pt to reuse instead of phase 1"
            ),
            "finetune-steps": Setting(
                50,
                "participants' local fine-tuning for the upper reference row",
                check=at_least(0),
            ),
        },
        nonparticipant_protocol="adapters generated from the class indicator r_i; "
        "no training, no data",
        validate=_validate,
    )
)
