"""A chunked hypernetwork: one shared output head, reused for every chunk of θ.

pFedHN's per-tensor heads hold ``hidden × |θ|`` weights (about 6.2 M for LeNet-5);
a chunked generator (von Oswald et al., 2020; HyperFedZero; MH-pFedHN) instead emits
θ in chunks of ``chunk-size`` values from one head that is conditioned on a learnable
chunk embedding c_j, so its size barely depends on the target network.

    f     = trunk(v)                          the authors' trunk (:func:`mlp_trunk`)
    z_j   = ReLU(U f + a + V c_j)             one per chunk j = 1 … ceil(L / chunk)
    r     = concat_j(W z_j)[:L]               the client- and chunk-dependent part
    θ     = μ + σ ⊙ r + concat_j(b_j)[:L]     μ, σ: the target's init mean / scale;
                                              b_j: a learnable bias per chunk

A purely linear map of [f, c_j] would give every chunk the *same* client-dependent
part (W U f), so the chunk and client parts meet under a ReLU. Three things make the
start sensible (issue 10; the first version generated weights several times larger
than PyTorch's and only ~3 % of its output varied with the client):

- **scale per tensor**: r has about unit variance at initialisation and σ is each
  tensor's default PyTorch init scale (1/√(3·fan-in) for Linear/Conv weights and
  their biases; the reference tensor's own std otherwise), μ its mean (1 for a
  LayerNorm gain), so θ starts at the target's usual init scale, tensor by tensor;
- **client part not drowned**: c_j ~ N(0, 1) and V ~ N(0, 1/dim(c)) give the chunk
  part unit variance, and U, a are set on a probe batch of N(0, 1) embeddings (the
  store's initial distribution) so that U f + a has zero mean and unit variance
  across clients: before the ReLU, client and chunk parts weigh the same;
- **per-chunk biases** b_j (zero at start) are a learnable base in θ's own units
  (not scaled by σ): together they hold one value per generated value, so θ's shared
  part is learnt there at the pace of a per-tensor head's bias, and the network
  generates the client-dependent offset around it. (Scaling the base by σ too would
  slow its SGD steps by σ², ~10⁻³ for LeNet's fc1, and its Adam steps by σ.)

The fixed σ multiplier slows the client-dependent part's plain-SGD steps the same way
(by σ²). Server-side Adam does not mind, but a generator trained by the clients' own
SGD (HyperFedZero's h) barely moves it. ``scale_in_weights`` moves the largest σ into
W's initialisation instead (the same θ at the start, σ/σ_max left as the multiplier:
1 everywhere when one tensor scale covers the whole output, as for HyperFedZero's
classifier), so W learns at the pace of the other weights. It is an option
(``hfz-scale-in-weights``), off by default: on HyperFedZero's Fashion-MNIST split
validation accuracy did not favour it (docs/tuning.md).

``chunk_bias=False`` removes the per-chunk biases b_j, so every generated value
depends on the embedding through the network (HyperFedZero's default ``e-only``
generator: the biases are an e-independent path that absorbs what every client
shares, and e then gets almost no gradient). ``balanced`` is the scale
parametrisation that goes with it: W ~ N(0, σ_max²) and a fixed multiplier
(σ/σ_max)/√hidden, so θ starts at the same scale as above, but one plain-SGD step on
W moves each generated value about as much as the same step moves an ordinary
Linear layer's weight (the step on θ is ∝ ‖z‖²/hidden ≈ 1, not σ²·‖z‖²), and the
gradient reaching the trunk is W's, as in any layer initialised at σ.

:class:`ChunkedGenerator` maps trunk features to a flat vector of any requested
length up to its capacity (MH-pFedHN: one generator per size group, a length K_i per
client); :class:`ChunkedHyperNet` adds the trunk and the named-tensor view of the
target (HyperFedZero: pass only the classifier's shapes). Every chunk of every client
in a batch is produced in one broadcast forward: no Python loop over chunks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

import torch
from torch import nn

from common.hypernets.pertensor import mlp_trunk

#: σ for a tensor whose reference is constant (a LayerNorm gain, a zero-initialised
#: token): small client-dependent variation around μ, as ViTs' 0.02 init.
CONSTANT_TENSOR_STD = 0.02


def _fan_in(weight_shape: torch.Size) -> int:
    return int(math.prod(weight_shape[1:]))


def init_stats(
    shapes: Mapping[str, torch.Size],
    reference: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, tuple[float, float]]:
    """(μ, σ) per tensor: the scale the target's default initialisation gives it.

    Linear/Conv weights (2+ dims) and the biases next to them get PyTorch's default
    ``U(±1/√fan-in)``: μ = 0, σ = 1/√(3·fan-in). With a ``reference`` (a freshly
    initialised target's parameters) any other tensor, or a pair the model
    re-initialised differently, takes the reference's mean and std (σ =
    :data:`CONSTANT_TENSOR_STD` for a constant tensor such as a LayerNorm gain);
    without one, such tensors get μ = 0 and that σ.
    """
    stats: dict[str, tuple[float, float]] = {}
    for name in shapes:
        owner = name.rpartition(".")[0]
        weight = shapes.get(f"{owner}.weight" if owner else "weight")
        default = None
        if weight is not None and len(weight) >= 2:
            bound = 1.0 / math.sqrt(_fan_in(weight))
            default = (0.0, bound / math.sqrt(3.0))
        if reference is None:
            stats[name] = default or (0.0, CONSTANT_TENSOR_STD)
            continue
        ref = reference[name].detach().float()
        uniform_default = (
            default is not None
            and ref.numel() > 1
            and float(ref.std()) > 0
            and float(ref.abs().max()) <= bound * (1 + 1e-5)
        )
        if uniform_default:
            stats[name] = default  # type: ignore[assignment]
            continue
        std = float(ref.std()) if ref.numel() > 1 else 0.0
        stats[name] = (float(ref.mean()), std if std > 0 else CONSTANT_TENSOR_STD)
    return stats


class ChunkedGenerator(nn.Module):
    """Trunk features (B, hidden) -> a flat vector of up to ``capacity`` values.

    ``mean``/``std`` (shape (capacity,)) place each generated value at its tensor's
    init scale; call :meth:`calibrate` with trunk features of typical embeddings so
    that the client-dependent part has unit variance (done by
    :class:`ChunkedHyperNet`).
    """

    def __init__(
        self,
        hidden: int,
        capacity: int,
        chunk_size: int,
        chunk_embed_dim: int,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        scale_in_weights: bool = False,
        chunk_bias: bool = True,
        balanced: bool = False,
    ) -> None:
        super().__init__()
        self.capacity, self.chunk_size = capacity, chunk_size
        #: fixed multiplier of W z (1, or 1/√hidden when ``balanced``)
        self.out_scale = 1.0
        self.num_chunks = math.ceil(capacity / chunk_size)
        self.chunk_embeddings = nn.Parameter(
            torch.randn(self.num_chunks, chunk_embed_dim)
        )
        self.mix_features = nn.Linear(hidden, hidden)  # U, a
        self.mix_chunks = nn.Linear(chunk_embed_dim, hidden, bias=False)  # V
        self.head = nn.Linear(hidden, chunk_size, bias=False)  # W
        self.has_chunk_bias = chunk_bias
        if chunk_bias:
            self.chunk_bias = nn.Parameter(torch.zeros(self.num_chunks, chunk_size))
        else:  # no e-independent learnable path (the attribute reads None)
            self.register_parameter("chunk_bias", None)
        with torch.no_grad():
            nn.init.normal_(self.mix_chunks.weight, std=1 / math.sqrt(chunk_embed_dim))
            # z = ReLU(x) with Var(x) = 2 has E[z²] = 1, so W ~ N(0, 1/hidden) gives
            # the raw output unit variance
            nn.init.normal_(self.head.weight, std=1 / math.sqrt(hidden))
            if balanced:
                # W ~ N(0, σ_max²), θ = μ + (σ/σ_max)/√hidden · W z: the same θ at
                # the start; an SGD step on W moves θ by ∝ ‖z‖²/hidden ≈ 1
                scale = float(std.max()) if std is not None else 1.0
                nn.init.normal_(self.head.weight, std=scale)
                self.out_scale = 1 / math.sqrt(hidden)
                std = std / scale if std is not None else None
            elif scale_in_weights and std is not None:
                # the same θ at the start, but the scale sits in W, not in a fixed
                # multiplier that would slow W's plain-SGD steps by σ²
                scale = float(std.max())
                self.head.weight.mul_(scale)
                std = std / scale
        padded = self.num_chunks * chunk_size
        # constants rebuilt from the shapes; the balanced (new) form leaves them out
        # of the state dict, so they are not shipped with every model
        self.register_buffer(
            "mean", _padded(mean, capacity, padded, 0.0), persistent=not balanced
        )
        self.register_buffer(
            "std", _padded(std, capacity, padded, 1.0), persistent=not balanced
        )

    @torch.no_grad()
    def calibrate(self, features: torch.Tensor) -> None:
        """Set U, a so that U f + a has zero mean and unit std over ``features``."""
        out = self.mix_features(features)
        mu, sd = out.mean(0), out.std(0).clamp_min(1e-8)
        self.mix_features.weight.div_(sd[:, None])
        self.mix_features.bias.sub_(mu).div_(sd)

    def raw(self, features: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """r, the network's part before the init scale, (B, length): unit variance
        at the start."""
        length = self.capacity if length is None else length
        if not 0 < length <= self.capacity:
            raise ValueError(f"length {length} outside (0, {self.capacity}]")
        n = math.ceil(length / self.chunk_size)
        client = self.mix_features(features)  # (B, h)
        chunk = self.mix_chunks(self.chunk_embeddings[:n])  # (n, h)
        z = torch.relu(client[:, None, :] + chunk[None, :, :])  # (B, n, h)
        return self.head(z).flatten(1)[:, :length]  # (B, L)

    def forward(
        self, features: torch.Tensor, length: int | None = None
    ) -> torch.Tensor:
        """θ = μ + σ ⊙ r (+ b, with chunk biases): the first ``length`` values (all
        by default)."""
        raw = self.raw(features, length)
        if self.out_scale != 1.0:
            raw = raw * self.out_scale
        n = raw.shape[1]
        mean, std = cast(torch.Tensor, self.mean), cast(torch.Tensor, self.std)
        out = mean[:n] + std[:n] * raw
        if not self.has_chunk_bias:
            return out
        return out + self.chunk_bias.flatten()[:n]


def _padded(
    values: torch.Tensor | None, length: int, padded: int, fill: float
) -> torch.Tensor:
    out = torch.full((padded,), fill)
    if values is not None:
        out[:length] = values.reshape(-1).float()
    return out


def unflatten(
    flat: torch.Tensor, shapes: Mapping[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """The named-tensor view of flat vectors (B, Σ|shape|): ``{name: (B, *shape)}``."""
    sizes = [int(torch.Size(s).numel()) for s in shapes.values()]
    parts = torch.split(flat, sizes, dim=1)
    return {
        k: p.reshape(-1, *s) for (k, s), p in zip(shapes.items(), parts, strict=True)
    }


class ChunkedHyperNet(nn.Module):
    """h(v; φ): embedding v -> every tensor of the target network, chunk by chunk.

    Same call contract as :class:`common.hypernets.pertensor.PerTensorHyperNet`: a
    batch of embeddings (B, d) yields ``{name: (B, *shape)}`` in the target's order;
    :meth:`flat` gives the flat vector (or its first ``length`` values).
    ``reference`` (a default-initialised target's parameters) sets each tensor's
    init mean and scale (:func:`init_stats`); without it they follow the shapes.
    """

    def __init__(
        self,
        embed_dim: int,
        target_shapes: Mapping[str, torch.Size],
        hidden: int = 100,
        n_hidden: int = 3,
        chunk_size: int = 576,
        chunk_embed_dim: int = 16,
        reference: Mapping[str, torch.Tensor] | None = None,
        probe_std: float = 1.0,
        scale_in_weights: bool = False,
        chunk_bias: bool = True,
        balanced: bool = False,
    ) -> None:
        super().__init__()
        self.trunk = mlp_trunk(embed_dim, hidden, n_hidden)
        self.shapes = {k: torch.Size(s) for k, s in target_shapes.items()}
        self.sizes = [int(s.numel()) for s in self.shapes.values()]
        self.total = sum(self.sizes)
        stats = init_stats(self.shapes, reference)
        mean = torch.cat(
            [
                torch.full((n,), stats[k][0])
                for k, n in zip(self.shapes, self.sizes, strict=True)
            ]
        )
        std = torch.cat(
            [
                torch.full((n,), stats[k][1])
                for k, n in zip(self.shapes, self.sizes, strict=True)
            ]
        )
        self.generator = ChunkedGenerator(
            hidden,
            self.total,
            chunk_size,
            chunk_embed_dim,
            mean,
            std,
            scale_in_weights,
            chunk_bias,
            balanced,
        )
        probe = (
            torch.randn(256, embed_dim, generator=torch.Generator().manual_seed(0))
            * probe_std
        )
        with torch.no_grad():
            self.generator.calibrate(self.trunk(probe))

    @property
    def chunk_size(self) -> int:
        """Values per chunk."""
        return self.generator.chunk_size

    @property
    def num_chunks(self) -> int:
        """Chunks needed for the whole target."""
        return self.generator.num_chunks

    def flat(self, embeddings: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Generated values of each client, shape (B, ``length`` or |θ|)."""
        return self.generator(self.trunk(embeddings), length)

    def forward(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generated tensors, each of shape (B, *target_shape)."""
        return unflatten(self.flat(embeddings), self.shapes)
