"""Typed run configuration shared by the ServerApp, the ClientApps and the tools.

The keys every run shares are :data:`SHARED` here; each method declares its own in
its :class:`~common.settings.MethodSpec` (``common/methods/``). :func:`parse_run_config`
validates a whole config at once, before anything starts, and raises
:class:`ConfigError` naming the key and what is allowed, so a typo never costs a
round of training. ``pyproject.toml``'s ``[tool.flwr.app.config]`` holds
:func:`defaults` (a test checks it).
"""

from __future__ import annotations

import difflib
import importlib
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from common.settings import (
    METHOD_SPECS,
    Setting,
    above,
    all_settings,
    at_least,
    in_range,
    open_range,
)

DATASETS = (
    "fashion-mnist",
    "digits",
    "synthetic",
    "idx",
    "npz",
    "mnist",
    "emnist-letters",
    "emnist-balanced",
    "cifar10",
    "cifar100",
    "tiny-imagenet",
    "folder",
)
MODELS = (
    "mlp",
    "lenet5",
    "cnn",
    "vit-tiny",
    "cnn-bn",
    "vit-tiny-p4",
    "lenet5-hf",
    "resnet18",
)


#: The default embedding size's bound: 1 + N/4 at N = 100, the largest federation
#: the pFedHN paper trains (10, 50 and 100 clients); docs/pfedhn.md.
EMBED_DIM_CAP = 1 + 100 // 4


def _known_method(value: Any) -> str | None:
    return (
        None
        if value in METHOD_SPECS
        else (f"{value!r} is not one of {', '.join(METHOD_SPECS)}")
    )


def _plain_name(value: Any) -> str | None:
    bad = "/" in value or value.startswith(".")
    return "must be a plain folder name" if bad else None


def _fault_plan(value: Any) -> str | None:
    from common.faults import parse_plan

    try:
        parse_plan(value)
    except ValueError as exc:
        return str(exc)
    return None


def _s(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    check: Any = None,
    fingerprint: bool = False,
) -> Setting:
    return Setting(default, help, choices, check, fingerprint)


#: The keys every run shares, with their defaults. Keys are kebab-case, as Flower
#: passes them; a method's own keys are in its spec (common/methods/).
SHARED: dict[str, Setting] = {
    "method": _s(
        "pfedhn",
        "the method (a registered MethodSpec)",
        check=_known_method,
        fingerprint=True,
    ),
    "plugins": _s(
        "",
        "comma-separated modules that register more methods (imported "
        "by the server and every client before the config is read)",
    ),
    "plugin-config": _s(
        "",
        "a plugin method's own keys as 'key=value key=value' "
        "(TOML values; Flower accepts only the keys pyproject.toml "
        "declares)",
    ),
    "dataset": _s(
        "fashion-mnist",
        "the dataset ('idx': any MNIST-format folder, 'npz': arrays x, y; "
        "mnist, emnist-*, cifar10/100, tiny-imagenet: their official files, "
        "'folder': an ImageFolder tree; all in data-dir)",
        choices=DATASETS,
        fingerprint=True,
    ),
    "data-dir": _s(
        "",
        "where the data is: a folder of IDX files (fashion-mnist, "
        "idx), an .npz file or a folder holding one (npz), the folder "
        "torchvision's layout is in (mnist, emnist-*, cifar10/100, "
        "tiny-imagenet, folder); '' = the usual places (fashion-mnist). A "
        "SuperNode may set its own in its node config",
    ),
    "download": _s(
        False,
        "let torchvision download a missing mnist, emnist-* or cifar10/100 into "
        "data-dir (never by default: runs read the files that are there)",
    ),
    "data-fingerprint": _s(
        "",
        "content hash every client's data must match (set by "
        "hyperflower run; '' = clients need only agree)",
    ),
    "model": _s(
        "lenet5", "the target network clients train", choices=MODELS, fingerprint=True
    ),
    "num-clients": _s(
        50,
        "clients (partitions) in the federation",
        check=at_least(1),
        fingerprint=True,
    ),
    "holdout": _s(
        0.2,
        "seeded fraction of clients that never train",
        check=in_range(0, 1),
        fingerprint=True,
    ),
    "partitioner": _s(
        "classes",
        "how data is split over clients: flwr-datasets' "
        "partitioners, or class-shares (pFedHN's own split: k classes, "
        "shares drawn U(0.4, 0.6)), or sampled (a scale-only setting: each client "
        "draws samples-per-client rows of classes-per-client seeded classes on its "
        "own, so clients may share rows; any number of clients)",
        choices=("classes", "dirichlet", "shards", "class-shares", "sampled"),
        fingerprint=True,
    ),
    "classes-per-client": _s(
        2,
        "classes per client (partitioners 'classes', 'class-shares', 'sampled')",
        check=at_least(1),
        fingerprint=True,
    ),
    "dirichlet-alpha": _s(
        0.5,
        "Dirichlet concentration (partitioner 'dirichlet')",
        check=above(0.0),
        fingerprint=True,
    ),
    "shards-per-client": _s(
        2,
        "shards per client (partitioner 'shards')",
        check=at_least(1),
        fingerprint=True,
    ),
    "samples-per-client": _s(
        0,
        "keep a seeded random subset of this many rows per client, cut into "
        "train/val/test by the fractions (0 = all): a low-data split",
        check=at_least(0),
        fingerprint=True,
    ),
    "val-fraction": _s(
        0.15, "share of each client's data for validation", check=open_range(0, 0.5)
    ),
    "test-fraction": _s(
        0.15, "share of each client's data for testing", check=open_range(0, 0.5)
    ),
    "num-rounds": _s(60, "training rounds", check=at_least(1)),
    "clients-per-round": _s(
        10, "participants sampled per round", check=at_least(1), fingerprint=True
    ),
    "local-epochs": _s(
        0, "local epochs per round (wins over local-steps when > 0)", check=at_least(0)
    ),
    "local-steps": _s(50, "local optimiser steps per round", check=at_least(0)),
    "batch-size": _s(64, "local mini-batch size", check=at_least(1)),
    "inner-lr": _s(5e-3, "clients' local SGD learning rate", check=above(0.0)),
    "inner-momentum": _s(0.9, "clients' local SGD momentum", check=in_range(0, 1)),
    "inner-weight-decay": _s(5e-5, "clients' local weight decay", check=at_least(0.0)),
    "local-clip-norm": _s(
        50.0,
        "bound on each local step's gradient norm (0 = off; "
        "50 as in the pFedHN authors' inner loop)",
        check=at_least(0.0),
    ),
    "eval-every": _s(10, "evaluation period in rounds", check=at_least(1)),
    "eval-clients-per-batch": _s(
        256,
        "clients evaluated per exchange (server memory follows the batch)",
        check=at_least(1),
    ),
    "eval-sample": _s(
        1000,
        "participants evaluated in an evaluation round before the last: a seeded "
        "sample of this many, drawn anew each round (0 = all; all when there are "
        "no more); the last round and the summary's accuracies use every "
        "participant",
        check=at_least(0),
    ),
    "registration": _s(
        "eager",
        "when clients register: 'eager' queries every node before round 1; 'lazy' "
        "registers one client at start-up and every other when first drawn (for "
        "training or an evaluation sample; the last round's evaluation registers "
        "the rest), so start-up is flat in the clients (pfedhn, hyperfedzero, fedavg, "
        "fedprox, local)",
        choices=("eager", "lazy"),
        fingerprint=True,
    ),
    "round-timeout": _s(
        300.0, "seconds to wait for a round's replies", check=above(0.0)
    ),
    "min-clients": _s(1, "valid replies a round needs", check=at_least(1)),
    "max-delta-norm": _s(
        0.0, "reject deltas above this norm (0 = off)", check=at_least(0.0)
    ),
    "seed": _s(42, "seed of everything random", fingerprint=True),
    "run-name": _s(
        "", "output folder name ('' = method-dataset-s<seed>)", check=_plain_name
    ),
    "run-id": _s(
        "",
        "the run's identity ('' = the ServerApp makes one; hyperflower "
        "run sets it and shows only this run's summary)",
    ),
    "output-dir": _s("outputs", "where run folders are written"),
    "resume": _s(False, "continue from the run folder's checkpoint"),
    "checkpoint-every": _s(
        1, "checkpoint (and metrics.jsonl) every k rounds", check=at_least(1)
    ),
    "stop-after-round": _s(
        0, "stop after this round, resumable (0 = run to the end)", check=at_least(0)
    ),
    "device": _s("auto", "the server's device", choices=("auto", "cpu", "cuda")),
    "round-retries": _s(
        2, "re-samples of a round with too few valid replies", check=at_least(0)
    ),
    "max-reply-mb": _s(64.0, "reject replies larger than this", check=above(0.0)),
    "dp-clip": _s(
        0.0, "client-side clipping bound of deltas (0 = off)", check=at_least(0.0)
    ),
    "dp-noise": _s(
        0.0, "Gaussian noise multiplier of deltas (needs dp-clip)", check=at_least(0.0)
    ),
    "fault-injection": _s(
        "", "fault plan for tests and drills (docs)", check=_fault_plan
    ),
}


class ConfigError(ValueError):
    """A run-config value is missing, of the wrong type, or outside what is allowed."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"run config '{key}': {message}")
        self.key = key


def load_plugins(run_config: Mapping[str, Any]) -> None:
    """Import the built-in methods and the modules named by ``plugins``, so their
    specs, strategies and client handlers are registered."""
    importlib.import_module("common.methods")
    for name in str(run_config.get("plugins", "")).split(","):
        if name.strip():
            try:
                importlib.import_module(name.strip())
            except ImportError as exc:
                raise ConfigError(
                    "plugins", f"cannot import {name.strip()!r}: {exc}"
                ) from None


def settings() -> dict[str, Setting]:
    """Every known key: the shared ones, then every registered method's."""
    importlib.import_module("common.methods")
    return all_settings(SHARED)


def defaults() -> dict[str, Any]:
    """Every known key with its default (``[tool.flwr.app.config]``)."""
    return {k: s.default for k, s in settings().items()}


def fingerprint_keys() -> tuple[str, ...]:
    """Keys a checkpoint depends on: resuming with another value is refused."""
    return tuple(k for k, s in settings().items() if s.fingerprint)


@dataclass(frozen=True)
class RunConfig:
    """The validated run configuration.

    Shared keys are attributes in snake_case; a method's own keys are read the same
    way (``cfg.lora_rank``) from :attr:`method_values`, or with :meth:`get`.
    """

    method: str
    plugins: str
    plugin_config: str
    dataset: str
    data_dir: str
    download: bool
    data_fingerprint: str
    model: str
    num_clients: int
    holdout: float
    partitioner: str
    classes_per_client: int
    dirichlet_alpha: float
    shards_per_client: int
    samples_per_client: int
    val_fraction: float
    test_fraction: float
    num_rounds: int
    clients_per_round: int
    local_epochs: int
    local_steps: int
    batch_size: int
    inner_lr: float
    inner_momentum: float
    inner_weight_decay: float
    local_clip_norm: float
    eval_every: int
    eval_clients_per_batch: int
    eval_sample: int
    registration: str
    round_timeout: float
    min_clients: int
    max_delta_norm: float
    seed: int
    run_name: str
    run_id: str
    output_dir: str
    resume: bool
    checkpoint_every: int
    stop_after_round: int
    device: str
    round_retries: int
    max_reply_mb: float
    dp_clip: float
    dp_noise: float
    fault_injection: str
    method_values: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __getattr__(self, name: str) -> Any:
        # only called for names that are not attributes: a method's own key
        values = self.__dict__.get("method_values", {})
        key = name.replace("_", "-")
        if key in values:
            return values[key]
        raise AttributeError(f"run config has no key {key!r}")

    def get(self, key: str) -> Any:
        """Any key's value by its kebab-case name."""
        return self.to_dict()[key]

    @property
    def num_classes(self) -> int:
        """Number of classes of the configured dataset (from the labels: idx, npz)."""
        from common.data import num_classes_of

        return num_classes_of(self.dataset, self.data_dir)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, H, W) of the configured dataset's images (the models' input)."""
        from common.data import image_shape_of

        return image_shape_of(self.dataset, self.data_dir)

    @property
    def participants_count(self) -> int:
        """Clients left to train after the seeded holdout."""
        return self.num_clients - int(self.holdout * self.num_clients)

    @property
    def resolved_embed_dim(self) -> int:
        """pFedHN's embedding size: ``embed-dim``, or when it is 0 the paper's
        1 + N/4 up to :data:`EMBED_DIM_CAP` (N = 100, the paper's largest
        federation), so the store grows as N·26, not N²/4."""
        return int(self.method_values.get("embed-dim", 0)) or min(
            1 + self.num_clients // 4, EMBED_DIM_CAP
        )

    @property
    def resolved_embed_lr(self) -> float:
        """The embeddings' server lr: ``embed-lr``, or ``server-lr`` when it is 0 (the
        authors' ``--embed-lr`` defaults to ``--lr`` the same way)."""
        return float(
            self.method_values.get("embed-lr", 0.0)
            or self.method_values.get("server-lr", 0.0)
        )

    @property
    def resolved_run_name(self) -> str:
        """The output folder's name: ``run-name`` or one built from method and seed."""
        return self.run_name or f"{self.method}-{self.dataset}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """The config as kebab-case keys, as it was resolved (for config.json)."""
        out = {
            f.name.replace("_", "-"): getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("raw", "method_values")
        }
        out.update(self.method_values)
        return out


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of ``default`` or raise ConfigError."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(key, f"expected an integer, got {value!r}") from None
        if number != int(number):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return int(number)
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number, got {value!r}") from None
    return str(value)


def _check_value(key: str, value: Any, setting: Setting) -> None:
    if setting.choices and value not in setting.choices:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(setting.choices)}")
    problem = setting.check(value) if setting.check else None
    if problem:
        raise ConfigError(key, problem)


def parse_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """Validate a Flower run config (kebab-case keys) and return a :class:`RunConfig`.

    Unknown keys are reported with the closest known key, so a typo fails loudly
    instead of silently running with a default.
    """
    load_plugins(run_config)
    known = settings()
    run_config = {**run_config, **_plugin_values(run_config, known)}
    for key in run_config:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(key, f"unknown key{hint}")
    values = {
        k: _coerce(k, run_config.get(k, s.default), s.default) for k, s in known.items()
    }
    for key, setting in known.items():
        _check_value(key, values[key], setting)
    shared = {k.replace("-", "_"): values[k] for k in SHARED}
    cfg = RunConfig(
        **shared,
        method_values={k: v for k, v in values.items() if k not in SHARED},
        raw=dict(run_config),
    )
    _validate(cfg)
    spec = METHOD_SPECS[cfg.method]
    if spec.validate is not None:
        spec.validate(cfg)
    return cfg


def _plugin_values(
    run_config: Mapping[str, Any], known: Mapping[str, Setting]
) -> dict[str, Any]:
    """The keys given in ``plugin-config`` ('key=value' pairs, TOML values)."""
    text = str(run_config.get("plugin-config", ""))
    values: dict[str, Any] = {}
    for pair in shlex.split(text):
        key, eq, value = pair.partition("=")
        if not eq:
            raise ConfigError("plugin-config", f"expected key=value, got {pair!r}")
        if key in SHARED or key in run_config:
            raise ConfigError(
                "plugin-config", f"{key!r} is not a plugin key: set it directly"
            )
        try:
            values[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            values[key] = value
    return values


def _validate(cfg: RunConfig) -> None:
    """Check combinations of shared keys that single values cannot express."""
    if cfg.local_epochs == 0 and cfg.local_steps == 0:
        raise ConfigError("local-steps", "one of local-epochs, local-steps must be > 0")
    if cfg.participants_count < 1:
        raise ConfigError("holdout", "leaves no participating client")
    from common.data import classes_bound, shape_bound

    bound = classes_bound(cfg.dataset, cfg.data_dir)  # None: data not on this host
    if bound is not None and cfg.classes_per_client > bound:
        raise ConfigError(
            "classes-per-client", f"must be <= {bound} (classes in {cfg.dataset})"
        )
    shape = shape_bound(cfg.dataset, cfg.data_dir)
    if shape is not None:
        from common.models import model_shape_problem

        problem = model_shape_problem(cfg.model, shape)
        if problem:
            raise ConfigError("model", f"{cfg.model!r} {problem} ({cfg.dataset})")
    if (
        cfg.partitioner == "class-shares"
        and (cfg.num_clients * cfg.classes_per_client) % cfg.num_classes
    ):
        raise ConfigError(
            "classes-per-client",
            "class-shares needs num-clients × "
            f"classes-per-client divisible by {cfg.num_classes} (every "
            "class held by the same number of clients)",
        )
    if cfg.partitioner == "sampled" and cfg.samples_per_client < 3:
        raise ConfigError(
            "samples-per-client",
            "partitioner 'sampled' needs samples-per-client >= 3 (a train, a "
            "validation and a test row per client)",
        )
    if cfg.min_clients > cfg.participants_count:
        raise ConfigError(
            "min-clients", f"must be <= the {cfg.participants_count} participants"
        )
    if cfg.registration == "lazy" and not METHOD_SPECS[cfg.method].lazy_registration:
        able = [n for n, m in METHOD_SPECS.items() if m.lazy_registration]
        raise ConfigError(
            "registration",
            f"'lazy' is not supported by {cfg.method} (its server state is built "
            f"from every client's registration); methods that support it: "
            f"{', '.join(able)}",
        )
    if cfg.dp_noise > 0 and cfg.dp_clip == 0:
        raise ConfigError(
            "dp-noise", "needs dp-clip > 0 (noise is scaled to the clipping bound)"
        )


def pyproject_block() -> str:
    """``[tool.flwr.app.config]`` as pyproject.toml must hold it (every default)."""
    from common.flwr_cli import toml_value

    return "[tool.flwr.app.config]\n" + "".join(
        f"{k} = {toml_value(v)}\n" for k, v in defaults().items()
    )


def readme_table() -> str:
    """docs/config.md's table of run-config keys, with the method that owns each."""
    from common.settings import key_table

    known = settings()
    owners: dict[str, list[str]] = {}
    for spec in METHOD_SPECS.values():
        for key in spec.settings:
            owners.setdefault(key, []).append(spec.name)
    return key_table(known, {k: ", ".join(v) for k, v in owners.items()})


if __name__ == "__main__":
    import sys

    print(
        pyproject_block() if sys.argv[1:] == ["pyproject"] else readme_table(), end=""
    )
