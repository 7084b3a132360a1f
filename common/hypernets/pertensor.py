"""pFedHN's hypernetwork: an MLP trunk and one linear head per target tensor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import nn


class PerTensorHyperNet(nn.Module):
    """h(v; φ): embedding v -> every tensor of the target network.

    The authors' ``CNNHyper`` (AvivSham/pFedHN, ``experiments/pfedhn/models.py``):
    the trunk of :func:`mlp_trunk` (Linear, then ``n_hidden`` × (ReLU, Linear)), then
    one linear head per target tensor reading the trunk's last Linear output directly
    (no ReLU before the heads), with PyTorch's default initialisation throughout. A
    batch of embeddings (B, d) yields a batch of parameter sets, so all sampled
    clients are generated in one forward.
    """

    def __init__(
        self,
        embed_dim: int,
        target_shapes: Mapping[str, torch.Size],
        hidden: int = 100,
        n_hidden: int = 3,
    ) -> None:
        super().__init__()
        self.trunk = mlp_trunk(embed_dim, hidden, n_hidden)
        self.shapes = {k: torch.Size(s) for k, s in target_shapes.items()}
        self.heads = nn.ModuleDict(
            {
                _safe(k): nn.Linear(hidden, int(torch.Size(s).numel()))
                for k, s in self.shapes.items()
            }
        )

    def forward(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generated tensors, each of shape (B, *target_shape)."""
        features = self.trunk(embeddings)
        return {
            k: self.heads[_safe(k)](features).view(-1, *s)
            for k, s in self.shapes.items()
        }


@torch.no_grad()
def offset_constant_tensors(
    hnet: PerTensorHyperNet, reference: Mapping[str, torch.Tensor]
) -> list[str]:
    """Start each constant tensor of the target (a LayerNorm gain of 1) at its value.

    Heads at PyTorch's default init generate every tensor around 0; for a tensor the
    target initialises to a constant c ≠ 0 that is a broken start (a ViT whose
    LayerNorm gains are ≈ 0 sits at chance), so c is added to that head's bias.
    Tensors with a random default init (every tensor of the CNN and LeNet targets)
    are left as the authors' code has them. Returns the names offset.
    """
    done = []
    for name, ref in reference.items():
        ref = ref.detach().float()
        value = float(ref.reshape(-1)[0])
        if ref.numel() > 1 and float(ref.std()) == 0 and value != 0:
            cast(nn.Linear, hnet.heads[_safe(name)]).bias.add_(value)
            done.append(name)
    return done


def mlp_trunk(in_features: int, hidden: int, n_hidden: int) -> nn.Sequential:
    """The hypernetworks' shared trunk, the authors' ``CNNHyper.mlp``.

    ``Linear(in_features, hidden)``, then ``n_hidden`` × (ReLU, ``Linear(hidden,
    hidden)``): it ends on a Linear, so the heads read every feature (a trailing ReLU
    would zero about half of them at initialisation). ``n_hidden`` is the authors'
    ``--n-hidden`` (run-config key ``hn-n-hidden``); 0 gives a single Linear.
    """
    trunk: list[nn.Module] = [nn.Linear(in_features, hidden)]
    for _ in range(n_hidden):
        trunk += [nn.ReLU(), nn.Linear(hidden, hidden)]
    return nn.Sequential(*trunk)


def _safe(name: str) -> str:
    """ModuleDict keys may not contain dots."""
    return name.replace(".", "__")
