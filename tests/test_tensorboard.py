"""TensorBoard events of every run (server/tensorboard_log.py), read back.

Tiny in-process runs (no Ray, no gRPC): the per-round scalars match metrics.jsonl,
the hyperparameters hold the config, a resume appends without repeating a step, a
missing ``tensorboard`` package costs one log line, and ``hyperflower report
--tensorboard`` links two runs into one log dir (converting an old run's
metrics.jsonl).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from tensorboard.backend.event_processing.event_multiplexer import (  # noqa: E402
    EventMultiplexer,
)
from tensorboard.plugins.hparams import metadata  # noqa: E402

from server import tensorboard_log  # noqa: E402
from server.direct_grid import run_in_process  # noqa: E402
from server.outputs import RunOutputs  # noqa: E402
from tests.conftest import small_config  # noqa: E402

TINY = {"num-rounds": 2, "eval-every": 1, "local-steps": 5}


def rows_of(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def events(folder: Path, purge: bool = True) -> EventAccumulator:
    """All events of one run folder; ``purge=False`` shows every step as written."""
    acc = EventAccumulator(str(folder), purge_orphaned_data=purge)
    acc.Reload()
    return acc


def assert_scalars_match(acc: EventAccumulator, rows: list[dict[str, Any]]) -> None:
    """Every numeric entry of every row is a scalar at step = round, once."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for tag, value in tensorboard_log.flat_scalars(row):
            if tag != "round":
                expected.setdefault(tag, []).append((row["round"], value))
    assert expected, "the rows have numeric metrics"
    assert "train-loss" in expected and "participant-test-acc" in expected
    assert "faults/missing" in expected  # nested dicts become key/sub
    for tag, want in expected.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in want], tag
        for (_, g), (_, w) in zip(got, want, strict=True):
            assert g == pytest.approx(w, rel=1e-6, abs=1e-6), tag


def assert_hparams_hold(acc: EventAccumulator, run: Path) -> None:
    """The session's hyperparameters are the config; the metrics the headline."""
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(
        content[metadata.SESSION_START_INFO_TAG]
    )
    config = {
        k: v
        for k, v in json.loads((run / "config.json").read_text()).items()
        if k != "run"
    }
    want = tensorboard_log.hparam_values(config)
    assert set(start.hparams) == set(want)
    assert want["method"] == config["method"]
    for key, value in want.items():
        got = start.hparams[key]
        if isinstance(value, str):
            assert got.string_value == value, key
        else:
            assert got.number_value == pytest.approx(value), key
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    names = {m.name.tag for m in experiment.metric_infos}
    summary = json.loads((run / "summary.json").read_text())
    assert "summary/participant_acc" in names
    for name in names:
        (event,) = acc.Scalars(name)
        assert event.value == pytest.approx(summary[name.split("/", 1)[1]], rel=1e-6)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """A pFedHN and a FedAvg run of two rounds each, in one outputs folder."""
    root = tmp_path_factory.mktemp("tb")
    for method in ("pfedhn", "fedavg"):
        run_in_process(
            small_config(root, method=method, **{"run-name": method}, **TINY)
        )
    return root / "outputs"


@pytest.mark.parametrize("method", ["pfedhn", "fedavg"])
def test_events_match_metrics_and_config(two_runs, method):
    run = two_runs / method
    acc = events(run / "tensorboard", purge=False)
    assert_scalars_match(acc, rows_of(run))
    assert_hparams_hold(acc, run)


def test_resume_appends_without_repeating_a_step(tmp_path):
    cfg = small_config(tmp_path, method="fedavg", **TINY)
    assert run_in_process({**cfg, "stop-after-round": 1}) is None
    run = tmp_path / "outputs" / "test"
    assert [e.step for e in events(run / "tensorboard").Scalars("train-loss")] == [1]
    run_in_process({**cfg, "resume": True})
    # without TensorBoard's purge: each step is in the files once
    acc = events(run / "tensorboard", purge=False)
    assert_scalars_match(acc, rows_of(run))
    assert_hparams_hold(acc, run)
    assert_scalars_match(events(run / "tensorboard"), rows_of(run))
    # a fresh run under the same name starts its events over
    run_in_process({**cfg, "num-rounds": 1})
    acc = events(run / "tensorboard", purge=False)
    assert [e.step for e in acc.Scalars("train-loss")] == [1]
    assert_hparams_hold(acc, run)


def test_missing_tensorboard_is_said_once_and_the_run_goes_on(tmp_path, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(tensorboard_log, "_warned", set())
    monkeypatch.setattr(
        tensorboard_log, "log", lambda _level, msg, *args: said.append(msg % args)
    )
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out = RunOutputs(tmp_path, "run")
    out.write_config({"method": "fedavg", "seed": 1})
    out.write_metrics([{"round": 1, "train-loss": 1.0}])
    out.write_metrics(
        [{"round": 1, "train-loss": 1.0}, {"round": 2, "train-loss": 0.5}]
    )
    out.write_summary({"participant_acc": 0.5, "rounds": 2})
    out.write_status("done")
    assert len(said) == 1 and "tensorboard" in said[0]
    assert len(rows_of(tmp_path / "run")) == 2
    assert not tensorboard_log.has_events(tmp_path / "run" / "tensorboard")


def test_report_tensorboard_links_two_runs(two_runs, tmp_path, capsys):
    from server.cli import main

    # a copy of the FedAvg run as a run from before this logging: no events
    old = tmp_path / "old-fedavg"
    shutil.copytree(two_runs / "fedavg", old)
    shutil.rmtree(old / "tensorboard")
    logdir = tmp_path / "compare"
    code = main(
        [
            "report",
            "--tensorboard",
            str(two_runs / "pfedhn"),
            str(old),
            str(tmp_path),  # not a run folder: skipped with a note
            "--logdir",
            str(logdir),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert f"tensorboard --logdir {logdir}" in out
    assert "converted" in out and "not a run folder" in err
    assert sorted(p.name for p in logdir.iterdir()) == ["old-fedavg", "pfedhn"]
    multiplexer = EventMultiplexer(purge_orphaned_data=False)
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    assert set(multiplexer.Runs()) == {"old-fedavg", "pfedhn"}
    for name, run in (("pfedhn", two_runs / "pfedhn"), ("old-fedavg", old)):
        acc = multiplexer.GetAccumulator(name)
        assert_scalars_match(acc, rows_of(run))
        assert_hparams_hold(acc, run)
    # again, with the compare folder itself among the runs (outputs/* does that)
    again = ["report", "--tensorboard", str(old), str(logdir), "--logdir", str(logdir)]
    assert main(again) == 0
    assert [p.name for p in logdir.iterdir()] == ["old-fedavg"]
    assert main(["report", "--tensorboard", str(tmp_path / "nothing")]) == 2


def test_writing_after_close_appends(tmp_path):
    """The event file is closed at every end of a run; a later write (same process)
    appends instead of starting the events over."""
    from tensorboard.summary.writer import event_file_writer

    while event_file_writer._global_uid.get() < 8:  # the next files: ".9", ".10"
        pass
    out = RunOutputs(tmp_path, "run")
    out.write_config({"method": "fedavg"})
    rows = [{"round": 1, "train-loss": 1.0}]
    out.write_metrics(rows)
    out.write_status("stopped")
    out.write_metrics([*rows, {"round": 2, "train-loss": 0.5}])
    out.write_status("done")
    folder = tmp_path / "run" / "tensorboard"
    # two event files, read in name order; with TensorBoard's default purge a file
    # read out of order would drop round 2
    for purge in (False, True):
        found = [(e.step, e.value) for e in events(folder, purge).Scalars("train-loss")]
        assert found == [(1, 1.0), (2, 0.5)]
