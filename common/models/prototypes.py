"""FedProto's client model and prototype arithmetic (Tan et al., AAAI 2022).

FedProto splits a client's model F_i = g_i ∘ f_i into representation layers f_i and
decision layers g_i, and exchanges only per-class means of f_i(x) (prototypes).
Prototypes of different architectures can be averaged only if their
representations have one width d (``fedproto-dim``). Here:

- f_i(x) is the input of the model's final linear layer (after its ReLU; the
  authors' CNNs likewise take the ReLU'd output of their last hidden layer), g_i
  that layer. Every zoo model ends in its final ``nn.Linear``.
- An architecture whose final linear layer takes d values is used as it is (the
  shared-zoo preset's ``lenet5``, ``cnn3``, ``cnn``, ``mlp-m``, ``mlp-xl`` all end
  in an 84-wide representation, so FedProto trains exactly MH-pFedHN's models);
  one of another width w gets its final Linear(w, C) replaced by Linear(w, d),
  ReLU, Linear(d, C) (a projection to the common width; the authors' models all
  end in one fixed width).

Everything a client runs, in a run or not, is here (both sides import it): the model
(:func:`build_proto_model`), the regularised local training
(:func:`train_fedproto`), its local prototypes (:func:`local_prototypes`), and the
server's per-class aggregation (:func:`aggregate_prototypes`) and the paper's
prototype-based inference (:class:`PrototypeClassifier`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.training import TrainResult, train_steps

#: Logit of a class that has no global prototype (never predicted).
ABSENT = -1e9


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The name and module of ``model``'s last ``nn.Linear`` (its decision layer)."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no linear layer to split at")
    return found[-1]


class ProtoNet(nn.Module):
    """A zoo model as FedProto's g ∘ f: :meth:`represent` gives the logits and the
    representation f(x), the input of the final linear layer (a projection to
    ``dim`` is inserted when that layer takes another width)."""

    def __init__(self, model: nn.Module, dim: int) -> None:
        super().__init__()
        name, layer = last_linear(model)
        if layer.in_features != dim:
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(
                owner,
                child,
                nn.Sequential(
                    nn.Linear(layer.in_features, dim),
                    nn.ReLU(),
                    nn.Linear(dim, layer.out_features),
                ),
            )
            name, layer = last_linear(model)
        self.model = model
        self.dim = dim
        self._seen: list[torch.Tensor] = []
        layer.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._seen.append(args[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits g(f(x))."""
        out: torch.Tensor = self.model(x)
        self._seen.clear()
        return out

    def represent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits g(f(x)), representation f(x)) of one forward pass."""
        self._seen.clear()
        logits = self.model(x)
        rep = self._seen.pop()
        self._seen.clear()
        return logits, rep


def build_proto_model(
    arch: str,
    num_classes: int,
    image_shape: tuple[int, int, int],
    dim: int,
    seed: int,
) -> ProtoNet:
    """Zoo architecture ``arch`` as a :class:`ProtoNet` of representation width
    ``dim``, its initial weights fixed by ``seed`` (projection included)."""
    from common.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ProtoNet(build_model(arch, num_classes, image_shape=image_shape), dim)


@torch.no_grad()
def local_prototypes(
    net: ProtoNet,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """C_i^(j) = mean of f_i(x) over the client's rows of class j (the paper's
    definition, with the trained model), as a (C, d) tensor with zero rows for
    classes it lacks, and the class counts |D_i,j| (float, C)."""
    net.eval()
    sums = torch.zeros(num_classes, net.dim)
    counts = torch.zeros(num_classes)
    for start in range(0, len(y), batch_size):
        _, rep = net.represent(x[start : start + batch_size])
        labels = y[start : start + batch_size]
        sums.index_add_(0, labels, rep.float())
        counts += torch.bincount(labels, minlength=num_classes).float()
    protos = sums / counts.clamp_min(1.0).unsqueeze(1)
    return protos, counts


def aggregate_prototypes(
    protos: Sequence[torch.Tensor],
    counts: Sequence[torch.Tensor],
    weighting: str = "samples",
    previous: torch.Tensor | None = None,
    present: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global prototypes from clients' local ones: for each class j, the mean of
    C_i^(j) over the clients holding j, weighted by |D_i,j| (``samples``: the
    paper's C̄^(j) = Σ_i |D_i,j| C_i^(j) / Σ_i |D_i,j|) or equally (``uniform``:
    the authors' code). A class no client of the round holds keeps its
    ``previous`` prototype (when ``present`` says it had one). Returns (C × d
    prototypes, C-long mask of the classes that have one)."""
    stacked = torch.stack([p.float() for p in protos])  # clients × C × d
    n = torch.stack([c.float() for c in counts])  # clients × C
    weights = n if weighting == "samples" else (n > 0).float()
    total = weights.sum(0)  # C
    mean = (weights.unsqueeze(2) * stacked).sum(0) / total.clamp_min(1e-12).unsqueeze(1)
    have = total > 0
    if previous is not None and present is not None:
        keep = ~have & present.bool()
        mean[keep] = previous[keep].float()
        have = have | keep
    mean[~have] = 0.0
    return mean, have


def prototype_logits(
    rep: torch.Tensor, protos: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """−‖f(x) − C̄^(j)‖² for every class j with a prototype (:data:`ABSENT` for the
    rest): its argmax is the paper's inference ŷ = argmin_j ‖f(x) − C̄^(j)‖₂."""
    dist = torch.cdist(rep.float(), protos.float()).pow(2)
    return torch.where(
        present.bool().unsqueeze(0), -dist, torch.full_like(dist, ABSENT)
    )


class PrototypeClassifier(nn.Module):
    """The paper's prototype-based inference as a classifier: logits
    :func:`prototype_logits` of the net's representation against the global
    prototypes (so the shared evaluation scores it like any model)."""

    def __init__(self, net: ProtoNet, protos: torch.Tensor, present: torch.Tensor):
        super().__init__()
        self.net, self.protos, self.present = net, protos, present

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Negative squared distances to the global prototypes."""
        _, rep = self.net.represent(x)
        return prototype_logits(rep, self.protos, self.present)


def proto_loss(
    rep: torch.Tensor, y: torch.Tensor, protos: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """The authors' regulariser: MSE between each row's f(x) and the global
    prototype of its class, over the batch and the d dimensions (``nn.MSELoss``);
    a row whose class has no global prototype is its own target (adds zero, counts
    in the mean, as in their code)."""
    has = present.bool()[y]
    target = torch.where(has.unsqueeze(1), protos[y].to(rep), rep.detach())
    return nn.functional.mse_loss(rep, target)


def train_fedproto(
    net: ProtoNet,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    generator: torch.Generator,
    protos: torch.Tensor,
    present: torch.Tensor,
    lam: float,
    clip_norm: float = 0.0,
) -> tuple[TrainResult, float]:
    """FedProto's local update: SGD on CE(g(f(x)), y) + λ·MSE(f(x), C̄_y) with the
    global prototypes fixed (the shared loop, :func:`common.training.train_steps`,
    with this loss). Returns the CE's result and the mean regulariser (before λ)."""
    use = lam > 0 and bool(present.any())
    reg = [0.0]

    def forward(
        model: nn.Module, xb: torch.Tensor, yb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, rep = net.represent(xb)
        if not use:
            return logits, None
        r = proto_loss(rep, yb, protos, present)
        reg[0] += r.item() * len(yb)
        return logits, lam * r

    result = train_steps(
        net,
        x,
        y,
        steps,
        batch_size,
        lr,
        momentum,
        weight_decay,
        generator,
        clip_norm,
        forward=forward,
    )
    return result, reg[0] / max(result.samples_seen, 1)
