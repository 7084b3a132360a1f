"""pFedHN (Shamsian et al., ICML 2021): one hypernetwork generates every client's model.

Each sampled client gets θ_i = h(v_i; φ), trains it and returns Δ_i; the server
back-propagates −Δ_i through h (:mod:`server.update`). With ``clients-per-round=1``
this is the original algorithm; with more it is the "parallel" variant (gradients
averaged over the round, uniform or by sample count: ``weighting``).

The optimiser is the authors' (AvivSham/pFedHN, ``experiments/pfedhn/trainer.py``):
SGD with momentum over two parameter groups, φ at ``server-lr`` and the embeddings at
``embed-lr`` (their ``--embed-lr``; 0 means ``server-lr``, as their default ``None``),
``server-weight-decay`` on both groups, the joint gradient clipped at ``clip-norm``.
In the parallel variant each sampled client's embedding gets its full gradient and φ
the round's weighted average (:func:`server.update.undiluted`; docs/pfedhn.md says
why). Choices where the paper and the authors' code are silent, each a run-config key:
- a non-participant's embedding starts at the mean of the trained participants'
  embeddings and is fitted for ``novel-rounds`` federated exchanges with φ frozen
  (SGD, ``novel-lr``), then its generated model is evaluated. This needs local
  training on the held-out client, so the number is flagged as such in summaries.
  :func:`fit_new_embeddings` is that procedure; the in-run evaluation and offline
  personalisation (:class:`PFedHNPersonalizer`) both call it, client by client (one
  embedding, one forward, one optimiser each), so both give bit-identical models.

With ``pfedhn-input = "class-indicator"`` the hypernetwork's input is the client's
class indicator r_i ∈ {0,1}^K as it reported it at registration (the same field
HyperFLoRA reads, :func:`registered_indicator`), not a trained embedding: only φ is
trained, and a held-out client ("bystander") gets h(r_i; φ) zero-shot, with no
message but its evaluation, as the HyperFLoRA paper runs pFedHN and
pFedHN-Parallel (``clients-per-round`` 1 and M).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from logging import INFO
from typing import TYPE_CHECKING, Any

import torch
from flwr.app import ConfigRecord
from flwr.common.logger import log

from common.config import RunConfig
from common.hypernets.chunked import ChunkedHyperNet
from common.hypernets.pertensor import PerTensorHyperNet, offset_constant_tensors
from common.local_update import local_update
from common.models import build_model, param_shapes
from common.partition import ClientData, class_indicator, split_participants
from common.records import from_record, to_record
from server.paper_cost import pfedhn_cost
from server.personalizers import PersonalizeError, TrainedRun, register_personalizer
from server.registry import ClientRegistry
from server.store import EmbeddingStore
from server.strategies.base import HyperflowerStrategy, Params
from server.update import hypernet_step, round_weights, undiluted
from server.validation import ClientUpdate

if TYPE_CHECKING:
    from server.ops import ServerOps


def make_optimizer(
    kind: str,
    groups: list[dict[str, Any]],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """The server optimiser named by ``server-optimizer`` (SGD or Adam).

    Weight decay and the per-group lr apply to every group, also with Adam (the
    authors' Adam option uses neither: one group, no weight decay).
    """
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, saved: dict[str, Any]
) -> None:
    """Load a checkpointed optimiser state (momentum buffers, Adam moments, step
    counts) but keep this run's hyperparameters: ``server-lr`` and the other optimiser
    keys may change between a run and its resume, and the resumed run must use what
    its config says, not what the checkpoint held."""
    current = [
        {k: v for k, v in group.items() if k != "params"}
        for group in optimizer.param_groups
    ]
    optimizer.load_state_dict(copy.deepcopy(saved))
    for group, hyper in zip(optimizer.param_groups, current, strict=True):
        group.update(hyper)


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


def by_class_indicator(cfg: RunConfig) -> bool:
    """Whether the hypernetwork reads r_i (``pfedhn-input``) instead of embeddings."""
    return bool(cfg.pfedhn_input == "class-indicator")


def registered_indicator(registry: ClientRegistry, client_id: str) -> list[int]:
    """r_i as the client reported it at registration: the 0/1 vector of classes in
    its training split (``common.partition.class_indicator``, computed on the client;
    no counts). HyperFLoRA and pFedHN's class-indicator input both read it here."""
    return [int(v) for v in registry.clients[client_id].meta["classes"]]


def build_hypernet(cfg: RunConfig, shapes: dict[str, torch.Size]) -> torch.nn.Module:
    """pFedHN's hypernetwork for a run config (the strategy and offline tools):
    per-tensor heads, or chunked (run-config key ``hypernet``); its input is the
    embedding size, or K with ``pfedhn-input = "class-indicator"``."""
    # the target's own initialisation: a LayerNorm gain is generated around 1 (and,
    # for the chunked generator, every tensor at its default init scale)
    reference = dict(
        build_model(
            cfg.model, cfg.num_classes, seed=cfg.seed, image_shape=cfg.image_shape
        ).named_parameters()
    )
    in_dim = cfg.num_classes if by_class_indicator(cfg) else cfg.resolved_embed_dim
    if cfg.hypernet == "chunked":
        return ChunkedHyperNet(
            in_dim,
            shapes,
            cfg.hn_hidden,
            cfg.hn_n_hidden,
            cfg.chunk_size,
            cfg.chunk_embed_dim,
            reference={k: reference[k] for k in shapes},
        )
    hnet = PerTensorHyperNet(in_dim, shapes, cfg.hn_hidden, cfg.hn_n_hidden)
    offset_constant_tensors(hnet, {k: reference[k] for k in shapes})
    return hnet


def build_store(cfg: RunConfig) -> EmbeddingStore:
    """The run's embedding store, seeded like the strategy's (before any training)."""
    return EmbeddingStore(cfg.num_clients, cfg.resolved_embed_dim, seed=cfg.seed)


def novel_phase(step: int) -> str:
    """The message phase of embedding-fit step ``step`` (it seeds the client's data
    order, so offline personalisation must use the same name)."""
    return f"novel-{step}"


def novel_start(store: EmbeddingStore, participants: Sequence[str]) -> torch.Tensor:
    """A new client's starting embedding: the mean of the participants', (1, d)."""
    with torch.no_grad():
        return store(list(participants)).mean(0, keepdim=True)


def generate_one(hnet: torch.nn.Module, embedding: torch.Tensor) -> Params:
    """θ = h(v; φ) for one (1, d) embedding, as CPU tensors without a graph."""
    with torch.no_grad():
        return {k: v[0].detach().cpu() for k, v in hnet(embedding).items()}


#: Local training of one embedding-fit step: (step, client ids, their parameters)
#: -> the deltas of the clients that answered (in a run: a train exchange; offline:
#: the client's own update function).
LocalTrain = Callable[[int, list[str], list[Params]], dict[str, Params]]


def fit_new_embeddings(
    hnet: torch.nn.Module,
    start: torch.Tensor,
    client_ids: Sequence[str],
    rounds: int,
    lr: float,
    local_train: LocalTrain,
) -> dict[str, torch.Tensor]:
    """Fit a new embedding per client with φ frozen; return each fitted (1, d) v.

    Every client starts at ``start``; at each of ``rounds`` steps it trains the
    parameters generated from its embedding and returns Δ, and its own SGD (``lr``)
    moves only its v through the shared update (−Δ back-propagated through h). Each
    client has its own forward and optimiser, so the result for a client does not
    depend on which other clients were fitted with it: the in-run evaluation of
    held-out clients and offline personalisation give the same model.
    """
    ids = list(client_ids)
    embeddings = {c: start.detach().clone().requires_grad_(True) for c in ids}
    optimizers = {c: torch.optim.SGD([v], lr=lr) for c, v in embeddings.items()}
    with frozen(hnet):
        for step in range(rounds):
            params = [generate_one(hnet, embeddings[c]) for c in ids]
            deltas = local_train(step, ids, params)
            for cid in ids:
                if cid not in deltas:
                    continue
                device = embeddings[cid].device
                hypernet_step(
                    hnet,
                    embeddings[cid],
                    [{k: d.to(device) for k, d in deltas[cid].items()}],
                    torch.ones(1),
                    optimizers[cid],
                    [embeddings[cid]],
                    0.0,
                )
    return {c: v.detach() for c, v in embeddings.items()}


class PFedHN(HyperflowerStrategy):
    """Personalised federated hypernetwork over a per-client embedding store."""

    name = "pfedhn"
    accepts_joiners = True
    #: Held-out clients send their class indicator r_i and nothing else (the
    #: class-indicator input needs it; the embedding fit needs nothing).
    registration_fields = {
        **HyperflowerStrategy.registration_fields,
        "nonparticipant": ("classes",),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.store = build_store(cfg).to(self.device)
        for cid in sorted(
            self.registry.clients, key=lambda c: self.registry.clients[c].partition_id
        ):
            self.admit(cid)
        self.hnet = build_hypernet(cfg, self.shapes).to(self.device)
        self.by_indicator = by_class_indicator(cfg)
        groups: list[dict[str, Any]] = [{"params": list(self.hnet.parameters())}]
        if not self.by_indicator:
            groups.append({"params": [self.store.weight], "lr": cfg.resolved_embed_lr})
        self.optimizer = make_optimizer(
            cfg.server_optimizer,
            groups,
            cfg.server_lr,
            cfg.server_momentum,
            cfg.server_weight_decay,
        )

    def admit(self, client_id: str) -> None:
        """A joiner gets its own embedding row (a fresh draw, trained from its first
        round on, like any participant's). With lazy registration the row is the
        client's partition id (the row eager registration gives it when every client
        registers), so its initial embedding does not depend on when it was drawn."""
        pid = self.registry.clients[client_id].partition_id
        lazy = self.cfg.registration == "lazy"
        self.store.add(client_id, {"partition-id": pid}, row=pid if lazy else None)

    def _unbatch(self, batch: dict[str, torch.Tensor]) -> list[Params]:
        n = next(iter(batch.values())).shape[0]
        return [{k: v[i].detach().cpu() for k, v in batch.items()} for i in range(n)]

    def indicators(self, client_ids: Sequence[str]) -> torch.Tensor:
        """The clients' r_i as a (B, K) float batch (class-indicator input)."""
        return torch.tensor(
            [registered_indicator(self.registry, c) for c in client_ids],
            dtype=torch.float32,
            device=self.device,
        )

    def inputs(self, client_ids: Sequence[str]) -> torch.Tensor:
        """The hypernetwork's inputs: the clients' embeddings v_i, or their r_i."""
        if self.by_indicator:
            return self.indicators(client_ids)
        return self.store(client_ids)

    def generate(self, client_ids: Sequence[str]) -> list[Params]:
        """θ_i = h(v_i; φ) (or h(r_i; φ)) for each client, in one batched forward."""
        with torch.no_grad():
            return self._unbatch(self.hnet(self.inputs(client_ids)))

    def apply_updates(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> dict[str, float]:
        """The shared hypernetwork step on φ and the sampled clients' v_i (only φ
        with the class-indicator input: r_i is data, not a parameter)."""
        weights = round_weights([u.num_examples for u in updates], self.cfg.weighting)
        ids = [u.client_id for u in updates]
        if self.by_indicator:
            inputs = self.indicators(ids)
            trained = list(self.hnet.parameters())
        else:
            inputs = undiluted(self.store(ids), weights)
            trained = [*self.hnet.parameters(), self.store.weight]
        norm = hypernet_step(
            self.hnet,
            inputs,
            [{k: d.to(self.device) for k, d in u.delta.items()} for u in updates],
            weights,
            self.optimizer,
            trained,
            self.cfg.clip_norm,
        )
        return {"grad-norm": norm}

    def nonparticipant_protocol(self) -> str:
        """With ``novel-rounds`` 0 nothing is fitted: every held-out client gets the
        model of the participants' mean embedding, a zero-shot model like FedAvg's;
        with the class-indicator input it gets h(r_i) zero-shot."""
        if self.by_indicator:
            return (
                "model generated zero-shot from its class indicator r_i "
                "(pfedhn-input = class-indicator); no training, no data beyond r_i"
            )
        if self.cfg.novel_rounds == 0:
            return (
                "model generated from the participants' mean embedding; no "
                "training (novel-rounds = 0)"
            )
        return super().nonparticipant_protocol()

    def nonparticipant_params(
        self, ops: ServerOps, client_ids: Sequence[str]
    ) -> dict[str, Params] | None:
        """Fit only new embeddings for held-out clients (φ frozen), then generate;
        with the class-indicator input, h(r_i) at once (no message, no training)."""
        held_out = list(client_ids)
        if not held_out:
            return {}
        if self.by_indicator:
            return dict(zip(held_out, self.generate(held_out), strict=True))

        def exchange(
            step: int, ids: list[str], params: list[Params]
        ) -> dict[str, Params]:
            updates = ops.train_exchange(ids, params, phase=novel_phase(step))
            log(
                INFO,
                "novel clients: embedding fit %d/%d (%d replies)",
                step + 1,
                self.cfg.novel_rounds,
                len(updates),
            )
            return {u.client_id: u.delta for u in updates}

        fitted = fit_new_embeddings(
            self.hnet,
            novel_start(self.store, self.registry.participants),
            held_out,
            self.cfg.novel_rounds,
            self.cfg.novel_lr,
            exchange,
        )
        return {c: generate_one(self.hnet, fitted[c]) for c in held_out}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "hnet": self.hnet.state_dict(),
            "store": self.store.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "participants": list(self.registry.participants),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.hnet.load_state_dict(state["hnet"])
        self.store.load_state_dict(state["store"])
        load_optimizer_state(self.optimizer, state["optimizer"])

    def hypernet_params(self) -> int:
        return sum(p.numel() for p in self.hnet.parameters())

    def final_report(
        self, ops: ServerOps, nonparticipants: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """The input kind and the paper's communication per round, M_sel·|r| +
        2·M_sel·|θ| (|r| = K with the class-indicator input, else 0)."""
        return {
            "pfedhn_input": self.cfg.pfedhn_input,
            **pfedhn_cost(
                min(self.cfg.clients_per_round, len(self.registry.participants)),
                self.client_trainable_params(),
                self.cfg.num_classes if self.by_indicator else 0,
            ),
        }


@register_personalizer("pfedhn")
class PFedHNPersonalizer:
    """The frozen hypernetwork and embedding store of a pFedHN run, built once."""

    def __init__(self, run: TrainedRun, device: torch.device) -> None:
        cfg, state = run.cfg, run.state
        shapes = param_shapes(
            build_model(
                cfg.model, cfg.num_classes, seed=cfg.seed, image_shape=cfg.image_shape
            )
        )
        self.cfg = cfg
        self.hnet = build_hypernet(cfg, shapes)
        self.hnet.load_state_dict(state["hnet"])
        self.store = build_store(cfg)
        self.store.load_state_dict(state["store"])
        self.hnet, self.store = self.hnet.to(device), self.store.to(device)
        self.participants = list(
            state.get("participants") or _participants(cfg, self.store)
        )

    def __call__(
        self,
        client_id: str,
        partition_id: int,
        data: ClientData | None,
        rounds: int | None,
        lr: float | None,
    ) -> tuple[Params, dict[str, Any]]:
        cfg = self.cfg
        if by_class_indicator(cfg):
            if data is None:
                raise PersonalizeError(
                    "pfedhn with pfedhn-input = class-indicator needs the new "
                    "client's labels (a data file or a partition id) for r_i"
                )
            r = class_indicator(data.y_train, cfg.num_classes)
            device = next(self.hnet.parameters()).device
            return generate_one(
                self.hnet, torch.tensor([r], dtype=torch.float32, device=device)
            ), {"embedding": "class indicator r_i (zero-shot)", "fit-rounds": 0}
        if client_id in self.participants and data is None:
            return (
                generate_one(self.hnet, self.store([client_id])),
                {"embedding": "own (trained participant)", "fit-rounds": 0},
            )
        if data is None:
            raise PersonalizeError(
                "pfedhn needs the new client's labelled data to fit "
                "its embedding (a data file or a partition id)"
            )
        rounds = cfg.novel_rounds if rounds is None else rounds
        lr = cfg.novel_lr if lr is None else lr

        def train_locally(
            step: int, ids: list[str], params: list[Params]
        ) -> dict[str, Params]:
            msg_cfg = ConfigRecord(
                {"round": 0, "phase": novel_phase(step), "method": cfg.method}
            )
            out = {}
            for cid, theta in zip(ids, params, strict=True):
                delta, _ = local_update(
                    cfg, cid, partition_id, data, msg_cfg, to_record(theta)
                )
                out[cid] = from_record(to_record(delta))  # as it would travel
            return out

        fitted = fit_new_embeddings(
            self.hnet,
            novel_start(self.store, self.participants),
            [client_id],
            rounds,
            lr,
            train_locally,
        )
        embedding = fitted[client_id]
        return generate_one(self.hnet, embedding), {
            "embedding": "fitted, hypernetwork frozen",
            "fit-rounds": rounds,
            "fit-lr": lr,
            "embedding-values": embedding.cpu().flatten().tolist(),
        }


def _participants(cfg: RunConfig, store: Any) -> list[str]:
    """Participants of a checkpoint written before they were saved in it."""
    chosen = set(split_participants(cfg.num_clients, cfg.holdout, cfg.seed)[0])
    rows = sorted(store.metadata.items(), key=lambda kv: kv[1]["partition-id"])
    return [cid for cid, meta in rows if meta["partition-id"] in chosen]
