"""``python -m bench <suite> [--quick] [--parallel N]``, ``python -m bench readme`` and
``python -m bench tune <target> ...`` (a validation-only grid search, docs/tuning.md).

Each suite writes ``bench/results/<suite>.json``, ``<suite>.md`` and PNG plots;
``readme`` rewrites docs/results.md's Benchmarks block from ``bench/results/*.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any


def _accuracy(suite: str) -> Callable[[argparse.Namespace], Any]:
    def go(args: argparse.Namespace) -> Any:
        from bench import accuracy

        return accuracy.run(
            suite,
            quick=args.quick,
            parallel=args.parallel,
            reuse=args.reuse,
            seeds=args.seeds,
        )

    return go


def _module(name: str) -> Callable[[argparse.Namespace], Any]:
    def go(args: argparse.Namespace) -> Any:
        import importlib

        return importlib.import_module(f"bench.{name}").run(quick=args.quick)

    return go


SUITES: dict[str, tuple[str, Callable[[argparse.Namespace], Any]]] = {
    "accuracy": (
        "every method on Fashion-MNIST: participants and non-participants, "
        "bytes, CTWC, HS (mean ± std over seeds)",
        _accuracy("accuracy"),
    ),
    "converged": (
        "pFedHN (authors' trainer), FedAvg and local-only on the "
        "authors' split, 1,600 client updates each, until the curves flatten",
        _accuracy("converged"),
    ),
    "low-data": (
        "pFedHN, FedAvg and local-only on 100 clients of about 100 training "
        "images each, 800 client updates each",
        _accuracy("low-data"),
    ),
    "chunked": (
        "pFedHN's chunked generator against per-tensor on the accuracy suite's "
        "split, 1,200 client updates each, 3 seeds",
        _accuracy("chunked"),
    ),
    "digits": ("the same on scikit-learn digits (quick check)", _accuracy("digits")),
    "chunked-lr": (
        "the chunked hypernetwork's server optimiser/lr sweep on digits "
        "(chosen on validation)",
        _accuracy("chunked-lr"),
    ),
    "overhead": (
        "`flwr run` simulation vs the same functions called in process: "
        "per-round ratio after start-up, and start-up",
        _module("overhead"),
    ),
    "server-cost": (
        "hypernetwork update as a share of the round: per-tensor vs "
        "chunked, 10 and 50 clients per round",
        _module("server_cost"),
    ),
    "scale": (
        "100 / 1,000 / 5,000 registered clients, 10 sampled: round time and server RSS",
        _module("scale"),
    ),
    "comm": (
        "bytes per round from the records sent vs the papers' formulas",
        _module("comm"),
    ),
    "latency": (
        "personalisation latency: a new client's model from a checkpoint on CPU",
        _module("latency"),
    ),
    "deploy-cost": (
        "a deployed round attributed per message (Flower's process start, FAB "
        "install, our imports, data, training, reply) on 2/5/10 loopback "
        "SuperNodes, against simulation",
        _module("deploy_cost"),
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run a suite (or the docs/results.md generator)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "tune":
        from bench.tune import main as tune_main

        return tune_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("suite", help="a suite name, 'list', or 'readme'")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes (seconds to minutes); results are "
        "written like a full run's, so do not commit them",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=2,
        help="runs at once, one thread each (accuracy suites)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="accuracy suites: keep finished runs whose config is "
        "unchanged (run only new or changed rows)",
    )
    parser.add_argument(
        "--seeds",
        type=lambda v: [int(x) for x in v.split(",")],
        default=None,
        help="accuracy suites: these seeds instead of the suite's (e.g. 42,43); "
        "the page says which seeds it averages",
    )
    args = parser.parse_args(argv)
    if args.suite == "list":
        for name, (what, _) in SUITES.items():
            print(f"{name:12s} {what}")
        print(f"{'readme':12s} rewrite docs/results.md's block from bench/results")
        print(
            f"{'tune':12s} a validation-only grid search: python -m bench tune "
            "<target> --help"
        )
        return 0
    if args.suite == "readme":
        from bench.readme import main as readme_main

        return readme_main()
    if args.suite not in SUITES:
        parser.error(
            f"unknown suite {args.suite!r}; known: {', '.join(SUITES)}, readme, list"
        )
    start = time.monotonic()
    SUITES[args.suite][1](args)
    print(
        f"{args.suite}: done in {time.monotonic() - start:.0f}s; see "
        f"bench/results/{args.suite}.md",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
