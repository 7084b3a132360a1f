"""pFedDSH's hypernetwork with neuron-level batch masks and sparse mask regularisation.

The hypernetwork is an MLP trunk (``layers`` Linear layers of ``hidden`` units, each
followed by a ReLU) and one linear head per target tensor, starting from the target's
initial weights θ₀:

    x₀ = v,   x_l = ReLU(W_l x_{l−1} + b_l) ⊙ m_l^b,   θ = θ₀ + H x_L + c

A batch b's mask m^b switches *units* (the trunk's hidden neurons) on or off, as the
paper's batch-specific masks "activate subsets of neurons"; the heads' outputs are
the generated weights, always on. While batch b trains, each unit has a real-valued
score s_u; the forward uses the binary gate 1[s_u > 0], the backward passes the
gradient through σ(s_u) (a straight-through estimator with a sigmoid's slope, as in
Winning SubNetworks' binary masks).

Sparse mask regularisation: the batch's loss gains R = λ ḡ_l Σ_u c_u σ(s_u), c_u = 1
for a unit no earlier batch uses and c_u = ρ for one an earlier batch already uses
(ρ < 1: reusing is cheaper than claiming, HAT's preference for reuse). ḡ_l is the
round's mean |∂L/∂m_u| over layer l's units (a constant, no gradient): the server's
loss is a surrogate whose scale follows the clients' deltas, so λ is relative — a
unit stays on only while keeping it lowers the loss by more than λ c_u times the
layer's average unit. So a batch uses few units and leaves room for later ones.
λ is ``mask-penalty``, ρ ``mask-reuse-cost``. The scores have their own Adam
(``mask-lr``), so how fast a mask learns does not depend on that scale either.

The budget (``mask-budget`` β, a sparsity target): the penalty spares the ⌈β n_l⌉
units of highest score in each layer and pushes every other unit off. Without it
(β = 0) the mask shrinks for as long as the batch trains: Adam normalises each
score's gradient, a unit's task gradient changes sign from round to round (other
clients each round) while the penalty always pushes the same way, so unit after unit
turns off — 9 to 20 of 300 units after 40 rounds in the 3-batch preset. With β a
batch keeps at most about β of each layer: the units its task gradient has raised
most (ranked by score, as Winning SubNetworks keeps its top-c % scores), the others
pushed off at a rate set by their cost (a reused unit half a free one's). A hinge on
the share on (penalise while more than β are on) does not hold the target: every unit
the penalty pushes crosses zero within the same few Adam steps, far below β.

Freezing: the weights a fixed mask's forward depends on (W_l[j, i] with unit j of
layer l and unit i of layer l−1 both on, b_l[j] with j on, the head columns of the
last layer's units that are on, the heads' biases) are frozen for every later batch;
a later batch may still use them (reuse), and trains every weight no earlier batch
depends on. Units an earlier mask leaves off contribute exact zeros to its forward,
so an earlier batch's generated models stay bit for bit the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

Masks = Sequence[torch.Tensor]

#: Scores stay in [−SCORE_BOUND, SCORE_BOUND]: no gate saturates (σ' ≥ 0.045), so
#: every unit can still flip within about SCORE_BOUND / mask-lr rounds.
SCORE_BOUND = 3.0


class _Gate(torch.autograd.Function):
    """Binary gate 1[s > 0]; backward through σ(s) (straight-through)."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(scores)
        return (scores > 0).to(scores.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (scores,) = ctx.saved_tensors
        sig = torch.sigmoid(scores)
        return grad * sig * (1 - sig)


def gate(scores: torch.Tensor) -> torch.Tensor:
    """The binary mask of ``scores`` with the straight-through sigmoid gradient."""
    return cast(torch.Tensor, _Gate.apply(scores))


def _safe(name: str) -> str:
    """ModuleDict keys may not contain dots."""
    return name.replace(".", "__")


class NeuronHyperNet(nn.Module):
    """θ = θ₀ + H x_L + c with a trunk whose hidden units a batch mask switches.

    θ₀ (``base``, a fixed buffer: the target's initial weights) gives every generated
    model a sensible start: BatchNorm scales near 1, not near 0.
    """

    def __init__(
        self,
        embed_dim: int,
        target_shapes: Mapping[str, torch.Size],
        hidden: int = 100,
        layers: int = 3,
        base: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError("the masked trunk needs at least one layer")
        self.embed_dim = embed_dim
        widths = [embed_dim] + [hidden] * layers
        self.trunk = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.shapes = {k: torch.Size(s) for k, s in target_shapes.items()}
        self.heads = nn.ModuleDict(
            {_safe(k): nn.Linear(hidden, s.numel()) for k, s in self.shapes.items()}
        )
        for k, s in self.shapes.items():
            value = base[k] if base is not None else torch.zeros(s)
            self.register_buffer(f"base__{_safe(k)}", value.detach().clone().view(s))

    @property
    def widths(self) -> list[int]:
        """Units per trunk layer (what a mask switches)."""
        return [cast(nn.Linear, layer).out_features for layer in self.trunk]

    def forward(
        self, embeddings: torch.Tensor, masks: Masks | None = None
    ) -> dict[str, torch.Tensor]:
        """Generated tensors, each (B, *target_shape); ``masks`` holds one 0/1 vector
        per trunk layer (None: every unit on, the plain hypernetwork)."""
        x = embeddings
        for i, layer in enumerate(self.trunk):
            x = torch.relu(layer(x))
            if masks is not None:
                x = x * masks[i]
        return {
            k: getattr(self, f"base__{_safe(k)}") + self.heads[_safe(k)](x).view(-1, *s)
            for k, s in self.shapes.items()
        }


class NeuronMasks:
    """Scores of the batch in training, fixed unit masks of finished batches, what
    those freeze, the sparsity penalty and the capacity report."""

    def __init__(
        self,
        hnet: NeuronHyperNet,
        penalty: float = 0.0,
        reuse_cost: float = 0.5,
        budget: float = 0.0,
        budget_scope: str = "all",
        init_off: float = 0.0,
        init_scale: float = 0.5,
        lr: float = 0.1,
    ) -> None:
        self.hnet = hnet
        self.penalty, self.reuse_cost = penalty, reuse_cost
        #: a layer's share of units the penalty lets a batch keep on (0: no budget)
        self.budget = budget
        #: "all": the budget counts every unit on; "new": it counts the units no
        #: earlier batch uses and, apart, those reused (a diagnostic of PA)
        self.budget_scope = budget_scope
        #: False while the training batch's mask is settled (its scores do not move)
        self.learning = True
        self.init_off, self.init_scale, self.lr = init_off, init_scale, lr
        self.fixed: list[list[torch.Tensor]] = []  # bool per layer, per batch
        self.scores: list[nn.Parameter] = []
        self.optimizer: torch.optim.Adam | None = None
        self.batch = -1
        #: mean |∂L/∂m_u| per layer at the last hook: the scale λ is relative to
        self.last_scales: list[float] = []
        self.task_grad = 0.0
        self._frozen: dict[str, torch.Tensor] | None = None

    # ---- masks ------------------------------------------------------------------
    def start(self, batch: int, generator: torch.Generator) -> list[nn.Parameter]:
        """Fresh scores for ``batch``: ±``init_scale``, a seeded ``init_off`` share
        of each layer's units off; returns them for the optimiser."""
        if batch != len(self.fixed):
            raise ValueError(
                f"batch {batch} starts after {len(self.fixed)} fixed masks"
            )
        device = next(self.hnet.parameters()).device
        self.batch = batch
        self.scores = []
        for width in self.hnet.widths:
            off = torch.rand(width, generator=generator) < self.init_off
            s = torch.where(off, -self.init_scale, self.init_scale)
            self.scores.append(nn.Parameter(s.to(device)))
        self.optimizer = torch.optim.Adam(self.scores, lr=self.lr)
        return list(self.scores)

    def masks(self, batch: int) -> list[torch.Tensor]:
        """Float unit masks of ``batch``: fixed, or the gate of its scores while it
        trains (gradients reach the scores)."""
        dtype = next(self.hnet.parameters()).dtype
        if batch < len(self.fixed):
            return [m.to(dtype) for m in self.fixed[batch]]
        if batch != self.batch or not self.scores:
            raise KeyError(f"batch {batch} has neither a fixed mask nor scores")
        return [gate(s) for s in self.scores]

    def current(self) -> list[torch.Tensor]:
        """The training batch's binary unit masks (bool, no gradient)."""
        return [s.detach() > 0 for s in self.scores]

    def used(self) -> list[torch.Tensor]:
        """Units any fixed mask uses (bool per layer)."""
        out = [torch.zeros(w, dtype=torch.bool) for w in self.hnet.widths]
        for mask in self.fixed:
            out = [o | m.cpu() for o, m in zip(out, mask, strict=True)]
        return out

    # ---- weights a mask depends on ----------------------------------------------
    def dependency(self, units: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The hypernetwork weights the forward under unit masks ``units`` reads
        (bool, by parameter name)."""
        out: dict[str, torch.Tensor] = {}
        prev = torch.ones(self.hnet.embed_dim, dtype=torch.bool)
        for i, m in enumerate(units):
            m = m.cpu()
            out[f"trunk.{i}.weight"] = m[:, None] & prev[None, :]
            out[f"trunk.{i}.bias"] = m.clone()
            prev = m
        for name, head in self.hnet.heads.items():
            rows = cast(nn.Linear, head).out_features
            out[f"heads.{name}.weight"] = prev[None, :].expand(rows, -1).clone()
            out[f"heads.{name}.bias"] = torch.ones(rows, dtype=torch.bool)
        device = next(self.hnet.parameters()).device
        return {k: v.to(device) for k, v in out.items()}

    def _union(self, batches: Sequence[int]) -> dict[str, torch.Tensor]:
        out = {
            n: torch.zeros_like(p, dtype=torch.bool)
            for n, p in self.hnet.named_parameters()
        }
        for b in batches:
            for n, d in self.dependency(self.fixed[b]).items():
                out[n] |= d
        return out

    def frozen(self) -> dict[str, torch.Tensor]:
        """Weights any fixed mask depends on: frozen for the training batch."""
        if self._frozen is None:
            self._frozen = self._union(range(len(self.fixed)))
        return self._frozen

    def exclusive(self, batch: int) -> dict[str, torch.Tensor]:
        """Weights only ``batch`` depends on among the fixed masks: what replay may
        move for it without changing any other batch's models."""
        mine = self.dependency(self.fixed[batch])
        others = self._union([b for b in range(len(self.fixed)) if b != batch])
        return {n: mine[n] & ~others[n] for n in mine}

    # ---- the training batch's gradient --------------------------------------------
    def costs(self, used: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """c_u per unit: 1 for a unit no earlier batch uses, ``reuse_cost`` for one an
        earlier batch uses (``used``: :meth:`used`, when the caller has it)."""
        return [
            torch.where(u, self.reuse_cost, 1.0).to(s.device)
            for u, s in zip(
                self.used() if used is None else used, self.scores, strict=True
            )
        ]

    def used_share(self) -> float:
        """Share of the trunk's units the training batch's mask has on now."""
        on = self.current()
        return sum(int(m.sum()) for m in on) / max(1, sum(m.numel() for m in on))

    def penalty_value(self, scale: Sequence[float] | None = None) -> float:
        """R = λ Σ_l ḡ_l Σ_{u∈l} c_u σ(s_u) at the current scores (ḡ_l = 1 unless
        given: the last hook's per-layer scale)."""
        scale = scale if scale is not None else [1.0] * len(self.scores)
        with torch.no_grad():
            return self.penalty * float(
                sum(
                    g * (c * torch.sigmoid(s)).sum()
                    for g, c, s in zip(scale, self.costs(), self.scores, strict=True)
                )
            )

    def step_scores(self) -> None:
        """The scores' own step: the task gradient the backward left on them plus
        the sparsity penalty's, λ ḡ_l c_u σ'(s_u), on every unit of a layer but its
        ``budget`` share of highest scores, then Adam; their gradients are cleared (the
        server optimiser never sees them)."""
        if not self.scores or self.optimizer is None:
            return
        if not self.learning:  # settled: the mask stays as it is
            for s in self.scores:
                s.grad = None
            return
        with torch.no_grad():
            scales = []
            used = self.used()
            for c, u, s in zip(self.costs(used), used, self.scores, strict=True):
                sig = torch.sigmoid(s)
                slope = sig * (1 - sig)
                task = s.grad if s.grad is not None else torch.zeros_like(s)
                g = float((task.abs() / slope).mean())  # mean |∂L/∂m_u|
                scales.append(g)
                push = self.penalty * g * c * slope
                if self.budget > 0:  # the budget's top scores are not pushed
                    groups = (
                        [~u.to(s.device), u.to(s.device)]
                        if self.budget_scope == "new"
                        else [torch.ones_like(u, device=s.device)]
                    )
                    keep = math.ceil(self.budget * s.numel())
                    for group in groups:
                        idx = group.nonzero().flatten()
                        top = torch.topk(s.detach()[idx], min(keep, idx.numel()))
                        push[idx[top.indices]] = 0.0
                s.grad = task + push
            self.task_grad = float(np.mean(scales))
            self.last_scales = scales
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for s in self.scores:
                s.clamp_(-SCORE_BOUND, SCORE_BOUND)

    def grad_hook(self, weight_decay: float) -> None:
        """Between backward and step of a training round: the scores' own step
        (:meth:`step_scores`), weight decay on the weights the training mask reads,
        then zero for the gradient of every frozen weight (the server optimiser has
        no weight decay of its own, so frozen weights stay bit for bit)."""
        self.step_scores()
        with torch.no_grad():
            frozen = self.frozen()
            reads = self.dependency(self.current()) if weight_decay else {}
            for n, p in self.hnet.named_parameters():
                if p.grad is None:
                    continue
                if weight_decay:
                    p.grad.add_(p * reads[n], alpha=weight_decay)
                p.grad.masked_fill_(frozen[n], 0.0)

    # ---- capacity ------------------------------------------------------------------
    def fix(self) -> dict[str, Any]:
        """Fix the training batch's mask; the capacity report: units it uses, reuses
        (an earlier batch uses them too), claims new, and how many no batch uses yet
        after it, in total and per layer, and the same for hypernetwork weights."""
        before = self.used()
        mask = [m.cpu().clone() for m in self.current()]
        frozen_before = self.frozen()
        self.fixed.append(mask)
        self._frozen = None
        self.scores = []
        self.optimizer = None
        used = sum(int(m.sum()) for m in mask)
        reused = sum(int((m & u).sum()) for m, u in zip(mask, before, strict=True))
        total = sum(m.numel() for m in mask)
        free = sum(int((~(m | u)).sum()) for m, u in zip(mask, before, strict=True))
        deps = self.dependency(mask)
        w_used = sum(int(d.sum()) for d in deps.values())
        w_reused = sum(int((d & frozen_before[n]).sum()) for n, d in deps.items())
        w_total = sum(d.numel() for d in deps.values())
        w_free = sum(int((~(d | frozen_before[n])).sum()) for n, d in deps.items())
        return {
            "neurons-used": used,
            "neurons-reused": reused,
            "neurons-new": used - reused,
            "neurons-free": free,
            "neurons-total": total,
            "neurons-used-per-layer": [int(m.sum()) for m in mask],
            "neurons-free-per-layer": [
                int((~(m | u)).sum()) for m, u in zip(mask, before, strict=True)
            ],
            "weights-used": w_used,
            "weights-reused": w_reused,
            "weights-new": w_used - w_reused,
            "weights-free": w_free,
            "weights-total": w_total,
        }

    # ---- checkpoints -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Fixed masks, the training batch and its scores (for checkpoints)."""
        return {
            "fixed": [[m.clone() for m in f] for f in self.fixed],
            "batch": self.batch,
            "scores": [s.detach().clone() for s in self.scores],
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (scores and their optimiser included)."""
        self.fixed = [[m.clone() for m in f] for f in state["fixed"]]
        self._frozen = None
        self.batch = int(state["batch"])
        self.scores = [nn.Parameter(s.clone()) for s in state["scores"]]
        self.optimizer = None
        if self.scores:
            self.optimizer = torch.optim.Adam(self.scores, lr=self.lr)
            if state.get("optimizer") is not None:
                self.optimizer.load_state_dict(state["optimizer"])
