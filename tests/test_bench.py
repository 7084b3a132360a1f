"""The benchmark harness: aggregation, tables, README block, committed results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import accuracy, readme
from bench.harness import RESULTS, ROOT, Job, load_preset
from bench.report import aggregate, divergence, fmt, mean_std, pm, table


def test_mean_std_ignores_missing_and_nan():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert mean_std([0.5, None, float("nan")]) == (0.5, 0.0, 1)
    assert mean_std([None]) == (None, None, 0)


def test_aggregate_groups_in_first_seen_order():
    runs = [
        {"method": "b", "seed": 1, "acc": 0.5},
        {"method": "a", "seed": 1, "acc": 0.9},
        {"method": "b", "seed": 2, "acc": 0.7},
        {"method": "a", "seed": 2, "acc": None},
    ]
    rows = aggregate(runs, "method", ["acc"])
    assert [r["method"] for r in rows] == ["b", "a"]
    assert rows[0]["acc"] == pytest.approx(0.6)
    assert rows[0]["seeds"] == [1, 2] and rows[0]["n"] == 2
    assert rows[1]["acc"] == 0.9 and rows[1]["acc_std"] == 0.0


def test_table_and_formatting():
    assert pm({"x": 0.9551, "x_std": 0.012}, "x") == "95.5 ± 1.2"
    assert pm({"x": None}, "x") == "—"
    assert fmt(1241185) == "1,241,185" and fmt(None) == "—" and fmt(0.0421) == "0.0421"
    text = table(["a", "b"], [[1, "x"]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |"]


def test_job_config_is_preset_then_overrides(tmp_path):
    job = Job("j", "quickstart", {"num-rounds": 3, "seed": 7})
    cfg = job.config(tmp_path)
    assert cfg["method"] == load_preset("quickstart")["method"]
    assert (cfg["num-rounds"], cfg["seed"], cfg["run-name"]) == (3, 7, "j")
    assert cfg["output-dir"] == str(tmp_path)


def fake_accuracy_data() -> dict:
    spec = accuracy.specs(quick=True)["accuracy"]
    runs = []
    for m in spec.methods:
        for seed, acc in ((1, 0.8), (2, 0.9)):
            runs.append(
                {
                    "method": m.label,
                    "seed": seed,
                    "ok": True,
                    "error": "",
                    "participant_acc": acc,
                    "nonparticipant_acc": acc - 0.1,
                    "global_acc": None,
                    "participant_val_acc": acc,
                    "best_round": 2,
                    "bytes_down_per_round": 1000,
                    "bytes_up_per_round": 1000,
                    "client_trainable_params": 10,
                    "hypernet_params": 0,
                    "server_update_s": 0.01,
                    "round_s": 1.0,
                    "wall_s": 2.0,
                    "nonparticipant_protocol": "p",
                    "curve": [(1, acc, acc)],
                }
            )
    rows = aggregate(runs, "method", accuracy.SUMMARY_KEYS)
    return {
        "suite": "accuracy",
        "title": spec.title,
        "seeds": [1, 2],
        "sizing": spec.sizing,
        "methods": [
            {"label": m.label, "preset": m.preset, "overrides": m.overrides}
            for m in spec.methods
        ],
        "rows": rows,
        "runs": runs,
        "parallel": 2,
        "quick": True,
        "machine": {"cpus": 2},
        "load": {"load1-mean": 5.0, "load1-max": 6.0},
    }


def test_accuracy_page_from_json_alone():
    page = accuracy.render(json.loads(json.dumps(fake_accuracy_data())))
    assert "| pFedHN (per-tensor) | 85.0 ± 7.1 | 85.0 ± 7.1 | 75.0 ± 7.1 |" in page
    assert "other work shared the CPUs" in page


def test_accuracy_page_reads_pfedhn_against_baselines_per_seed():
    """A made-up stored result: pFedHN above FedAvg on every seed holds, above
    local-only on one seed of three is a tie, and a diverged pFedHN run (NaN) counts
    against it on its seed; pages without the rows (chunked-lr) have no claims."""
    data = fake_accuracy_data()
    accs = {
        "pFedHN (per-tensor)": {1: 0.82, 2: 0.95, 3: 0.70},
        "FedAvg": {1: 0.80, 2: 0.90, 3: 0.60},
        "Local only": {1: 0.90, 2: 0.93, 3: 0.80},
    }
    runs = []
    for run in {r["method"]: r for r in data["runs"]}.values():  # one per method
        for seed in (1, 2, 3):
            acc = accs.get(run["method"], {}).get(seed, 0.5)
            runs.append(run | {"seed": seed, "participant_acc": acc})
    data["runs"], data["seeds"] = runs, [1, 2, 3]
    data["rows"] = aggregate(runs, "method", accuracy.SUMMARY_KEYS)
    page = accuracy.render(json.loads(json.dumps(data)))
    assert (
        "| pFedHN (per-tensor) − FedAvg (participants) | +2.00, +5.00, +10.00 | "
        "+5.67 | 3 of 3 | **holds** (3 seeds: every seed must agree) |" in page
    )
    assert (
        "| pFedHN (per-tensor) − Local only (participants) | -8.00, +2.00, -10.00 | "
        "-5.33 | 1 of 3 | **tie** (3 seeds: every seed must agree) |" in page
    )
    assert "held-out clients)" not in page  # compared on the low-data page only
    assert "docs/tuning.md rule 9" in page
    # a diverged run is NaN: it counts against pFedHN on its seed
    nan = next(r for r in runs if r["method"] == "pFedHN (per-tensor)")
    nan["participant_acc"] = float("nan")
    lines = accuracy.claim_lines("accuracy", runs)
    assert any(
        "| pFedHN (per-tensor) − FedAvg (participants) | NaN, +5.00, +10.00 | +7.50 "
        "| 2 of 3 | **tie**" in line
        for line in lines
    )
    assert accuracy.claim_lines("chunked-lr", runs) == []
    # held-out clients where they train alike (the low-data page); local-only
    # without a held-out model is no pair
    pfedhn = accuracy.LOW_DATA[0].label
    low = [
        r | {"method": pfedhn, "nonparticipant_acc": 0.6}
        if r["method"] == "pFedHN (per-tensor)"
        else r | {"nonparticipant_acc": 0.5 if r["method"] == "FedAvg" else None}
        for r in runs
    ]
    text = "\n".join(accuracy.claim_lines("low-data", low))
    assert f"| {pfedhn} − FedAvg (held-out clients) | +10.00, +10.00, +10.00 |" in text
    assert "Local only (held-out clients)" not in text


def test_readme_block_replaced_between_markers_only(tmp_path):
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    (results / "accuracy.md").write_text("### A\n\n| x |\n")
    (results / "accuracy.png").write_bytes(b"png")
    (results / "accuracy-curves.png").write_bytes(b"png")
    (results / "hyperflora-lenet.md").write_text("## H\n\n### H2\n")
    content = readme.block(results, tmp_path / "docs")
    # every page's title at one level (### under the page's "## Benchmarks")
    assert content.index("### A") < content.index("### H\n") < content.index("#### H2")
    # links resolve from the page's folder (docs/), not the repository root
    assert "[accuracy-curves](../bench/results/accuracy-curves.png)" in content
    text = f"intro\n{readme.START}\nold\n{readme.END}\noutro\n"
    new = readme.replace_block(text, content)
    assert new.startswith("intro\n") and new.endswith("\noutro\n")
    assert "old" not in new and "### H" in new
    with pytest.raises(ValueError):
        readme.replace_block("no markers", content)


def tune_page(
    rows: list[dict], seeds: list[int], score: str = "participant_val_acc"
) -> str:
    """A sweep page rendered from rows alone (the rest of its JSON minimal)."""
    from bench import tune

    return tune.render(
        {
            "name": "x",
            "what": "",
            "command": "python -m bench tune x",
            "preset": "quickstart",
            "overrides": {},
            "sets": {},
            "seeds": seeds,
            "rows": rows,
            "score": score,
        }
    )


def committed_suites() -> list[str]:
    return [s for s in readme.RENDERERS if (RESULTS / f"{s}.json").exists()]


@pytest.mark.parametrize("suite", committed_suites())
def test_committed_pages_match_their_json(suite):
    data = json.loads((RESULTS / f"{suite}.json").read_text())
    page = readme.renderer(suite)(data).rstrip() + "\n"
    assert (RESULTS / f"{suite}.md").read_text() == page


def test_results_page_block_matches_committed_results():
    assert committed_suites(), "bench/results holds no committed suite"
    text = readme.RESULTS_PAGE.read_text()
    assert readme.replace_block(text, readme.block()) == text, (
        "regenerate docs/results.md's block: python -m bench readme"
    )


def test_quick_results_never_go_to_the_committed_folder():
    from bench.harness import results_dir

    assert results_dir(False) == RESULTS
    assert Path(ROOT / "outputs") in results_dir(True).parents


def test_a_diverged_run_is_flagged_nan_in_the_rendered_table():
    data = fake_accuracy_data()
    nan_run = dict(data["runs"][0], seed=3, curve=[(1, float("nan"), 0.0)])
    nan_run["participant_acc"] = 0.0  # a NaN model's argmax still "scores"
    rows = [
        {"round": 1, "train-loss": 0.7},
        {
            "round": 2,
            "train-loss": float("nan"),
            "participant-test-loss": float("nan"),
            "participant-test-acc": 0.0,
        },
    ]
    cause = divergence({"participant_acc": 0.0}, rows)
    assert "round 2" in cause
    accuracy.mark_diverged(nan_run, cause)
    assert math.isnan(nan_run["participant_acc"])
    data["runs"].append(nan_run)
    data["rows"] = aggregate(data["runs"], "method", accuracy.SUMMARY_KEYS)
    page = accuracy.render(json.loads(json.dumps(data)))
    line = next(x for x in page.splitlines() if x.startswith("| pFedHN (per-tensor)"))
    assert "NaN (1/3 diverged)" in line and "0.0" not in line
    assert "Diverged runs" in page and "seed 3" in page
    # a run that stopped with a NaN error is named too; a healthy one is not
    assert divergence(None, [], "round 4: delta holds NaN or Inf")
    assert divergence({"participant_acc": 0.9}, [{"train-loss": 0.1}]) == ""


def test_single_run_report_names_a_diverged_run():
    from common import report

    summary = {
        "method": "pfedhn",
        "dataset": "fashion-mnist",
        "participant_acc": 0.0,
        "participant_acc_std": 0.0,
        "nonparticipant_acc": None,
        "global_acc": None,
        "best_round": 10,
        "bytes_down_per_round": 1e6,
        "bytes_up_per_round": 1e6,
        "client_trainable_params": 1,
        "hypernet_params": 2,
    }
    rows = [{"round": 10, "participant-test-loss": float("nan")}]
    summary["diverged"] = report.diverged(summary, rows)
    text = report.table([summary])
    assert "NaN (diverged)" in text and "0.00" not in text
    assert not report.diverged(
        {**summary, "participant_acc": 0.5}, [{"participant-test-loss": 0.3}]
    )


def test_tune_chooses_on_validation_and_flags_rising_curves():
    from bench import tune

    assert tune.flattened([0.5, 0.7, 0.8, 0.801, 0.802, 0.8]) is True
    assert tune.flattened([0.5, 0.6, 0.7, 0.8, 0.9]) is False
    assert tune.flattened([0.5, 0.6]) is None
    grid = {"server-lr": [0.01, 0.05]}
    labels = [tune.label(p) for p in tune.points(grid)]
    runs = [
        {
            "point": labels[0],
            "seed": s,
            "ok": True,
            "val_acc": v,
            "best_round": 30,
            "wall_s": 1.0,
            "flattened": True,
        }
        for s, v in ((1, 0.90), (2, 0.92))
    ]
    runs += [
        {
            "point": labels[1],
            "seed": s,
            "ok": True,
            "val_acc": v,
            "best_round": 30,
            "wall_s": 1.0,
            "flattened": False,
        }
        for s, v in ((1, 0.95), (2, 0.93))
    ]
    rows = tune.summarise(runs, labels)
    assert [bool(r.get("chosen")) for r in rows] == [False, True]
    assert not any(r.get("flat") for r in rows)  # two points: never called flat
    assert rows[1]["still_rising"] == 2
    page = tune_page(rows, [1, 2])
    assert "test" not in page.lower().replace("test accuracy is not read", "")
    assert "Not flattened within the budget: server-lr=0.05" in page


def test_time_to_accuracy_counts_client_updates_with_pretraining():
    rows = [{"round": r, "round-s": 2.0} for r in range(1, 5)]
    rows[1]["participant-test-acc"] = 0.5
    rows[2]["participant-test-acc"] = 0.95
    rows[3]["participant-test-acc"] = 1.0
    tta = accuracy.time_to_accuracy(rows, {"clients-per-round": 10})
    assert tta["updates_to_90"] == 30 and tta["wall_to_90"] == 6.0
    assert tta["updates_to_97"] == 40 and tta["wall_to_97"] == 8.0
    pre = accuracy.time_to_accuracy(
        rows, {"clients-per-round": 10, "method": "hyperflora", "pretrain-rounds": 20}
    )
    assert pre["updates_to_90"] == 230
    # the authors' trainer: one client a step, so a round is one client update
    one = accuracy.time_to_accuracy(rows, {"clients-per-round": 1})
    assert one["updates_to_90"] == 3 and one["updates_to_97"] == 4


def test_page_names_runs_whose_curves_still_rise():
    data = fake_accuracy_data()
    for run in data["runs"]:
        run["flattened"] = True
    data["runs"][0]["flattened"] = False
    page = accuracy.render(json.loads(json.dumps(data)))
    first = data["runs"][0]
    assert "still rising at the budget" in page
    assert f"{first['method']} seed {first['seed']}." in page
    for run in data["runs"]:
        run["flattened"] = True
    assert "none — every run's curve has flattened" in accuracy.render(data)


def test_a_stopped_suite_stops_its_jobs(tmp_path):
    """SIGTERM to a running suite: its job processes (each in a session of its own)
    go with it instead of running on orphaned."""
    import os
    import signal
    import subprocess
    import sys
    import time

    name = f"sigterm-{os.getpid()}"
    script = (
        "from bench.harness import Job, run_jobs\n"
        f"run_jobs({name!r}, [Job('long', 'digits-quick', "
        "{'num-rounds': 100000, 'eval-every': 100000, 'local-steps': 1, "
        "'novel-rounds': 0})], parallel=1)\n"
    )
    suite = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    marker = f"bench.worker .*{name}"  # the job's command line, not the suite's

    def workers() -> list[int]:
        out = subprocess.run(
            ["pgrep", "-f", marker], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]

    try:
        deadline = time.monotonic() + 120
        while not workers():
            assert suite.poll() is None, "the suite ended before its job started"
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.5)
        suite.send_signal(signal.SIGTERM)
        assert suite.wait(timeout=30) != 0
        deadline = time.monotonic() + 30
        while workers() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not workers(), "a job process outlived its suite"
    finally:
        suite.kill()
        for pid in workers():
            os.kill(pid, signal.SIGKILL)
        import shutil

        shutil.rmtree(ROOT / "outputs" / "bench" / name, ignore_errors=True)


def test_a_flat_sweep_keeps_the_first_point():
    """Three points whose means differ less than their seed spread: the sweep found
    nothing, and the first point (the source's value) is kept, not the best mean."""
    from bench import tune

    labels = ["k=source", "k=a", "k=b"]
    scores = {"k=source": (0.880, 0.900), "k=a": (0.885, 0.900), "k=b": (0.882, 0.899)}
    runs = [
        {
            "point": p,
            "seed": seed,
            "ok": True,
            "val_acc": v,
            "best_round": 10,
            "wall_s": 1.0,
            "flattened": True,
        }
        for p in labels
        for seed, v in enumerate(scores[p])
    ]
    rows = tune.summarise(runs, labels)
    assert [bool(r.get("chosen")) for r in rows] == [True, False, False]
    assert rows[0]["flat"]
    # a clear winner is chosen even when it is not the first point
    runs[2]["val_acc"] = runs[3]["val_acc"] = 0.95
    rows = tune.summarise(runs, labels)
    assert [bool(r.get("chosen")) for r in rows] == [False, True, False]


def test_hyperflora_baselines_get_its_budget_and_their_own_settings():
    from bench import hyperflora as hfl

    conf = load_preset("hyperflora-lenet-fmnist")
    # 400 pre-training rounds, then 200 rounds of M updates plus 2E relay hops a pair
    assert hfl.equal_rounds(conf) == 400 + 200 * (1 + 3)
    assert not conf.get("pretrain-epochs"), "phase 1 trains as long as any update"
    lenet = hfl.PRESETS["lenet"]
    jobs = {j.tags["row"]: j for j in hfl.baseline_jobs(lenet, [1], [1], {})}
    assert set(jobs) == set(hfl.BASELINES)
    # the claims' baselines run on every seed, the reference rows on the extra seeds
    later = {
        j.tags["row"]
        for j in hfl.baseline_jobs(lenet, [1, 5], [1], {})
        if j.tags["seed"] == 5
    }
    assert later == set(hfl.CLAIM_BASELINES)
    # every variant of a seed starts from that seed's θ_pret, never its own
    variants = hfl.variant_jobs(lenet, [1, 5], [1], {})
    assert {(j.tags["row"], j.tags["seed"]) for j in variants} == {
        *((label, 1) for label, _ in hfl.VARIANTS),
        ("HyperFLoRA", 5),
    }
    for job in variants:
        assert job.overrides["pretrained-model"] == str(
            hfl.pretrained_path(lenet, job.tags["seed"])
        )
    assert hfl.pretrain_job(lenet, 5, {}).overrides["num-rounds"] == conf["eval-every"]
    for row in hfl.BASELINES:
        cfg = conf | jobs[row].overrides
        # the same client updates: rounds × clients a round (the one-client pFedHN
        # runs M times the rounds and is evaluated after the same updates)
        assert cfg["num-rounds"] * cfg["clients-per-round"] == hfl.equal_rounds(
            conf
        ) * int(conf["clients-per-round"])
        assert cfg["eval-every"] * cfg["clients-per-round"] == conf["eval-every"] * int(
            conf["clients-per-round"]
        )
        # its own learning rate and clip, not HyperFLoRA's; the budget's batch/epochs
        assert cfg["inner-lr"] == hfl.OWN[row]["inner-lr"]
        assert cfg["local-clip-norm"] == hfl.OWN[row]["local-clip-norm"] == 50.0
        assert cfg["batch-size"] == conf["batch-size"]
        assert cfg["local-epochs"] == conf["local-epochs"]
    assert jobs["pFedHN"].overrides["method"] == "pfedhn"
    assert jobs["FedAvg (same budget)"].overrides["method"] == "fedavg"
    assert jobs["FedProx"].overrides["method"] == "fedprox"
    for row in ("pFedHN (paper: r_i)", "pFedHN-Parallel (paper: r_i)"):
        assert jobs[row].overrides["pfedhn-input"] == "class-indicator"
    assert (conf | jobs["pFedHN (paper: r_i)"].overrides)["clients-per-round"] == 1


def hyperflora_rows(
    accs: dict[str, list[float]], nbytes: dict[str, float]
) -> tuple[list[dict], list[dict]]:
    """Made-up HyperFLoRA table: per-seed runs (seeds 1, 2, ... in order; the same
    number for bystanders and participants) and the rows aggregated from them."""
    runs = [
        {
            "row": name,
            "seed": seed,
            "ok": True,
            "bystander_acc": acc,
            "participant_acc": acc,
            "bytes_per_round": nbytes[name],
        }
        for name, values in accs.items()
        for seed, acc in enumerate(values, start=1)
    ]
    rows = aggregate(runs, "row", ["bystander_acc", "participant_acc"])
    for r in rows:
        r["bytes_per_round"] = nbytes[r["row"]]
    return rows, runs


def test_a_baseline_at_chance_is_named_broken_and_no_target_is_met_against_it():
    from bench import hyperflora as hfl

    nbytes = {
        "Pretrain (FedAvg)": 4e6,
        "pFedHN": 4e6,
        "FedAvg (same budget)": 4e6,
        "HyperFLoRA": 2e5,
    }
    accs = {
        "Pretrain (FedAvg)": [0.85, 0.80, 0.82],
        "pFedHN": [0.14, 0.12, 0.15],  # 10 classes: at chance
        "FedAvg (same budget)": [0.88, 0.79, 0.90],
        "HyperFLoRA": [0.86, 0.81, 0.83],
    }
    rows, runs = hyperflora_rows(accs, nbytes)
    verdict = hfl.checks(rows, runs)
    assert verdict["bystander_above_pfedhn"] is None
    assert verdict["participant_above_pfedhn"] is None
    assert verdict["broken_baselines"] == ["pFedHN"]
    assert verdict["bystander_above_pretrain"] is True  # above on every seed
    # above FedAvg's mean on no seed but one: a tie, whatever the means say
    assert verdict["bystander_above_fedavg_same_budget"] is False
    line = hfl.verdict_line(verdict)
    assert "above pFedHN's novel-client accuracy — not assessed" in line
    assert "Broken" in line and "pFedHN" in line.split("Broken")[1]
    assert "same budget — tie" in line and "pre-trained global model's — holds" in line
    assert "bytes per round 20.0× below pFedHN's — met" in line
    # the page's claim table leaves the broken baseline out
    claims = "\n".join(hfl.claim_lines(rows, runs))
    assert "| HyperFLoRA − pFedHN" not in claims
    assert (
        "| HyperFLoRA − Pretrain (FedAvg) (bystanders) | +1.00, +1.00, +1.00 | "
        "+1.00 | 3 of 3 | **holds** (3 seeds: every seed must agree) |" in claims
    )
    assert (
        "| HyperFLoRA − FedAvg (same budget) (bystanders) | -2.00, +2.00, -7.00 | "
        "-2.33 | 1 of 3 | **tie** (3 seeds: every seed must agree) |" in claims
    )
    assert hfl.CLAIMS and "docs/tuning.md rule 9" in claims
    # a learning baseline is compared as usual, per seed
    accs["pFedHN"] = [0.80, 0.78, 0.84]
    rows, runs = hyperflora_rows(accs, nbytes)
    assert hfl.checks(rows, runs)["bystander_above_pfedhn"] is False  # 2 of 3
    assert hfl.checks(rows, runs)["broken_baselines"] == []
    assert "| HyperFLoRA − pFedHN (participants) | +6.00, +3.00, -1.00 | +2.67 | " in (
        "\n".join(hfl.claim_lines(rows, runs))
    )


def test_a_key_acting_on_held_out_clients_is_scored_on_their_validation():
    from bench import tune
    from bench.harness import JobResult

    assert tune.TARGETS["pfedhn-novel"].score == "nonparticipant_val_acc"
    summary = {"participant_val_acc": 0.9, "nonparticipant_val_acc": 0.7}
    job = Job(
        "t-p0-s1", "quickstart", {"novel-lr": 1.0}, tags={"point": "p", "seed": 1}
    )
    result = JobResult(job, True, summary, [], None, 0.0, {}, Path("x.log"))
    assert tune.run_record(result)["val_acc"] == 0.9
    assert tune.run_record(result, "nonparticipant_val_acc")["val_acc"] == 0.7
    page = tune_page(
        tune.summarise([tune.run_record(result, "nonparticipant_val_acc")], ["p"]),
        [1],
        "nonparticipant_val_acc",
    )
    assert "held-out val acc" in page and "held-out clients' validation" in page


@pytest.mark.parametrize("preset", ["lenet", "vit"])
def test_committed_hyperflora_pages_are_their_json_rendered(preset, tmp_path):
    from bench import hyperflora as hfl

    suite = f"hyperflora-{preset}-fmnist"
    (tmp_path / f"{suite}.json").write_text((RESULTS / f"{suite}.json").read_text())
    hfl.render([preset], tmp_path)
    assert (tmp_path / f"{suite}.md").read_text() == (
        RESULTS / f"{suite}.md"
    ).read_text()


def test_widening_a_sweep_adds_points_and_chooses_over_all():
    from bench import tune

    def sweep(values: list[float], accs: list[float], sets: dict) -> dict:
        runs = [
            {
                "point": f"novel-lr={v}",
                "seed": s,
                "ok": True,
                "val_acc": a + 0.001 * s,
                "best_round": 30,
                "flattened": True,
                "wall_s": 1.0,
            }
            for v, a in zip(values, accs, strict=True)
            for s in (1, 2)
        ]
        grid = {"novel-lr": values}
        return {
            "target": "pfedhn-novel",
            "preset": "quickstart",
            "overrides": {},
            "sets": sets,
            "seeds": [1, 2],
            "score": "nonparticipant_val_acc",
            "grid": grid,
            "command": f"run {values}",
            "runs": runs,
            "rows": tune.summarise(runs, [tune.label(p) for p in tune.points(grid)]),
        }

    sizing = {"num-rounds": 30}
    first = sweep([1.0, 0.2, 5.0], [0.70, 0.60, 0.80], sizing)
    assert next(r for r in first["rows"] if r.get("chosen"))["point"] == "novel-lr=5.0"
    both = tune.widened(first, sweep([25.0], [0.85], sizing))
    assert both["grid"] == {"novel-lr": [1.0, 0.2, 5.0, 25.0]}
    assert [r["point"] for r in both["rows"] if r.get("chosen")] == ["novel-lr=25.0"]
    assert both["command"] == "run [1.0, 0.2, 5.0] && run [25.0]"
    with pytest.raises(ValueError, match="sets"):
        tune.widened(first, sweep([25.0], [0.85], {"num-rounds": 60}))


def test_mh_table_rows_are_tuned_on_validation_only(tmp_path):
    """``python -m bench.mh_pfedhn --tune ROW`` sweeps one row of the MH-pFedHN table
    (a hypernetwork row and local-only here) and writes a tune page with a choice,
    reading no test accuracy."""
    from bench.mh_pfedhn import tune

    tiny = [
        "--set",
        "dataset=synthetic",
        "--set",
        "num-clients=8",
        "--set",
        "samples-per-client=0",
        "--set",
        "num-rounds=2",
        "--set",
        "eval-every=1",
        "--set",
        "local-steps=2",
        "--set",
        "mh-novel-rounds=1",
        "--set",
        "mh-chunk-size=1024",
        "--seeds",
        "42",
        "--out",
        str(tmp_path / "results"),
        "--work",
        str(tmp_path / "work"),
    ]
    for row, grid in (("local", "inner-lr=0.05,0.01"), ("mh", "mh-base-lr=0,1")):
        tune(["--tune", row, "--grid", grid, *tiny])
        data = json.loads((tmp_path / "results" / f"tune-mh-{row}.json").read_text())
        assert [r["point"] for r in data["rows"]] == [
            f"{grid.split('=')[0]}={v}" for v in grid.split("=")[1].split(",")
        ]
        assert sum(bool(r.get("chosen")) for r in data["rows"]) == 1
        assert all(0 <= r["val_acc"] <= 1 for r in data["runs"])
        assert "test" not in json.dumps(data["runs"])
        assert (tmp_path / "results" / f"tune-mh-{row}.md").exists()


def test_mh_tables_on_the_hetero_split_take_its_sweeps_unless_they_have_their_own(
    tmp_path,
):
    """A table on the hetero split (shared, homo) runs a row at the hetero table's
    chosen point when it has no sweep of its own, at its own when it has one; a
    table on another split (the hard split) never borrows; the page names the
    source of each row's setting."""
    from bench.mh_pfedhn import TABLES, own, settings_line

    def page(name: str, point: str) -> None:
        rows = [{"point": point, "chosen": True}, {"point": "x=1", "chosen": False}]
        (tmp_path / f"tune-{name}.json").write_text(json.dumps({"rows": rows}))

    page("mh-local", "inner-lr=0.05")
    shared, hard = TABLES["shared"], TABLES["hard-shared"]
    assert own("local", tmp_path, shared) == {"inner-lr": 0.05}
    assert own("local", tmp_path, hard) == {}
    page("mh-shared-local", "inner-lr=0.01")
    assert own("local", tmp_path, shared) == {"inner-lr": 0.01}
    line = settings_line(shared, tmp_path)
    assert "local-only: inner-lr=0.01 (`tune-mh-shared-local`)" in line
    assert "FedProto: the presets' values (no sweep yet)" in line
    # the homo table falls back to the hetero table's sweeps, then the shared one's
    homo = TABLES["homo"]
    page("mh-shared-fedproto", "inner-lr=0.25")
    assert own("fedproto", tmp_path, homo) == {"inner-lr": 0.25}
    assert own("fedproto", tmp_path, hard) == {}


def test_mh_diagnostic_override_needs_a_tag_and_is_recorded(tmp_path, monkeypatch):
    """``--set`` changes the rows' settings, so it never writes the table's own page:
    without ``--tag`` it is refused; with one, the page says what was changed."""
    import torch

    from bench import mh_pfedhn

    # main() pins torch to one thread, as the table's runs are: not for this worker
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    argv = ["x", "--table", "shared", "--render-only", "--out", str(tmp_path)]
    monkeypatch.setattr("sys.argv", [*argv, "--set", "mh-kd-lambda=0"])
    with pytest.raises(SystemExit, match="give it a --tag"):
        mh_pfedhn.main()
    src = Path(mh_pfedhn.__file__).parents[1] / "bench" / "results"
    row = json.loads(
        (src / "mh-pfedhn-shared-kd0-runs.jsonl").read_text().split("\n")[0]
    )
    (tmp_path / "mh-pfedhn-shared-kd0-runs.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setattr("sys.argv", [*argv, "--tag", "kd0"])
    mh_pfedhn.main()
    text = (tmp_path / "mh-pfedhn-shared-kd0.md").read_text()
    assert row["sets"] == {"mh-kd-lambda": 0}
    assert "Diagnostic runs, not the table" in text and "mh-kd-lambda=0" in text
    assert not (tmp_path / "mh-pfedhn-shared.md").exists()


def test_mh_local_only_stops_every_client_at_one_checkpoint(tmp_path):
    """The MH table's local-only row is read at one checkpoint for all its clients,
    the one of best mean validation (the federated rows' best-round rule); each
    client's own best checkpoint is only recorded beside it."""
    from bench.mh_pfedhn import local_only

    row = local_only(
        {
            "method": "mh-pfedhn",
            "dataset": "synthetic",
            "num-clients": 8,
            "holdout": 0.25,
            "num-rounds": 6,
            "clients-per-round": 2,
            "local-steps": 3,
            "output-dir": str(tmp_path),
        }
    )
    curve = row["val_curve"]
    assert len(curve) == 2  # 6 rounds x 2 clients / 6 participants: 2 visits
    assert row["participant_val_acc"] == max(curve)
    assert row["stop_steps"] == 3 * (curve.index(max(curve)) + 1)
    assert 0 <= row["participant_acc"] <= 1
    assert "participant_acc_own_best" in row
    assert set(row["by_K"]) and all(0 <= v <= 1 for v in row["by_K"].values())


def test_hyperfedzero_page_pairs_each_variant_with_fedavg_by_seed():
    """The zero-shot claim rests on per-seed differences (same split, same held-out
    clients): each variant is matched to FedAvg's run of its own seed, whatever the
    order the rows were added in."""
    from bench.hyperfedzero import paired

    def row(seed: int, acc: float) -> dict:
        return {"seed": seed, "nonparticipant_acc": acc}

    results = {
        "hyperfedzero": [row(44, 0.80), row(42, 0.91)],
        # FedAvg has a seed the variant lacks (5-seed main rows, 3-seed ablations)
        "fedavg": [row(42, 0.90), row(44, 0.82), row(45, 0.5)],
        "option 1 (e as input)": [row(43, 0.99)],  # no FedAvg run of seed 43
    }
    text = paired(results)
    assert "NaN" not in text
    assert (
        "| hyperfedzero − FedAvg (zACC) | +1.00, -2.00 | -0.50 | 1 of 2 | **tie**"
        in text
    )
    assert "option 1" not in text and "| fedavg" not in text
    assert paired({"hyperfedzero": [row(42, 0.9)]}) == ""


def test_hyperfedzero_page_shows_the_collapse_at_the_best_round():
    """Each row carries its run's spread ratio and held-out own-e − mean-e at the
    best round (summary.json's collapse), shown as columns; rows from before the
    metric show n/a."""
    from bench.hyperfedzero import row_of, table

    summary = {
        "nonparticipant_acc": 0.9,
        "bytes_down_per_round": 1e6,
        "bytes_up_per_round": 1e6,
        "client_trainable_params": 5,
        "hypernet_params": 3,
        "collapse": {
            "best_round": {"spread_ratio": 0.5, "heldout_own_minus_mean_val_acc": 0.01},
            "last": {"spread_ratio": 0.1, "heldout_own_minus_mean_val_acc": 0.0},
        },
    }
    row = row_of(42, summary)
    assert row["seed"] == 42 and row["spread_ratio"] == 0.5
    old = row_of(43, {**summary, "collapse": None})
    text = table({"hyperfedzero": [row], "fedavg": [old]})
    assert "e spread / class-mix spread" in text
    line = next(x for x in text.splitlines() if x.startswith("| hyperfedzero"))
    assert "| 0.50 ± 0.00 | 1.00 ± 0.00 |" in line
    line = next(x for x in text.splitlines() if x.startswith("| fedavg"))
    assert "| n/a | n/a |" in line


def test_pfeddsh_page_reads_its_claims_per_seed():
    """PA > 0 and RI > 0 are each seed's value against 0, replay and masks are
    paired with the variant without them on the same seed, and the plain shared
    hypernetwork's RI must be below 0 on every seed (3 seeds: all must agree)."""
    from bench import pfeddsh

    def run(variant: str, seed: int, ri: float, pa: float | None) -> dict:
        batch = {"batch": 0, "acc": 0.7, "weights_used": 5, "weights_reused": 0}
        batch |= {"weights_total": 10, "replay_accepted": None}
        return {"variant": variant, "seed": seed, "ri": ri, "pa": pa} | {
            "final_acc": 0.7,
            "batches": [batch],
        }

    runs = [
        run("full", 1, 0.02, -0.05),
        run("full", 2, 0.01, 0.10),
        run("full", 3, 0.03, 0.02),
        *(run("no-replay", s, 0.0, None) for s in (1, 2, 3)),
        run("no-masks", 1, -0.20, None),
        run("no-masks", 2, 0.01, None),  # forgot nothing on this seed
        run("no-masks", 3, -0.30, None),
    ]
    page = pfeddsh.render(
        {"title": "t", "preset": "p.toml", "setting": "s.", "runs": runs}
    )
    tie, holds = "**tie** (3 seeds: every seed must agree)", "**holds** (3 seeds: "
    assert (
        "| PA of pFedDSH (masks + replay) − 0 | -5.00, +10.00, +2.00 | +2.33 | "
        f"2 of 3 | {tie} |" in page
    )
    assert (
        "| RI of pFedDSH (masks + replay) − 0 | +2.00, +1.00, +3.00 | +2.00 | 3 of 3 | "
        + holds
        in page
    )
    assert (
        "| RI: pFedDSH (masks + replay) − masks, no replay | +2.00, +1.00, +3.00 |"
        in page
    )
    assert (
        f"| RI: masks, no replay − no masks | +20.00, -1.00, +30.00 | +16.33 | "
        f"2 of 3 | {tie} |" in page
    )
    assert (
        f"| 0 − RI of no masks (RI below 0) | +20.00, -1.00, +30.00 | +16.33 | "
        f"2 of 3 | {tie} |" in page
    )
    assert "docs/tuning.md rule 9" in page
    # a variant that did not run has no claim; no PA reference, no PA claim
    only = [r | {"pa": None} for r in runs if r["variant"] == "full"]
    page = pfeddsh.render({"title": "t", "preset": "p", "setting": "s.", "runs": only})
    assert "| RI of pFedDSH (masks + replay) − 0 |" in page
    assert "PA of" not in page and "no masks" not in page.split("Claims")[1]


@pytest.mark.parametrize(
    "suite",
    sorted(
        p.stem
        for p in RESULTS.glob("pfeddsh-*.json")
        if not p.stem.endswith(("-di-check", "-transfer"))
    ),
)
def test_committed_pfeddsh_pages_are_their_json_rendered(suite):
    from bench import pfeddsh

    data = json.loads((RESULTS / f"{suite}.json").read_text())
    assert (RESULTS / f"{suite}.md").read_text() == pfeddsh.render(data)


def test_reuse_ignores_another_methods_own_keys():
    """A FedAvg run is the same run whatever HyperFedZero's keys held (their
    defaults changed under issue 24); for a HyperFedZero run they count."""
    from bench.harness import same_run

    old = {"method": "fedavg", "inner-lr": 0.02, "hfz-hidden": 300}
    assert same_run(old, {**old, "hfz-hidden": 0})
    assert not same_run(old, {**old, "inner-lr": 0.05})
    hfz = {**old, "method": "hyperfedzero"}
    assert not same_run(hfz, {**hfz, "hfz-hidden": 0})


def test_reuse_from_takes_a_run_of_the_same_config_from_another_suite(
    tmp_path, monkeypatch
):
    """A sweep scored another way reuses the runs of the sweep that ran them (same
    config and seed), and runs nothing; another seed is not the same run."""
    from bench import harness
    from common.config import parse_run_config

    monkeypatch.setattr(harness, "RUNS", tmp_path)
    done = harness.Job("other-p0-s42", None, {"method": "fedavg", "seed": 42})
    folder = tmp_path / "tune-other" / done.name
    folder.mkdir(parents=True)
    cfg = parse_run_config(done.config(tmp_path / "tune-other")).to_dict()
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "summary.json").write_text(json.dumps({"nonparticipant_val_acc": 0.5}))
    (folder / "metrics.jsonl").write_text("")
    ran: list[str] = []
    monkeypatch.setattr(
        harness, "run_jobs", lambda _s, jobs, _p: ran.extend(j.name for j in jobs) or []
    )
    same = harness.Job("mine-p0-s42", None, {"method": "fedavg", "seed": 42})
    (got,) = harness.run_or_reuse("tune-mine", [same], 1, True, ["tune-other"])
    assert got.reused and got.summary == {"nonparticipant_val_acc": 0.5}
    assert ran == []
    other_seed = harness.Job("mine-p0-s43", None, {"method": "fedavg", "seed": 43})
    with pytest.raises(KeyError):  # not reused: handed to run_jobs (stubbed here)
        harness.run_or_reuse("tune-mine", [other_seed], 1, True, ["tune-other"])
    assert ran == ["mine-p0-s43"]


def test_pfeddsh_transfer_reads_head_starts_against_the_reference(tmp_path):
    """The forward-transfer diagnostic compares a later batch's validation curve
    with its PA reference's at the same evaluations of the batch."""
    from bench import pfeddsh_transfer

    for seed, lift in ((42, 0.2), (43, 0.1)):
        run = tmp_path / f"pfeddsh-fmnist-full-s{seed}"
        (run / "pa-ref-b1").mkdir(parents=True)
        curve = [0.5 + lift, 0.8, 0.9, 0.95]
        summary = {
            "seed": seed,
            "batches": [{"batch": 0}, {"batch": 1, "val_curve": curve}],
        }
        (run / "summary.json").write_text(json.dumps(summary))
        ref = [0.5, 0.7, 0.9, 0.96]
        rows = [{"round": i + 1, "participant-val-acc": v} for i, v in enumerate(ref)]
        rows.insert(
            1, {"round": 9, "participant-val-acc": None}
        )  # a round without eval
        (run / "pa-ref-b1" / "metrics.jsonl").write_text(
            "\n".join(json.dumps(r) for r in rows)
        )
    data = pfeddsh_transfer.collect(tmp_path, "pfeddsh-fmnist")
    first = {s["seed"]: s["joins"][0]["diff"] for s in data["seeds"]}
    assert first[42]["first evaluation"] == pytest.approx(0.2)
    assert first[43]["first three evaluations"] == pytest.approx((0.1 + 0.1 + 0) / 3)
    assert first[42]["last evaluation"] == pytest.approx(-0.01)
    page = pfeddsh_transfer.render(data)
    assert "| head start at the first evaluation, batch 1 | +20.00, +10.00 |" in page
    assert "| head start at the last evaluation, batch 1 | -1.00, -1.00 |" in page


def test_pfeddsh_row_from_a_run_made_outside_the_table(tmp_path):
    """``--from-run`` reads a finished run's config.json and summary.json into the
    table as its seed's row, the same record a table run writes."""
    from bench import pfeddsh

    run = tmp_path / "run"
    run.mkdir()
    config = {"seed": 7, "masks": True, "server-lr": 0.1, "replay": True, "lr": 1}
    batch = {"batch": 0, "acc": 0.9, "val_curve": [0.8, 0.9], "replay": None}
    batch |= {"weights_used": 5, "weights_reused": 0, "weights_total": 10}
    summary = {"ri": 0.0, "ri_val": 0.0, "pa": None, "final_acc": 0.9}
    summary |= {"nonparticipant_acc": 0.5, "batches": [batch], "wall_s": 3.0}
    (run / "config.json").write_text(json.dumps(config))
    (run / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "results"
    pfeddsh.main(
        ["--preset", "conf/pfeddsh-fmnist-stress.toml", "--variants", "full"]
        + ["--from-run", str(run), "--results", str(out)]
    )
    data = json.loads((out / "pfeddsh-fmnist-stress.json").read_text())
    (row,) = data["runs"]
    assert row["variant"] == "full" and row["seed"] == 7 and row["wall_s"] == 3.0
    assert row["config"] == {"masks": True, "server-lr": 0.1, "replay": True}
    assert row["batches"][0]["acc"] == 0.9
    assert (out / "pfeddsh-fmnist-stress.md").exists()


def test_deploy_cost_follows_each_message_through_the_logs(tmp_path):
    """The deploy-cost suite lines up, per node, the SuperNode's k-th message, the
    k-th flwr-clientapp process and the k-th timing record, and splits the message's
    life into stages that add up to creation → reply sent."""
    from datetime import datetime

    from bench import deploy_cost

    base = datetime(2026, 12, 7, 23, 0, 0).timestamp()

    def log(name: str, *lines: tuple[str, float, str]) -> None:
        """A Flower log file of (level, seconds after base, text) lines."""
        (tmp_path / name).write_text(
            "\n".join(
                f"\x1b[92m{level} "
                + datetime.fromtimestamp(base + t).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
                + f"\x1b[0m:     {text}"
                for level, t, text in lines
            )
        )

    log(
        "supernode-0.log",
        ("INFO", 1.0, "Receiving: query message (ID: a)"),
        ("INFO", 1.1, "Received successfully"),
        ("INFO", 9.0, "Sending: query message (ID: b)"),
        ("INFO", 12.0, "Receiving: train message (ID: c)"),
        ("INFO", 12.2, "Received successfully"),
        ("DEBUG", 12.3, "something else"),
        ("INFO", 20.0, "Sending: train message (ID: d)"),
    )
    log(
        "clientapp-0.log",
        ("INFO", 2.0, "Start `flwr-clientapp` process"),
        ("DEBUG", 2.5, "[flwr-clientapp] Start FAB installation."),
        ("DEBUG", 2.9, "[flwr-clientapp] Start `ClientApp` Loading."),
        ("INFO", 13.0, "Start `flwr-clientapp` process"),
        ("DEBUG", 13.5, "[flwr-clientapp] Start FAB installation."),
        ("DEBUG", 13.9, "[flwr-clientapp] Start `ClientApp` Loading."),
    )
    marks = [
        {"pid": 7, "type": "query", "partition-id": 0, "created": base + 0.5,
         "process-start": base + 1.5, "import-start": base + 3.0,
         "import-done": base + 5.0, "handler-start": base + 5.1,
         "data-loaded": base + 5.3, "reply-built": base + 5.4},
        {"pid": 8, "type": "train", "partition-id": 0, "created": base + 10.0,
         "process-start": base + 12.5, "import-start": base + 14.0,
         "import-done": base + 16.0, "handler-start": base + 16.1,
         "data-loaded": base + 16.3, "trained": base + 18.3,
         "reply-built": base + 18.4},
    ]  # fmt: skip
    exits = [{"pid": 7, "exit": base + 6.0}, {"pid": 8, "exit": base + 19.0}]
    (tmp_path / "timing.jsonl").write_text(
        "\n".join(json.dumps(m) for m in [marks[0], exits[0], marks[1], exits[1]])
    )
    query, train = deploy_cost.follow_messages(tmp_path, 1)
    assert (query["type"], train["type"]) == ("query", "train")
    stages = train["stages"]
    assert set(stages) == {key for key, _, _ in deploy_cost.STAGES}
    assert stages["pickup"] == pytest.approx(2.0, abs=2e-3)
    assert stages["dispatch"] == pytest.approx(0.5, abs=2e-3)
    assert train["pull_s"] == pytest.approx(0.2, abs=2e-3)
    assert stages["fab"] == pytest.approx(0.4, abs=2e-3)
    assert stages["imports"] == pytest.approx(2.0)
    assert stages["train"] == pytest.approx(2.0)
    assert stages["push"] == pytest.approx(1.6, abs=2e-3)  # built → SuperNode sends
    assert train["process_s"] == pytest.approx(6.5) and train["exit_after_send_s"] < 0
    assert (
        sum(stages.values())
        == pytest.approx(train["total"])
        == pytest.approx(10.0, abs=2e-3)
    )
    row = deploy_cost.summarise(
        [
            {
                "engine": "deploy",
                "nodes": 1,
                "ok": True,
                "messages": [query, train],
                "rounds_s": [11.0, 10.0],
            }
        ]
    )[0]
    assert row["train_messages"] == 1 and row["deploy_round_s"] == 10.0
    assert row["ours_s"] == pytest.approx(2.0 + 0.1 + 0.2 + 2.0 + 0.1)


def test_deploy_cost_cites_flower_lines_that_exist():
    from bench import deploy_cost

    sites = deploy_cost.flower_sources()
    missing = [s["what"] for s in sites if s["line"] is None]
    assert not missing, f"not found in the installed flwr: {missing}"
