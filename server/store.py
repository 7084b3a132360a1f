"""The embedding store: one trainable embedding per client, keyed by stable client id.

Rows are allocated on first registration and kept for the whole run (and across
resumes, through the checkpoint), so a client whose Flower node id changes after a
restart gets its own embedding back. Lookups are by index, so the cost of a round
depends on the clients sampled, not on how many are registered. The table is one
``num-clients × d`` tensor (100,000 clients at the default d ≤ 26: 10 MB) and a
client costs a dict entry, not a module.
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
        self._taken: set[int] | None = None  # rows in use (index's values)

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return self.weight.shape[1]

    def add(
        self,
        client_id: str,
        metadata: dict[str, Any] | None = None,
        row: int | None = None,
    ) -> int:
        """Give ``client_id`` a row (or return its existing one) and record metadata.

        ``row`` asks for a particular row (lazy registration asks for the client's
        partition id, so a client's initial embedding does not depend on when it
        registered); taken or out of range, the lowest free row is used. Without
        it, rows are given in registration order.
        """
        if client_id not in self.index:
            capacity = self.weight.shape[0]
            if len(self.index) >= capacity:
                raise RuntimeError(
                    f"embedding store full ({capacity} clients); cannot add "
                    f"{client_id!r}"
                )
            if self._taken is None or len(self._taken) != len(self.index):
                self._taken = set(self.index.values())
            if row is None or not 0 <= row < capacity or row in self._taken:
                row = len(self.index)
                while row in self._taken:  # rows given by partition id before
                    row = (row + 1) % capacity
            self.index[client_id] = row
            self._taken.add(row)
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
        self._taken = None
