"""SelectivityHook / RandomStateHook state and schedules (the safe checkpoint loader is tested in
test_checkpoint_safety.py; budget: < 5 s; no training)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

from meter_timm.mm.hooks import RandomStateHook, SelectivityHook


class _FakeSelectivity(torch.nn.Module):
    def __init__(self, lam=2.0):
        super().__init__()
        self.lam = lam
        self.refit_calls = 0

    def refit(self):
        self.refit_calls += 1
        return {"encoder.6": True}


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.selectivity = _FakeSelectivity()


def _runner(iteration=0, resume=True, name="hooktest"):
    hub = MessageHub.get_instance(f"{name}_{random.random()}")
    warnings = []
    logger = SimpleNamespace(info=lambda *a, **k: None, warning=warnings.append, warnings=warnings)
    return SimpleNamespace(
        model=_Model(), iter=iteration, message_hub=hub, logger=logger, _resume=resume
    )


def test_lambda_warmup_is_linear():
    hook = SelectivityHook(warmup_iters=4, warmup_start=0.5)
    runner = _runner()
    hook.before_train(runner)
    seen = []
    for it in range(6):
        runner.iter = it
        hook.before_train_iter(runner, it)
        seen.append(runner.model.selectivity.lam)
    assert seen == pytest.approx([1.0, 1.25, 1.5, 1.75, 2.0, 2.0])
    assert runner.message_hub.get_scalar("train/sel_lambda").current() == pytest.approx(2.0)


def test_refit_schedule():
    hook = SelectivityHook(refit_interval=3, refit_after=2)
    runner = _runner()
    hook.before_train(runner)
    called_at = []
    for it in range(12):
        runner.iter = it
        before = runner.model.selectivity.refit_calls
        hook.after_train_iter(runner, it, outputs={})
        if runner.model.selectivity.refit_calls > before:
            called_at.append(it + 1)
    assert called_at == [5, 8, 11]  # every 3 iterations once 2 are done
    assert hook.refits == 3


def test_hook_state_survives_a_checkpoint_round_trip(tmp_path):
    hook = SelectivityHook(warmup_iters=10)
    runner = _runner()
    hook.before_train(runner)
    hook.refits, hook.val_epochs = 4, 2
    hook.last_report = {
        "selectivity": {"encoder.6": np.float64(0.25)},
        "files": [tmp_path / "a.png"],
    }
    runner.model.selectivity.lam = 0.2  # warm-up in progress: must not become the target
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    path = tmp_path / "ckpt.pth"
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)  # the hook's state is plain data
    fresh = SelectivityHook(warmup_iters=10)
    fresh.after_load_checkpoint(_runner(resume=True), loaded)
    assert fresh.target_lambda == 2.0 and fresh.refits == 4 and fresh.val_epochs == 2
    # a config with another lambda: the checkpoint's is used, and the log says so
    resumed = _runner(resume=True)
    resumed.model.selectivity.lam = 5.0
    fresh.before_train(resumed)
    assert fresh.target_lambda == 2.0
    assert any("checkpoint's lambda 2; the config's 5" in w for w in resumed.logger.warnings)
    assert fresh.last_report == {
        "selectivity": {"encoder.6": 0.25},
        "files": [str(tmp_path / "a.png")],
    }
    # load_from (weights only, no resume) leaves the hook alone
    other = SelectivityHook()
    other.after_load_checkpoint(_runner(resume=False), loaded)
    assert other.target_lambda is None and other.refits == 0


def test_random_state_round_trip_is_weights_only(tmp_path):
    hook = RandomStateHook()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    checkpoint = {}
    hook.before_save_checkpoint(None, checkpoint)
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    path = tmp_path / "rng.pth"
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), loaded)
    hook.before_train(None)
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected


def test_hook_arguments_are_checked():
    with pytest.raises(ValueError, match="refit_interval"):
        SelectivityHook(refit_interval=0)
    with pytest.raises(ValueError, match="warmup_iters"):
        SelectivityHook(warmup_iters=-1)
