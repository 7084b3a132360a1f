"""Settings of the shared hypernetwork update (server optimiser, trunk sizes), used by
every method that trains a hypernetwork from client deltas (server/update.py)."""

from __future__ import annotations

from common.settings import Setting, above, at_least, in_range

HYPERNET_SETTINGS: dict[str, Setting] = {
    "server-optimizer": Setting(
        "sgd", "the hypernetwork's optimiser", choices=("sgd", "adam")
    ),
    "server-lr": Setting(5e-2, "the hypernetwork's learning rate", check=above(0.0)),
    "server-momentum": Setting(
        0.9, "SGD momentum of the hypernetwork", check=in_range(0, 1)
    ),
    "server-weight-decay": Setting(
        1e-3, "weight decay of the hypernetwork", check=at_least(0.0)
    ),
    "clip-norm": Setting(
        50.0,
        "gradient-norm clip of the hypernetwork step (0 = off)",
        check=at_least(0.0),
    ),
    "weighting": Setting(
        "uniform",
        "how a round's client gradients are averaged",
        choices=("uniform", "samples"),
    ),
    "hn-hidden": Setting(
        100,
        "hidden width of the hypernetwork trunk",
        check=at_least(1),
        fingerprint=True,
    ),
    "hn-n-hidden": Setting(
        3,
        "the trunk's n_hidden: Linear, then n_hidden × (ReLU, "
        "Linear), as the pFedHN authors' hypernetwork",
        check=at_least(0),
        fingerprint=True,
    ),
}
