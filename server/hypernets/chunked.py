"""A chunked hypernetwork: one shared output head, reused for every chunk of θ.

pFedHN's per-tensor heads hold ``hidden × |θ|`` weights (about 6.2 M for LeNet-5);
a chunked generator (von Oswald et al., 2020; HyperFedZero; MH-pFedHN) instead emits
θ in chunks of ``chunk-size`` values from one head that is conditioned on a learnable
chunk embedding c_j, so its size barely depends on the target network.

    f   = MLP(v)                              trunk, ``layers`` × ``hidden`` with ReLU
    z_j = ReLU(U f + V c_j + b)               one per chunk j = 1 … ceil(|θ| / chunk)
    θ   = concat_j(W z_j + w₀)[:|θ|]          cut into the target's tensors

Choice where the description ("e → MLP → for each chunk j, with c_j, a linear map to
chunk-size values") is open: a purely linear map of [f, c_j] would give every chunk
the *same* client-dependent part (W_f f), so the map is taken after one ReLU layer
over [f, c_j] (written U f + V c_j above), which keeps the per-chunk outputs
client-specific. Every chunk of every client in a batch is produced by broadcasting,
in one forward: no Python loop over chunks or clients, nothing to ``vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from server.hypernets.pertensor import mlp_trunk


class ChunkedHyperNet(nn.Module):
    """h(v; φ): embedding v -> every tensor of the target network, chunk by chunk.

    Same call contract as :class:`server.hypernets.pertensor.PerTensorHyperNet`: a
    batch of embeddings (B, d) yields ``{name: (B, *shape)}`` in the target's order.
    """

    def __init__(self, embed_dim: int, target_shapes: Mapping[str, torch.Size],
                 hidden: int = 100, layers: int = 3, chunk_size: int = 576,
                 chunk_embed_dim: int = 16) -> None:
        super().__init__()
        self.trunk = mlp_trunk(embed_dim, hidden, layers)
        self.shapes = {k: torch.Size(s) for k, s in target_shapes.items()}
        self.sizes = [int(s.numel()) for s in self.shapes.values()]
        self.total = sum(self.sizes)
        self.chunk_size = chunk_size
        self.num_chunks = math.ceil(self.total / chunk_size)
        self.chunk_embeddings = nn.Parameter(torch.randn(self.num_chunks,
                                                         chunk_embed_dim))
        self.mix_features = nn.Linear(hidden, hidden)
        self.mix_chunks = nn.Linear(chunk_embed_dim, hidden, bias=False)
        self.head = nn.Linear(hidden, chunk_size)

    def flat(self, embeddings: torch.Tensor) -> torch.Tensor:
        """All generated values of each client, shape (B, |θ|)."""
        features = self.mix_features(self.trunk(embeddings))          # (B, h)
        per_chunk = self.mix_chunks(self.chunk_embeddings)             # (n, h)
        z = torch.relu(features[:, None, :] + per_chunk[None, :, :])  # (B, n, h)
        chunks = self.head(z)                                          # (B, n, c)
        return chunks.flatten(1)[:, :self.total]

    def forward(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generated tensors, each of shape (B, *target_shape)."""
        flat = self.flat(embeddings)
        parts = torch.split(flat, self.sizes, dim=1)
        return {k: p.reshape(-1, *s) for (k, s), p in zip(self.shapes.items(), parts,
                                                            strict=True)}
