"""docs/tuning.md rules 4 (paired choice), 7 (rising / flattened / unknown) and 9
(claims read per seed) on made-up sweeps and rows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench import paired, tune
from bench.harness import RESULTS
from tests.test_bench import tune_page


def sweep_runs(scores: dict[str, list[float | None]]) -> list[dict[str, Any]]:
    """Sweep records of made-up points, one per seed (seeds 42, 43, ...)."""
    return [
        {
            "point": point,
            "seed": 42 + i,
            "ok": value is not None,
            "val_acc": value,
            "best_round": 10,
            "wall_s": 1.0,
            "val_curve": [[r, 0.8] for r in (10, 20, 30, 40, 50)],
            "flattened": True,
        }
        for point, values in scores.items()
        for i, value in enumerate(values)
    ]


def chosen(rows: list[dict[str, Any]]) -> list[str]:
    return [r["point"] for r in rows if r.get("chosen")]


def test_a_point_that_wins_on_every_seed_under_a_large_split_spread_is_chosen():
    """Seeds 6 points apart, the point +0.7 on each: the unpaired rule called this
    flat (spread of means 0.7 < seed std ≈ 3); paired, it is a clear win."""
    source = [0.80, 0.86]
    scores = {
        "lr=0.01": source,
        "lr=0.003": [0.795, 0.85],  # loses on both
        "lr=0.03": [v + 0.007 for v in source],
    }
    order = list(scores)
    rows = tune.summarise(sweep_runs(scores), order)
    assert chosen(rows) == ["lr=0.03"]
    assert not any(r.get("flat") for r in rows)
    win = rows[2]["paired"]
    assert win["verdict"] == "holds" and win["agree"] == 2 and win["n"] == 2
    assert [round(100 * d, 2) for d in win["diffs"].values()] == [0.7, 0.7]
    page = tune_page(rows, [42, 43])
    assert "+0.70, +0.70 (2/2; beats it)" in page
    assert "Flat (paired)" not in page


def test_mixed_wins_are_flat_and_keep_the_source_value():
    scores = {
        "k=source": [0.80, 0.86, 0.83],
        "k=a": [0.81, 0.85, 0.84],  # +1, −1, +1: not every seed
        "k=b": [0.79, 0.87, 0.83],  # −1, +1, 0: a 0 is no win
    }
    rows = tune.summarise(sweep_runs(scores), list(scores))
    assert chosen(rows) == ["k=source"]
    assert rows[0]["flat"]
    assert "Flat (paired)" in tune_page(rows, [42, 43, 44])


def test_among_winners_the_largest_mean_difference_and_a_diverged_seed_loses():
    scores = {
        "k=source": [0.80, 0.86],
        "k=a": [0.81, 0.87],  # +1, +1
        "k=b": [0.83, 0.88],  # +3, +2: largest mean
        "k=c": [0.95, None],  # diverged on a seed: cannot win
    }
    runs = sweep_runs(scores)
    rows = tune.summarise(runs, list(scores))
    assert chosen(rows) == ["k=b"]
    assert rows[3]["paired"]["verdict"] == "tie"
    assert rows[3]["paired"]["diffs"]["43"] is None


def test_five_seeds_need_a_positive_mean_and_four_agreeing():
    src = [0.80, 0.82, 0.84, 0.86, 0.88]
    four = [0.81, 0.83, 0.85, 0.87, 0.87]  # +1 ×4, −1
    three = [0.81, 0.83, 0.85, 0.85, 0.87]  # +1 ×3, −1 ×2
    rows = tune.summarise(
        sweep_runs({"s": src, "four": four, "three": three}), ["s", "four", "three"]
    )
    assert chosen(rows) == ["four"]
    assert rows[2]["paired"]["verdict"] == "tie"


@pytest.mark.parametrize(
    ("curve", "state"),
    [
        ([0.5, 0.7, 0.8, 0.801, 0.802, 0.8], tune.FLATTENED),
        ([0.5, 0.6, 0.7, 0.8, 0.9], tune.RISING),
        # best at the last evaluation: rising, even by a hair
        ([0.5, 0.8, 0.8, 0.8, 0.8, 0.8001], tune.RISING),
        # the last three beat the best before them by 0.5 points: rising
        ([0.5, 0.7, 0.71, 0.72, 0.715], tune.RISING),
        # three evaluations (HyperFLoRA's 15 rounds at eval-every 5): unknown
        ([0.76, 0.77, 0.79], tune.UNKNOWN),
        ([], tune.UNKNOWN),
    ],
)
def test_rule_7_reads_a_curve_as_rising_flattened_or_unknown(curve, state):
    assert tune.curve_state(curve) == state
    assert (
        tune.flattened(curve)
        == {
            tune.FLATTENED: True,
            tune.RISING: False,
            tune.UNKNOWN: None,
        }[state]
    )


def test_short_curves_are_shown_unknown_never_not_rising():
    runs = sweep_runs({"p": [0.8, 0.9]})
    for run in runs:
        run["val_curve"] = [[5, 0.7], [10, 0.75], [15, 0.8]]
        run["flattened"] = None
    rows = tune.summarise(runs, ["p"])
    assert rows[0]["still_rising"] == 0 and rows[0]["unknown"] == 2
    page = tune_page(rows, [42, 43])
    assert "| 0; 2 unknown |" in page
    assert "Unknown (fewer than 4 evaluations" in page


def test_a_row_of_several_runs_is_rising_if_any_of_them_rises():
    flat = [[r, 0.8] for r in (10, 20, 30, 40)]
    rising = [[r, 0.5 + 0.01 * r] for r in (10, 20, 30, 40)]
    assert tune.run_curves(flat + rising) == [[0.8] * 4, [0.6, 0.7, 0.8, 0.9]]
    assert tune.record_state({"val_curve": flat + rising}) == tune.RISING
    assert tune.record_state({"val_curve": flat + flat}) == tune.FLATTENED
    assert tune.record_state({"val_curve": [], "flattened": None}) is None


def test_tuning_runs_evaluate_at_least_ten_times():
    assert tune.eval_sizing(100, {}) == {"eval-every": 10}
    assert tune.eval_sizing(60, {"num-rounds": 30}) == {
        "num-rounds": 30,
        "eval-every": 3,
    }
    assert tune.evaluations(15, 5) == 3 and tune.evaluations(16, 5) == 4
    with pytest.raises(tune.TooFewEvaluations, match="evaluates 6 times"):
        tune.eval_sizing(60, {"num-rounds": 30, "eval-every": 5})
    with pytest.raises(tune.TooFewEvaluations):
        tune.eval_sizing(8, {})


def test_the_sweep_tool_refuses_too_few_evaluations(capsys):
    with pytest.raises(SystemExit):
        tune.main(["fedavg", "--set", "num-rounds=30", "--set", "eval-every=5"])
    assert "TooFewEvaluations" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("row", "ref", "verdict", "agree"),
    [
        ([0.81, 0.83, 0.85, 0.87, 0.87], [0.80, 0.82, 0.84, 0.86, 0.88], "holds", 4),
        ([0.81, 0.83, 0.85, 0.85, 0.87], [0.80, 0.82, 0.84, 0.86, 0.88], "tie", 3),
        # 4 of 5 agree but the mean is below 0
        ([0.81, 0.83, 0.85, 0.87, 0.70], [0.80, 0.82, 0.84, 0.86, 0.88], "tie", 4),
        ([0.81, 0.87], [0.80, 0.86], "holds", 2),
        ([0.81, 0.85], [0.80, 0.86], "tie", 1),
        ([0.79, 0.85], [0.80, 0.86], "tie", 0),  # the reference better: tie
    ],
)
def test_the_paired_helper_reads_a_claim_per_seed(row, ref, verdict, agree):
    seeds = range(42, 42 + len(row))
    got = paired.compare(
        dict(zip(seeds, row, strict=True)), dict(zip(seeds, ref, strict=True))
    )
    assert got.verdict == verdict and got.agree == agree and got.n == len(row)
    assert len(got.diffs) == len(row)
    assert got.mean == pytest.approx(sum(row) / len(row) - sum(ref) / len(ref))
    text = got.summary()
    assert text.endswith(verdict) == (len(row) >= 5)
    assert (f"only {len(row)} seeds" in text) == (len(row) < 5)


def test_the_paired_helper_pairs_seeds_and_counts_a_failed_row_seed_against_it():
    got = paired.compare({42: 0.9, 43: float("nan")}, {42: 0.8, 43: 0.8, 44: None})
    assert list(got.diffs) == [42, 43]  # the reference's failed seed is left out
    assert got.diffs[43] is None and got.verdict == "tie" and got.n == 2
    assert got.cells() == "+10.00, NaN"
    assert paired.needed(5) == 4 and paired.needed(3) == 3 and paired.needed(10) == 8
    recs = [{"seed": 42, "acc": 0.5}, {"seed": 43, "acc": None}]
    assert paired.by_seed(recs, "acc") == {42: 0.5, 43: None}


@pytest.mark.parametrize(
    "path", sorted(RESULTS.glob("tune-*.json")), ids=lambda p: p.stem
)
def test_committed_sweep_pages_are_their_runs_under_the_current_rules(path):
    """Every committed sweep's rows and page are what the current rules make of its
    stored runs (``python -m bench tune --render`` re-renders them)."""
    data = json.loads(path.read_text())
    rows = tune.summarise(
        data["runs"], [tune.label(p) for p in tune.points(data["grid"])]
    )
    assert json.loads(json.dumps(rows)) == data["rows"]
    assert path.with_suffix(".md").read_text() == tune.render(data).rstrip() + "\n"


def test_a_claim_table_shows_each_pair_per_seed_with_its_verdict_in_words():
    five = range(42, 47)
    holds = paired.compare(
        dict(zip(five, [0.9, 0.9, 0.9, 0.9, 0.7], strict=True)),
        dict(zip(five, [0.8] * 5, strict=True)),
    )
    tie = paired.compare({42: 0.81, 43: 0.79}, {42: 0.80, 43: 0.80})
    text = paired.claim_table([("A − B", holds), ("C − B", tie)])
    assert "| A − B | +10.00, +10.00, +10.00, +10.00, -10.00 | +6.00 | 4 of 5 |" in text
    assert "**holds** |" in text  # five seeds: no seed-count caveat
    assert "| C − B | +1.00, -1.00 | +0.00 | 1 of 2 | **tie** (2 seeds" in text


def test_a_per_seed_input_is_filled_for_each_run_of_a_sweep():
    """A sweep's string value holding {seed} (HyperFLoRA's pretrained-model) names
    each seed's own file, for every grid point, and nothing else changes."""
    from bench.tune import Target, jobs_for

    target = Target("quickstart", {"pretrained-model": "runs/p-s{seed}/pretrained.pt"})
    jobs = jobs_for(
        "t", target, {"server-lr": [0.01, 0.1]}, {"num-rounds": 20}, [42, 43]
    )
    got = {(j.overrides["server-lr"], j.overrides["seed"]): j.overrides for j in jobs}
    assert len(got) == 4
    for (_, seed), overrides in got.items():
        assert overrides["pretrained-model"] == f"runs/p-s{seed}/pretrained.pt"
        assert overrides["num-rounds"] == 20
