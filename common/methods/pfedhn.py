"""pFedHN's settings (Shamsian et al., ICML 2021): embeddings, generator, new clients.

The strategy is server/strategies/pfedhn.py; clients use the plain handlers.
"""

from __future__ import annotations

from common.methods._hypernet import HYPERNET_SETTINGS
from common.settings import MethodSpec, Setting, above, at_least, register_method

PFEDHN = register_method(
    MethodSpec(
        name="pfedhn",
        summary="one hypernetwork generates every client's model from its embedding",
        settings={
            **HYPERNET_SETTINGS,
            "embed-lr": Setting(
                0.0,
                "server lr of the client embeddings (0 = server-lr, "
                "as the authors' --embed-lr)",
                check=at_least(0.0),
            ),
            "embed-dim": Setting(
                0,
                "client embedding size (0 = 1 + num-clients/4, at most 26: the pFedHN "
                "paper's 100 clients)",
                check=at_least(0),
                fingerprint=True,
            ),
            "pfedhn-input": Setting(
                "embedding",
                "the hypernetwork's input: a trained per-client embedding (the "
                "pFedHN paper, this project's default) or the client's class "
                "indicator r_i (as the HyperFLoRA paper runs pFedHN: held-out "
                "clients are served zero-shot from r_i, never trained)",
                choices=("embedding", "class-indicator"),
                fingerprint=True,
            ),
            "novel-rounds": Setting(
                10, "exchanges fitting a held-out client's embedding", check=at_least(0)
            ),
            "novel-lr": Setting(1.0, "SGD learning rate of that fit", check=above(0.0)),
            "hypernet": Setting(
                "pertensor",
                "the generator: a head per tensor, or chunks",
                choices=("pertensor", "chunked"),
                fingerprint=True,
            ),
            "chunk-size": Setting(
                576,
                "values per generated chunk (hypernet 'chunked')",
                check=at_least(1),
                fingerprint=True,
            ),
            "chunk-embed-dim": Setting(
                16,
                "size of the learnable chunk embeddings",
                check=at_least(1),
                fingerprint=True,
            ),
        },
        nonparticipant_protocol="embedding fitted with the hypernetwork frozen "
        "(needs local steps)",
        personalizable=True,
        lazy_registration=True,
    )
)
