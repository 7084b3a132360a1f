"""HyperFLoRA (Lu et al.): a hypernetwork generates LoRA adapters from class indicators.

One run has two phases.

1. Pre-training (:meth:`HyperFLoRA.prepare`). ``pretrain-rounds`` of FedAvg over the
   participants run through the very same server loop, as a sub-run written to
   ``outputs/<run>/pretrain/``; the global model of the round with the best mean
   participant validation accuracy is θ_pret (or θ_pret is loaded from
   ``pretrained-model``, a ``pretrained.pt`` an earlier run wrote). θ_pret is then
   sent once to every client in an ``evaluate.lora`` message: clients cache it and
   answer with its accuracy, which is the "Pretrain" row (participants and
   bystanders). Its bytes are reported once (``base_broadcast_bytes``), not per
   round, as in the paper, where θ_pret is broadcast before training.
2. Hypernetwork rounds (:meth:`HyperFLoRA.run_round`). ψ maps r_i ∈ {0,1}^K (classes
   present, no counts) to every adapter tensor, ρ_i = h(r_i; ψ). Each sampled
   participant trains ρ_i on its data (θ_pret frozen) and returns Δ_i = ρ_fin −
   ρ_init; with pairing, the round's participants are also paired at random, the
   pseudo-client {i, j} gets r_ij = a random half (rounded up) of K_i ∪ K_j, and its
   adapter h(r_ij) is trained on i's samples of those classes, relayed through the
   server to j, trained there, and so on: ``pair-exchanges`` E times i then j, every
   hop a real ``train.lora`` message validated like any reply. A client that holds
   none of r_ij's classes is skipped in the relay. Every unit (client or pair)
   then updates ψ with the shared rule (:mod:`server.update`) on Δ = ρ_fin − ρ_init.

Variants (``hyperflora-variant``): ``standard`` (no pairing, the paper's "noCP"),
``paired`` (the default: participants and pairs in one averaged step, eq. 4.8),
``sequential`` (pairing, but ψ is regenerated and stepped after each unit, as
pFedHN's one-client updates) and ``head`` ("+θ_hd": the hypernetwork generates the
classifier head's weights themselves instead of its adapter; pairing as ``paired``).

Bystanders never train: they registered with r_i and receive h(r_i) in an
``evaluate.lora`` message. Participants are evaluated with generated adapters (no
local steps) and, as an upper reference at the end, after ``finetune-steps`` local
steps on their generated adapters.

Choices where the paper is vague (see docs/hyperflora.md): the hypernet starts at
B = 0 (round 1 generates θ_pret exactly), a failed hop drops its pair from the
round's update, and communication counts what is really sent: r_i travels once at
registration, r_ij with each hop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from logging import INFO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common.logger import log

from common.hypernets.lora import LoRAHyperNet
from common.models.lora import add_lora, generated_tensors, head_name, pack, unpack
from common.protocol import LORA, RHO, routed
from common.records import to_record
from server.messaging import Exchange, Outgoing
from server.paper_cost import hyperflora_cost
from server.registry import message_to
from server.strategies.base import HyperflowerStrategy, Params, summarise
from server.strategies.fedavg import FedAvg
from server.strategies.pfedhn import (
    load_optimizer_state,
    make_optimizer,
    registered_indicator,
)
from server.update import hypernet_step, round_weights
from server.validation import ClientUpdate

if TYPE_CHECKING:
    from server.ops import ServerOps

#: Run-config keys a ``pretrained.pt`` must agree on to be reused.
PRETRAIN_FINGERPRINT = (
    "dataset",
    "model",
    "num-clients",
    "holdout",
    "partitioner",
    "classes-per-client",
    "dirichlet-alpha",
    "shards-per-client",
    "samples-per-client",
    "val-fraction",
    "test-fraction",
    "seed",
)
KINDS = {kind: routed(kind, LORA) for kind in ("train", "evaluate")}


def pseudo_indicator(
    r_i: Sequence[int], r_j: Sequence[int], rng: np.random.Generator
) -> list[int]:
    """r_ij: a random half (rounded up) of the classes of K_i ∪ K_j (eq. 4.7), 0/1."""
    union = [k for k, (a, b) in enumerate(zip(r_i, r_j, strict=True)) if a or b]
    chosen = set(rng.choice(union, size=(len(union) + 1) // 2, replace=False).tolist())
    return [1 if k in chosen else 0 for k in range(len(r_i))]


def message_values(msg: Message) -> int:
    """Scalars a message carries: array elements plus list entries (r) in configs."""
    if msg.has_error():
        return 0
    content = msg.content
    values = sum(
        int(np.prod(arr.shape))
        for rec in content.array_records.values()
        for arr in rec.values()
    )
    return values + sum(
        len(v)
        for rec in content.config_records.values()
        for v in rec.values()
        if isinstance(v, list)
    )


@dataclass
class Unit:
    """One training sample of ψ in a round: a participant, or a pseudo-client pair."""

    key: str
    r: list[int]
    hops: list[str]
    classes: list[int] | None = None
    step: int = 0
    start: Params = field(default_factory=dict)
    rho: Params = field(default_factory=dict)
    seen: int = 0
    loss: float = 0.0
    correct: float = 0.0
    failed: bool = False

    @property
    def is_pair(self) -> bool:
        """Whether this unit is a pseudo-client (its hops are relays)."""
        return self.classes is not None


@dataclass
class RoundStats:
    """Everything a multi-exchange round sent and received."""

    exchanges: int = 0
    hops: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    values_down: int = 0
    values_up: int = 0
    faults: dict[str, int] = field(
        default_factory=lambda: {"error": 0, "missing": 0, "invalid": 0}
    )

    def add(self, ex: Exchange, valid: int) -> None:
        """Count one exchange: bytes, values and faults."""
        self.exchanges += 1
        self.bytes_down += ex.bytes_down
        self.bytes_up += ex.bytes_up
        self.values_down += sum(message_values(m) for m in ex.sent.values())
        self.values_up += sum(message_values(m) for m in ex.replies.values())
        self.faults["error"] += len(ex.errors)
        self.faults["missing"] += len(ex.missing)
        self.faults["invalid"] += len(ex.replies) - valid


class PretrainFedAvg(FedAvg):
    """Phase 1's FedAvg. With ``pretrain-epochs`` each train message names its
    client's step count (epochs × batches of its registered training set), which
    the plain train handler honours; otherwise clients train as in any round."""

    def messages(
        self,
        kind: str,
        client_ids: Sequence[str],
        params: Sequence[Params],
        config: ConfigRecord,
        **extra: ArrayRecord | ConfigRecord,
    ) -> list[Message]:
        msgs = super().messages(kind, client_ids, params, config, **extra)
        epochs = self.cfg.pretrain_epochs
        if kind != "train" or not epochs:
            return msgs
        for cid, msg in zip(client_ids, msgs, strict=True):
            n = int(self.registry.clients[cid].meta["num-train"])
            steps = epochs * max(1, -(-n // self.cfg.batch_size))
            msg.content["config"] = ConfigRecord({**dict(config), "local-steps": steps})
        return msgs


class HyperFLoRA(HyperflowerStrategy):
    """Hypernetwork-generated LoRA adapters with client pairing and bystanders."""

    name = "hyperflora"
    #: Bystanders send only their class indicator r_i (no counts, no samples);
    #: participants also send their training-set size for the FedAvg phase.
    registration_fields = {
        "participant": ("num-train", "classes"),
        "nonparticipant": ("classes",),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.variant = cfg.hyperflora_variant
        with torch.random.fork_rng():  # A's start draw is fixed by the seed alone
            torch.manual_seed(cfg.seed)
            self.adapted = add_lora(
                self.template, cfg.lora_targets, cfg.lora_rank, cfg.lora_alpha
            )
        self.head = head_name(self.template)
        start = {
            k: v.clone()
            for k, v in generated_tensors(self.template, self.variant == "head").items()
        }
        self.gen_shapes = {k: v.shape for k, v in start.items()}
        torch.manual_seed(cfg.seed)
        self.hnet = LoRAHyperNet(
            cfg.num_classes, self.gen_shapes, cfg.hn_hidden, cfg.hn_n_hidden
        ).to(self.device)
        self.hnet.start_at(start, weight_scale=0.0)
        self.optimizer = make_optimizer(
            cfg.server_optimizer,
            [{"params": list(self.hnet.parameters())}],
            cfg.server_lr,
            cfg.server_momentum,
            cfg.server_weight_decay,
        )
        self.pair_rng = np.random.default_rng([cfg.seed, 2])
        self.base: Params = {}
        self.base_id = ""
        self._base_record: ArrayRecord | None = None
        #: client id -> node id its cached θ_pret was sent to (runtime only: a fresh
        #: process, e.g. after resume, sends the base again with the first message).
        self.base_nodes: dict[str, int] = {}
        self.report: dict[str, Any] = {}

    # ---- sizes -------------------------------------------------------------
    def hypernet_params(self) -> int:
        return sum(p.numel() for p in self.hnet.parameters())

    def client_trainable_params(self) -> int:
        """CTWC: the generated tensors a participant trains (ρ, or ρ_enc + θ_hd)."""
        return sum(int(torch.Size(s).numel()) for s in self.gen_shapes.values())

    # ---- generation ------------------------------------------------------------
    def indicator(self, client_id: str) -> list[int]:
        """r_i as the client reported it at registration."""
        return registered_indicator(self.registry, client_id)

    def generate_from(self, indicators: Sequence[Sequence[int]]) -> list[Params]:
        """ρ = h(r; ψ) for each indicator, in one batched forward (no graph kept)."""
        r = torch.tensor(indicators, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            out = self.hnet(r)
        return [
            {k: v[i].detach().cpu() for k, v in out.items()}
            for i in range(len(indicators))
        ]

    def generate(self, client_ids: Sequence[str]) -> list[Params]:
        """Each client's adapters from its class indicator."""
        return self.generate_from([self.indicator(c) for c in client_ids])

    def nonparticipant_params(
        self, ops: ServerOps, client_ids: Sequence[str]
    ) -> dict[str, Params] | None:
        """Bystanders get h(r_i) and nothing else: no training, no data."""
        return dict(zip(client_ids, self.generate(client_ids), strict=True))

    # ---- messages ----------------------------------------------------------------
    def set_base(self, base: Params) -> None:
        """Adopt θ_pret: the id clients cache it under, and +θ_hd's starting head."""
        self.base = {k: v.detach().cpu().clone() for k, v in base.items()}
        digest = hashlib.sha256()
        for key in sorted(self.base):
            digest.update(key.encode())
            digest.update(self.base[key].numpy().tobytes())
        self.base_id = digest.hexdigest()[:16]
        self._base_record = to_record(self.base)
        self.base_nodes.clear()

    def packed(self, params: Params) -> dict[str, torch.Tensor]:
        """The generated tensors as the one-array record clients receive."""
        return {RHO: pack(params, list(self.gen_shapes))} if params else {}

    def unpacked(self, record: Params) -> Params:
        """A packed delta (``rho``) back to named tensors."""
        return unpack(record[RHO], self.gen_shapes)

    def lora_message(
        self,
        kind: str,
        client_id: str,
        params: Params,
        config: ConfigRecord,
        **extra: Any,
    ) -> Message:
        """A ``train.lora``/``evaluate.lora`` message with the generated tensors
        packed in one array; θ_pret rides along only when this client's node has not
        been sent it yet."""
        node = self.registry.node_of(client_id)
        conf = ConfigRecord({**dict(config), **extra, "base-id": self.base_id})
        records: dict[str, Any] = {
            "params": to_record(self.packed(params)),
            "config": conf,
        }
        if self.base_nodes.get(client_id) != node:
            records["base"] = self._base_record
            self.base_nodes[client_id] = node
        return message_to(node, kind, **records)

    def messages(
        self,
        kind: str,
        client_ids: Sequence[str],
        params: Sequence[Params],
        config: ConfigRecord,
        **extra: ArrayRecord | ConfigRecord,
    ) -> list[Message]:
        """The loop's train/evaluate messages, as their LoRA actions (θ_pret rides
        along where a node lacks it; no other records)."""
        if extra:
            raise ValueError(f"HyperFLoRA messages carry no extra records: {extra}")
        return [
            self.lora_message(KINDS[kind], c, p, config)
            for c, p in zip(client_ids, params, strict=True)
        ]

    def _forget_base(self, client_ids: Sequence[str]) -> None:
        for cid in client_ids:
            self.base_nodes.pop(cid, None)

    # ---- phase 1: θ_pret ---------------------------------------------------------
    def prepare(self, ops: ServerOps) -> None:
        """Pre-train (or load) θ_pret, then send it to every client once."""
        cfg = self.cfg
        saved = ops.run_dir / "pretrained.pt"
        if cfg.pretrained_model:
            base, report = load_pretrained(Path(cfg.pretrained_model), cfg.to_dict())
        elif cfg.resume and saved.exists():
            base, report = load_pretrained(saved, cfg.to_dict())
        else:
            base, report = self._pretrain(ops)
            torch.save(
                {
                    "format": 1,
                    "base": base,
                    "report": report,
                    "fingerprint": {k: cfg.to_dict()[k] for k in PRETRAIN_FINGERPRINT},
                },
                saved,
            )
        self.set_base(base)
        if self.variant == "head":
            self.hnet.start_at(
                {
                    k: self.base[k]
                    for k in self.gen_shapes
                    if k.startswith(self.head + ".")
                }
            )
        self.report = {f"pretrain_{k}": v for k, v in report.items()}
        self._broadcast(ops)

    def _pretrain(self, ops: ServerOps) -> tuple[Params, dict[str, Any]]:
        """FedAvg over participants through the server loop; the best round's model."""
        sub_cfg = dataclasses.replace(
            self.cfg,
            method="fedavg",
            num_rounds=self.cfg.pretrain_rounds,
            stop_after_round=0,
        )
        fedavg = PretrainFedAvg(sub_cfg, self.registry, self.device)
        log(
            INFO,
            "HyperFLoRA phase 1: %d rounds of FedAvg pre-training",
            sub_cfg.num_rounds,
        )
        summary = ops.sub_run(sub_cfg, fedavg, "pretrain")
        return dict(fedavg.global_params()), {
            "rounds": sub_cfg.num_rounds,
            "best_round": summary.get("best_round"),
            "epochs": self.cfg.pretrain_epochs,
            "bytes_per_round": (
                summary.get("bytes_down_per_round", 0.0)
                + summary.get("bytes_up_per_round", 0.0)
            ),
            "wall_s": summary.get("wall_s"),
        }

    def _broadcast(self, ops: ServerOps) -> None:
        """θ_pret to every client (one ``evaluate.lora``): the Pretrain accuracies."""
        ids = self.registry.participants + self.registry.nonparticipants
        config = ConfigRecord({"round": 0, "phase": "base", "method": self.cfg.method})
        results, ex = ops.evaluate_clients(
            [self.lora_message(KINDS["evaluate"], c, {}, config) for c in ids],
            "base broadcast",
        )
        self._forget_base([c for c in ids if c not in results])
        for group, members in (
            ("participant", self.registry.participants),
            ("bystander", self.registry.nonparticipants),
        ):
            stats = summarise([results[c] for c in members if c in results])
            self.report[f"pretrain_{group}_acc"] = stats.get("test-acc")
            self.report[f"pretrain_{group}_acc_std"] = stats.get("test-acc-std")
        self.report["base_broadcast_bytes"] = ex.bytes_down + ex.bytes_up
        log(
            INFO,
            "θ_pret sent to %d clients (%.2f MB): participants %.4f, bystanders %.4f",
            len(results),
            ex.bytes_down / 1e6,
            self.report["pretrain_participant_acc"] or float("nan"),
            self.report["pretrain_bystander_acc"] or float("nan"),
        )

    # ---- phase 2: hypernetwork rounds ----------------------------------------
    def plan_round(self, server_round: int) -> list[Unit]:
        """The round's units: sampled participants, then (with pairing) their pairs."""
        ids = self.sample(server_round)
        units = [Unit(c, self.indicator(c), [c]) for c in ids]
        if self.variant == "standard":
            return units
        order = self.pair_rng.permutation(len(ids))
        for a, b in zip(order[0::2], order[1::2], strict=False):
            i, j = ids[a], ids[b]
            r_i, r_j = self.indicator(i), self.indicator(j)
            r = pseudo_indicator(r_i, r_j, self.pair_rng)
            holds = {
                c: any(x and y for x, y in zip(rc, r, strict=True))
                for c, rc in ((i, r_i), (j, r_j))
            }
            hops = [c for c in [i, j] * self.cfg.pair_exchanges if holds[c]]
            units.append(Unit(f"pair:{i}+{j}", r, hops, classes=r))
        return units

    def _train_units(
        self,
        ops: ServerOps,
        server_round: int,
        config: ConfigRecord,
        units: list[Unit],
        stats: RoundStats,
    ) -> list[Unit]:
        """Generate each unit's adapter and walk all units' hops in lock-step: one
        exchange per hop index, every pair relayed through the server."""
        for unit, rho in zip(
            units, self.generate_from([u.r for u in units]), strict=True
        ):
            unit.start, unit.rho = rho, dict(rho)
        active = [u for u in units if u.hops]
        while active:
            outbox = []
            for unit in active:
                extra: dict[str, Any] = {"phase": f"train-{unit.step}"}
                if unit.is_pair:
                    extra.update(phase=f"pair-{unit.step}", classes=unit.classes)
                outbox.append(
                    Outgoing(
                        unit.key,
                        self.lora_message(
                            KINDS["train"],
                            unit.hops[unit.step],
                            unit.rho,
                            config,
                            **extra,
                        ),
                    )
                )
            valid, ex = ops.send_train(
                outbox, f"round {server_round} exchange {stats.exchanges + 1}"
            )
            stats.add(ex, len(valid))
            stats.hops += sum(1 for u in active if u.is_pair and u.key in valid)
            self._forget_base([u.hops[u.step] for u in active if u.key in ex.errors])
            still = []
            for unit in active:
                update = valid.get(unit.key)
                if update is None:
                    unit.failed = True
                    continue
                delta = self.unpacked(update.delta)
                unit.rho = {k: v + delta[k] for k, v in unit.rho.items()}
                n = update.num_examples
                unit.seen += n
                unit.loss += update.metrics.get("train-loss", 0.0) * n
                unit.correct += update.metrics.get("train-acc", 0.0) * n
                unit.step += 1
                if unit.step < len(unit.hops):
                    still.append(unit)
            active = still
        return [u for u in units if not u.failed and u.seen]

    def hypernet_update(
        self,
        indicators: Sequence[Sequence[int]],
        deltas: Sequence[Params],
        num_examples: Sequence[int],
    ) -> float:
        """The shared rule: −Δ back-propagated through ρ = h(r; ψ), one step."""
        r = torch.tensor(indicators, dtype=torch.float32, device=self.device)
        weights = round_weights(num_examples, self.cfg.weighting)
        return hypernet_step(
            self.hnet,
            r,
            [{k: d.to(self.device) for k, d in delta.items()} for delta in deltas],
            weights,
            self.optimizer,
            list(self.hnet.parameters()),
            self.cfg.clip_norm,
        )

    def _step(self, units: list[Unit]) -> float:
        """The update on Δ = ρ_fin − ρ_init of each unit (one optimiser step)."""
        return self.hypernet_update(
            [u.r for u in units],
            [{k: u.rho[k] - u.start[k] for k in u.start} for u in units],
            [u.seen for u in units],
        )

    def apply_updates(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> dict[str, float]:
        """Standard (unpaired) step from participants' replies (direct-call path)."""
        return {
            "grad-norm": self.hypernet_update(
                [self.indicator(u.client_id) for u in updates],
                [self.unpacked(u.delta) for u in updates],
                [u.num_examples for u in updates],
            )
        }

    def run_round(
        self, ops: ServerOps, server_round: int, config: ConfigRecord
    ) -> dict[str, Any] | None:
        """One round: train every unit (relaying pairs), then update ψ."""
        cfg = self.cfg
        ops.refresh()
        stats = RoundStats()
        update_s, norms, done, units = 0.0, [], [], []

        def attempt() -> tuple[int, None]:
            nonlocal units, update_s
            units = self.plan_round(server_round)
            batches = [[u] for u in units] if self.variant == "sequential" else [units]
            for batch in batches:
                ok = self._train_units(ops, server_round, config, batch, stats)
                if ok and (self.variant == "sequential" or len(ok) >= cfg.min_clients):
                    t0 = time.monotonic()
                    norms.append(self._step(ok))
                    update_s += time.monotonic() - t0
                done.extend(ok)
            return len(done), None

        _, attempts = ops.with_retries(server_round, attempt, "valid units")
        seen = sum(u.seen for u in done)
        return {
            "sampled": len(units),
            "valid": len(done),
            "faults": stats.faults,
            "attempts": attempts,
            "clients": sum(1 for u in units if not u.is_pair),
            "pairs": sum(1 for u in units if u.is_pair),
            "relay-hops": stats.hops,
            "exchanges": stats.exchanges,
            "bytes-down": stats.bytes_down,
            "bytes-up": stats.bytes_up,
            "values-down": stats.values_down,
            "values-up": stats.values_up,
            "server-update-s": update_s,
            "grad-norm": float(np.mean(norms)) if norms else 0.0,
            "train-loss": sum(u.loss for u in done) / seen,
            "train-acc": sum(u.correct for u in done) / seen,
        }

    # ---- end of run ----------------------------------------------------------------
    def final_report(
        self, ops: ServerOps, nonparticipants: dict[str, dict[str, float]]
    ) -> dict[str, Any]:
        """Pretrain row, values per round, bystanders' train count, fine-tuned acc."""
        cfg = self.cfg
        rows = [r for r in ops.history if "values-down" in r]

        def mean(key: str) -> float:
            return float(np.mean([r[key] for r in rows])) if rows else 0.0

        out: dict[str, Any] = {
            "variant": self.variant,
            "lora_rank": cfg.lora_rank,
            "lora_targets": self.adapted,
            "pair_exchanges": cfg.pair_exchanges if self.variant != "standard" else 0,
            "values_down_per_round": mean("values-down"),
            "values_up_per_round": mean("values-up"),
            "values_per_round": mean("values-down") + mean("values-up"),
            "bytes_per_round": mean("bytes-down") + mean("bytes-up"),
            "relay_hops_per_round": mean("relay-hops"),
            "pairs_per_round": mean("pairs"),
            "exchanges_per_round": mean("exchanges"),
            "bystander_train_messages": int(
                sum(m.get("lora-train-messages", 0) for m in nonparticipants.values())
            ),
            **hyperflora_cost(
                mean("clients"),
                cfg.num_classes,
                self.client_trainable_params(),
                cfg.pair_exchanges,
                mean("pairs"),
                self.variant != "standard",
            ),
            **self.report,
        }
        if cfg.finetune_steps > 0:
            ids = self.registry.participants
            config = ConfigRecord(
                {"round": ops.best_round, "phase": "finetune", "method": cfg.method}
            )
            results, ex = ops.evaluate_clients(
                [
                    self.lora_message(
                        KINDS["evaluate"],
                        c,
                        p,
                        config,
                        **{"finetune-steps": cfg.finetune_steps},
                    )
                    for c, p in zip(ids, self.generate(ids), strict=True)
                ],
                "participant fine-tuning",
            )
            stats = summarise(list(results.values()))
            out["participant_finetuned_acc"] = stats.get("test-acc")
            out["participant_finetuned_acc_std"] = stats.get("test-acc-std")
            out["finetune_steps"] = cfg.finetune_steps
        return out

    # ---- state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "hnet": self.hnet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "pair_rng": self.pair_rng.bit_generator.state,
            "base": dict(self.base),
            "report": dict(self.report),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.hnet.load_state_dict(state["hnet"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.pair_rng.bit_generator.state = state["pair_rng"]
        self.report = dict(state["report"])
        if state["base"] and not self.base:
            self.set_base(state["base"])


def load_pretrained(path: Path, config: dict[str, Any]) -> tuple[Params, dict]:
    """θ_pret and its pre-training report from a ``pretrained.pt``, after checking
    it was made for the same data, model, clients and seed."""
    if not path.exists():
        raise FileNotFoundError(f"pretrained-model {path} does not exist")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    found = saved.get("fingerprint", {})
    diff = {
        k: (found.get(k), config.get(k))
        for k in PRETRAIN_FINGERPRINT
        if found.get(k) != config.get(k)
    }
    if diff:
        detail = ", ".join(
            f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items()
        )
        raise ValueError(
            f"pretrained-model {path} was made for another setup ({detail})"
        )
    return saved["base"], dict(saved.get("report", {}))
