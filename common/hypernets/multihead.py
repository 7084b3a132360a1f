"""MH-pFedHN's hypernetwork: a shared trunk and one chunked head per size group.

    f   = trunk(v_i)                                   shared φ_f (:func:`mlp_trunk`)
    θ_i = head_l(f, c_1 … c_τ)[:K_i]                   τ = ceil(K_i / chunk)

``head_l`` is a :class:`~common.hypernets.chunked.ChunkedGenerator` of the group l
that K_i falls in; it holds that group's learnable chunk embeddings c_t and per-chunk
biases, and emits a flat vector cut to each client's K_i. The server knows nothing of
a client's layers, so every generated value starts at one scale (``init_std``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.hypernets.chunked import ChunkedGenerator
from common.hypernets.pertensor import mlp_trunk


class MultiHeadHyperNet(nn.Module):
    """Trunk + heads by group name; :meth:`generate` gives one flat θ_i per client."""

    def __init__(
        self,
        embed_dim: int,
        hidden: int,
        n_hidden: int,
        chunk_size: int,
        chunk_embed_dim: int,
        init_std: float,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.embed_dim, self.hidden = embed_dim, hidden
        self.chunk_size, self.chunk_embed_dim = chunk_size, chunk_embed_dim
        self.init_std = init_std
        self.trunk = mlp_trunk(embed_dim, hidden, n_hidden)
        self.heads = nn.ModuleDict()
        self.capacities: dict[str, int] = {}
        self._probe = torch.randn(
            256, embed_dim, generator=torch.Generator().manual_seed(seed)
        )

    @staticmethod
    def _key(group: str) -> str:
        return group.replace(".", "_")

    def has_head(self, group: str) -> bool:
        """Whether a head for ``group`` exists."""
        return self._key(group) in self.heads

    def add_head(
        self, group: str, capacity: int, like: str | None = None
    ) -> ChunkedGenerator:
        """A new head for ``group`` generating up to ``capacity`` values, calibrated on
        the trunk's features of N(0, 1) probes; ``like`` copies an existing head's
        weights (and the chunk rows both have) as its start."""
        head = ChunkedGenerator(
            self.hidden,
            capacity,
            self.chunk_size,
            self.chunk_embed_dim,
            std=torch.full((capacity,), self.init_std),
        )
        head.to(next(self.trunk.parameters()).device)
        with torch.no_grad():
            head.calibrate(self.trunk(self._probe.to(head.chunk_bias.device)))
            if like is not None:
                src = self.head(like)
                for name in ("mix_features", "mix_chunks", "head"):
                    getattr(head, name).load_state_dict(getattr(src, name).state_dict())
                n = min(head.num_chunks, src.num_chunks)
                head.chunk_embeddings[:n] = src.chunk_embeddings[:n]
                head.chunk_bias[:n] = src.chunk_bias[:n]
        self.heads[self._key(group)] = head
        self.capacities[group] = capacity
        return head

    def head(self, group: str) -> ChunkedGenerator:
        """The head of ``group``."""
        return self.heads[self._key(group)]  # type: ignore[return-value]

    def generate(
        self, embeddings: torch.Tensor, groups: Sequence[str], lengths: Sequence[int]
    ) -> list[torch.Tensor]:
        """θ_i = head_{g_i}(trunk(v_i))[:K_i] for each row i: a list of flat vectors
        (clients of a group share one head forward)."""
        features = self.trunk(embeddings)
        out: list[torch.Tensor | None] = [None] * len(groups)
        for group in dict.fromkeys(groups):
            rows = [i for i, g in enumerate(groups) if g == group]
            longest = max(lengths[i] for i in rows)
            flat = self.head(group)(features[rows], longest)
            for j, i in enumerate(rows):
                out[i] = flat[j, : lengths[i]]
        return [t for t in out if t is not None]

    def get_extra_state(self) -> dict[str, int]:
        return dict(self.capacities)

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.capacities = dict(state)


def build_heads(hnet: MultiHeadHyperNet, capacities: dict[str, int]) -> None:
    """Create the heads of a saved hypernetwork before loading its state dict."""
    for group, cap in capacities.items():
        if not hnet.has_head(group):
            hnet.add_head(group, cap)
