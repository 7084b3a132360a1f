"""The embedding store: one trainable embedding per client, keyed by stable client id.

Rows are allocated on first registration and kept for the whole run (and across
resumes, through the checkpoint), so a client whose Flower node id changes after a
restart gets its own embedding back. Lookups are by index, so the cost of a round
depends on the clients sampled, not on how many are registered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class EmbeddingStore(nn.Module):
    """Client id -> embedding row (a trainable parameter), with per-client metadata."""

    def __init__(
        self, capacity: int, dim: int, init_std: float = 1.0, seed: int = 0
    ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(capacity, dim, generator=gen) * init_std)
        self.index: dict[str, int] = {}
        self.metadata: dict[str, dict[str, Any]] = {}

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return self.weight.shape[1]

    def add(self, client_id: str, metadata: dict[str, Any] | None = None) -> int:
        """Give ``client_id`` a row (or return its existing one) and record metadata."""
        if client_id not in self.index:
            if len(self.index) >= self.weight.shape[0]:
                raise RuntimeError(
                    f"embedding store full ({self.weight.shape[0]} "
                    f"clients); cannot add {client_id!r}"
                )
            self.index[client_id] = len(self.index)
        if metadata is not None:
            self.metadata[client_id] = dict(metadata)
        return self.index[client_id]

    def rows(self, client_ids: Sequence[str]) -> torch.Tensor:
        """Row indices of the given clients (KeyError names an unknown client)."""
        try:
            idx = [self.index[c] for c in client_ids]
        except KeyError as exc:
            raise KeyError(f"client {exc.args[0]!r} is not registered") from None
        return torch.tensor(idx, dtype=torch.long, device=self.weight.device)

    def forward(self, client_ids: Sequence[str]) -> torch.Tensor:
        """Embeddings v_i of the given clients, shape (len(client_ids), d)."""
        return self.weight[self.rows(client_ids)]

    def get_extra_state(self) -> dict[str, Any]:
        return {"index": dict(self.index), "metadata": dict(self.metadata)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.index = dict(state["index"])
        self.metadata = dict(state["metadata"])
