"""pFedHN (Shamsian et al., ICML 2021): one hypernetwork generates every client's model.

Each sampled client gets θ_i = h(v_i; φ), trains it and returns Δ_i; the server
back-propagates −Δ_i through h (:mod:`server.update`). With ``clients-per-round=1``
this is the original algorithm; with more it is the "parallel" variant (gradients
averaged over the round, uniform or by sample count: ``weighting``).

Choices where the paper is silent, each a run-config key:
- embeddings get no weight decay (as in the authors' code), the hypernet does;
- a non-participant's embedding starts at the mean of the trained participants'
  embeddings and is fitted for ``novel-rounds`` federated exchanges with φ frozen
  (SGD, ``novel-lr``), then its generated model is evaluated. This needs local
  training on the held-out client, so the number is flagged as such in summaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from logging import INFO
from typing import TYPE_CHECKING, Any

import torch
from flwr.common.logger import log

from server.hypernets.chunked import ChunkedHyperNet
from server.hypernets.pertensor import PerTensorHyperNet
from server.store import EmbeddingStore
from server.strategies.base import HyperflowerStrategy, Params
from server.update import hypernet_step, round_weights
from server.validation import ClientUpdate

if TYPE_CHECKING:
    from server.loop import Runner


def make_optimizer(kind: str, groups: list[dict[str, Any]], lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """The server optimiser named by ``server-optimizer`` (SGD or Adam)."""
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


@contextmanager
def frozen(module: torch.nn.Module):
    """Temporarily stop gradients into ``module`` (φ frozen for novel clients)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class PFedHN(HyperflowerStrategy):
    """Personalised federated hypernetwork over a per-client embedding store."""

    name = "pfedhn"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.store = EmbeddingStore(cfg.num_clients, cfg.resolved_embed_dim,
                                    seed=cfg.seed).to(self.device)
        for cid, info in sorted(self.registry.clients.items(),
                                key=lambda kv: kv[1].partition_id):
            self.store.add(cid, {"partition-id": info.partition_id})
        if cfg.hypernet == "chunked":  # run-config key `hypernet`
            self.hnet: torch.nn.Module = ChunkedHyperNet(
                cfg.resolved_embed_dim, self.shapes, cfg.hn_hidden, cfg.hn_layers,
                cfg.chunk_size, cfg.chunk_embed_dim).to(self.device)
        else:
            self.hnet = PerTensorHyperNet(cfg.resolved_embed_dim, self.shapes,
                                          cfg.hn_hidden, cfg.hn_layers).to(self.device)
        self.optimizer = make_optimizer(
            cfg.server_optimizer,
            [{"params": list(self.hnet.parameters())},
             {"params": [self.store.weight], "weight_decay": 0.0}],
            cfg.server_lr, cfg.server_momentum, cfg.server_weight_decay)

    def _unbatch(self, batch: dict[str, torch.Tensor]) -> list[Params]:
        n = next(iter(batch.values())).shape[0]
        return [{k: v[i].detach().cpu() for k, v in batch.items()} for i in range(n)]

    def generate(self, client_ids: Sequence[str]) -> list[Params]:
        """θ_i = h(v_i; φ) for each client, generated in one batched forward."""
        with torch.no_grad():
            return self._unbatch(self.hnet(self.store(client_ids)))

    def apply_updates(self, server_round: int,
                      updates: list[ClientUpdate]) -> dict[str, float]:
        """The shared hypernetwork step on φ and the sampled clients' v_i."""
        weights = round_weights([u.num_examples for u in updates], self.cfg.weighting)
        norm = hypernet_step(self.hnet, self.store([u.client_id for u in updates]),
                             [{k: d.to(self.device) for k, d in u.delta.items()}
                              for u in updates],
                             weights, self.optimizer,
                             [*self.hnet.parameters(), self.store.weight],
                             self.cfg.clip_norm)
        return {"grad-norm": norm}

    def nonparticipant_params(self, runner: Runner) -> dict[str, Params] | None:
        """Fit only new embeddings for held-out clients (φ frozen), then generate."""
        held_out = self.registry.nonparticipants
        if not held_out:
            return {}
        with torch.no_grad():
            start = self.store(self.registry.participants).mean(0, keepdim=True)
        v_new = start.repeat(len(held_out), 1).clone().requires_grad_(True)
        optimizer = torch.optim.SGD([v_new], lr=self.cfg.novel_lr)
        with frozen(self.hnet):
            for step in range(self.cfg.novel_rounds):
                with torch.no_grad():
                    params = self._unbatch(self.hnet(v_new))
                updates = runner.train_exchange(held_out, params, phase=f"novel-{step}")
                log(INFO, "novel clients: embedding fit %d/%d (%d replies)", step + 1,
                    self.cfg.novel_rounds, len(updates))
                if not updates:
                    continue
                rows = [held_out.index(u.client_id) for u in updates]
                hypernet_step(lambda v, rows=rows: self.hnet(v[rows]), v_new,
                              [{k: d.to(self.device) for k, d in u.delta.items()}
                               for u in updates],
                              torch.ones(len(updates)), optimizer, [v_new], 0.0)
        with torch.no_grad():
            return dict(zip(held_out, self._unbatch(self.hnet(v_new)), strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "hnet": self.hnet.state_dict(),
                "store": self.store.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.hnet.load_state_dict(state["hnet"])
        self.store.load_state_dict(state["store"])
        self.optimizer.load_state_dict(state["optimizer"])

    def hypernet_params(self) -> int:
        return sum(p.numel() for p in self.hnet.parameters())
