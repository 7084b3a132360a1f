"""The shared server update of the pFedHN family (docs/pfedhn.md).

A client returns Δ_i = θ̃_i − θ_i. The server treats −Δ_i as ∂L_i/∂θ_i and
back-propagates it through θ_i = h(v_i; φ), which is exactly the gradient of
½‖θ_i − θ̃_i‖². The forward is re-run here, at aggregation time, instead of
holding each client's graph for a whole round.

The generated parameters come as named tensors batched over the round's clients
(every client the same architecture) or as one flat vector per client (clients with
models of their own sizes, e.g. MH-pFedHN); a delta has the same form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

#: Named tensors batched over clients, or one flat vector per client.
Generated = dict[str, torch.Tensor] | list[torch.Tensor]
Delta = dict[str, torch.Tensor] | torch.Tensor
Generator = Callable[[torch.Tensor], Generated]


def backprop_deltas(
    generated: Generated, deltas: Sequence[Delta], weights: torch.Tensor
) -> None:
    """Accumulate Σ_i w_i · (−Δ_i)ᵀ ∂θ_i/∂(φ, v_i) into the ``.grad`` of the leaves.

    ``generated`` holds the batch θ (B, *shape) per tensor name, with ``deltas`` one
    dict per client in the same order; or one flat θ_i per client, with one flat
    Δ_i each. ``weights`` (B,) sums to one.
    """
    if isinstance(generated, list):
        flat = [d for d in deltas if isinstance(d, torch.Tensor)]
        if len(flat) != len(generated):
            raise ValueError("flat generated parameters need one flat delta each")
        torch.autograd.backward(
            generated,
            grad_tensors=[
                -w.to(d) * d.to(g)
                for g, d, w in zip(generated, flat, weights, strict=True)
            ],
        )
        return
    named = [d for d in deltas if isinstance(d, dict)]
    names = list(generated)
    grad_outputs = []
    for name in names:
        stacked = torch.stack([d[name] for d in named]).to(generated[name])
        w = weights.to(stacked).view(-1, *([1] * (stacked.dim() - 1)))
        grad_outputs.append(-w * stacked)
    torch.autograd.backward([generated[n] for n in names], grad_tensors=grad_outputs)


def hypernet_step(
    generate: Generator,
    embeddings: torch.Tensor,
    deltas: Sequence[Delta],
    weights: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    clip_norm: float,
    grad_hook: Callable[[], None] | None = None,
) -> float:
    """One optimiser step of φ and the v_i from a round's client deltas.

    ``grad_hook`` runs between the backward pass and the step (e.g. zeroing the
    gradients of weights a mask freezes). Returns the gradient norm before
    clipping (0 disables clipping).
    """
    optimizer.zero_grad(set_to_none=True)
    theta = generate(embeddings)  # θ_i = h(v_i; φ)
    backprop_deltas(theta, deltas, weights)  # ∇ ½‖θ_i − θ̃_i‖²
    if grad_hook is not None:
        grad_hook()
    # clip_grad_norm_ returns the norm it measured; an infinite bound only measures.
    norm = float(
        nn.utils.clip_grad_norm_(params, clip_norm if clip_norm > 0 else float("inf"))
    )
    optimizer.step()
    return norm


class _RowGradScale(torch.autograd.Function):
    """Identity forward; backward multiplies row i of the gradient by ``scale[i]``."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return rows.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale.to(grad).view(-1, *([1] * (grad.dim() - 1))), None


def undiluted(embeddings: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The round's embeddings (B, d), with each row's gradient divided by its weight.

    :func:`backprop_deltas` weights client i's term by w_i, which is what φ should
    get (the average over the round), but v_i appears in client i's term only, so its
    gradient would be w_i · g_i: 1/M of a visit's step at uniform weights. Passing
    the embeddings through this function instead gives each sampled v_i its full
    gradient g_i, the step it gets in the authors' one-client-per-step trainer, while
    φ still receives the weighted average (docs/pfedhn.md, "Embeddings").
    """
    return _RowGradScale.apply(embeddings, 1.0 / weights)


def round_weights(num_examples: Sequence[int], weighting: str) -> torch.Tensor:
    """Per-client weights of a round: uniform, or by sample count (run config key)."""
    if weighting == "samples":
        w = torch.tensor([float(n) for n in num_examples])
    else:
        w = torch.ones(len(num_examples))
    return w / w.sum()
