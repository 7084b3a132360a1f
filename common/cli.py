"""The ``hyperflower`` console script: tools that need no running server."""

from __future__ import annotations

import argparse
import sys

from common import report


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``hyperflower <command>``."""
    parser = argparse.ArgumentParser(prog="hyperflower")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="print the accuracy table of finished runs")
    rep.add_argument("runs", nargs="+", help="outputs/<run-name> folders")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "report":
        return report.main(args.runs)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
