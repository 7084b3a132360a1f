"""Offline personalisation: a ready model for a new client from a finished run.

No server, no Flower runtime: the run folder (``outputs/<run>/`` with ``config.json``
and ``checkpoint/state.pt``) and the new client's own labelled data are enough.

- pFedHN: the hypernetwork is frozen; only a new embedding is fitted on the client's
  data, starting at the mean of the participants' embeddings, for ``novel-rounds``
  steps of local training (the ClientApp's own
  :func:`common.local_update.local_update`, with its seeded data order) and SGD
  (``novel-lr``) on the embedding. This is the very function the run used to
  evaluate its held-out clients (:func:`server.strategies.pfedhn.fit_new_embeddings`),
  so personalising a held-out client of the run reproduces the run's number for it
  exactly. A participant that trained gets its own embedding's model without any
  fitting.
- FedAvg: the global model of the best round (no data needed).

Each method's personaliser lives in its strategy module and registers itself
(:func:`server.personalizers.register_personalizer`).

The state used is the strategy state at the best round (``best["state"]`` in the
checkpoint), the state the run evaluated its held-out clients with.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import server.strategies  # noqa: F401  (each strategy module registers its personaliser)
from common.config import RunConfig, defaults, parse_run_config
from common.data import (
    IMAGE_SHAPE,
    DataError,
    Norm,
    channels_first,
    remember_image_shape,
    remember_num_classes,
)
from common.models import build_model
from common.models.loading import calibrate_batchnorm, load_parameters
from common.partition import ClientData, load_client_data
from common.settings import METHOD_SPECS
from common.training import evaluate
from server.personalizers import (
    PERSONALIZERS,
    FitFailedError,
    PersonalizeError,
    TrainedRun,
)

Params = dict[str, torch.Tensor]
MODEL_FORMAT = "hyperflower-model/1"


def load_run(run_dir: str | Path) -> TrainedRun:
    """Read ``config.json`` and the checkpoint's best-round state of a run folder."""
    folder = Path(run_dir).expanduser().resolve()
    config_path, ckpt_path = folder / "config.json", folder / "checkpoint" / "state.pt"
    for path in (config_path, ckpt_path):
        if not path.exists():
            raise PersonalizeError(
                f"{path} not found: give an outputs/<run> folder of "
                "a run that finished at least one evaluated round"
            )
    raw = json.loads(config_path.read_text())
    data = (raw.get("run") or {}).get("data") or {}
    if "num-classes" in data:  # the run knows its class count: no data needed here
        remember_num_classes(
            raw.get("dataset", ""), raw.get("data-dir", ""), int(data["num-classes"])
        )
    if len(data.get("image-shape") or ()) == 3:  # and its image shape
        remember_image_shape(
            raw.get("dataset", ""), raw.get("data-dir", ""), data["image-shape"]
        )
    known = defaults()
    cfg = parse_run_config({k: v for k, v in raw.items() if k in known})
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    best = ckpt.get("best")
    if best is not None:
        state, rnd = best["state"], int(best["round"])
    else:  # stopped before its first evaluation: the latest state is all there is
        state, rnd = ckpt["strategy"], int(ckpt["round"])
    return TrainedRun(folder, cfg, state, rnd, {"best": best is not None, "data": data})


def read_client_data(
    path: str | Path, run: TrainedRun | None = None, normalized: bool = False
) -> ClientData:
    """A new client's data from an ``.npz`` file (see :func:`read_client_file`)."""
    return read_client_file(path, run, normalized)[0]


def read_client_file(
    path: str | Path, run: TrainedRun | None = None, normalized: bool = False
) -> tuple[ClientData, str]:
    """A new client's data from an ``.npz`` file, preprocessed as the run's data.

    Keys: ``x_train``/``y_train`` (or ``x``/``y``), and optionally ``x_val``/``y_val``
    and ``x_test``/``y_test`` for reporting. Images are the run's size, (n, H, W),
    (n, H, W, C) or (n, C, H, W), as images are usually stored (uint8, 0-255) or as
    floats in [0, 1]; the run's own scaling and normalisation are applied (see
    :func:`preprocess`).
    ``normalized`` takes images already normalised like the run's data, unchanged.
    Without ``run`` images are taken as already normalised (the old behaviour).
    Labels must be the run's classes. Returns the data and, in words, what the
    images were taken to be.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise PersonalizeError(f"--data '{path}': no such file")
    try:
        with np.load(file) as arrays:
            found = dict(arrays)
    except (OSError, ValueError) as exc:
        raise PersonalizeError(
            f"--data '{path}' is not a readable .npz file "
            f"({' '.join(str(exc).split())})"
        ) from None
    classes = run.cfg.num_classes if run is not None else None
    shape = run.cfg.image_shape if run is not None else IMAGE_SHAPE
    stored = shape[1:] if shape[0] == 1 else shape  # as common.data stores images
    hows: set[str] = set()

    def pair(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = found.get(f"x_{split}", found.get("x") if split == "train" else None)
        y = found.get(f"y_{split}", found.get("y") if split == "train" else None)
        if x is None or y is None:
            return torch.zeros(0, *shape), torch.zeros(0, dtype=torch.long)
        x, y = np.asarray(x), np.asarray(y)
        try:
            x = channels_first(x, f"{path}: x_{split}")
        except DataError as exc:
            raise PersonalizeError(str(exc)) from None
        if x.shape[1:] != stored:
            want = "×".join(str(d) for d in stored)
            got = "×".join(str(d) for d in x.shape[1:]) or "scalars"
            raise PersonalizeError(
                f"{path}: expected {want} images in x_{split}, got {got}"
            )
        if len(x) != len(y):
            raise PersonalizeError(
                f"{path}: {len(x)} images but {len(y)} labels in {split}"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise PersonalizeError(f"{path}: labels must be integers, got {y.dtype}")
        if classes is not None and len(y):
            bad = y[(y < 0) | (y >= classes)]
            if len(bad):
                raise PersonalizeError(
                    f"{path}: label {int(bad[0])} outside the "
                    f"run's {classes} classes (0-{classes - 1})"
                )
        if run is None or normalized:
            xt, how = (
                torch.as_tensor(np.asarray(x, dtype=np.float32)),
                "already normalised as the run's data (used as given)",
            )
        else:
            xt, how = preprocess(x, run, str(path))
        hows.add(how)
        return xt.unsqueeze(1) if xt.dim() == 3 else xt, torch.as_tensor(
            y.astype(np.int64)
        )

    (xt, yt), (xv, yv), (xs, ys) = pair("train"), pair("val"), pair("test")
    if len(yt) == 0:
        raise PersonalizeError(f"{path} has no training data (keys x_train, y_train)")
    return ClientData(xt, yt, xv, yv, xs, ys), "; ".join(sorted(hows))


def run_preprocessing(run: TrainedRun) -> tuple[float, Norm, Norm]:
    """(scale, mean, std) of the run's dataset (one mean and std per channel for
    colour): as the run recorded them, else (runs made before they were recorded)
    from the dataset itself, where it is here."""
    data = run.info.get("data") or {}
    if all(k in data for k in ("scale", "mean", "std")):
        return float(data["scale"]), _norm(data["mean"]), _norm(data["std"])
    from common.data import DatasetNotFoundError, load_pooled

    try:
        pooled = load_pooled(run.cfg.dataset, run.cfg.data_dir)
    except (DatasetNotFoundError, DataError) as exc:
        raise PersonalizeError(
            f"the run did not record its preprocessing and its data is not here "
            f"({exc}); pass images already normalised as its data with "
            "--normalized"
        ) from None
    return pooled.scale, pooled.mean, pooled.std


def preprocess(
    x: np.ndarray, run: TrainedRun, where: str = ""
) -> tuple[torch.Tensor, str]:
    """Images as usually stored (uint8 0-255, or floats in [0, 1]) to the run's model
    input: the run's images divided by its scale are in [0, 1], so these are
    normalised with the run's mean and std. Floats that are exact multiples of 1/255
    go through the uint8 path, so both forms of the same images give the same model.
    Returns the tensor and the assumption made, in words."""
    _, mean, std = run_preprocessing(run)
    if x.dtype == np.uint8:
        raw, scale, how = x, 255.0, "uint8 images (0-255)"
    elif np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x).all()
        low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
        if not finite or low < 0.0 or high > 1.0:
            raise PersonalizeError(
                f"{where}: images must be uint8 (0-255) or floats in [0, 1]; got "
                f"float values in [{low:.3g}, {high:.3g}]"
                + ("" if finite else " with NaN/Inf")
                + " (already normalised as the run's data? pass --normalized)"
            )
        as_bytes = np.rint(x.astype(np.float64) * 255.0)
        if np.abs(x * 255.0 - as_bytes).max(initial=0.0) < 1e-3:
            raw, scale = as_bytes.astype(np.uint8), 255.0
        else:
            raw, scale = x, 1.0
        how = "floats in [0, 1]"
    else:
        raise PersonalizeError(
            f"{where}: images must be uint8 (0-255) or floats in [0, 1], got {x.dtype}"
        )
    tensor = torch.from_numpy(np.asarray(raw, dtype=np.float32)) / scale
    if isinstance(mean, tuple) or isinstance(std, tuple):
        m = torch.tensor(_channels(mean), dtype=torch.float32).view(-1, 1, 1)
        s = torch.tensor(_channels(std), dtype=torch.float32).view(-1, 1, 1)
        tensor = (tensor - m) / s
        said = f"mean {list(_channels(mean))}, std {list(_channels(std))}"
    else:
        tensor = (tensor - mean) / std
        said = f"mean {mean:g}, std {std:g}"
    return tensor, f"{how}, normalised as the run's data ({said})"


def _norm(value: Any) -> Norm:
    """A recorded mean or std: a number, or one per channel (a list in JSON)."""
    if isinstance(value, list | tuple):
        return tuple(float(v) for v in value)
    return float(value)


def _channels(value: Norm) -> tuple[float, ...]:
    return value if isinstance(value, tuple) else (value,)


def model_from(
    cfg: RunConfig,
    params: Params,
    name: str | None = None,
    calibrate_on: torch.Tensor | None = None,
) -> nn.Module:
    """The target network filled with ``params`` (as the ClientApp builds it); ``name``
    is a client's own architecture where clients differ (MH-pFedHN). A BatchNorm
    model's statistics come from ``calibrate_on``, the client's training rows, as
    the ClientApp computes them before it evaluates."""
    model = build_model(name or cfg.model, cfg.num_classes, image_shape=cfg.image_shape)
    if load_parameters(model, params) and calibrate_on is not None:
        calibrate_batchnorm(model, calibrate_on)
    return model


# ---- public API ----------------------------------------------------------------
class Personalizer:
    """A loaded run ready to personalise many clients (the networks are built once)."""

    def __init__(self, run: TrainedRun, device: str = "cpu") -> None:
        method = run.cfg.method
        spec = METHOD_SPECS[method]
        if not spec.personalizable or method not in PERSONALIZERS:
            available = [m for m, s in METHOD_SPECS.items() if s.personalizable]
            raise PersonalizeError(
                f"offline personalisation is not available for method {method!r} "
                f"(what a new client gets: {spec.nonparticipant_protocol or 'n/a'}; "
                f"available: {', '.join(available)})"
            )
        self.run = run
        self.method = PERSONALIZERS[method](run, torch.device(device))

    def params(
        self,
        data: ClientData | None = None,
        *,
        client_id: str | None = None,
        partition_id: int = -1,
        rounds: int | None = None,
        lr: float | None = None,
        arch: str | None = None,
    ) -> tuple[Params, dict[str, Any]]:
        """The parameters a new client gets, and how they were made.

        ``client_id`` seeds the client's local data order exactly as in a run (a
        held-out client of the run reproduces the run's model only with its own id:
        its partition id in simulation, its ``client-id`` node config in
        deployment). ``arch`` names the client's own architecture where the method
        lets clients differ (MH-pFedHN: what its node config ``arch`` says in a
        deployment); other methods refuse it.
        """
        cid = (
            client_id
            if client_id is not None
            else (str(partition_id) if partition_id >= 0 else "new-client")
        )
        extra: dict[str, Any] = {}
        if arch is not None:
            if not getattr(self.method, "takes_arch", False):
                raise PersonalizeError(
                    f"--arch names a client's own architecture; method "
                    f"{self.run.cfg.method!r} gives every client the run's model "
                    f"({self.run.cfg.model!r})"
                )
            extra["arch"] = arch
        params, info = self.method(cid, partition_id, data, rounds, lr, **extra)
        broken = [k for k, v in params.items() if not torch.isfinite(v).all()]
        if broken:
            raise FitFailedError(
                f"the fit for client {cid} diverged: NaN or infinite weights in "
                f"{', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}; check "
                "that the images are preprocessed like the run's data, or lower --lr"
            )
        return params, {
            "method": self.run.cfg.method,
            "client-id": cid,
            "run": str(self.run.dir),
            "round": self.run.round,
            **info,
        }


def personalized_params(
    run: TrainedRun,
    data: ClientData | None = None,
    *,
    client_id: str | None = None,
    partition_id: int = -1,
    rounds: int | None = None,
    lr: float | None = None,
    device: str = "cpu",
    arch: str | None = None,
) -> tuple[Params, dict[str, Any]]:
    """One client's parameters from a loaded run (see :meth:`Personalizer.params`)."""
    return Personalizer(run, device).params(
        data,
        client_id=client_id,
        partition_id=partition_id,
        rounds=rounds,
        lr=lr,
        arch=arch,
    )


def personalize(
    run_dir: str | Path,
    data: ClientData | str | Path | None = None,
    *,
    client_id: str | None = None,
    partition_id: int | None = None,
    rounds: int | None = None,
    lr: float | None = None,
    device: str = "cpu",
    arch: str | None = None,
) -> nn.Module:
    """A ready personalised model for a new client of the run in ``run_dir``.

    ``data`` is the client's :class:`ClientData` or an ``.npz`` file
    (:func:`read_client_data`); ``partition_id`` instead takes that partition of the
    run's own dataset (e.g. one of its held-out clients). ``arch`` is the client's
    own architecture (MH-pFedHN runs; see :meth:`Personalizer.params`). The
    returned module has the generated (pFedHN) or global (FedAvg) weights; its
    ``personalization`` attribute says how it was made.
    """
    run = load_run(run_dir)
    if isinstance(data, str | Path):
        data = read_client_data(data, run)
    if data is None and partition_id is not None:
        data = load_client_data(run.cfg, partition_id)
    params, info = personalized_params(
        run,
        data,
        client_id=client_id,
        partition_id=-1 if partition_id is None else partition_id,
        rounds=rounds,
        lr=lr,
        device=device,
        arch=arch,
    )
    rows = data.x_train if data is not None else None
    model = model_from(run.cfg, params, info.get("model"), rows)
    model.personalization = info  # type: ignore[assignment]
    return model


def save_model(
    model: nn.Module,
    path: str | Path,
    cfg: RunConfig,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a model file: weights plus what is needed to rebuild the network."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": MODEL_FORMAT,
            "model": dict(info or {}).get("model")
            or getattr(model, "personalization", {}).get("model", cfg.model),
            "num-classes": cfg.num_classes,
            "image-shape": list(cfg.image_shape),
            "state-dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "personalization": dict(info or getattr(model, "personalization", {})),
        },
        out,
    )
    return out


def load_model(path: str | Path) -> nn.Module:
    """Load a model file written by :func:`save_model`, ready for inference."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise PersonalizeError(f"{path} is not a hyperflower model file")
    model = build_model(
        saved["model"],
        saved["num-classes"],
        image_shape=tuple(saved.get("image-shape", IMAGE_SHAPE)),
    )
    model.load_state_dict(saved["state-dict"])
    model.personalization = saved["personalization"]
    return model.eval()


def evaluate_on(model: nn.Module, data: ClientData) -> dict[str, float]:
    """Loss and accuracy on the client's validation and test splits (where present)."""
    out: dict[str, float] = {}
    for split, x, y in (
        ("val", data.x_val, data.y_val),
        ("test", data.x_test, data.y_test),
    ):
        if len(y):
            loss, acc, n = evaluate(model, x, y)
            out.update({f"{split}-loss": loss, f"{split}-acc": acc, f"num-{split}": n})
    return out


# ---- command line --------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hyperflower personalize``."""
    parser.add_argument("run", help="a finished run's folder (outputs/<run-name>)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data",
        help="the new client's data (.npz: x_train, y_train"
        "[, x_test, y_test]); images of the run's size, (n, H, W[, C]) or "
        "(n, C, H, W), as uint8 0-255 or "
        "floats in [0, 1]: the run's own normalisation is applied",
    )
    source.add_argument(
        "--partition-id",
        type=int,
        default=None,
        help="use this partition of the run's own dataset",
    )
    parser.add_argument(
        "--client-id",
        default=None,
        help="the client's id (seeds its local training; a run's "
        "held-out client reproduces the run only with its own id)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="embedding-fit steps (default: the run's novel-rounds)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="embedding SGD step (default: the run's novel-lr)",
    )
    parser.add_argument(
        "--arch",
        default=None,
        help="the new client's own architecture, a model-zoo name (MH-pFedHN runs; "
        "default: the run's rule for --partition-id)",
    )
    parser.add_argument(
        "--normalized",
        action="store_true",
        help="the --data images are already normalised as the run's "
        "data (used unchanged)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--out",
        default=None,
        help="model file to write (default: <run>/personalized/<client-id>.pt)",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``hyperflower personalize`` and print what was made and how fast."""
    torch.set_num_threads(1)  # as the ServerApp and ClientApps run: same numerics
    start = time.perf_counter()
    run = load_run(args.run)
    how = None
    data: ClientData | None
    if args.data:
        data, how = read_client_file(args.data, run, args.normalized)
        print(f"input: {how}", file=sys.stderr)
    else:
        data = (
            load_client_data(run.cfg, args.partition_id)
            if args.partition_id is not None
            else None
        )
    pid = -1 if args.partition_id is None else args.partition_id
    personalizer = Personalizer(run, args.device)
    t0 = time.perf_counter()
    params, info = personalizer.params(
        data,
        client_id=args.client_id,
        partition_id=pid,
        rounds=args.rounds,
        lr=args.lr,
        arch=args.arch,
    )
    rows = data.x_train if data is not None else None
    model = model_from(run.cfg, params, info.get("model"), rows)
    made = time.perf_counter()
    info.pop("embedding-values", None)
    info["seconds"] = {
        "load-run": round(t0 - start, 4),
        "personalize": round(made - t0, 4),
    }
    out = (
        Path(args.out)
        if args.out
        else (run.dir / "personalized" / f"{info['client-id']}.pt")
    )
    if how is not None:
        info["input"] = how
    if data is not None:
        info["metrics"] = evaluate_on(model, data)
        if any(not math.isfinite(v) for v in info["metrics"].values()):
            raise FitFailedError(
                f"the personalised model gives a non-finite loss on "
                f"the client's data ({info['metrics']}); no model "
                "written"
            )
    save_model(model, out, run.cfg, info)
    print(json.dumps({"model-file": str(out), **info}, indent=2))
    return 0
