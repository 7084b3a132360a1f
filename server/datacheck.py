"""The data a run trains on is the data its config names, on every client.

- :func:`local_data`: where the ServerApp can read the data itself (simulation: same
  host), it loads it before any client is contacted, so a missing ``data-dir`` stops
  the run at once with one line instead of one failure per ClientApp.
- :func:`expected_fingerprint`: what the run expects, from ``data-fingerprint`` in the
  run config (``hyperflower run`` sets it from the data it checked) or the server's
  own copy; the two must agree.
- :func:`agree_on_data`: after registration, every client must report the same
  fingerprint, equal to the expected one; otherwise the run refuses to start.
"""

from __future__ import annotations

from typing import Any

from common.config import RunConfig
from common.data import load_pooled, remember_image_shape, remember_num_classes
from server.failures import NAMED


class DataMismatchError(RuntimeError):
    """Clients hold different data, or not the data the run config names."""


def local_data(cfg: RunConfig) -> dict[str, Any]:
    """Load the configured dataset on this host; its description for config.json.

    Raises :class:`common.data.DatasetNotFoundError` or :class:`common.data.DataError`
    (one line, naming ``data-dir``) when it cannot be loaded.
    """
    return load_pooled(cfg.dataset, cfg.data_dir, cfg.download).describe()


def expected_fingerprint(cfg: RunConfig, local: dict[str, Any] | None) -> str:
    """The fingerprint clients must report ("" when nothing is known to compare)."""
    named, own = cfg.data_fingerprint, (local or {}).get("fingerprint", "")
    if named and own and named != own:
        raise DataMismatchError(
            f"run config 'data-fingerprint' names {named}, but data-dir "
            f"'{cfg.data_dir}' holds {own} here: the files changed since the run was "
            "configured, or this host reads other data"
        )
    return named or own


def agree_on_data(
    clients: dict[str, dict[str, Any]], expected: str, cfg: RunConfig
) -> dict[str, Any]:
    """Check the registered clients' data fingerprints (``clients``: id -> registration
    info); return what they agree on (fingerprint, preprocessing, class count)."""
    groups: dict[str, list[str]] = {}
    for cid, info in sorted(clients.items()):
        groups.setdefault(str(info.get("data-fingerprint", "")), []).append(cid)
    total = len(clients)
    if not groups:
        return {}
    if len(groups) > 1:
        parts = [
            f"{len(ids)} of {total} clients ({', '.join(ids[:NAMED])}) loaded "
            f"{fp or 'unknown data'}"
            for fp, ids in sorted(groups.items(), key=lambda kv: -len(kv[1]))
        ]
        raise DataMismatchError(
            "clients hold different data: " + "; ".join(parts) + ". Every client "
            "must load the same dataset: check data-dir (and the node-config "
            "data-dir of each SuperNode)"
        )
    fingerprint, ids = next(iter(groups.items()))
    if expected and fingerprint != expected:
        raise DataMismatchError(
            f"all {total} clients loaded {fingerprint}, but the run expects "
            f"{expected} (the data the config names where the run was started): "
            "check data-dir on the SuperNodes, or a background SuperLink started "
            "with another environment"
        )
    norm = clients[ids[0]].get("data-norm")
    agreed: dict[str, Any] = {"fingerprint": fingerprint, "clients": len(ids)}
    if norm is not None and len(norm) >= 4 and len(norm) % 2 == 0:
        values = [float(v) for v in norm]
        channels = (len(values) - 2) // 2  # scale, C means, C stds, classes
        means, stds = values[1 : 1 + channels], values[1 + channels : -1]
        classes = int(values[-1])
        agreed.update(
            {
                "scale": values[0],
                "mean": means[0] if channels == 1 else means,
                "std": stds[0] if channels == 1 else stds,
                "num-classes": classes,
            }
        )
        # a server without the data (deployment) learns the class count here
        remember_num_classes(cfg.dataset, cfg.data_dir, classes)
    shape = clients[ids[0]].get("data-shape")
    if shape is not None and len(shape) == 3:
        agreed["image-shape"] = [int(v) for v in shape]
        remember_image_shape(cfg.dataset, cfg.data_dir, shape)
    return agreed
