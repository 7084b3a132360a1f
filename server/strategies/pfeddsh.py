"""pFedDSH (arXiv 2508.05157): clients join in batches; one hypernetwork with
batch-specific neuron masks keeps earlier batches intact, and data-free replay carries
a new batch's knowledge back to them.

- Batches: the participants' partition ids are split (seeded) into ``client-batches``
  batches (:func:`common.methods.pfeddsh.batch_partitions`); batch b trains rounds
  b·R+1 … (b+1)·R with R = num-rounds / client-batches, and only its clients are
  sampled. A client that first appears mid-run (a SuperNode started later) is
  admitted into the next batch that has not started (or its own, if later); when a
  batch's turn comes and none of its clients is there, the server waits up to
  ``round-timeout`` for them.
- Masks (``masks``): batch b learns a mask over the trunk's hidden units (scores,
  straight-through gate, sparse mask regularisation ``mask-penalty``, reuse cheaper
  by ``mask-reuse-cost``; :mod:`server.pfeddsh.masks`); the weights earlier masks
  read are frozen (gradient hook of the shared update), earlier masks and earlier
  clients' embeddings are fixed, so their generated models do not change. Each
  batch's close reports the units it uses, reuses and leaves free (capacity).
- Clients report the BN statistics of the model they trained (a declared reply
  extra); the server keeps each client's trained model (what it sent + Δ). When batch
  b has trained (the evaluation of its last round), its mask is fixed, and with
  ``replay`` the server synthesises images from batch b's trained models and their
  own statistics (DeepInversion) and fine-tunes, for each earlier batch, that batch's
  embeddings and the weights only it reads. ``replay-accept = "val"`` (ours, an
  ablation) keeps a batch's replay only if its clients' validation accuracy does not
  drop; the default keeps it always, as the paper.
- ``batch-learner = "fedavg"``: the paper's FedAvg row on the same batch schedule
  (one global model, no hypernetwork, masks or replay).
- Per batch join: earlier batches' accuracy before and after, RI (mean change), PA
  (the new batch's accuracy minus that of an independent run of the same learner on
  the same clients alone for the same rounds: a sub-run in ``<run>/pa-ref-b<b>/``),
  the batch's validation curve (has it flattened?) and its capacity.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from logging import INFO
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import ConfigRecord
from flwr.common.logger import log

from common.methods.pfeddsh import batch_partitions
from common.models.bn import bn_stat_shapes
from common.protocol import DSH
from server.ops import RoundFailedError
from server.pfeddsh.deepinversion import InversionWeights
from server.pfeddsh.masks import NeuronHyperNet, NeuronMasks
from server.pfeddsh.plots import batch_accuracy_plot, capacity_plot, image_grid
from server.pfeddsh.replay import Synthetic, replay_loss, synthesise
from server.store import EmbeddingStore
from server.strategies.base import HyperflowerStrategy, Params
from server.strategies.pfedhn import load_optimizer_state
from server.update import hypernet_step, round_weights
from server.validation import ClientUpdate, ReplyExtra

if TYPE_CHECKING:
    from server.ops import ServerOps


#: A new batch's mask scores start at ± this: with Adam steps of about ``mask-lr``
#: (0.1), a unit whose gradient keeps one sign flips after about 5 rounds.
SCORE_INIT = 0.5


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def capacity_of(report: dict[str, Any]) -> dict[str, Any]:
    """A batch's capacity figures as shares of the trunk's units: used, reused
    (an earlier batch uses them too), new, still free after it, and reuse as a
    share of what it uses (the paper's "neurons reused")."""
    total = report.get("neurons_total")
    if not total:
        return {"batch": report["batch"]}
    used = report["neurons_used"]
    return {
        "batch": report["batch"],
        "used": used / total,
        "reused": report["neurons_reused"] / total,
        "new": report["neurons_new"] / total,
        "free": report["neurons_free"] / total,
        "reuse_of_used": report["neurons_reused"] / used if used else 0.0,
    }


class PFedDSH(HyperflowerStrategy):
    """Progressive client batches over one masked hypernetwork, with replay."""

    name = "pfeddsh"
    action = DSH
    accepts_joiners = True
    best_by_validation = False  # the run's result is its last state, every batch in
    # a batch's join report compares its clients' accuracy before and after
    # replay, the same clients: every joined client evaluates every time
    sampled_evaluation = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.rounds_per_batch = cfg.num_rounds // cfg.client_batches
        self.reply_extras = {
            k: ReplyExtra(s) for k, s in bn_stat_shapes(self.template).items()
        }
        self.partition_batch = {
            p: b
            for b, part in enumerate(
                batch_partitions(
                    cfg.num_clients, cfg.holdout, cfg.client_batches, cfg.seed
                )
            )
            for p in part
        }
        self.fedavg = cfg.batch_learner == "fedavg"
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            self.hnet = NeuronHyperNet(
                cfg.resolved_embed_dim,
                self.shapes,
                cfg.hn_hidden,
                cfg.hn_n_hidden + 1,
                dict(self.template.named_parameters()),
            ).to(self.device)
        self.bank = NeuronMasks(
            self.hnet,
            penalty=cfg.mask_penalty,
            reuse_cost=cfg.mask_reuse_cost,
            budget=cfg.mask_budget,
            budget_scope=cfg.mask_budget_scope,
            init_off=cfg.mask_sparsity,
            init_scale=SCORE_INIT,
            lr=cfg.mask_lr,
        )
        #: ``batch-learner = "fedavg"``: the one global model every client gets.
        self.global_model: Params = {
            k: p.detach().clone().to(self.device)
            for k, p in self.template.named_parameters()
        }
        self.template.to(self.device)
        self.store = EmbeddingStore(
            cfg.num_clients, cfg.resolved_embed_dim, seed=cfg.seed
        ).to(self.device)
        self.assigned: dict[str, int] = {}  # client id -> its batch
        self.batch = -1  # the batch training (or last closed)
        self.closed = -1  # the last batch whose mask is fixed
        self.trained = -1  # the last batch that trained a round
        self.bn_stats: dict[str, dict[str, torch.Tensor]] = {}
        #: each client's last trained model (what it was sent + its Δ): the model its
        #: reported BN statistics belong to, DeepInversion's source
        self.client_models: dict[str, Params] = {}
        #: validation accuracy of each batch's clients at each evaluation of its
        #: own rounds (does it flatten before the next batch joins?)
        self.curves: dict[int, list[float]] = {}
        self.batch_acc: dict[int, float] = {}  # after the last close
        #: the same on validation: RI read on validation (``ri_val``), what replay's
        #: settings are chosen on (test accuracy never chooses anything)
        self.batch_val: dict[int, float] = {}
        self.reports: list[dict[str, Any]] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self._ops: ServerOps | None = None
        self._sync()

    # ---- batches -------------------------------------------------------------
    def batch_of_round(self, server_round: int) -> int:
        """The batch that trains ``server_round``."""
        return (server_round - 1) // self.rounds_per_batch

    def _batch_for(self, client_id: str) -> int | None:
        """The batch a newly seen participant belongs to (None: not in this run):
        its partition's batch, but never one that has already started."""
        pid = self.registry.clients[client_id].partition_id
        own = self.partition_batch.get(pid, self.cfg.client_batches - 1)
        return min(max(own, self.trained + 1), self.cfg.client_batches - 1)

    def _sync(self) -> None:
        """Give every registered participant without one a batch and an embedding."""
        fresh = [c for c in self.registry.participants if c not in self.assigned]
        for cid in fresh:
            batch = self._batch_for(cid)
            if batch is None:
                continue
            self.assigned[cid] = batch
            self.store.add(
                cid, {"partition-id": self.registry.clients[cid].partition_id}
            )
            if self.trained >= 0:
                log(INFO, "pFedDSH: client %s joins batch %d", cid, batch)

    def members(self, batch: int) -> list[str]:
        """The clients of ``batch``, by partition id."""
        return [c for c in self.registry.participants if self.assigned.get(c) == batch]

    def admit(self, client_id: str) -> None:
        """A client that joined mid-run goes into the next batch to start."""
        self._sync()

    def _start_batch(self, batch: int) -> None:
        """Fresh mask scores (masks, with their own optimiser) and a fresh server
        optimiser for ``batch``: no momentum of an earlier batch moves anything now."""
        cfg = self.cfg
        self.batch = batch
        if self.fedavg:
            self.optimizer = None  # FedAvg adds the mean delta; nothing to optimise
            return
        if cfg.masks:
            gen = torch.Generator().manual_seed(cfg.seed * 1_009 + batch)
            self.bank.start(batch, gen)
        self.optimizer = self._build_optimizer()

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """The server optimiser of a batch (hypernetwork and embeddings; the mask
        scores have the bank's own). With masks, weight decay is applied by the
        gradient hook (only to weights no earlier batch uses), not here."""
        cfg = self.cfg
        groups: list[dict[str, Any]] = [
            {
                "params": list(self.hnet.parameters()),
                "weight_decay": 0.0 if cfg.masks else cfg.server_weight_decay,
            },
            {"params": [self.store.weight], "weight_decay": 0.0},
        ]
        if cfg.server_optimizer == "adam":
            return torch.optim.Adam(groups, lr=cfg.server_lr)
        return torch.optim.SGD(groups, lr=cfg.server_lr, momentum=cfg.server_momentum)

    # ---- what the loop asks --------------------------------------------------
    def run_round(
        self, ops: ServerOps, server_round: int, config: ConfigRecord
    ) -> dict[str, Any] | None:
        """Start the round's batch if it is new (waiting for its clients to join
        when none is there yet); the round itself is the loop's usual one."""
        self._ops = ops
        batch = self.batch_of_round(server_round)
        if batch != self.batch:
            self._start_batch(batch)
            self._wait_for(ops, batch)
            log(
                INFO,
                "pFedDSH: batch %d starts at round %d with %d clients",
                batch,
                server_round,
                len(self.members(batch)),
            )
        return None

    def _wait_for(self, ops: ServerOps, batch: int) -> None:
        ops.refresh()
        self._sync()
        deadline = time.monotonic() + self.cfg.round_timeout
        while not self.members(batch) and time.monotonic() < deadline:
            time.sleep(2.0)
            ops.refresh()
            self._sync()
        if not self.members(batch):
            raise RoundFailedError(
                f"pFedDSH: no client of batch {batch} joined within "
                f"round-timeout={self.cfg.round_timeout:.0f}s"
            )

    def sample(self, server_round: int) -> list[str]:
        """``clients-per-round`` clients of the batch now training (seeded)."""
        self._sync()
        pool = self.members(self.batch_of_round(server_round))
        k = min(self.cfg.clients_per_round, len(pool))
        return sorted(
            (pool[i] for i in self.rng.choice(len(pool), k, replace=False)),
            key=pool.index,
        )

    def evaluated(self, server_round: int) -> list[str]:
        """The clients of every batch that has joined so far."""
        self._sync()
        upto = self.batch_of_round(server_round)
        return [
            c
            for c in self.registry.participants
            if self.assigned.get(c, upto + 1) <= upto
        ]

    # ---- generation and update ----------------------------------------------
    def _masks(self, batch: int) -> list[torch.Tensor] | None:
        return self.bank.masks(batch) if self.cfg.masks else None

    def _generate(
        self, client_ids: Sequence[str], batch: int
    ) -> dict[str, torch.Tensor]:
        return self.hnet(self.store(client_ids), self._masks(batch))

    def generate(self, client_ids: Sequence[str]) -> list[Params]:
        """θ_i = h(v_i; m_b) with the unit mask of each client's batch (FedAvg: the
        global model)."""
        if self.fedavg:
            model = {k: v.detach().cpu() for k, v in self.global_model.items()}
            return [model] * len(client_ids)
        out: dict[str, Params] = {}
        by_batch: dict[int, list[str]] = {}
        for cid in client_ids:
            by_batch.setdefault(self.assigned[cid], []).append(cid)
        with torch.no_grad():
            for batch, ids in by_batch.items():
                gen = self._generate(ids, batch)
                for i, cid in enumerate(ids):
                    out[cid] = {k: v[i].detach().cpu() for k, v in gen.items()}
        return [out[c] for c in client_ids]

    def apply_updates(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> dict[str, float]:
        """The shared hypernetwork step for the training batch (frozen weights kept,
        the sparsity penalty added, by the gradient hook), or FedAvg's mean delta.
        Each client's trained model (what it was sent + Δ) and the BN statistics it
        computed on it are kept for replay."""
        cfg = self.cfg
        batch = self.batch_of_round(server_round)
        self.trained = batch
        sent = self.generate([u.client_id for u in updates])
        for u, theta in zip(updates, sent, strict=True):
            self.bn_stats[u.client_id] = {
                k: v.detach().to(self.device) for k, v in u.extras.items()
            }
            self.client_models[u.client_id] = {
                k: (v + u.delta[k].to(v)).to(self.device) for k, v in theta.items()
            }
        if self.fedavg:
            w = round_weights([u.num_examples for u in updates], "samples")
            with torch.no_grad():
                for k, v in self.global_model.items():
                    step = torch.stack([u.delta[k].to(v) for u in updates])
                    v.add_(torch.einsum("c,c...->...", w.to(v), step))
            return {}
        assert self.optimizer is not None
        weights = round_weights([u.num_examples for u in updates], cfg.weighting)
        params = [*self.hnet.parameters(), self.store.weight]
        hook = (
            (lambda: self.bank.grad_hook(cfg.server_weight_decay))
            if cfg.masks
            else None
        )
        # the batch's last ``mask-settle`` share of rounds trains under a fixed mask
        within = (server_round - 1) % self.rounds_per_batch
        self.bank.learning = within < round(
            (1 - cfg.mask_settle) * self.rounds_per_batch
        )
        norm = hypernet_step(
            lambda e: self.hnet(e, self._masks(batch)),
            self.store([u.client_id for u in updates]),
            [{k: d.to(self.device) for k, d in u.delta.items()} for u in updates],
            weights,
            self.optimizer,
            params,
            cfg.clip_norm,
            grad_hook=hook,
        )
        out = {"grad-norm": norm}
        if cfg.masks:
            out["mask-learning"] = float(self.bank.learning)
            out["neurons-on"] = float(sum(int(m.sum()) for m in self.bank.current()))
            out["mask-penalty"] = self.bank.penalty_value(self.bank.last_scales)
            out["score-task-grad"] = self.bank.task_grad
        return out

    # ---- evaluation and batch joins -------------------------------------------
    def _batch_means(
        self, results: dict[str, dict[str, float]], key: str
    ) -> dict[int, float]:
        groups: dict[int, list[float]] = {}
        for cid, metrics in results.items():
            if cid in self.assigned and key in metrics:
                groups.setdefault(self.assigned[cid], []).append(metrics[key])
        return {b: float(np.mean(v)) for b, v in sorted(groups.items())}

    def evaluation_metrics(
        self, server_round: int, results: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """Accuracy per batch; at a batch's last round, its join report (mask fixed,
        replay, RI, PA)."""
        row: dict[str, Any] = {}
        for key in ("test-acc", "val-acc"):
            for b, value in self._batch_means(results, key).items():
                row[f"batch-{b}-{key}"] = value
        batch = self.batch_of_round(server_round)
        val = self._batch_means(results, "val-acc")
        if batch in val and batch > self.closed:
            self.curves.setdefault(batch, []).append(val[batch])
        if server_round % self.rounds_per_batch == 0 and batch > self.closed:
            assert self._ops is not None, "run_round runs before any evaluation"
            row.update(self._close_batch(self._ops, batch, results))
        return row

    def _close_batch(
        self, ops: ServerOps, batch: int, results: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        cfg = self.cfg
        pre_test = self._batch_means(results, "test-acc")
        curve = self.curves.get(batch, [])
        report: dict[str, Any] = {
            "batch": batch,
            "clients": self.members(batch),
            "first_round": batch * self.rounds_per_batch + 1,
            "last_round": (batch + 1) * self.rounds_per_batch,
            "acc": pre_test.get(batch),
            "val_curve": list(curve),
            "val_last_gain": curve[-1] - curve[-2] if len(curve) > 1 else None,
        }
        if cfg.masks and not self.fedavg:
            report.update({k.replace("-", "_"): v for k, v in self.bank.fix().items()})
        else:  # one model (or one hypernetwork) every batch uses and trains
            total = (
                sum(v.numel() for v in self.global_model.values())
                if self.fedavg
                else sum(p.numel() for p in self.hnet.parameters())
            )
            report.update(
                {
                    "weights_used": total,
                    "weights_reused": total if batch else 0,
                    "weights_total": total,
                }
            )
            if not self.fedavg:
                units = sum(self.hnet.widths)
                report.update(
                    {
                        "neurons_used": units,
                        "neurons_reused": units if batch else 0,
                        "neurons_new": 0 if batch else units,
                        "neurons_free": 0,
                        "neurons_total": units,
                    }
                )
        report["capacity"] = capacity_of(report)
        self.closed = batch
        self.optimizer = None  # the next batch starts with a fresh one
        after = dict(pre_test)
        after_val = self._batch_means(results, "val-acc")
        if cfg.replay and batch >= 1:
            after, after_val, report["replay"] = self._replay(ops, batch, results)
        earlier = [b for b in range(batch) if b in self.batch_acc and b in after]
        report["before"] = {str(b): self.batch_acc[b] for b in earlier}
        report["after"] = {str(b): after[b] for b in earlier}
        report["ri"] = _mean([after[b] - self.batch_acc[b] for b in earlier])
        report["ri_val"] = _mean(
            [
                after_val[b] - self.batch_val[b]
                for b in earlier
                if b in self.batch_val and b in after_val
            ]
        )
        self.batch_val.update(after_val)
        if cfg.pa_reference and batch >= 1 and report["acc"] is not None:
            ref = self._reference(ops, batch)
            report["acc_reference"] = ref
            report["pa"] = report["acc"] - ref if ref is not None else None
        self.batch_acc.update(after)
        self.reports.append(report)
        log(
            INFO,
            "pFedDSH: batch %d closed: acc %.4f, RI %s, PA %s, neurons used %s "
            "reused %s free %s (of %s)",
            batch,
            report["acc"] or 0.0,
            report["ri"],
            report.get("pa"),
            report.get("neurons_used"),
            report.get("neurons_reused"),
            report.get("neurons_free"),
            report.get("neurons_total"),
        )
        row = {
            "batch-closed": batch,
            "weights-used": report["weights_used"],
            "weights-reused": report["weights_reused"],
        }
        for key in ("neurons_used", "neurons_reused", "neurons_free"):
            if key in report:
                row[key.replace("_", "-")] = report[key]
        for key in ("ri", "pa", "acc_reference"):
            if report.get(key) is not None:
                row[key.replace("_", "-")] = report[key]
        for b, value in after.items():
            row[f"batch-{b}-test-acc-after-join"] = value
        return row

    # ---- replay ---------------------------------------------------------------
    def _classes(self, client_id: str) -> list[int]:
        indicator = self.registry.clients[client_id].meta.get("classes", [])
        return [c for c, on in enumerate(indicator) if on] or list(
            range(self.cfg.num_classes)
        )

    def _synthesise(self, batch: int) -> Synthetic:
        """DeepInversion on each of ``batch``'s clients' last trained models, with
        the BN statistics the client computed on that model and its own data."""
        cfg = self.cfg
        ids = [
            c
            for c in self.members(batch)
            if c in self.bn_stats and c in self.client_models
        ]
        sources = [
            (self.client_models[c], self.bn_stats[c], self._classes(c)) for c in ids
        ]
        weights = InversionWeights(
            cfg.di_steps,
            cfg.di_lr,
            cfg.di_bn_weight,
            cfg.di_tv_weight,
            cfg.di_l2_weight,
        )
        return synthesise(
            self.template,
            sources,
            cfg.di_images,
            cfg.image_shape,
            weights,
            cfg.seed * 31 + batch,
        )

    def _replay(
        self, ops: ServerOps, batch: int, results: dict[str, dict[str, float]]
    ) -> tuple[dict[int, float], dict[int, float], dict[str, Any]]:
        """DeepInversion from ``batch``'s trained models, fine-tuning for earlier
        batches, evaluation, and (``replay-accept = "val"``, our ablation) per group
        of batches keep-or-revert on validation."""
        cfg = self.cfg
        started = time.monotonic()
        synthetic = self._synthesise(batch)
        grid = image_grid(
            ops.run_dir / f"synthetic-batch-{batch}.png",
            synthetic.images,
            synthetic.labels,
            f"pFedDSH: DeepInversion from batch {batch}'s models",
        )
        groups = [[b] for b in range(batch)] if cfg.masks else [list(range(batch))]
        snapshot = (
            {k: v.detach().clone() for k, v in self.hnet.state_dict().items()},
            self.store.weight.detach().clone(),
        )
        steps = {str(g): self._finetune(g, synthetic) for g in map(tuple, groups)}
        ids = [
            c
            for c in self.registry.participants
            if self.assigned.get(c, batch + 1) <= batch
        ]
        config = ConfigRecord(
            {
                "round": (batch + 1) * self.rounds_per_batch,
                "phase": "replay-eval",
                "method": cfg.method,
            }
        )
        post: dict[str, dict[str, float]] = {}
        for chunk in [
            ids[i : i + cfg.eval_clients_per_batch]
            for i in range(0, len(ids), cfg.eval_clients_per_batch)
        ]:
            got, _ = ops.evaluate_clients(
                self.evaluate_messages(chunk, config), f"replay {batch}"
            )
            post.update(got)
        pre_val, post_val = (
            self._batch_means(results, "val-acc"),
            self._batch_means(post, "val-acc"),
        )
        accepted = []
        for group in groups:
            before = _mean([pre_val[b] for b in group if b in pre_val])
            after = _mean([post_val[b] for b in group if b in post_val])
            keep = cfg.replay_accept == "always" or (
                before is not None and after is not None and after >= before
            )
            if keep:
                accepted += group
            else:
                self._revert(group, snapshot)
        pre_test, post_test = (
            self._batch_means(results, "test-acc"),
            self._batch_means(post, "test-acc"),
        )

        def kept(post: dict[int, float], pre: dict[int, float]) -> dict[int, float]:
            if cfg.masks:  # each group's batches moved (kept) or not
                return {b: post[b] if b in accepted else pre[b] for b in pre}
            return post if accepted else dict(pre)  # one group: all moved, or none

        final, final_val = kept(post_test, pre_test), kept(post_val, pre_val)
        bn = [r["bn-last"] / max(r["bn-first"], 1e-12) for r in synthetic.reports]
        return (
            final,
            final_val,
            {
                "images": len(synthetic.labels),
                "grid": grid.name,
                "accepted": accepted,
                "steps": steps,
                "val_before": {str(b): v for b, v in pre_val.items() if b < batch},
                "val_after": {str(b): v for b, v in post_val.items() if b < batch},
                "di_bn_ratio": _mean(bn),
                "di_label_acc": _mean([r["label-acc"] for r in synthetic.reports]),
                "seconds": time.monotonic() - started,
            },
        )

    def _finetune(self, group: tuple[int, ...], synthetic: Synthetic) -> int:
        """Fine-tune for the batches of ``group`` on the synthetic images: their
        clients' embeddings and (masks) the weights only their batch uses, or (no
        masks) the whole hypernetwork. Returns the steps that had a loss."""
        cfg = self.cfg
        clients = [c for b in group for c in self.members(b) if c in self.bn_stats]
        if not clients or cfg.replay_steps == 0 or not len(synthetic.labels):
            return 0
        rows = torch.zeros(
            self.store.weight.shape[0], 1, dtype=torch.bool, device=self.device
        )
        rows[self.store.rows(clients)] = True
        allowed = self.bank.exclusive(group[0]) if cfg.masks else None
        opt = torch.optim.SGD(
            [*self.hnet.parameters(), self.store.weight], lr=cfg.replay_lr, momentum=0.9
        )
        done = 0
        for _ in range(cfg.replay_steps):
            opt.zero_grad(set_to_none=True)
            losses = []
            for b in group:
                ids = [c for c in self.members(b) if c in self.bn_stats]
                if not ids:
                    continue
                gen = self._generate(ids, b)
                for i, cid in enumerate(ids):
                    loss = replay_loss(
                        self.template,
                        {k: v[i] for k, v in gen.items()},
                        self.bn_stats[cid],
                        synthetic,
                        self._classes(cid),
                    )
                    if loss is not None:
                        losses.append(loss)
            if not losses:
                break
            torch.stack(losses).mean().backward()
            with torch.no_grad():
                for name, p in self.hnet.named_parameters():
                    if p.grad is not None and allowed is not None:
                        p.grad.mul_(allowed[name])
                if self.store.weight.grad is not None:
                    self.store.weight.grad.mul_(rows)
            opt.step()
            done += 1
        return done

    def _revert(
        self, group: list[int], snapshot: tuple[dict[str, torch.Tensor], torch.Tensor]
    ) -> None:
        """Undo a group's replay: its embeddings and the weights it could move."""
        hnet_state, store = snapshot
        clients = [c for b in group for c in self.members(b)]
        with torch.no_grad():
            if clients:
                rows = self.store.rows(clients)
                self.store.weight[rows] = store[rows]
            if not self.cfg.masks:
                self.hnet.load_state_dict(hnet_state)
                return
            allowed = self.bank.exclusive(group[0])
            for name, p in self.hnet.named_parameters():
                p.copy_(torch.where(allowed[name], hnet_state[name], p))

    # ---- PA reference ---------------------------------------------------------
    def _reference(self, ops: ServerOps, batch: int) -> float | None:
        """Test accuracy of ``batch``'s clients under an independent hypernetwork
        trained on them alone for the same rounds (a sub-run, same settings)."""
        cfg = self.cfg
        sub_cfg = dataclasses.replace(
            cfg,
            num_rounds=self.rounds_per_batch,
            stop_after_round=0,
            method_values={
                **cfg.method_values,
                "client-batches": 1,
                "replay": False,
                "pa-reference": False,
            },
        )
        strategy = Reference(
            sub_cfg, self.registry, self.device, members=self.members(batch)
        )
        log(
            INFO,
            "pFedDSH: PA reference for batch %d (%d rounds on its clients alone)",
            batch,
            sub_cfg.num_rounds,
        )
        summary = ops.sub_run(sub_cfg, strategy, f"pa-ref-b{batch}")
        return summary.get("participant_acc")

    # ---- held-out clients, report, state --------------------------------------
    def nonparticipant_params(
        self, ops: ServerOps, client_ids: Sequence[str]
    ) -> dict[str, Params] | None:
        """The mean trained embedding through the last fixed batch's mask (FedAvg:
        the global model)."""
        trained = [c for c in self.assigned if self.assigned[c] <= max(self.closed, 0)]
        if not client_ids or not trained:
            return {}
        if self.fedavg:
            model = {k: v.detach().cpu() for k, v in self.global_model.items()}
            return {c: model for c in client_ids}
        with torch.no_grad():
            v = self.store(trained).mean(0, keepdim=True)
            gen = self.hnet(v, self._masks(max(self.closed, 0)))
        params = {k: t[0].detach().cpu() for k, t in gen.items()}
        return {c: params for c in client_ids}

    def final_report(
        self, ops: ServerOps, nonparticipants: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """RI and PA (means over batch joins), the per-batch reports, the plot."""
        joins = [r for r in self.reports if r["batch"] >= 1]
        ri = _mean([r["ri"] for r in joins if r.get("ri") is not None])
        ri_val = _mean([r["ri_val"] for r in joins if r.get("ri_val") is not None])
        pa = _mean([r["pa"] for r in joins if r.get("pa") is not None])
        cfg = self.cfg
        label = (
            "FedAvg on the batch schedule"
            if self.fedavg
            else f"pFedDSH ({'masks' if cfg.masks else 'no masks'}, "
            f"{'replay' if cfg.replay else 'no replay'}"
            f"{', val gate' if cfg.replay and cfg.replay_accept == 'val' else ''})"
        )
        path = batch_accuracy_plot(
            ops.run_dir / "batch-accuracy.png",
            ops.history,
            cfg.client_batches,
            [r["last_round"] for r in self.reports[:-1]],
            label,
        )
        capacity = [r["capacity"] for r in self.reports]
        out: dict[str, Any] = {}
        if cfg.masks and not self.fedavg:
            out["capacity_plot"] = capacity_plot(
                ops.run_dir / "neurons-per-batch.png",
                capacity,
                f"{label}: neurons used vs batch index "
                f"(penalty {cfg.mask_penalty:g}, budget {cfg.mask_budget:g}, "
                f"reuse cost {cfg.mask_reuse_cost:g})",
            ).name
            exhausted = [c["batch"] for c in capacity if c.get("free") == 0.0]
            out["capacity_exhausted_at"] = exhausted[0] if exhausted else None
        final = {str(b): v for b, v in sorted(self.batch_acc.items())}
        return {
            "ri": ri,
            "ri_val": ri_val,
            "pa": pa,
            "batches": self.reports,
            "capacity": capacity,
            "final_batch_acc": final,
            "final_acc": _mean(list(self.batch_acc.values())),
            "client_batches": cfg.client_batches,
            "batch_learner": cfg.batch_learner,
            "masks": cfg.masks,
            "replay": cfg.replay,
            "replay_accept": cfg.replay_accept,
            "mask_penalty": cfg.mask_penalty,
            "mask_reuse_cost": cfg.mask_reuse_cost,
            "mask_budget": cfg.mask_budget,
            "mask_budget_scope": cfg.mask_budget_scope,
            "mask_sparsity": cfg.mask_sparsity,
            "plot": path.name,
            **out,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "hnet": self.hnet.state_dict(),
            "store": self.store.state_dict(),
            "bank": self.bank.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "batch": self.batch,
            "closed": self.closed,
            "trained": self.trained,
            "assigned": dict(self.assigned),
            "bn_stats": {c: dict(s) for c, s in self.bn_stats.items()},
            "client_models": {c: dict(m) for c, m in self.client_models.items()},
            "global_model": dict(self.global_model),
            "curves": {b: list(v) for b, v in self.curves.items()},
            "batch_acc": dict(self.batch_acc),
            "batch_val": dict(self.batch_val),
            "reports": [dict(r) for r in self.reports],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.hnet.load_state_dict(state["hnet"])
        self.store.load_state_dict(state["store"])
        self.assigned = dict(state["assigned"])
        self.batch, self.closed = int(state["batch"]), int(state["closed"])
        self.bn_stats = {c: dict(s) for c, s in state["bn_stats"].items()}
        self.client_models = {c: dict(m) for c, m in state["client_models"].items()}
        self.global_model = dict(state["global_model"])
        self.curves = {int(b): list(v) for b, v in state["curves"].items()}
        self.batch_acc = {int(b): v for b, v in state["batch_acc"].items()}
        self.batch_val = {int(b): v for b, v in state.get("batch_val", {}).items()}
        self.reports = [dict(r) for r in state["reports"]]
        self.bank.load_state_dict(state["bank"])
        self.trained = int(state["trained"])
        if state["optimizer"] is not None:
            self.optimizer = self._build_optimizer()
            load_optimizer_state(self.optimizer, state["optimizer"])
        self._sync()

    def hypernet_params(self) -> int:
        """Size of the server's model: the hypernetwork (FedAvg: 0, none)."""
        return 0 if self.fedavg else sum(p.numel() for p in self.hnet.parameters())


class Reference(PFedDSH):
    """PA's reference: the same method on one batch's clients alone (no ``name``:
    not a registered method; run as a sub-run by :meth:`PFedDSH._reference`)."""

    def __init__(self, *args: Any, members: Sequence[str], **kwargs: Any) -> None:
        self._only = set(members)
        super().__init__(*args, **kwargs)

    def _batch_for(self, client_id: str) -> int | None:
        return 0 if client_id in self._only else None

    def nonparticipant_params(
        self, ops: ServerOps, client_ids: Sequence[str]
    ) -> dict[str, Params] | None:
        return None

    def final_report(
        self, ops: ServerOps, nonparticipants: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        return {"reference_clients": sorted(self._only)}


__all__ = ["PFedDSH", "Reference"]
