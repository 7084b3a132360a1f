"""HyperFedZero's client model (Zhou et al., 2025): g, f with NoisyEmbed, h.

    features   = g(x)                                  the backbone: the run's target
                                                       network without its last layer
    e_x        = softmax(f(feat) + z ⊙ softplus(noisy(feat)))   z ~ N(0, I) only in
                                                       training (NoisyEmbed), z = 0 else
    e          = mean_x e_x                            the client's distribution
                                                       embedding (batch / all its data)
    θ_c        = h(e)                                  option 2 (default): a chunked
                                                       hypernetwork generates the
                                                       classifier, applied through
                                                       ``torch.func.functional_call``
    logits     = classifier(features; θ_c)             option 1 (ablation): a plain
                                                       classifier on [features, e]

f and ``noisy`` read g's features (one linear map each to P values), so the
extractor stays small (the paper's |θ_f| + |θ_h| ≈ |θ_c| spirit). Because the
classifier sits exactly where the target network's last layer was, a client's
*personalised* model — g and the classifier generated for its e — is the plain target
network (:meth:`HyperFedZeroNet.personalised`): evaluation, ``hyperflower
personalize`` and saved models need nothing HyperFedZero-specific.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call

from common.hypernets.chunked import ChunkedHyperNet
from common.models import DEFAULT_SHAPE, build_model

if TYPE_CHECKING:
    from common.config import RunConfig

#: Where each supported backbone keeps its classifier (the layer h generates).
CLASSIFIER_OF: dict[str, str] = {"mlp": "net.3", "lenet5": "fc3", "cnn": "fc3"}
CONDITIONINGS = ("generate", "input")
#: Config key of an evaluate message that fixes the embedding (the global model:
#: the participants' mean embedding, sent by the server).
GLOBAL_EMBEDDING = "hfz-embedding"


class NoUnlabelledDataError(ValueError):
    """A client has no unlabelled data to compute its distribution embedding from."""


def balancing_penalty(
    embeddings: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """α · Var(P·ē)/Mean(P·ē) + β · mean_x(−Σ_p e_x,p log e_x,p) over rows e_x.

    The first term keeps the embedding dimensions evenly used across the batch
    (against collapse onto a few dimensions), the second makes each sample's
    embedding confident (samples cluster on specific dimensions). Var is the
    population variance over the P dimensions; 0 · log 0 counts as 0.
    """
    p = embeddings.shape[1]
    scaled = p * embeddings.mean(0)
    balance = scaled.var(unbiased=False) / scaled.mean().clamp_min(1e-12)
    entropy = -(embeddings * embeddings.clamp_min(1e-12).log()).sum(1).mean()
    return alpha * balance + beta * entropy


class NoisyEmbed(nn.Module):
    """The distribution extractor f with the learnable noise scale ``noisy``.

    ``e_x = softmax(f(h) + z ⊙ softplus(noisy(h)))`` with z ~ N(0, I) in training
    mode when ``enabled``; z = 0 in eval mode (and always when disabled).
    """

    def __init__(self, in_features: int, dim: int, enabled: bool = True) -> None:
        super().__init__()
        self.f = nn.Linear(in_features, dim)
        self.noisy = nn.Linear(in_features, dim)
        self.enabled = enabled

    def forward(
        self, features: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Per-sample embeddings (N, P), rows on the probability simplex."""
        return self.both(features, generator)[0]

    def both(
        self, features: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(e_x as :meth:`forward` gives them, the noise-free softmax(f(h))): the
        same rows outside training or with the noise off."""
        logits = self.f(features)
        clean = torch.softmax(logits, dim=1)
        if not (self.training and self.enabled):
            return clean, clean
        scale = nn.functional.softplus(self.noisy(features))
        z = torch.randn(logits.shape, generator=generator).to(logits)
        return torch.softmax(logits + z * scale, dim=1), clean


class HyperFedZeroNet(nn.Module):
    """g, NoisyEmbed (f, noisy) and h (or option 1's plain classifier), one module,
    aggregated as a whole by FedAvg."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        embed_dim: int = 16,
        noisy: bool = True,
        conditioning: str = "generate",
        hidden: int = 300,
        n_hidden: int = 1,
        chunk_size: int = 576,
        chunk_embed_dim: int = 16,
        scale_in_weights: bool = False,
        image_shape: tuple[int, int, int] = DEFAULT_SHAPE,
    ) -> None:
        super().__init__()
        if backbone not in CLASSIFIER_OF:
            raise ValueError(
                f"hyperfedzero supports the backbones "
                f"{', '.join(CLASSIFIER_OF)}, not {backbone!r}"
            )
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}")
        self.backbone_name, self.conditioning = backbone, conditioning
        self.embed_dim, self.num_classes = embed_dim, num_classes
        self.image_shape = image_shape
        self.g = build_model(backbone, num_classes, image_shape=image_shape)
        owner, _, attr = CLASSIFIER_OF[backbone].rpartition(".")
        last = self.g.get_submodule(CLASSIFIER_OF[backbone])
        assert isinstance(last, nn.Linear)
        self.feature_dim = last.in_features
        # g ends where the classifier was: its output is the features
        setattr(self.g.get_submodule(owner), attr, nn.Identity())
        self.extractor = NoisyEmbed(self.feature_dim, embed_dim, noisy)
        self.classifier: nn.Linear | None = None
        self.h: ChunkedHyperNet | None = None
        if conditioning == "input":
            self.classifier = nn.Linear(self.feature_dim + embed_dim, num_classes)
        if conditioning == "generate":
            shapes = {
                k: p.shape
                for k, p in nn.Linear(self.feature_dim, num_classes).named_parameters()
            }
            self.h = ChunkedHyperNet(
                embed_dim,
                shapes,
                hidden,
                n_hidden,
                chunk_size,
                chunk_embed_dim,
                scale_in_weights=scale_in_weights,
            )
            # embeddings live on the simplex, not around N(0, 1): calibrate the
            # generator on typical simplex points so e moves θ_c from the start
            probe = torch.softmax(
                2.0
                * torch.randn(
                    256, embed_dim, generator=torch.Generator().manual_seed(0)
                ),
                dim=1,
            )
            self.h.generator.calibrate(self.h.trunk(probe))

    # ---- pieces ---------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """g(x)."""
        return self.g(x)

    def sample_embeddings(
        self, features: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """e_x for each sample (NoisyEmbed's noise only in training mode)."""
        return self.extractor(features, generator)

    def classifier_params(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """The classifier (weight (C, F), bias (C,)) for a client embedding (P,).

        Option 2: generated by h; option 1: the plain classifier with e folded into
        its bias (W [feat, e] + b = W_feat feat + (W_e e + b)), the same function.
        """
        if self.h is not None:
            out = self.h(embedding.reshape(1, -1))
            return {"weight": out["weight"][0], "bias": out["bias"][0]}
        assert self.classifier is not None
        weight = self.classifier.weight
        return {
            "weight": weight[:, : self.feature_dim],
            "bias": self.classifier.bias
            + weight[:, self.feature_dim :] @ embedding.reshape(-1),
        }

    def classify(
        self, features: torch.Tensor, params: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Logits of the classifier ``params`` on ``features`` (functional call of
        a Linear holding no weights of its own)."""
        return functional_call(_LINEAR, dict(params), (features,))

    def forward(
        self,
        x: torch.Tensor,
        embedding: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, per-sample embeddings) for a batch; the classifier is made for
        ``embedding`` (default: the batch's mean embedding, as in training)."""
        feats = self.features(x)
        per_sample = self.sample_embeddings(feats, generator)
        e = per_sample.mean(0) if embedding is None else embedding
        return self.classify(feats, self.classifier_params(e)), per_sample

    def training_outputs(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, e_x with NoisyEmbed's noise, e_x without it) for a training
        batch; the classifier is made from the mean of the noisy rows."""
        feats = self.features(x)
        noisy, clean = self.extractor.both(feats, generator)
        logits = self.classify(feats, self.classifier_params(noisy.mean(0)))
        return logits, noisy, clean

    # ---- deployment -----------------------------------------------------------
    @torch.no_grad()
    def client_embedding(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """e of a client: the mean of e_x over all its (unlabelled) data, no noise."""
        if len(x) == 0:
            raise NoUnlabelledDataError(
                "no unlabelled data: a distribution embedding needs at least one sample"
            )
        was = self.training
        self.eval()
        total = torch.zeros(self.embed_dim)
        for start in range(0, len(x), batch_size):
            total += self.sample_embeddings(
                self.features(x[start : start + batch_size])
            ).sum(0)
        self.train(was)
        return total / len(x)

    @torch.no_grad()
    def personalised(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """The plain target network's parameters for this embedding: g's weights and
        the classifier made for e, under the target's own names."""
        was = self.training
        self.eval()
        theta = self.classifier_params(embedding)
        self.train(was)
        params = {k: v.detach().clone() for k, v in self.g.named_parameters()}
        layer = CLASSIFIER_OF[self.backbone_name]
        params.update({f"{layer}.{k}": v.detach().clone() for k, v in theta.items()})
        return params

    def personalised_model(self, embedding: torch.Tensor) -> nn.Module:
        """The plain target network for this embedding, ready to evaluate."""
        model = build_model(
            self.backbone_name, self.num_classes, image_shape=self.image_shape
        )
        model.load_state_dict(self.personalised(embedding), strict=True)
        return model


#: A Linear without weights of its own: the generated classifier's functional shell.
_LINEAR = nn.Linear(1, 1).to("meta")


def build_net(cfg: RunConfig, seed: int | None = None) -> HyperFedZeroNet:
    """The run's HyperFedZero model (g from ``model``, f, noisy, h), seeded if asked:
    the server's initial global model and every client's shell for received weights."""

    shape = cfg.image_shape

    def make() -> HyperFedZeroNet:
        return HyperFedZeroNet(
            cfg.model,
            cfg.num_classes,
            cfg.hfz_embed_dim,
            cfg.hfz_noisy,
            cfg.hfz_conditioning,
            cfg.hfz_hidden,
            cfg.hfz_n_hidden,
            cfg.hfz_chunk_size,
            cfg.hfz_chunk_embed_dim,
            cfg.hfz_scale_in_weights,
            shape,
        )

    if seed is None:
        return make()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


def net_from(cfg: RunConfig, state: Mapping[str, torch.Tensor]) -> HyperFedZeroNet:
    """The run's model holding received (or checkpointed) weights."""
    net = build_net(cfg)
    net.load_state_dict(dict(state), strict=True)
    return net
