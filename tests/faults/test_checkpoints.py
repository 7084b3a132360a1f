"""Checkpoints: atomic writes, and a corrupt or foreign checkpoint is refused."""

from __future__ import annotations

import pytest

from server.direct_grid import run_in_process
from server.outputs import CheckpointError, RunOutputs
from tests.conftest import small_config


def test_corrupt_checkpoint_is_refused(tmp_path):
    cfg = small_config(tmp_path, **{"stop-after-round": 1})
    run_in_process(cfg)
    state = tmp_path / "outputs" / "test" / "checkpoint" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # torn file
    with pytest.raises(CheckpointError, match="unreadable"):
        run_in_process(small_config(tmp_path, resume=True))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("seed", 7, "seed: saved 42 vs now 7"),
        ("hypernet", "chunked", "hypernet: saved 'pertensor' vs now 'chunked'"),
    ],
)
def test_checkpoint_of_another_config_is_refused(tmp_path, key, value, message):
    run_in_process(small_config(tmp_path, **{"stop-after-round": 1}))
    with pytest.raises(CheckpointError, match=message):
        run_in_process(small_config(tmp_path, resume=True, **{key: value}))


def test_mh_checkpoint_of_another_base_lr_is_refused(tmp_path):
    """``mh-base-lr`` > 0 takes the shared bases out of the server's Adam, so the
    checkpointed optimiser state fits only its own value: a resume that changes it
    is refused by name instead of failing inside Adam's state loading."""
    from tests.test_mh_pfedhn import mh_config

    run_in_process(mh_config(tmp_path, **{"stop-after-round": 1, "mh-base-lr": 0.0}))
    with pytest.raises(CheckpointError, match="mh-base-lr: saved 0.0 vs now 0.3"):
        run_in_process(mh_config(tmp_path, resume=True, **{"mh-base-lr": 0.3}))


def test_kill_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    out = RunOutputs(tmp_path, "run")
    config = {"method": "pfedhn", "seed": 1}
    out.save_checkpoint({"round": 1}, config)

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr("server.outputs.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        out.save_checkpoint({"round": 2}, config)
    monkeypatch.undo()
    assert out.load_checkpoint(config)["round"] == 1


def test_resume_uses_the_configured_server_lr_not_the_checkpointed_one(tmp_path):
    """``server-lr`` is not fingerprinted, so a resume may change it: the optimiser
    state (momentum) comes back from the checkpoint, its lr from the config."""
    import torch

    from server.direct_grid import build_runner

    def strategy(lr: float, name: str):
        cfg = small_config(tmp_path, **{"server-lr": lr, "run-name": name})
        return build_runner(cfg).strategy

    old = strategy(0.05, "old")
    for p in old.hnet.parameters():
        p.grad = torch.ones_like(p)
    old.optimizer.step()  # momentum buffers to carry over
    saved = old.state_dict()
    new = strategy(0.2, "new")
    new.load_state_dict(saved)
    assert {g["lr"] for g in new.optimizer.param_groups} == {0.2}
    for mine, theirs in zip(new.hnet.parameters(), old.hnet.parameters(), strict=True):
        assert torch.equal(
            new.optimizer.state[mine]["momentum_buffer"],
            old.optimizer.state[theirs]["momentum_buffer"],
        )
