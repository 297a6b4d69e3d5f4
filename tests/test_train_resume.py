"""Exact resume: an interrupted run resumed from its last checkpoint ends with the same weights
as an uninterrupted one (budget: ~30 s on 2 cores)."""

from __future__ import annotations

import re

import pytest
import torch
from _training import build_runner, make_tiny_data, tiny_config
from mmengine.hooks import Hook

from meter_timm.mm.registry import HOOKS


class Interrupted(RuntimeError):
    pass


@HOOKS.register_module(force=True)
class _InterruptAfterEpoch(Hook):
    """Simulates a crash right after the checkpoint of epoch ``epoch`` is written."""

    priority = "LOWEST"

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == self.epoch:  # the loop counts the epoch after this hook
            raise Interrupted(f"interrupted after epoch {self.epoch}")


def _config(data, work_dir):
    # random mirroring and shuffling, a learned assignment that refits, a lambda warm-up and a
    # step schedule: everything a resume has to restore
    cfg = tiny_config(
        data,
        work_dir,
        epochs=3,
        batch_size=4,
        mirror=True,
        selectivity=dict(
            type="SelectivityLoss",
            lam=0.5,
            relative=True,
            layers=[dict(name="encoder.6", num_bins=8, strategy="learned")],
        ),
        hook=dict(warmup_iters=5, refit_interval=2, refit_after=2, dissect=False),
    )
    cfg.train_dataloader.dataset.indices = 8  # 2 iterations per epoch
    cfg.param_scheduler = [dict(type="MultiStepLR", by_epoch=True, milestones=[2], gamma=0.1)]
    return cfg


def _selectivity_hook(runner):
    return next(h for h in runner.hooks if type(h).__name__ == "SelectivityHook")


def _straight_then_interrupted_and_resumed(config, interrupt: dict, tmp_path):
    """(uninterrupted runner, resumed runner): ``config(work_dir)`` trained in "straight"; in
    "resumed", trained until the hook ``interrupt`` stops it, then resumed from its latest
    checkpoint (as ``meter-timm train --resume``)."""
    straight = build_runner(config(tmp_path / "straight"))
    straight.train()
    cfg = config(tmp_path / "resumed")
    cfg.custom_hooks.append(interrupt)
    with pytest.raises(Interrupted):
        build_runner(cfg).train()
    cfg = config(tmp_path / "resumed")
    cfg.resume = True
    resumed = build_runner(cfg)
    resumed.train()
    return straight, resumed


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    data = make_tiny_data(tmp_path / "data", train=8, val=4)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        straight = build_runner(_config(data, tmp_path / "straight"))
        straight.train()

        cfg = _config(data, tmp_path / "resumed")
        cfg.custom_hooks.append(dict(type="_InterruptAfterEpoch", epoch=2))
        first = build_runner(cfg)
        with pytest.raises(Interrupted):
            first.train()
        assert (tmp_path / "resumed" / "epoch_2.pth").is_file()
        first_weights = {
            k: v.clone() for k, v in first.model.state_dict().items() if torch.is_tensor(v)
        }

        cfg = _config(data, tmp_path / "resumed")
        cfg.resume = True  # latest checkpoint of the work dir, as `meter-timm train --resume`
        second = build_runner(cfg)
        second.train()
    finally:
        torch.use_deterministic_algorithms(False)

    assert second.iter == straight.iter == 6 and second.epoch == 3
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    tensors = [k for k in a if torch.is_tensor(a[k])]
    assert len(tensors) > 200
    for key in tensors:
        assert torch.equal(a[key], b[key]), key
    # and training did move past the interruption
    assert any(not torch.equal(first_weights[k], b[k]) for k in tensors if b[k].is_floating_point())
    # the learned strategy's state came back too (refits at iterations 4 and 6)
    sa = straight.model.selectivity.strategies["encoder.6"].assignment()
    sb = second.model.selectivity.strategies["encoder.6"].assignment()
    assert torch.equal(sa, sb)
    assert _selectivity_hook(straight).refits == _selectivity_hook(second).refits == 2


@pytest.mark.parametrize("interval", [3, 2])
def test_mid_epoch_iteration_checkpoint_resumes_exactly(tmp_path, interval):
    # an iteration checkpoint saved inside epoch 2 (interval 3: after its first batch): the
    # resumed run skips that batch, restores the random states, and ends with the uninterrupted
    # run's weights. Interval 2: the checkpoint of epoch 2's last batch, whose epoch end
    # (schedulers, refits) had not run; mmengine counted that epoch as not started and trained it
    # again
    data = make_tiny_data(tmp_path / "data", train=8, val=4)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        cfg = _config(data, tmp_path / "straight")
        cfg.default_hooks.checkpoint = dict(
            type="CheckpointHook", by_epoch=False, interval=interval, save_last=False
        )
        straight = build_runner(cfg)
        straight.train()
        checkpoint = tmp_path / "straight" / {3: "iter_3.pth", 2: "iter_4.pth"}[interval]
        assert checkpoint.is_file()

        cfg = _config(data, tmp_path / "resumed")
        cfg.default_hooks.checkpoint = dict(
            type="CheckpointHook", by_epoch=False, interval=interval, save_last=False
        )
        cfg.resume, cfg.load_from = True, str(checkpoint)
        resumed = build_runner(cfg)
        resumed.train()
    finally:
        torch.use_deterministic_algorithms(False)

    assert resumed.iter == straight.iter == 6 and resumed.epoch == 3
    log = next((tmp_path / "resumed").rglob("*.log")).read_text()
    if interval == 3:
        assert "resumed inside epoch 2: skipped its first 1 batches" in log
        # the batch trained on is logged under its own index (the epoch's last: at its end)
        assert re.search(r"Epoch\(train\)\s*\[2\]\[2/2\]", log)
        assert not re.search(r"Epoch\(train\)\s*\[2\]\[1/2\]", log)
    else:
        assert "resumed at the end of epoch 2: all its batches were trained" in log
        assert not re.search(r"Epoch\(train\)\s*\[2\]", log)  # no batch of epoch 2 again
        assert _selectivity_hook(straight).refits == _selectivity_hook(resumed).refits == 2
        assert sorted(p.name for p in (tmp_path / "resumed").glob("iter_*.pth")) == ["iter_6.pth"]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    tensors = [k for k in a if torch.is_tensor(a[k])]
    assert len(tensors) > 200
    for key in tensors:
        assert torch.equal(a[key], b[key]), key


def _iteration_config(data, work_dir, val_interval, **checkpoint):
    """``_config`` with an iteration-based loop of 6 iterations, a checkpoint every 3 (with
    ``checkpoint``'s extra CheckpointHook options) and a step schedule at iteration 4."""
    cfg = _config(data, work_dir)
    cfg.train_dataloader.sampler = dict(type="InfiniteSampler", shuffle=True)
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=6, val_interval=val_interval)
    cfg.param_scheduler = [dict(type="MultiStepLR", by_epoch=False, milestones=[4], gamma=0.1)]
    cfg.default_hooks.checkpoint = dict(
        type="CheckpointHook", by_epoch=False, interval=3, **checkpoint
    )
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    return cfg


def test_iteration_based_loop_resumes_exactly(tmp_path):
    # mmengine skips the trained batches by drawing them after restoring the random states;
    # the runner's loop puts the checkpoint's states back once they are drawn
    data = make_tiny_data(tmp_path / "data", train=8, val=4)

    def config(work_dir):
        return _iteration_config(data, work_dir, val_interval=6)

    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        straight = build_runner(config(tmp_path / "straight"))
        straight.train()
        cfg = config(tmp_path / "resumed")
        cfg.resume, cfg.load_from = True, str(tmp_path / "straight" / "iter_3.pth")
        resumed = build_runner(cfg)
        resumed.train()
    finally:
        torch.use_deterministic_algorithms(False)
    assert resumed.iter == straight.iter == 6
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    tensors = [k for k in a if torch.is_tensor(a[k])]
    assert len(tensors) > 200
    for key in tensors:
        assert torch.equal(a[key], b[key]), key


def test_runner_builds_the_resumable_loops_for_every_config_form(monkeypatch):
    from types import SimpleNamespace

    import meter_timm.mm.runner as runner_module

    built = []
    for name in ("ResumableEpochBasedTrainLoop", "ResumableIterBasedTrainLoop"):
        monkeypatch.setattr(runner_module, name, lambda name=name, **kw: built.append((name, kw)))
    runner = SimpleNamespace(_train_dataloader="loader")
    build = runner_module.MeterRunner.build_train_loop
    # mmengine's two forms: type=..., or by_epoch without a type
    for loop in (
        dict(type="EpochBasedTrainLoop", max_epochs=2),
        dict(by_epoch=True, max_epochs=2),
        dict(type="IterBasedTrainLoop", max_iters=6),
        dict(by_epoch=False, max_iters=6),
    ):
        build(runner, loop)
    epochs = dict(max_epochs=2, runner=runner, dataloader="loader")
    iters = dict(max_iters=6, runner=runner, dataloader="loader")
    assert built == [
        ("ResumableEpochBasedTrainLoop", epochs),
        ("ResumableEpochBasedTrainLoop", epochs),
        ("ResumableIterBasedTrainLoop", iters),
        ("ResumableIterBasedTrainLoop", iters),
    ]
    # and a config may name them: both loops, and nothing else of the module, are registered
    from meter_timm.mm.registry import LOOPS

    for name in ("ResumableEpochBasedTrainLoop", "ResumableIterBasedTrainLoop"):
        assert LOOPS.get(name).__name__ == name
    assert LOOPS.get("_validation_due") is None


def _validated_config(data, work_dir):
    cfg = _config(data, work_dir)
    cfg.custom_hooks = [dict(type="SelectivityHook", dissect=True, dissect_interval=2)]
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=3, val_interval=1)
    cfg.default_hooks.checkpoint.update(save_best="rmse", rule="less")
    return cfg


def test_resume_runs_the_validation_its_checkpoint_was_saved_before(tmp_path):
    # the checkpoint of epoch 2 is written before epoch 2's validation; a crash in between used
    # to skip that validation for good: one dissection fewer, another best checkpoint
    data = make_tiny_data(tmp_path / "data", train=8, val=4)
    straight, resumed = _straight_then_interrupted_and_resumed(
        lambda work_dir: _validated_config(data, work_dir),
        dict(type="_InterruptAfterEpoch", epoch=2),
        tmp_path,
    )
    hooks = [_selectivity_hook(r) for r in (straight, resumed)]
    assert hooks[0].val_epochs == hooks[1].val_epochs == 3
    assert hooks[0].last_report["epoch"] == hooks[1].last_report["epoch"]
    assert hooks[0].last_report["selectivity"] == hooks[1].last_report["selectivity"]
    best = [
        sorted(p.name for p in (tmp_path / d).glob("best_*.pth")) for d in ("straight", "resumed")
    ]
    assert best[0] == best[1] and len(best[0]) == 1
    log = sorted((tmp_path / "resumed").rglob("*.log"))[-1].read_text()  # the resumed run's
    assert "saved before the validation that followed it: validating now" in log
    # resuming from the final checkpoint, whose validation finished, validates nothing again
    cfg = _validated_config(data, tmp_path / "resumed")
    cfg.resume = True
    again = build_runner(cfg)
    again.train()
    assert _selectivity_hook(again).val_epochs == 3


def test_resume_with_persistent_workers_warns_that_it_is_not_exact(tmp_path):
    data = make_tiny_data(tmp_path / "data", train=8, val=4)

    def config(epochs):
        cfg = tiny_config(
            data, tmp_path / "run", epochs=epochs, batch_size=4, hook=dict(dissect=False)
        )
        cfg.train_dataloader.update(num_workers=1, persistent_workers=True)
        cfg.train_dataloader.dataset.indices = 4
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        return cfg

    build_runner(config(1)).train()
    cfg = config(2)
    cfg.resume = True
    build_runner(cfg).train()
    log = sorted((tmp_path / "run").rglob("*.log"))[-1].read_text()
    assert "with persistent_workers=True: the workers' random streams" in log


@HOOKS.register_module(force=True)
class _InterruptAfterIter(Hook):
    """Simulates a crash right after the checkpoint of iteration ``iteration`` is written (before
    the validation that the iteration loop runs after it)."""

    priority = "LOWEST"

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            raise Interrupted(f"interrupted after iteration {self.iteration}")


def test_iteration_loop_resume_runs_the_first_validation_it_missed(tmp_path):
    data = make_tiny_data(tmp_path / "data", train=8, val=4)

    def config(work_dir):
        cfg = _iteration_config(data, work_dir, val_interval=3, save_best="rmse", rule="less")
        cfg.custom_hooks = [dict(type="SelectivityHook", dissect=True)]
        return cfg

    # interrupted once iter_3.pth is written, before its validation (the first)
    straight, resumed = _straight_then_interrupted_and_resumed(
        config, dict(type="_InterruptAfterIter", iteration=3), tmp_path
    )
    hooks = [_selectivity_hook(r) for r in (straight, resumed)]
    assert hooks[0].val_epochs == hooks[1].val_epochs == 2
    assert hooks[0].last_report["selectivity"] == hooks[1].last_report["selectivity"]
    best = [sorted(p.name for p in (tmp_path / d).glob("best_*")) for d in ("straight", "resumed")]
    assert best[0] == best[1] and len(best[0]) == 1


def test_packed_cpu_random_states_restore_the_same_draws():
    import random

    import numpy as np

    from meter_timm.mm.hooks import pack_cpu_random_states, unpack_cpu_random_states

    def draws():
        return (
            random.random(),
            random.gauss(0, 1),
            np.random.rand(),
            np.random.randn(),
            torch.rand(3).tolist(),
        )

    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    random.gauss(0, 1), np.random.randn()  # cached Gaussians in both generators
    packed = pack_cpu_random_states(
        {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        }
    )
    expected = draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    unpack_cpu_random_states(packed.clone())
    assert draws() == expected
    assert packed.dtype == torch.float64 and packed.numel() == 6 + 625 + 624 + 5056
