"""``python -m bench.pfeddsh_di_check [--steps 100 1000] [--seeds 42 43 44]``: do
pFedDSH's synthetic images carry what replay needs?

Replay can only move an earlier batch's clients the right way if the DeepInversion
images of a class look like that class to a model other than the one they were
inverted from. This check, per seed:

1. trains a *judge* (the same BN CNN, on all of Fashion-MNIST's training images, one
   epoch) — a model that knows every class and never saw the synthetic images;
2. trains, as a pFedDSH client does, a BN CNN on one 2-class client's images (the
   preset's partition: 2 classes, a client's share of the training set) and takes its
   BN statistics on that data after training (what the server receives);
3. inverts it with the project's DeepInversion (``server.pfeddsh.replay.synthesise``,
   the preset's ``di-*`` weights) at each ``--steps``;
4. reports the judge's accuracy on the synthetic images, over all 10 classes and
   between the client's 2 classes (chance 10 % and 50 %), beside its accuracy on the
   client's real test images (the ceiling) and the source model's own accuracy on
   the synthetic images (what DeepInversion optimises, near 100 %).

Near-chance judge accuracy means the images fit the source model's logits and BN
statistics without carrying the class: replay on them is noise for another model.
Results: ``bench/results/pfeddsh-di-check.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.harness import RESULTS, ROOT
from common.flwr_cli import merge_presets

PRESET = ROOT / "conf" / "pfeddsh-fmnist.toml"


def _fit(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int
) -> None:
    """SGD on (x, y), batches of 32 drawn with a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (32,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


@torch.no_grad()
def _accuracy_between(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: list[int]
) -> float:
    """Accuracy when the model only chooses between ``classes``."""
    model.eval()
    own = model(x)[:, classes].argmax(1)
    return float((torch.tensor(classes)[own] == y).float().mean())


def check_seed(seed: int, steps_list: list[int], cfg: dict[str, Any]) -> dict[str, Any]:
    """The judge, one client's model and its inversions at each step count."""
    from common.data import load_fashion_mnist
    from common.models.bn import BNCNN, bn_statistics, calibrate_bn
    from server.pfeddsh.deepinversion import InversionWeights
    from server.pfeddsh.replay import synthesise

    torch.manual_seed(seed)
    pooled = load_fashion_mnist(download=False)
    x_all, y_all = pooled.rows(np.arange(len(pooled)))
    train, test = slice(0, 60_000), slice(60_000, None)
    judge = BNCNN()
    _fit(judge, x_all[train], y_all[train], 60_000 // 32, seed)
    rng = np.random.default_rng(seed)
    classes = sorted(int(c) for c in rng.choice(10, 2, replace=False))
    share = 60_000 // (int(cfg["num-clients"]) * 2 // 10)  # a client's share
    rows = np.flatnonzero(np.isin(y_all[train].numpy(), classes))
    mine = torch.from_numpy(rng.choice(rows, min(share, len(rows)), replace=False))
    x, y = x_all[train][mine], y_all[train][mine]
    client = BNCNN()
    _fit(client, x, y, 40 * int(cfg["local-steps"]), seed)  # a batch's worth
    calibrate_bn(client, x)
    params = {k: v.detach() for k, v in client.named_parameters()}
    stats = bn_statistics(client)
    t_rows = np.isin(y_all[test].numpy(), classes)
    xt, yt = x_all[test][t_rows], y_all[test][t_rows]
    out: dict[str, Any] = {
        "seed": seed,
        "classes": classes,
        "judge_test_acc": _accuracy(judge, x_all[test], y_all[test]),
        "judge_real_between": _accuracy_between(judge, xt, yt, classes),
        "client_real_between": _accuracy_between(client, xt, yt, classes),
        "by_steps": [],
    }
    for steps in steps_list:
        weights = InversionWeights(
            steps,
            float(cfg.get("di-lr", 0.1)),
            float(cfg.get("di-bn-weight", 1.0)),
            float(cfg.get("di-tv-weight", 1e-3)),
            float(cfg.get("di-l2-weight", 1e-4)),
        )
        syn = synthesise(
            BNCNN(),
            [(params, stats, classes)],
            int(cfg["di-images"]) * 4,
            pooled.image_shape,
            weights,
            seed,
        )
        out["by_steps"].append(
            {
                "steps": steps,
                "source_acc": _accuracy(client, syn.images, syn.labels),
                "judge_acc": _accuracy(judge, syn.images, syn.labels),
                "judge_between": _accuracy_between(
                    judge, syn.images, syn.labels, classes
                ),
                "bn_ratio": syn.reports[0]["bn-last"] / syn.reports[0]["bn-first"],
            }
        )
        print(json.dumps(out["by_steps"][-1] | {"seed": seed}), flush=True)
    return out


def render(runs: list[dict[str, Any]]) -> str:
    """The page: per seed and step count, the judge's accuracy on synthetic images."""
    lines = [
        "## pFedDSH: do the DeepInversion images carry their class?",
        "",
        "`python -m bench.pfeddsh_di_check` (docstring: the protocol). A judge BN CNN "
        "trained on all of Fashion-MNIST classifies the images DeepInversion "
        "synthesises from one 2-class client's trained BN CNN (the 3-batch preset's "
        "`di-*` weights). Chance: 10 % over 10 classes, 50 % between the client's 2.",
        "",
        "| seed | classes | DI steps | source model on synthetic (%) | judge on "
        "synthetic, 10 classes (%) | judge on synthetic, the 2 classes (%) | judge "
        "on real test, the 2 classes (%) | client on real test (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for s in r["by_steps"]:
            lines.append(
                f"| {r['seed']} | {r['classes']} | {s['steps']} | "
                f"{100 * s['source_acc']:.1f} | {100 * s['judge_acc']:.1f} | "
                f"{100 * s['judge_between']:.1f} | "
                f"{100 * r['judge_real_between']:.1f} | "
                f"{100 * r['client_real_between']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the check for each seed and write the page."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--seeds", type=int, nargs="*", default=[42, 43, 44])
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = merge_presets([PRESET], {})
    runs = [check_seed(s, args.steps, cfg) for s in args.seeds]
    out = Path(args.out)
    (out / "pfeddsh-di-check.json").write_text(json.dumps(runs, indent=1) + "\n")
    (out / "pfeddsh-di-check.md").write_text(render(runs))
    print(out / "pfeddsh-di-check.md")


if __name__ == "__main__":
    main()
