"""HyperFedZero's settings (Zhou et al., 2025): embedding, NoisyEmbed, penalty, h.

The model is common/models/hyperfedzero.py, the strategy
server/strategies/hyperfedzero.py, the client handlers
client/handlers/hyperfedzero.py; docs/hyperfedzero.md explains the method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.settings import MethodSpec, Setting, at_least, register_method

if TYPE_CHECKING:
    from common.config import RunConfig
#: Backbones with a known classifier layer (common.models.hyperfedzero.CLASSIFIER_OF).
HFZ_BACKBONES = ("mlp", "lenet5", "cnn")


def _validate(cfg: RunConfig) -> None:
    """Only backbones whose last layer h can generate; the scale option belongs to
    the biased generator (the e-only one has its own scale)."""
    from common.config import ConfigError

    if cfg.model not in HFZ_BACKBONES:
        raise ConfigError(
            "model",
            f"hyperfedzero generates the classifier of "
            f"{', '.join(HFZ_BACKBONES)}, not {cfg.model!r}",
        )
    if cfg.hfz_scale_in_weights and cfg.hfz_generator != "biased":
        raise ConfigError(
            "hfz-scale-in-weights",
            "applies to hfz-generator='biased' only (the e-only generator "
            "always keeps its scale in W, balanced)",
        )


HYPERFEDZERO = register_method(
    MethodSpec(
        name="hyperfedzero",
        summary="a hypernetwork generates each client's classifier from its "
        "distribution embedding, computed from unlabelled data",
        settings={
            "hfz-embed-dim": Setting(
                16,
                "P, the distribution embedding's size",
                check=at_least(2),
                fingerprint=True,
            ),
            "hfz-noisy": Setting(
                True,
                "NoisyEmbed: learnable Gaussian noise on f's "
                "logits in training (false = the ablation)",
                fingerprint=True,
            ),
            "hfz-alpha": Setting(
                0.1,
                "α, weight of the balancing penalty's Var(P·ē)/Mean(P·ē) term",
                check=at_least(0.0),
            ),
            "hfz-beta": Setting(
                0.1,
                "β, weight of the balancing penalty's mean per-sample entropy term",
                check=at_least(0.0),
            ),
            "hfz-conditioning": Setting(
                "generate",
                "option 2 'generate' (h makes the "
                "classifier from e) or option 1 'input' (e is an "
                "extra classifier input)",
                choices=("generate", "input"),
                fingerprint=True,
            ),
            "hfz-generator": Setting(
                "e-only",
                "h's output: 'e-only' (every generated value depends on e; "
                "balanced scale) or 'biased' (the earlier form, an ablation: "
                "learnable per-chunk biases over every value plus an e-dependent "
                "part under a fixed σ multiplier)",
                choices=("e-only", "biased"),
                fingerprint=True,
            ),
            "hfz-hidden": Setting(
                0,
                "width of h's trunk; 0 = by the size rule (h about the size of the "
                "classifier it generates, docs/hyperfedzero.md); the paper's ResNet "
                "setting is 300",
                check=at_least(0),
                fingerprint=True,
            ),
            "hfz-n-hidden": Setting(
                1,
                "h's trunk: Linear, then n × (ReLU, Linear); 1 "
                "gives the paper's two layers of 300",
                check=at_least(0),
                fingerprint=True,
            ),
            "hfz-chunk-size": Setting(
                0,
                "values per chunk h generates; 0 = by the size rule (the "
                "feature width: a chunk per class row); the paper's ResNet "
                "setting is 576",
                check=at_least(0),
                fingerprint=True,
            ),
            "hfz-chunk-embed-dim": Setting(
                0,
                "size of h's learnable chunk embeddings; 0 = by the size rule "
                "(min(16, chunks))",
                check=at_least(0),
                fingerprint=True,
            ),
            "hfz-scale-in-weights": Setting(
                False,
                "hfz-generator='biased' only: h's output scale in its head's "
                "initial weights (true) or in a fixed multiplier (false; chosen "
                "on validation, docs/tuning.md)",
                fingerprint=True,
            ),
            "hfz-penalty-clean": Setting(
                False,
                "the balancing penalty on the noise-free rows softmax(f(·)) (true) "
                "or on NoisyEmbed's noisy rows (false: its entropy term can then "
                "be lowered by growing the noise instead of sharpening f)",
            ),
            "hfz-shift-batches": Setting(
                0.0,
                "κ > 0: each local batch is drawn with its own class mix q ~ "
                "Dirichlet(κ) over the client's classes, so h learns e → "
                "classifier from within-client label shift (0 = the paper's "
                "plain batches)",
                check=at_least(0.0),
            ),
        },
        nonparticipant_protocol="embedding from its own unlabelled data, classifier "
        "generated by h; no training, no labels",
        personalizable=True,
        validate=_validate,
        # the server's state is one global model and the store of the embeddings
        # of clients that trained: a client registered mid-run needs nothing
        lazy_registration=True,
    )
)
