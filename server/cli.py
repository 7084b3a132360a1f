"""The ``hyperflower`` console script: run, report and personalise.

- ``hyperflower run``: merge presets and overrides, validate the config, check (in
  simulation) that the data loads from where the config says and that the background
  local SuperLink was started with this shell's environment, then ``flwr run``; the
  run's own id is passed along, and only a summary carrying it is ever shown.
- ``hyperflower report``: the table of finished runs (:mod:`common.report`);
  ``report --tensorboard`` links the runs' TensorBoard events into one log dir to
  compare them (:func:`server.tensorboard_log.compare`).
- ``hyperflower personalize``: a new client's model from a finished run
  (:mod:`server.personalize`).

Errors of configuration or usage print one line (``error: ...``) and exit 2;
``--debug`` or ``HYPERFLOWER_DEBUG=1`` shows the traceback instead. Exit codes: 0 done,
1 run failed, 2 bad config or usage, 3 stopped for resume (``stop-after-round``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from common import report
from common.config import ConfigError, parse_run_config
from common.data import (
    FILE_SETS,
    DataError,
    DatasetNotFoundError,
    load_pooled,
    resolved_data_dir,
)
from common.flwr_cli import ROOT, flwr_command, flwr_env, merge_presets, parse_overrides
from common.runinfo import EXIT_DONE, EXIT_FAILED, EXIT_STOPPED, EXIT_USAGE, verdict


class UsageError(Exception):
    """A command line that cannot be run as given (exit 2, one line)."""


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """Presets and overrides merged, with paths made absolute (the ServerApp and the
    ClientApps do not run in this shell's folder)."""
    try:
        overrides = parse_overrides(args.overrides)
        config = merge_presets(args.preset, overrides)
    except FileNotFoundError as exc:
        raise UsageError(f"preset '{exc.filename}' not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"a preset is not valid TOML: {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    config["output-dir"] = str(
        Path(config.get("output-dir", "outputs")).expanduser().resolve()
    )
    if config.get("data-dir"):
        config["data-dir"] = str(Path(str(config["data-dir"])).expanduser().resolve())
    return config


def check_local_data(config: dict[str, Any]) -> str:
    """Load the data the config names, here and now (before Ray starts); pin it in
    the run config (absolute ``data-dir``, ``data-fingerprint``) so every ClientApp
    reads exactly it, whatever its environment. Returns a line describing it."""
    cfg = parse_run_config(config)
    pooled = load_pooled(cfg.dataset, cfg.data_dir, cfg.download)
    if cfg.data_fingerprint and cfg.data_fingerprint != pooled.fingerprint:
        raise ConfigError(
            "data-fingerprint",
            f"names {cfg.data_fingerprint}, but the data found is {pooled.fingerprint}",
        )
    if cfg.dataset in FILE_SETS:
        config["data-dir"] = resolved_data_dir(cfg.dataset, cfg.data_dir)
    config["data-fingerprint"] = pooled.fingerprint
    where = config.get("data-dir") or pooled.source.get("origin", cfg.dataset)
    return (
        f"data: {pooled.fingerprint} ({len(pooled)} samples, "
        f"{pooled.num_classes} classes) from {where}"
    )


def run_command(args: argparse.Namespace) -> int:
    """Validate, check the data, hand the run to ``flwr run``; exit code from the
    run's own record (:func:`common.runinfo.verdict`), never from an older run's."""
    from server.localsim import stale_superlink
    from server.runstate import new_run_id

    config = _config(args)
    cfg = parse_run_config(config)
    env = flwr_env()
    local = args.connection == "local"
    if local:
        print(check_local_data(config), flush=True)
        stale = stale_superlink(env)
        if stale:
            raise UsageError(stale)
    run_id = cfg.run_id or new_run_id()
    config["run-id"] = run_id
    nodes = args.supernodes
    if nodes is None and local:
        nodes = cfg.num_clients
    cmd = flwr_command(config, args.connection, nodes, env=env)
    print("+", " ".join(cmd), flush=True)
    subprocess.call(cmd, env=env, cwd=ROOT)
    found = verdict(Path(cfg.output_dir) / cfg.resolved_run_name, run_id)
    if found.code == EXIT_DONE:
        return report.main([str(Path(cfg.output_dir) / cfg.resolved_run_name)])
    prefix = "stopped" if found.code == EXIT_STOPPED else "error"
    print(f"{prefix}: {found.message}", file=sys.stderr)
    return found.code


def build_parser() -> argparse.ArgumentParser:
    """The ``hyperflower`` command line."""
    from server import personalize

    parser = argparse.ArgumentParser(
        prog="hyperflower",
        epilog="exit codes: 0 done, 1 run failed, 2 bad config "
        "or usage, 3 stopped for resume",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks (also HYPERFLOWER_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="print the accuracy table of finished runs")
    rep.add_argument("runs", nargs="+", help="outputs/<run-name> folders")
    rep.add_argument(
        "--tensorboard",
        action="store_true",
        help="instead of the table: link the runs' TensorBoard events into one "
        "log dir to compare them, and print how to open it",
    )
    rep.add_argument(
        "--logdir",
        default=None,
        help="the log dir --tensorboard fills (default: tensorboard-compare/ "
        "beside the runs)",
    )
    run = sub.add_parser("run", help="flwr run with presets and overrides merged")
    run.add_argument("overrides", nargs="*", help="run-config key=value pairs")
    run.add_argument(
        "--preset",
        action="append",
        default=[],
        help="a conf/*.toml preset (repeatable; later ones win)",
    )
    run.add_argument(
        "--connection",
        default="local",
        help="connection in $FLWR_HOME/config.toml (local = simulation)",
    )
    run.add_argument(
        "--supernodes",
        type=int,
        default=None,
        help="simulated SuperNodes (default: num-clients)",
    )
    per = sub.add_parser(
        "personalize",
        help="a ready model for a new client from a "
        "finished run, without a server (server/personalize.py)",
    )
    personalize.add_arguments(per)
    return parser


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command."""
    if args.command == "report" and args.tensorboard:
        from server.tensorboard_log import compare

        return compare(args.runs, args.logdir)
    if args.command == "report":
        return report.main(args.runs)
    if args.command == "run":
        return run_command(args)
    from server import personalize

    return personalize.main(args)


def main(argv: list[str] | None = None) -> int:
    """``hyperflower <command>``: one-line errors, exit codes as documented."""
    from server.personalize import FitFailedError, PersonalizeError

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    debug = args.debug or os.environ.get("HYPERFLOWER_DEBUG", "") not in (
        "",
        "0",
        "false",
    )
    try:
        return dispatch(args)
    except FitFailedError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (
        ConfigError,
        UsageError,
        DatasetNotFoundError,
        DataError,
        PersonalizeError,
    ) as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
