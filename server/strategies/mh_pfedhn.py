"""MH-pFedHN and MH-pFedHNGD (docs/mh-pfedhn.md): one hypernetwork, many models.

The server knows a client only by the parameter count K_i it registered
(``mh-param-count``); it never learns the architecture. K_i picks a size group
(``mh-group-rule``); each group has a head of the shared multi-head hypernetwork
(:class:`common.hypernets.multihead.MultiHeadHyperNet`). A client gets one flat vector
θ_i = head_g(trunk(v_i))[:K_i] under the key ``theta`` and returns a flat Δ_i of the
same length, which moves the trunk, its group's head and its embedding through the
shared update (:func:`server.update.hypernet_step`, per-client flat vectors).

Bad input: a K_i that no group accepts (:class:`UnacceptedParamCountError`) leaves
that client out of the run (counted as ``mh-unaccepted-param-count``); a reply whose
length differs from K_i is rejected by :mod:`server.validation` (its shape against
what was sent: counted as ``invalid``) and, should one reach the update,
:class:`WrongLengthError` drops it (``mh-wrong-length``). Neither moves the
hypernetwork.

MH-pFedHNGD (``mh-pfedhngd``) adds a global model w_g = h(v_g)[:K_g] of the public
architecture ``mh-global-arch``. A round has two exchanges: the sampled clients train
w_g and return Δw_g (φ and v_g step), then train their own θ_i with
(1−λ)·CE + λ·T²·KL against the updated w_g (sent along as ``teacher``) and return
Δθ_i (φ and v_i step). A round whose second exchange fails restores the state of the
round's start, so the server never moves on fewer than ``min-clients`` replies.

Held-out clients: a client whose size group was trained fits only its embedding
(starting at the participants' mean) with φ frozen; one of an unseen size also fits a
new head of its own (``mh-novel-head``), started as a copy of the trained head of the
nearest capacity. Each held-out client is fitted alone (:func:`fit_new_client`), so
offline personalisation (:class:`MHPersonalizer`) reproduces the run's model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from logging import INFO, WARNING
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common.logger import log

from common.config import RunConfig
from common.hypernets.multihead import MultiHeadHyperNet, build_heads
from common.local_update import mh_local_update, unflatten_for
from common.methods.mh_pfedhn import arch_for, group_of
from common.models import build_model, count_params
from common.models.zoo import ZOO
from common.protocol import MH, THETA, routed
from common.records import to_record
from server.messaging import Outgoing
from server.personalizers import PersonalizeError, register_personalizer
from server.registry import message_to
from server.strategies.base import HyperflowerStrategy, Params
from server.strategies.pfedhn import frozen, load_optimizer_state, make_optimizer
from server.update import hypernet_step, round_weights, undiluted
from server.validation import ClientUpdate

if TYPE_CHECKING:
    from server.ops import ServerOps

#: Global embedding's row name (GD).
GLOBAL = "__global__"


class UnacceptedParamCountError(ValueError):
    """A client registered a parameter count that no size group accepts."""


class WrongLengthError(ValueError):
    """A delta whose length differs from the client's registered K_i."""


def build_mh_hypernet(cfg: RunConfig) -> MultiHeadHyperNet:
    """The run's hypernetwork without heads (seeded like the strategy's)."""
    torch.manual_seed(cfg.seed)
    return MultiHeadHyperNet(
        cfg.mh_embed_dim,
        cfg.hn_hidden,
        cfg.hn_n_hidden,
        cfg.mh_chunk_size,
        cfg.mh_chunk_embed_dim,
        cfg.mh_init_std,
        seed=cfg.seed,
    )


def group_for(cfg: RunConfig, k: int) -> tuple[str, int] | None:
    """The size group of K under the run's rule, with its capacity (None: rejected)."""
    return group_of(k, cfg.mh_group_rule, cfg.mh_group_bounds, cfg.mh_max_params)


def nearest_group(
    hnet: MultiHeadHyperNet, capacity: int, trained: Sequence[str]
) -> str | None:
    """The trained group whose capacity is closest to ``capacity`` (log scale)."""
    if not trained:
        return None
    return min(trained, key=lambda g: abs(np.log(hnet.capacities[g] / capacity)))


#: One embedding-fit step's local training: (step, flat θ) -> flat Δ or None.
LocalFit = Callable[[int, torch.Tensor], torch.Tensor | None]


def fit_new_client(
    hnet: MultiHeadHyperNet,
    start: torch.Tensor,
    group: str,
    k: int,
    rounds: int,
    lr: float,
    local_train: LocalFit,
    fit_head: bool,
    head_lr: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a new client's embedding (and, ``fit_head``, its group's head) with the
    rest of φ frozen; return (v, θ). Adam (v at ``lr``, the head at ``head_lr``)
    on −Δ back-propagated through h, one client alone, so the result does not depend
    on other clients."""
    v = start.detach().clone().requires_grad_(True)
    head_params = list(hnet.head(group).parameters()) if fit_head else []
    with frozen(hnet):
        for p in head_params:
            p.requires_grad_(True)
        opt = novel_optimizer(v, head_params, lr, head_lr)
        for step in range(rounds):
            with torch.no_grad():
                theta = hnet.generate(v, [group], [k])[0]
            delta = local_train(step, theta.detach().cpu())
            if delta is None:
                continue
            hypernet_step(
                lambda e: hnet.generate(e, [group], [k]),
                v,
                [delta.to(v.device)],
                torch.ones(1),
                opt,
                [v, *head_params],
                0.0,
            )
    with torch.no_grad():
        theta = hnet.generate(v, [group], [k])[0].detach().cpu()
    return v.detach(), theta


def novel_optimizer(
    v: torch.Tensor, head: Sequence[torch.Tensor], lr: float, head_lr: float
) -> torch.optim.Optimizer:
    """Adam of a new client's fit: its embedding at ``lr``, its new head (if fitted)
    at ``head_lr`` (the run's server-lr)."""
    groups: list[dict[str, Any]] = [{"params": [v], "lr": lr}]
    if head:
        groups.append({"params": list(head), "lr": head_lr})
    return torch.optim.Adam(groups)


def novel_phase(step: int) -> str:
    """Message phase of embedding-fit step ``step`` (seeds the client's data order)."""
    return f"mh-novel-{step}"


class MHPFedHN(HyperflowerStrategy):
    """One multi-head hypernetwork generating flat models of per-client sizes."""

    name = "mh-pfedhn"
    action = MH
    shared_model = False
    registration_fields: ClassVar[dict[str, tuple[str, ...]]] = {
        role: ("num-train", "num-val", "num-test", "mh-param-count")
        for role in ("participant", "nonparticipant")
    }
    gd: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.hnet = build_mh_hypernet(cfg).to(self.device)
        self.k: dict[str, int] = {}
        self.group: dict[str, str] = {}
        self.rejected: dict[str, str] = {}
        for cid, info in sorted(
            self.registry.clients.items(), key=lambda kv: kv[1].partition_id
        ):
            self._classify(cid, info.meta.get("mh-param-count"))
        self.k_global = 0
        if self.gd:
            self.k_global = count_params(
                build_model(
                    cfg.mh_global_arch, cfg.num_classes, image_shape=cfg.image_shape
                )
            )
            found = group_for(cfg, self.k_global)
            if found is None:
                raise UnacceptedParamCountError(
                    f"the global model's K={self.k_global} is in no size group"
                )
            self.global_group = found[0]
            self._ensure_head(*found)
        for cid in self.participants:
            self._ensure_head(self.group[cid], group_for(cfg, self.k[cid])[1])  # type: ignore[index]
        self.trained_groups = sorted(self.hnet.capacities)
        rows = self._row_names(self.participants) + ([GLOBAL] if self.gd else [])
        self.rows = {name: i for i, name in enumerate(dict.fromkeys(rows))}
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.embeddings = torch.nn.Parameter(
            torch.randn(len(self.rows), cfg.mh_embed_dim, generator=gen).to(self.device)
        )
        embed_lr = cfg.mh_embed_lr or cfg.server_lr
        base = {id(p) for p in self._bases()} if cfg.mh_base_lr > 0 else set()
        self.optimizer = make_optimizer(
            cfg.server_optimizer,
            [
                {"params": [p for p in self.hnet.parameters() if id(p) not in base]},
                {"params": [self.embeddings], "lr": embed_lr},
            ],
            cfg.server_lr,
            cfg.server_momentum,
            cfg.server_weight_decay,
        )
        self.counts: dict[str, int] = {}
        self.novel_kind: dict[str, str] = {}
        self.new_head_params: list[int] = []

    # ---- clients and groups -------------------------------------------------
    def _classify(self, cid: str, k: Any) -> None:
        try:
            value = int(k)
        except (TypeError, ValueError):
            value = -1
        found = group_for(self.cfg, value)
        if found is None:
            err = UnacceptedParamCountError(
                f"client {cid}: parameter count {k!r} is accepted by no size group "
                f"(rule {self.cfg.mh_group_rule}, at most {self.cfg.mh_max_params})"
            )
            self.rejected[cid] = str(err)
            log(WARNING, "%s: %s", type(err).__name__, err)
            return
        self.k[cid], self.group[cid] = value, found[0]

    def _ensure_head(self, group: str, capacity: int) -> None:
        if not self.hnet.has_head(group):
            self.hnet.add_head(group, capacity)

    def _row_names(self, ids: Sequence[str]) -> list[str]:
        if self.cfg.mh_shared_embedding:
            return [f"group:{self.group[c]}" for c in ids]
        return list(ids)

    @property
    def participants(self) -> list[str]:
        """Participants whose K_i a group accepts."""
        return [c for c in self.registry.participants if c not in self.rejected]

    def prepare(self, ops: ServerOps) -> None:
        """Count the clients left out for their parameter count."""
        ops.count_faults({"mh-unaccepted-param-count": len(self.rejected)})

    def pool(self) -> list[str]:
        """Only the participants with an accepted parameter count train and are
        evaluated."""
        return self.participants

    # ---- generation and update ----------------------------------------------
    def _embed(self, ids: Sequence[str]) -> torch.Tensor:
        return self.embeddings[[self.rows[r] for r in self._row_names(ids)]]

    def _generate_flat(self, ids: Sequence[str]) -> list[torch.Tensor]:
        with torch.no_grad():
            return [
                t.detach().cpu()
                for t in self.hnet.generate(
                    self._embed(ids),
                    [self.group[c] for c in ids],
                    [self.k[c] for c in ids],
                )
            ]

    def generate(self, client_ids: Sequence[str]) -> list[Params]:
        """θ_i as one flat vector of K_i values per client."""
        return [{THETA: t} for t in self._generate_flat(client_ids)]

    def global_theta(self) -> torch.Tensor:
        """w_g = h(v_g)[:K_g] (GD)."""
        with torch.no_grad():
            return (
                self.hnet.generate(
                    self.embeddings[[self.rows[GLOBAL]]],
                    [self.global_group],
                    [self.k_global],
                )[0]
                .detach()
                .cpu()
            )

    def _checked(
        self, updates: list[ClientUpdate], expected: Callable[[str], int]
    ) -> list[ClientUpdate]:
        good = []
        for u in updates:
            got = u.delta.get(THETA)
            if got is None or got.dim() != 1 or got.numel() != expected(u.client_id):
                err = WrongLengthError(
                    f"client {u.client_id}: delta of shape "
                    f"{None if got is None else tuple(got.shape)}, expected "
                    f"({expected(u.client_id)},)"
                )
                log(WARNING, "%s: %s", type(err).__name__, err)
                self.counts["mh-wrong-length"] = (
                    self.counts.get("mh-wrong-length", 0) + 1
                )
                continue
            good.append(u)
        return good

    def _bases(self) -> list[torch.Tensor]:
        """The heads' per-chunk biases: each size group's shared base θ values."""
        return [self.hnet.head(g).chunk_bias for g in self.hnet.capacities]

    def _base_hook(
        self, groups: Sequence[str], weights: torch.Tensor
    ) -> Callable[[], None] | None:
        """With ``mh-base-lr``: between the backward pass and the Adam step, move each
        group's base by mh-base-lr × the weighted mean delta of the round's clients of
        that group (its gradient is minus their weighted sum), and take the bases out
        of clipping and of Adam. Without it: None (the paper's one Adam)."""
        if self.cfg.mh_base_lr <= 0:
            return None

        def step() -> None:
            with torch.no_grad():
                for group in dict.fromkeys(groups):
                    total = sum(
                        float(w)
                        for g, w in zip(groups, weights, strict=True)
                        if g == group
                    )
                    base = self.hnet.head(group).chunk_bias
                    if base.grad is not None:
                        base.sub_(base.grad, alpha=self.cfg.mh_base_lr / total)
            self._drop_base_grads()

        return step

    def _drop_base_grads(self) -> None:
        """Forget the bases' gradients (outside Adam, nothing else clears them)."""
        for bias in self._bases():
            bias.grad = None

    def apply_updates(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> dict[str, float]:
        """The shared step on the trunk, the clients' heads and their embeddings."""
        updates = self._checked(updates, lambda c: self.k[c])
        if not updates:
            return {}
        ids = [u.client_id for u in updates]
        groups, lengths = [self.group[c] for c in ids], [self.k[c] for c in ids]
        weights = round_weights([u.num_examples for u in updates], self.cfg.weighting)
        norm = hypernet_step(
            lambda e: self.hnet.generate(e, groups, lengths),
            undiluted(self._embed(ids), weights),
            [u.delta[THETA].to(self.device) for u in updates],
            weights,
            self.optimizer,
            [*self.hnet.parameters(), self.embeddings],
            self.cfg.clip_norm,
            self._base_hook(groups, weights),
        )
        return {"grad-norm": norm}

    def global_step(self, updates: list[ClientUpdate]) -> float:
        """φ and v_g from the round's Δw_g (GD's first exchange).

        With ``mh-base-lr`` the global model's deltas do not move a group's base: the
        base is its group's clients' model (their mean delta, by plain SGD). Were the
        global deltas to step it too, the global model's group base would jump twice
        a round between the global model and that group's personal models, each
        starting every round from the other's (seen: the global model at chance on
        one seed, its group's clients 18 points below MH-pFedHN's)."""
        updates = self._checked(updates, lambda c: self.k_global)
        if not updates:
            return 0.0
        weights = round_weights([u.num_examples for u in updates], self.cfg.weighting)
        v = self.embeddings[[self.rows[GLOBAL]] * len(updates)]
        groups = [self.global_group] * len(updates)
        return hypernet_step(
            lambda e: self.hnet.generate(e, groups, [self.k_global] * len(updates)),
            v,
            [u.delta[THETA].to(self.device) for u in updates],
            weights,
            self.optimizer,
            [*self.hnet.parameters(), self.embeddings],
            self.cfg.clip_norm,
            self._drop_base_grads if self.cfg.mh_base_lr > 0 else None,
        )

    # ---- messages -------------------------------------------------------------
    def messages(
        self,
        kind: str,
        client_ids: Sequence[str],
        params: Sequence[Params],
        config: ConfigRecord,
        **extra: ArrayRecord | ConfigRecord,
    ) -> list[Message]:
        """``train.mh`` / ``evaluate.mh`` messages; GD's evaluation carries w_g as the
        ``teacher`` so that clients report the global model's accuracy too."""
        teacher: dict[str, ArrayRecord | ConfigRecord] = dict(extra)
        teacher.update(
            {"teacher": to_record({THETA: self.global_theta()})}
            if self.gd and kind == "evaluate"
            else {}
        )
        return super().messages(kind, client_ids, params, config, **teacher)

    def evaluation_metrics(
        self, server_round: int, results: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """Participant test accuracy per parameter count K (the server's only view of
        an architecture), and the global model's where it exists."""
        out: dict[str, Any] = {}
        for k in sorted({self.k[c] for c in results if c in self.k}):
            accs = [m["test-acc"] for c, m in results.items() if self.k.get(c) == k]
            out[f"test-acc-K{k}"] = float(np.mean(accs))
        glob = [
            m["global-test-acc"] for m in results.values() if "global-test-acc" in m
        ]
        if glob:
            out["global-test-acc"] = float(np.mean(glob))
        return out

    # ---- new clients -----------------------------------------------------------
    def start_embedding(self) -> torch.Tensor:
        """A new client's starting embedding: the mean of the participants' rows."""
        with torch.no_grad():
            return self._embed(self.participants).mean(0, keepdim=True)

    def novel_group(self, cid: str) -> tuple[str, str]:
        """(group to generate with, 'seen' or 'unseen'); an unseen size gets a head of
        its own, a copy of the nearest trained head."""
        group = self.group[cid]
        if group in self.trained_groups:
            return group, "seen"
        own = f"novel:{cid}"
        if not self.hnet.has_head(own):
            like = nearest_group(
                self.hnet,
                group_for(self.cfg, self.k[cid])[1],  # type: ignore[index]
                self.trained_groups,
            )
            self.hnet.add_head(own, group_for(self.cfg, self.k[cid])[1], like=like)  # type: ignore[index]
        return own, "unseen"

    def nonparticipant_params(
        self, ops: ServerOps, client_ids: Sequence[str]
    ) -> dict[str, Params] | None:
        """Fit each held-out client alone: embedding only (seen size group), or
        embedding and a new head (unseen), φ otherwise frozen."""
        ids = [c for c in client_ids if c in self.k]
        if not ids:
            return {}
        plan = {c: self.novel_group(c) for c in ids}
        start = self.start_embedding()
        state = {c: start.detach().clone().requires_grad_(True) for c in ids}
        heads = {
            c: (
                list(self.hnet.head(plan[c][0]).parameters())
                if plan[c][1] == "unseen" and self.cfg.mh_novel_head
                else []
            )
            for c in ids
        }
        opts = {
            c: novel_optimizer(
                state[c], heads[c], self.cfg.mh_novel_lr, self.cfg.server_lr
            )
            for c in ids
        }
        with frozen(self.hnet):
            for c in ids:
                for p in heads[c]:
                    p.requires_grad_(True)
            for step in range(self.cfg.mh_novel_rounds):
                params = []
                with torch.no_grad():
                    for c in ids:
                        params.append(
                            {
                                THETA: self.hnet.generate(
                                    state[c], [plan[c][0]], [self.k[c]]
                                )[0]
                                .detach()
                                .cpu()
                            }
                        )
                got = ops.train_exchange(ids, params, phase=novel_phase(step))
                for u in self._checked(got, lambda c: self.k[c]):
                    c = u.client_id
                    group, k = plan[c][0], self.k[c]

                    def gen(
                        e: torch.Tensor, group: str = group, k: int = k
                    ) -> list[torch.Tensor]:
                        return self.hnet.generate(e, [group], [k])

                    hypernet_step(
                        gen,
                        state[c],
                        [u.delta[THETA].to(self.device)],
                        torch.ones(1),
                        opts[c],
                        [state[c], *heads[c]],
                        0.0,
                    )
                log(
                    INFO,
                    "new clients: fit %d/%d (%d replies)",
                    step + 1,
                    self.cfg.mh_novel_rounds,
                    len(got),
                )
        out = {}
        with torch.no_grad():
            for c in ids:
                self.novel_kind[c] = plan[c][1]
                out[c] = {
                    THETA: self.hnet.generate(state[c], [plan[c][0]], [self.k[c]])[0]
                    .detach()
                    .cpu()
                }
        return out

    def final_report(
        self, ops: ServerOps, nonparticipants: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """New-client accuracy for seen and unseen size groups, sizes and counts."""
        groups = {
            g: c for g, c in self.hnet.capacities.items() if not g.startswith("novel:")
        }
        out: dict[str, Any] = {
            "mh_groups": groups,
            "mh_group_members": self.group_members(),
            "mh_rejected": len(self.rejected),
            "mh_param_counts": sorted(set(self.k.values())),
        }
        for kind in ("seen", "unseen"):
            accs = [
                m["test-acc"]
                for c, m in nonparticipants.items()
                if self.novel_kind.get(c) == kind
            ]
            out[f"nonparticipant_{kind}_acc"] = float(np.mean(accs)) if accs else None
            out[f"nonparticipant_{kind}_clients"] = len(accs)
        per_k: dict[str, float] = {}
        for k in sorted({self.k[c] for c in nonparticipants if c in self.k}):
            per_k[str(k)] = float(
                np.mean(
                    [
                        m["test-acc"]
                        for c, m in nonparticipants.items()
                        if self.k.get(c) == k
                    ]
                )
            )
        out["nonparticipant_acc_by_K"] = per_k
        out["mh_faults"] = {
            "mh-unaccepted-param-count": len(self.rejected),
            "mh-wrong-length": self.counts.get("mh-wrong-length", 0),
        }
        ops.count_faults(self.counts)
        return out

    def group_members(self) -> dict[str, dict[str, int]]:
        """Each trained size group's members by parameter count only: {group: {K:
        participants holding a model of K}} (the server never sees an architecture;
        two Ks in one group are two models sharing that group's head)."""
        out: dict[str, dict[str, int]] = {}
        for cid in self.participants:
            ks = out.setdefault(self.group[cid], {})
            ks[str(self.k[cid])] = ks.get(str(self.k[cid]), 0) + 1
        return {
            g: dict(sorted(m.items(), key=lambda kv: int(kv[0])))
            for g, m in sorted(out.items())
        }

    # ---- sizes and state --------------------------------------------------------
    def hypernet_params(self) -> int:
        trained = sum(
            p.numel()
            for name, p in self.hnet.named_parameters()
            if "novel:" not in name
        )
        return trained + self.embeddings.numel()

    def client_trainable_params(self) -> int:
        ks = [self.k[c] for c in self.participants]
        return int(np.mean(ks)) if ks else 0

    def state_dict(self) -> dict[str, Any]:
        trained = {
            g: c for g, c in self.hnet.capacities.items() if not g.startswith("novel:")
        }
        hnet = {k: v for k, v in self.hnet.state_dict().items() if "novel:" not in k}
        return {
            **super().state_dict(),
            "capacities": trained,
            "hnet": hnet,
            "embeddings": self.embeddings.detach().clone(),
            "rows": dict(self.rows),
            "k": dict(self.k),
            "group": dict(self.group),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "participants": self.participants,
            "trained_groups": list(self.trained_groups),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        build_heads(self.hnet, state["capacities"])
        self.hnet.load_state_dict(state["hnet"], strict=False)
        with torch.no_grad():
            self.embeddings.copy_(state["embeddings"])
        load_optimizer_state(self.optimizer, state["optimizer"])


class MHPFedHNGD(MHPFedHN):
    """MH-pFedHN with a generated global model distilled into every client."""

    name = "mh-pfedhngd"
    gd = True

    def _exchange(
        self,
        ops: ServerOps,
        ids: list[str],
        params: list[Params],
        config: ConfigRecord,
        phase: str,
        what: str,
        teacher: torch.Tensor | None = None,
    ) -> tuple[dict[str, ClientUpdate], Any]:
        cfg = ConfigRecord({**dict(config), "phase": phase})
        extra = {"teacher": to_record({THETA: teacher})} if teacher is not None else {}
        outbox = [
            Outgoing(
                c,
                message_to(
                    self.registry.node_of(c),
                    routed("train", MH),
                    params=to_record(p),
                    config=cfg,
                    **extra,
                ),
            )
            for c, p in zip(ids, params, strict=True)
        ]
        return ops.send_train(outbox, what)

    def run_round(
        self, ops: ServerOps, server_round: int, config: ConfigRecord
    ) -> dict[str, Any] | None:
        """Two exchanges: the global model's delta, then the personal models' (KD)."""
        start = {
            "hnet": copy.deepcopy(self.hnet.state_dict()),
            "embeddings": self.embeddings.detach().clone(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
        }
        row: dict[str, Any] = {}

        def attempt() -> tuple[int, None]:
            ops.refresh()
            ids = self.sample(server_round)
            self._restore(start)
            t_update = 0.0
            wg = self.global_theta()
            got_g, ex_g = self._exchange(
                ops,
                ids,
                [{THETA: wg}] * len(ids),
                config,
                "global",
                f"round {server_round} global",
            )
            row.update(self._exchange_row(ex_g, got_g, "global"))
            row.pop("personal-faults", None)
            if len(got_g) < self.cfg.min_clients:
                return len(got_g), None
            t0 = time.monotonic()
            g_norm = self.global_step(list(got_g.values()))
            t_update += time.monotonic() - t0
            teacher = self.global_theta()
            got, ex = self._exchange(
                ops,
                ids,
                self.generate(ids),
                config,
                "personal",
                f"round {server_round} personal",
                teacher,
            )
            row.update(self._exchange_row(ex, got, "personal"))
            if len(got) < self.cfg.min_clients:
                return len(got), None
            t0 = time.monotonic()
            metrics = self.apply_updates(server_round, list(got.values()))
            t_update += time.monotonic() - t0
            faults = {
                k: row["global-faults"][k] + row["personal-faults"][k]
                for k in row["personal-faults"]
            }
            row.update(
                {
                    "sampled": len(ids),
                    "valid": len(got),
                    "faults": faults,
                    "global-grad-norm": g_norm,
                    "grad-norm": metrics.get("grad-norm", 0.0),
                    "server-update-s": t_update,
                    "bytes-down": ex_g.bytes_down + ex.bytes_down,
                    "bytes-up": ex_g.bytes_up + ex.bytes_up,
                }
            )
            return len(got), None

        _, attempts = ops.with_retries(server_round, attempt)
        return {**row, "attempts": attempts}

    def _restore(self, state: dict[str, Any]) -> None:
        self.hnet.load_state_dict(state["hnet"])
        with torch.no_grad():
            self.embeddings.copy_(state["embeddings"])
        load_optimizer_state(self.optimizer, state["optimizer"])

    @staticmethod
    def _exchange_row(
        ex: Any, got: dict[str, ClientUpdate], phase: str
    ) -> dict[str, Any]:
        n = np.array([u.num_examples for u in got.values()], dtype=float)
        errors, missing = len(ex.errors), len(ex.missing)
        faults = {
            "error": errors,
            "missing": missing,
            "invalid": max(0, len(ex.sent) - len(got) - errors - missing),
        }
        row: dict[str, Any] = {f"{phase}-valid": len(got), f"{phase}-faults": faults}
        if len(got):
            for key in ("train-loss", "train-acc", "delta-norm"):
                vals = np.array([u.metrics.get(key, np.nan) for u in got.values()])
                name = key if phase == "personal" else f"global-{key}"
                row[name] = float((vals * n).sum() / n.sum())
        return row

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "k_global": self.k_global,
            "global_group": self.global_group,
        }


@register_personalizer("mh-pfedhn", "mh-pfedhngd")
class MHPersonalizer:
    """Offline personalisation of an MH run: a held-out client (by partition id, its
    architecture by the run's rule) fitted as the run fitted it, or a participant's
    own generated model; a client of any other data (``--data``) with the
    architecture it names (``--arch``)."""

    #: Offline personalisation may name the client's architecture (``--arch``).
    takes_arch = True

    def __init__(self, run: Any, device: torch.device) -> None:
        cfg, state = run.cfg, run.state
        self.cfg = cfg
        self.hnet = build_mh_hypernet(cfg)
        build_heads(self.hnet, state["capacities"])
        self.hnet.load_state_dict(state["hnet"], strict=False)
        self.embeddings = state["embeddings"]
        self.rows, self.k, self.group = state["rows"], state["k"], state["group"]
        self.participants = list(state["participants"])
        self.trained_groups = list(state["trained_groups"])

    def _rows(self, ids: Sequence[str]) -> torch.Tensor:
        names = [
            f"group:{self.group[c]}" if self.cfg.mh_shared_embedding else c for c in ids
        ]
        return self.embeddings[[self.rows[n] for n in names]]

    def __call__(
        self,
        client_id: str,
        partition_id: int,
        data: Any,
        rounds: int | None,
        lr: float | None,
        arch: str | None = None,
    ) -> tuple[Params, dict[str, Any]]:
        cfg = self.cfg
        if arch not in ZOO and (arch is not None or partition_id < 0):
            raise PersonalizeError(
                f"a new client of an {cfg.method} run needs its architecture: "
                f"--arch (one of {', '.join(sorted(ZOO))}; got {arch!r}), or "
                "--partition-id (the run's rule picks it)"
            )
        arch = arch_for(cfg, partition_id, {"arch": arch} if arch else None)
        k = count_params(
            build_model(arch, cfg.num_classes, image_shape=cfg.image_shape)
        )
        info: dict[str, Any] = {"model": arch, "param-count": k}
        if client_id in self.participants and client_id in self.k:
            with torch.no_grad():
                theta = self.hnet.generate(
                    self._rows([client_id]), [self.group[client_id]], [k]
                )[0]
            return unflatten_for(arch, cfg.num_classes, theta, cfg.image_shape), {
                **info,
                "embedding": "own (trained participant)",
                "fit-rounds": 0,
            }
        found = group_for(cfg, k)
        if found is None:
            raise UnacceptedParamCountError(f"K={k} is accepted by no size group")
        group, kind = found[0], "seen"
        if group not in self.trained_groups:
            kind, group = "unseen", f"novel:{client_id}"
            like = nearest_group(self.hnet, found[1], self.trained_groups)
            self.hnet.add_head(group, found[1], like=like)
        rounds = cfg.mh_novel_rounds if rounds is None else rounds
        lr = cfg.mh_novel_lr if lr is None else lr

        def local(step: int, theta: torch.Tensor) -> torch.Tensor:
            msg_cfg = ConfigRecord(
                {"round": 0, "phase": novel_phase(step), "method": cfg.method}
            )
            delta, _ = mh_local_update(
                cfg, client_id, partition_id, data, msg_cfg, arch, theta, None
            )
            return delta[THETA]

        start = self._rows(self.participants).mean(0, keepdim=True)
        _, theta = fit_new_client(
            self.hnet,
            start,
            group,
            k,
            rounds,
            lr,
            local,
            kind == "unseen" and cfg.mh_novel_head,
            cfg.server_lr,
        )
        return unflatten_for(arch, cfg.num_classes, theta, cfg.image_shape), {
            **info,
            "embedding": f"fitted ({kind} size group)",
            "fit-rounds": rounds,
            "fit-lr": lr,
        }
