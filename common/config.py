"""Typed run configuration shared by the ServerApp, the ClientApps and the tools.

Every run-config key lives in :data:`DEFAULTS` (mirrored in ``pyproject.toml``'s
``[tool.flwr.app.config]``). :func:`parse_run_config` validates a whole config at once,
before anything starts, and raises :class:`ConfigError` naming the key and what is
allowed, so a typo never costs a round of training.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

METHODS = ("pfedhn", "fedavg", "local", "hyperflora")
DATASETS = ("fashion-mnist", "digits", "synthetic")
MODELS = ("mlp", "lenet5", "cnn", "vit-tiny")
PARTITIONERS = ("classes", "dirichlet", "shards", "class-shares")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("sgd", "adam")
WEIGHTINGS = ("uniform", "samples")
HYPERFLORA_VARIANTS = ("standard", "sequential", "paired", "head")

#: Every run-config key with its default. Keys are kebab-case, as Flower passes them.
DEFAULTS: dict[str, Any] = {
    "method": "pfedhn",
    "dataset": "fashion-mnist",
    "data-dir": "",
    "model": "lenet5",
    "num-clients": 50,
    "holdout": 0.2,
    "partitioner": "classes",
    "classes-per-client": 2,
    "dirichlet-alpha": 0.5,
    "shards-per-client": 2,
    "val-fraction": 0.15,
    "test-fraction": 0.15,
    "num-rounds": 60,
    "clients-per-round": 10,
    "local-epochs": 0,
    "local-steps": 50,
    "batch-size": 64,
    "inner-lr": 5e-3,
    "inner-momentum": 0.9,
    "inner-weight-decay": 5e-5,
    "local-clip-norm": 50.0,
    "server-optimizer": "sgd",
    "server-lr": 5e-2,
    "server-momentum": 0.9,
    "server-weight-decay": 1e-3,
    "embed-lr": 0.0,
    "clip-norm": 50.0,
    "weighting": "uniform",
    "embed-dim": 0,
    "hn-hidden": 100,
    "hn-n-hidden": 3,
    "novel-rounds": 10,
    "novel-lr": 1.0,
    "eval-every": 10,
    "eval-clients-per-batch": 256,
    "round-timeout": 300.0,
    "min-clients": 1,
    "max-delta-norm": 0.0,
    "seed": 42,
    "run-name": "",
    "output-dir": "outputs",
    "resume": False,
    "checkpoint-every": 1,
    "stop-after-round": 0,
    "device": "auto",
    # Reliability and privacy
    "round-retries": 2,
    "max-reply-mb": 64.0,
    "dp-clip": 0.0,
    "dp-noise": 0.0,
    "fault-injection": "",
    # HyperFLoRA
    "lora-rank": 1,
    "lora-alpha": 1.0,
    "lora-targets": "auto",
    "lora-lr": 0.0,
    "hyperflora-variant": "paired",
    "pair-exchanges": 3,
    "pretrain-rounds": 20,
    "pretrain-epochs": 0,
    "pretrained-model": "",
    "finetune-steps": 50,
    # Benchmarks / hypernet
    "hypernet": "pertensor",
    "chunk-size": 576,
    "chunk-embed-dim": 16,
}


class ConfigError(ValueError):
    """A run-config value is missing, of the wrong type, or outside what is allowed."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"run config '{key}': {message}")
        self.key = key


@dataclass(frozen=True)
class RunConfig:
    """The validated run configuration; attribute names are the keys in snake_case."""

    method: str
    dataset: str
    data_dir: str
    model: str
    num_clients: int
    holdout: float
    partitioner: str
    classes_per_client: int
    dirichlet_alpha: float
    shards_per_client: int
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
    server_optimizer: str
    server_lr: float
    server_momentum: float
    server_weight_decay: float
    embed_lr: float
    clip_norm: float
    weighting: str
    embed_dim: int
    hn_hidden: int
    hn_n_hidden: int
    novel_rounds: int
    novel_lr: float
    eval_every: int
    eval_clients_per_batch: int
    round_timeout: float
    min_clients: int
    max_delta_norm: float
    seed: int
    run_name: str
    output_dir: str
    resume: bool
    checkpoint_every: int
    stop_after_round: int
    device: str
    # Reliability and privacy
    round_retries: int
    max_reply_mb: float
    dp_clip: float
    dp_noise: float
    fault_injection: str
    # HyperFLoRA
    lora_rank: int
    lora_alpha: float
    lora_targets: str
    lora_lr: float
    hyperflora_variant: str
    pair_exchanges: int
    pretrain_rounds: int
    pretrain_epochs: int
    pretrained_model: str
    finetune_steps: int
    # Benchmarks / hypernet
    hypernet: str
    chunk_size: int
    chunk_embed_dim: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        """Number of classes of the configured dataset."""
        return 10

    @property
    def resolved_embed_dim(self) -> int:
        """pFedHN's default embedding size 1 + N/4 when ``embed-dim`` is 0."""
        return self.embed_dim or 1 + self.num_clients // 4

    @property
    def resolved_embed_lr(self) -> float:
        """The embeddings' server lr: ``embed-lr``, or ``server-lr`` when it is 0 (the
        authors' ``--embed-lr`` defaults to ``--lr`` the same way)."""
        return self.embed_lr or self.server_lr

    @property
    def resolved_run_name(self) -> str:
        """The output folder's name: ``run-name`` or one built from method and seed."""
        return self.run_name or f"{self.method}-{self.dataset}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """The config as kebab-case keys, as it was resolved (for config.json)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)
                if f.name != "raw"}


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


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(allowed)}")


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(key, f"must be >= {low}, got {value}")


def parse_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """Validate a Flower run config (kebab-case keys) and return a :class:`RunConfig`.

    Unknown keys are reported with the closest known key, so a typo fails loudly
    instead of silently running with a default.
    """
    for key in run_config:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(key, DEFAULTS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(key, f"unknown key{hint}")
    values = {k: _coerce(k, run_config.get(k, d), d) for k, d in DEFAULTS.items()}
    cfg = RunConfig(**{k.replace("-", "_"): v for k, v in values.items()},
                    raw=dict(run_config))
    _validate(cfg)
    return cfg


def _validate(cfg: RunConfig) -> None:
    """Check ranges and combinations that single values cannot express."""
    _choice("method", cfg.method, METHODS)
    _choice("dataset", cfg.dataset, DATASETS)
    _choice("model", cfg.model, MODELS)
    _choice("partitioner", cfg.partitioner, PARTITIONERS)
    _choice("device", cfg.device, DEVICES)
    _choice("server-optimizer", cfg.server_optimizer, OPTIMIZERS)
    _choice("weighting", cfg.weighting, WEIGHTINGS)
    _at_least("num-clients", cfg.num_clients, 1)
    _at_least("num-rounds", cfg.num_rounds, 1)
    _at_least("clients-per-round", cfg.clients_per_round, 1)
    _at_least("batch-size", cfg.batch_size, 1)
    _at_least("local-epochs", cfg.local_epochs, 0)
    _at_least("local-steps", cfg.local_steps, 0)
    if cfg.local_epochs == 0 and cfg.local_steps == 0:
        raise ConfigError("local-steps", "one of local-epochs, local-steps must be > 0")
    if not 0.0 <= cfg.holdout < 1.0:
        raise ConfigError("holdout", f"must be in [0, 1), got {cfg.holdout}")
    participants = cfg.num_clients - int(cfg.holdout * cfg.num_clients)
    if participants < 1:
        raise ConfigError("holdout", "leaves no participating client")
    _at_least("classes-per-client", cfg.classes_per_client, 1)
    if cfg.classes_per_client > cfg.num_classes:
        raise ConfigError("classes-per-client",
                          f"must be <= {cfg.num_classes} (classes in {cfg.dataset})")
    if (cfg.partitioner == "class-shares"
            and (cfg.num_clients * cfg.classes_per_client) % cfg.num_classes):
        raise ConfigError("classes-per-client", "class-shares needs num-clients × "
                          f"classes-per-client divisible by {cfg.num_classes} (every "
                          "class held by the same number of clients)")
    if cfg.dirichlet_alpha <= 0:
        raise ConfigError("dirichlet-alpha", f"must be > 0, got {cfg.dirichlet_alpha}")
    _at_least("shards-per-client", cfg.shards_per_client, 1)
    for key, frac in (("val-fraction", cfg.val_fraction),
                      ("test-fraction", cfg.test_fraction)):
        if not 0.0 < frac < 0.5:
            raise ConfigError(key, f"must be in (0, 0.5), got {frac}")
    for key, value in (("inner-lr", cfg.inner_lr), ("server-lr", cfg.server_lr),
                       ("novel-lr", cfg.novel_lr)):
        if value <= 0:
            raise ConfigError(key, f"must be > 0, got {value}")
    for key, value in (("inner-momentum", cfg.inner_momentum),
                       ("server-momentum", cfg.server_momentum)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(key, f"must be in [0, 1), got {value}")
    _at_least("inner-weight-decay", cfg.inner_weight_decay, 0.0)
    _at_least("local-clip-norm", cfg.local_clip_norm, 0.0)
    _at_least("server-weight-decay", cfg.server_weight_decay, 0.0)
    _at_least("embed-lr", cfg.embed_lr, 0.0)
    _at_least("clip-norm", cfg.clip_norm, 0.0)
    _at_least("max-delta-norm", cfg.max_delta_norm, 0.0)
    _at_least("embed-dim", cfg.embed_dim, 0)
    _at_least("hn-hidden", cfg.hn_hidden, 1)
    _at_least("hn-n-hidden", cfg.hn_n_hidden, 0)
    _at_least("novel-rounds", cfg.novel_rounds, 0)
    _at_least("eval-every", cfg.eval_every, 1)
    _at_least("eval-clients-per-batch", cfg.eval_clients_per_batch, 1)
    if cfg.round_timeout <= 0:
        raise ConfigError("round-timeout", f"must be > 0, got {cfg.round_timeout}")
    _at_least("min-clients", cfg.min_clients, 1)
    _at_least("stop-after-round", cfg.stop_after_round, 0)
    _at_least("checkpoint-every", cfg.checkpoint_every, 1)
    if cfg.min_clients > participants:
        raise ConfigError("min-clients", f"must be <= the {participants} participants")
    if "/" in cfg.run_name or cfg.run_name.startswith("."):
        raise ConfigError("run-name", "must be a plain folder name")
    _at_least("round-retries", cfg.round_retries, 0)
    if cfg.max_reply_mb <= 0:
        raise ConfigError("max-reply-mb", f"must be > 0, got {cfg.max_reply_mb}")
    _at_least("dp-clip", cfg.dp_clip, 0.0)
    _at_least("dp-noise", cfg.dp_noise, 0.0)
    if cfg.dp_noise > 0 and cfg.dp_clip == 0:
        raise ConfigError("dp-noise", "needs dp-clip > 0 (noise is scaled to the "
                          "clipping bound)")
    try:
        from common.faults import parse_plan

        parse_plan(cfg.fault_injection)
    except ValueError as exc:
        raise ConfigError("fault-injection", str(exc)) from None
    # HyperFLoRA
    _choice("hyperflora-variant", cfg.hyperflora_variant, HYPERFLORA_VARIANTS)
    _at_least("lora-rank", cfg.lora_rank, 1)
    if cfg.lora_alpha <= 0:
        raise ConfigError("lora-alpha", f"must be > 0, got {cfg.lora_alpha}")
    if not cfg.lora_targets.strip(", "):
        raise ConfigError("lora-targets", "must be 'auto' or module name patterns "
                          "separated by commas, e.g. 'fc1,fc2,fc3'")
    _at_least("lora-lr", cfg.lora_lr, 0.0)
    _at_least("pair-exchanges", cfg.pair_exchanges, 1)
    _at_least("pretrain-rounds", cfg.pretrain_rounds, 0)
    _at_least("pretrain-epochs", cfg.pretrain_epochs, 0)
    _at_least("finetune-steps", cfg.finetune_steps, 0)
    if (cfg.method == "hyperflora" and cfg.pretrain_rounds == 0
            and not cfg.pretrained_model):
        raise ConfigError("pretrain-rounds", "HyperFLoRA needs a pre-trained base: "
                          "pretrain-rounds >= 1 or a pretrained-model file")
    # Benchmarks / hypernet
    _choice("hypernet", cfg.hypernet, ("pertensor", "chunked"))
    _at_least("chunk-size", cfg.chunk_size, 1)
    _at_least("chunk-embed-dim", cfg.chunk_embed_dim, 1)
