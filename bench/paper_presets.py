"""Seconds per round of each paper preset (``conf/paper/*.toml``) on generated data.

``python -m bench.paper_presets [--only NAME ...] [--rounds 2] [--scale 1.0]``
writes, once per dataset, a sample of the preset's data in its official format
(random pixels, ``bench.sample_sets``: CIFAR-10/100 pickle batches, MNIST's IDX
folder) at ``--scale`` times the official set's size (1.0: 60,000 CIFAR images,
70,000 MNIST digits, so each client holds as many rows as in the paper's setting),
then runs ``--rounds`` rounds of each preset in process
(``server.direct_grid.run_in_process``: the real server loop and ClientApp handlers)
with the preset's method, model, clients per round and local work. Only the round
count changes (and what must follow it: HyperFLoRA's phase 1 gets as many rounds,
pFedDSH one round per client batch, evaluation at the last round). The server runs
on the preset's ``device`` (``auto``: CUDA when present); clients train on the CPU,
as in a simulation.

A very small ``--scale`` can leave a class without images (labels are drawn at
random), which a class-shares split refuses; 0.05 and above is safe for CIFAR-100.

Each preset's row: seconds per round (mean of the loop's ``round-s`` over the
rounds; HyperFLoRA's phase-1 rounds are in the same log), the whole run's wall
time, the server device and the sample's size. Results go to
``<out>/paper-presets.{json,md}`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

from bench.sample_sets import cifar_folder, mnist_folder

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "conf" / "paper"
#: Images in each official set (train + test), which ``--scale 1`` reproduces.
FULL_SIZE = {"cifar10": 60_000, "cifar100": 60_000, "mnist": 70_000}


def write_sample(dataset: str, root: Path, scale: float) -> tuple[Path, int]:
    """A sample of ``dataset``'s official files under ``root`` with about ``scale``
    times its full image count; returns the data-dir and the image count."""
    n = max(1, round(FULL_SIZE[dataset] * scale))
    if dataset in ("cifar10", "cifar100"):
        per_batch = max(1, n // 6)  # CIFAR-10: 5 + 1 batches; CIFAR-100: 5× + 1×
        folder, images, _ = cifar_folder(
            root, hundred=dataset == "cifar100", per_batch=per_batch
        )
        return folder, len(images)
    if dataset == "mnist":
        folder, images, _ = mnist_folder(root, n=max(1, n // 2))
        return folder, len(images)
    raise ValueError(f"no sample writer for dataset {dataset!r}")


def bench_config(
    preset: dict[str, Any], data_dir: Path, rounds: int, out: Path, name: str
) -> dict[str, Any]:
    """The preset with only the round count (and what follows from it) changed."""
    cfg = {
        **preset,
        "data-dir": str(data_dir),
        "num-rounds": rounds,
        "eval-every": rounds,
        "checkpoint-every": rounds,
        "output-dir": str(out),
        "run-name": name,
    }
    if preset["method"] == "hyperflora":
        cfg["pretrain-rounds"] = rounds
    if preset["method"] == "pfeddsh":
        cfg["client-batches"] = min(int(preset["client-batches"]), rounds)
        cfg["eval-every"] = rounds // cfg["client-batches"]
    return cfg


def time_preset(
    path: Path, rounds: int, scale: float, work: Path, samples: dict[str, Any]
) -> dict[str, Any]:
    """Run one preset for ``rounds`` rounds on its sample; its row."""
    from server.app import resolve_device
    from server.direct_grid import run_in_process

    preset = tomllib.loads(path.read_text())
    dataset = preset["dataset"]
    if dataset not in samples:
        made = time.monotonic()
        folder, count = write_sample(dataset, work / "data" / dataset, scale)
        samples[dataset] = {
            "dir": folder,
            "images": count,
            "write_s": time.monotonic() - made,
        }
    sample = samples[dataset]
    device = resolve_device(str(preset.get("device", "cpu")))
    cfg = bench_config(preset, sample["dir"], rounds, work / "outputs", path.stem)
    start = time.monotonic()
    summary = run_in_process(cfg, device=str(device))
    wall = time.monotonic() - start
    rows = [
        json.loads(line)
        for line in (work / "outputs" / path.stem / "metrics.jsonl")
        .read_text()
        .splitlines()
        if line.strip()
    ]
    per_round = [float(r["round-s"]) for r in rows if "round-s" in r]
    return {
        "preset": path.stem,
        "method": preset["method"],
        "dataset": dataset,
        "model": preset.get("model", preset.get("mh-archs", "")),
        "clients_per_round": preset.get("clients-per-round"),
        "rounds": len(per_round),
        "s_per_round": sum(per_round) / len(per_round) if per_round else None,
        "wall_s": wall,
        "server_device": str(device),
        "sample_images": sample["images"],
        "participant_acc": (summary or {}).get("participant_acc"),
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown table (one row per preset)."""
    lines = [
        "# Paper presets: seconds per round on a generated sample",
        "",
        f"{results['host']}; {results['rounds']} rounds a preset, sample "
        f"{results['scale']} × the official set's size (random pixels in its "
        "official format). Clients train on the CPU; the server on "
        "`server_device`. Accuracy on random pixels means nothing.",
        "",
        "| preset | method | model | clients a round | s / round | wall s | server |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        spr = "—" if r["s_per_round"] is None else f"{r['s_per_round']:.2f}"
        lines.append(
            f"| {r['preset']} | {r['method']} | {r['model']} | "
            f"{r['clients_per_round']} | {spr} | {r['wall_s']:.1f} | "
            f"{r['server_device']} |"
        )
    return "\n".join(lines) + "\n"


def run(
    only: list[str] | None = None,
    rounds: int = 2,
    scale: float = 1.0,
    out: Path = ROOT / "bench" / "results",
    work: Path | None = None,
) -> dict[str, Any]:
    """Time every preset (or those named in ``only``) and write
    ``<out>/paper-presets.{json,md}``; returns the results."""
    import tempfile

    presets = sorted(PRESETS.glob("*.toml"))
    if only:
        unknown = set(only) - {p.stem for p in presets}
        if unknown:
            raise SystemExit(f"no preset {sorted(unknown)} in {PRESETS}")
        presets = [p for p in presets if p.stem in only]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    results: dict[str, Any] = {
        "host": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, {gpu}",
        "rounds": rounds,
        "scale": scale,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = work or Path(tmp)
        samples: dict[str, Any] = {}
        for path in presets:
            row = time_preset(path, rounds, scale, base, samples)
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper-presets.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "paper-presets.md").write_text(markdown(results))
    return results


def main() -> None:
    """Command line: ``python -m bench.paper_presets``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="preset names (file stems)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="sample size / official size"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--work", type=Path, help="keep data and runs here")
    args = parser.parse_args()
    run(args.only, args.rounds, args.scale, args.out, args.work)


if __name__ == "__main__":
    main()
