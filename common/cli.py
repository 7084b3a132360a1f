"""The ``hyperflower`` console script: tools that need no running server."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from common import report
from common.config import parse_run_config
from common.flwr_cli import ROOT, flwr_command, flwr_env, merge_presets, parse_overrides


def run_command(args: argparse.Namespace) -> int:
    """Merge presets and overrides, validate, and hand the run to ``flwr run``.

    The config is validated here first, so a typo fails in a second instead of
    after the simulation has started; ``output-dir`` is made absolute because the
    ServerApp does not run in this shell's folder.
    """
    config = merge_presets(args.preset, parse_overrides(args.overrides))
    config["output-dir"] = str(Path(config.get("output-dir", "outputs")).resolve())
    cfg = parse_run_config(config)
    nodes = args.supernodes
    if nodes is None and args.connection == "local":
        nodes = cfg.num_clients
    cmd = flwr_command(config, args.connection, nodes)
    print("+", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, env=flwr_env(), cwd=ROOT)
    summary = Path(cfg.output_dir) / cfg.resolved_run_name
    if (summary / "summary.json").exists():
        return report.main([str(summary)])
    if cfg.stop_after_round:
        return code
    print(f"the run wrote no summary in {summary}: see the log above", file=sys.stderr)
    return code or 1


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``hyperflower <command>``."""
    parser = argparse.ArgumentParser(prog="hyperflower")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="print the accuracy table of finished runs")
    rep.add_argument("runs", nargs="+", help="outputs/<run-name> folders")
    run = sub.add_parser("run", help="flwr run with presets and overrides merged")
    run.add_argument("overrides", nargs="*", help="run-config key=value pairs")
    run.add_argument("--preset", action="append", default=[],
                     help="a conf/*.toml preset (repeatable; later ones win)")
    run.add_argument("--connection", default="local",
                     help="connection in $FLWR_HOME/config.toml (local = simulation)")
    run.add_argument("--supernodes", type=int, default=None,
                     help="simulated SuperNodes (default: num-clients)")
    per = sub.add_parser("personalize", help="a ready model for a new client from a "
                         "finished run, without a server (server/personalize.py)")
    from server import personalize
    personalize.add_arguments(per)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "report":
        return report.main(args.runs)
    if args.command == "run":
        return run_command(args)
    if args.command == "personalize":
        return personalize.main(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
