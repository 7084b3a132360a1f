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
extractor stays small.

**h's size** (:func:`size_h`, run-config value 0 = "by the rule" for ``hfz-hidden``,
``hfz-chunk-size`` and ``hfz-chunk-embed-dim``): the paper keeps |θ_f| + |θ_h| close
to |θ_c|, the classifier h generates, and finds a much larger h slows convergence
and a much smaller one loses zero-shot accuracy. The rule sizes h to ≈ |θ_c|
(:data:`H_TARGET`; within [:data:`H_LOW`, :data:`H_HIGH`] × |θ_c|): a chunk per
class row (chunk = F, the feature width), chunk embeddings of min(16, chunks) values,
n-hidden = 1 (the paper's two trunk layers), and the trunk width whose |θ_h| lies
closest to |θ_c|. |θ_f| = 2·P·(F + 1) (f and ``noisy``) is fixed by P and F, so
|θ_f| + |θ_h| ≈ (1 + 2P/C)·|θ_c| for a C-class linear classifier: the paper's ≈ 1 when
C ≫ 2P, 4.2 with P = 16 and 10 classes; the model then ships ≈ |θ_g| + |θ_f| + |θ_c|,
within 1.1× FedAvg's |θ_g| + |θ_c| on the MLP and LeNet-5 backbones.

**The generator** (``hfz-generator``): ``e-only`` (default) has no e-independent
learnable path: no per-chunk biases, so every generated value is W·ReLU(U·t(e) + a +
V·c_j) scaled (changing e changes every value), with the balanced scale of
:class:`~common.hypernets.chunked.ChunkedGenerator` so that an SGD step on h's head
moves θ_c about as much as a plain classifier's own step. ``biased`` is the earlier
form, kept as an ablation: per-chunk biases over every value plus the e-dependent part
under a fixed σ multiplier (e then gets almost no gradient; docs/hyperfedzero.md).
The e-only h reads e standardised ((e − 1/P) / the spread of typical simplex points),
so calibrating its first mixing layer does not blow up the gradient of the trunk's
biases, which every e shares.

Because the classifier sits exactly where the target network's last layer was, a
client's *personalised* model — g and the classifier generated for its e — is the
plain target network (:meth:`HyperFedZeroNet.personalised`): evaluation, ``hyperflower
personalize`` and saved models need nothing HyperFedZero-specific.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

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
#: h's generator forms: no e-independent path (default) or per-chunk biases (ablation)
GENERATORS = ("e-only", "biased")
#: The size rule's target |θ_h| / |θ_c| and the accepted range around it.
H_TARGET, H_LOW, H_HIGH = 1.0, 0.8, 1.25
#: Config key of an evaluate message that fixes the embedding (the global model:
#: the participants' mean embedding, sent by the server).
GLOBAL_EMBEDDING = "hfz-embedding"


@dataclass(frozen=True)
class HSizes:
    """h's architecture: trunk width and depth, chunk size, chunk-embedding size."""

    hidden: int
    n_hidden: int
    chunk_size: int
    chunk_embed_dim: int


def classifier_size(feature_dim: int, num_classes: int) -> int:
    """|θ_c|: the generated Linear(F, C), weight and bias."""
    return num_classes * (feature_dim + 1)


def extractor_size(feature_dim: int, embed_dim: int) -> int:
    """|θ_f|: f and NoisyEmbed's ``noisy``, one Linear(F, P) each."""
    return 2 * embed_dim * (feature_dim + 1)


def h_size(embed_dim: int, total: int, sizes: HSizes, chunk_bias: bool) -> int:
    """|θ_h| of a :class:`ChunkedHyperNet` generating ``total`` values, in closed
    form: trunk, U and a, V, W, chunk embeddings (and the chunk biases)."""
    w, k, d = sizes.hidden, sizes.chunk_size, sizes.chunk_embed_dim
    chunks = math.ceil(total / k)
    trunk = embed_dim * w + w + sizes.n_hidden * (w * w + w)
    out = trunk + (w * w + w) + d * w + w * k + chunks * d
    return out + (chunks * k if chunk_bias else 0)


def size_h(
    feature_dim: int,
    num_classes: int,
    embed_dim: int,
    hidden: int = 0,
    chunk_size: int = 0,
    chunk_embed_dim: int = 0,
    n_hidden: int = 1,
) -> HSizes:
    """h's sizes by the rule, each value given > 0 kept as given.

    Why: the paper keeps h about the size of what it generates; an h hundreds of
    times the classifier (the earlier fixed [300, 300], chunk 576 on a 1,010-value
    classifier) ships that much more each round and learns slowly. The rule: chunk =
    F (one chunk per class row of the weight, the bias in one more), chunk
    embeddings of min(16, chunks) values, and the trunk width w ≥ 2 whose |θ_h| (the
    e-only form) lies closest to :data:`H_TARGET` · |θ_c|.
    """
    total = classifier_size(feature_dim, num_classes)
    k = chunk_size or min(feature_dim, total)
    d = chunk_embed_dim or min(16, math.ceil(total / k))
    if hidden:
        return HSizes(hidden, n_hidden, k, d)
    target = H_TARGET * total

    def size(w: int) -> int:
        return h_size(embed_dim, total, HSizes(w, n_hidden, k, d), False)

    best = 2
    for w in range(2, 4097):
        if abs(size(w) - target) < abs(size(best) - target):
            best = w
        if size(w) > target:
            break
    return HSizes(best, n_hidden, k, d)


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
        hidden: int = 0,
        n_hidden: int = 1,
        chunk_size: int = 0,
        chunk_embed_dim: int = 0,
        scale_in_weights: bool = False,
        image_shape: tuple[int, int, int] = DEFAULT_SHAPE,
        generator: str = "e-only",
    ) -> None:
        """``hidden``, ``chunk_size``, ``chunk_embed_dim`` 0: by the size rule
        (:func:`size_h`); ``generator``: ``e-only`` or the ``biased`` ablation."""
        super().__init__()
        if backbone not in CLASSIFIER_OF:
            raise ValueError(
                f"hyperfedzero supports the backbones "
                f"{', '.join(CLASSIFIER_OF)}, not {backbone!r}"
            )
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}")
        if generator not in GENERATORS:
            raise ValueError(f"generator must be one of {GENERATORS}")
        self.backbone_name, self.conditioning = backbone, conditioning
        self.generator_form = generator
        #: h's input is (e − 1/P) / e_scale for the e-only generator, e otherwise
        self.e_scale = 0.0
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
        self.h_sizes = size_h(
            self.feature_dim,
            num_classes,
            embed_dim,
            hidden,
            chunk_size,
            chunk_embed_dim,
            n_hidden,
        )
        if conditioning == "input":
            self.classifier = nn.Linear(self.feature_dim + embed_dim, num_classes)
        if conditioning == "generate":
            shapes = {
                k: p.shape
                for k, p in nn.Linear(self.feature_dim, num_classes).named_parameters()
            }
            sizes = self.h_sizes
            self.h = ChunkedHyperNet(
                embed_dim,
                shapes,
                sizes.hidden,
                sizes.n_hidden,
                sizes.chunk_size,
                sizes.chunk_embed_dim,
                scale_in_weights=scale_in_weights and generator == "biased",
                chunk_bias=generator == "biased",
                balanced=generator == "e-only",
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
            if generator == "e-only":
                # h reads e standardised (centred on the uniform embedding, the
                # probe's spread scaled to 1), so calibration need not blow U up
                # by 1/spread: a large U would multiply the gradient of the
                # trunk's biases (levers shared by every e) far above the rest
                self.e_scale = float((probe - 1 / embed_dim).std())
            self.h.generator.calibrate(self.h.trunk(self.h_input(probe)))

    # ---- sizes ----------------------------------------------------------------
    def size_report(self) -> dict[str, Any]:
        """|θ_c|, |θ_f|, |θ_h|, |θ_g| and the ratios the size rule is about:
        (|θ_f| + |θ_h|) / |θ_c|, and the values this model's state dict ships each
        way each round against FedAvg's (g plus a plain classifier)."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        shipped = sum(t.numel() for t in self.state_dict().values())
        fedavg = sum(t.numel() for t in self.g.state_dict().values())
        theta_c = classifier_size(self.feature_dim, self.num_classes)
        theta_f, theta_g = count(self.extractor), count(self.g)
        theta_h = count(self.h) if self.h is not None else 0
        if self.classifier is not None:  # option 1: a plain classifier on [feat, e]
            theta_h = count(self.classifier)
        return {
            "theta_c": theta_c,
            "theta_f": theta_f,
            "theta_h": theta_h,
            "theta_g": theta_g,
            "f_plus_h_over_c": (theta_f + theta_h) / theta_c,
            "h_over_c": theta_h / theta_c,
            # every value of the state dict travels each way each round
            "model_over_fedavg": shipped / (fedavg + theta_c),
            "generator": self.generator_form,
            **asdict(self.h_sizes),
        }

    # ---- pieces ---------------------------------------------------------------
    def h_input(self, embedding: torch.Tensor) -> torch.Tensor:
        """What h reads for embeddings (…, P): standardised for the e-only
        generator (a fixed affine map), e itself for the biased ablation."""
        if not self.e_scale:
            return embedding
        return (embedding - 1 / self.embed_dim) / self.e_scale

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
            out = self.h(self.h_input(embedding.reshape(1, -1)))
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
            cfg.hfz_generator,
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
