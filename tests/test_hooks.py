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


def test_calibration_indices_are_evenly_spaced_and_capped():
    from meter_timm.mm.hooks import calibration_indices

    assert calibration_indices(9, 3) == [0, 4, 8]  # first to last
    assert calibration_indices(5, 10) == [0, 1, 2, 3, 4]  # all frames, each once
    assert calibration_indices(7, 1) == [0] and calibration_indices(7, 0) == []


def test_random_state_round_trip_keeps_cached_gaussians(tmp_path):
    # random.gauss and numpy's legacy randn draw pairs and cache the second value
    hook = RandomStateHook()
    random.seed(1), np.random.seed(2)
    random.gauss(0.0, 1.0), np.random.randn()
    checkpoint = {}
    hook.before_save_checkpoint(None, checkpoint)
    expected = (random.gauss(0.0, 1.0), float(np.random.randn()))
    torch.save(checkpoint, tmp_path / "rng.pth")
    loaded = torch.load(tmp_path / "rng.pth", weights_only=True)
    random.seed(9), np.random.seed(9)
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), loaded)
    hook.before_train(None)
    assert (random.gauss(0.0, 1.0), float(np.random.randn())) == expected


def test_random_states_are_not_restored_from_load_from():
    hook = RandomStateHook()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    checkpoint = {}
    hook.before_save_checkpoint(None, checkpoint)
    hook.after_load_checkpoint(SimpleNamespace(_resume=False), checkpoint)  # weights only
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    hook.before_train(None)
    drawn = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    assert drawn == (random.random(), float(np.random.rand()), float(torch.rand(1)))


class _LearnedStrategy:
    name, num_units, num_bins = "learned", 4, 2

    def assignment(self):
        return torch.tensor([0, 1, 0, 1])

    def edges(self):
        return torch.tensor([0.0, 5.0, 10.0])


class _CalibratedSelectivity(_FakeSelectivity):
    def __init__(self):
        super().__init__()
        self.layers = [dict(name="x", strategy="learned")]
        self.calls = []  # (model in training mode, batch sizes)

    def strategy(self, name):
        return _LearnedStrategy()

    def calibrate(self, predict, batches):
        self.calls.append((predict.__self__.training, [len(x) for x, _ in batches]))
        return {"x": True}


class _Frames:
    """Training frames whose loading draws from every generator, as random augmentations do."""

    def __init__(self, n):
        self.n, self.loaded = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.loaded.append(i)
        random.random(), np.random.rand(), torch.rand(1)
        sample = SimpleNamespace(gt_depth=torch.full((1, 4, 4), 2.0))
        return dict(inputs=torch.zeros(3, 4, 4), data_samples=sample)


class _CalibratedModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.selectivity = _CalibratedSelectivity()

    def data_preprocessor(self, batch, training):
        return dict(inputs=torch.stack(batch["inputs"]), data_samples=batch["data_samples"])

    def predict_depth(self, inputs):
        return inputs[:, :1]


def _calibration_runner(frames=9, resume=False):
    runner = _runner(resume=resume)
    runner.model = _CalibratedModel()
    runner.train_dataloader = SimpleNamespace(dataset=_Frames(frames))
    return runner


def test_calibration_runs_in_eval_mode_and_leaves_the_random_states():
    hook = SelectivityHook(calibrate_frames=3, calibrate_batch_size=2)
    runner = _calibration_runner(frames=9)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    hook.before_train(runner)
    drawn = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    # training draws what it would have drawn without the calibration
    assert drawn == (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert runner.train_dataloader.dataset.loaded == [0, 4, 8]
    assert runner.model.selectivity.calls == [(False, [2, 1])]  # eval mode, batches of 2
    assert runner.model.training and hook.calibrated


def test_a_resumed_run_is_not_calibrated_again():
    hook = SelectivityHook(calibrate_frames=3)
    runner = _calibration_runner()
    hook.before_train(runner)
    assert len(runner.model.selectivity.calls) == 1
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    resumed = _calibration_runner(resume=True)
    fresh = SelectivityHook(calibrate_frames=3)
    fresh.after_load_checkpoint(resumed, checkpoint)
    assert fresh.calibrated
    fresh.before_train(resumed)
    assert resumed.model.selectivity.calls == []


def test_dissection_every_nth_validation_with_the_hooks_bins(tmp_path, monkeypatch):
    import meter_timm.selectivity.dissection as dissection

    made = []

    class _Dissector:
        def __init__(self, model, layers, *args, **kwargs):
            made.append(layers)

        def observe(self, data_batch, outputs):
            pass

        def finish(self, out_dir, **kwargs):
            return {"selectivity": {"x": 0.5}, "selectivity_assigned": {"x": 0.25}, "files": []}

    monkeypatch.setattr(dissection, "ValidationDissector", _Dissector)
    hook = SelectivityHook(dissect_interval=2, layers=["x"], num_bins=4, strategy="log")
    runner = _runner()
    runner.work_dir, runner.val_dataloader = str(tmp_path), SimpleNamespace(dataset=[0] * 4)
    dissected = []
    for epoch in (1, 2, 3, 4):
        runner.epoch = epoch
        hook.before_val_epoch(runner)
        dissected.append(hook._dissector is not None)
        hook.after_val_epoch(runner, {})
    assert dissected == [False, True, False, True]  # every 2nd validation
    assert made == [[dict(name="x", num_bins=4, strategy="log")]] * 2
    assert runner.message_hub.get_scalar("val/sel/x").current() == 0.25
    assert hook.val_epochs == 4


def test_logged_selectivity_is_averaged_over_processes_unless_disabled(monkeypatch):
    import meter_timm.mm.hooks as hooks

    reduced = []

    def fake_all_reduce(values, op):
        reduced.append((values.tolist(), op))
        values.mul_(0.5)  # the mean over processes, as seen from here

    monkeypatch.setattr(hooks, "is_distributed", lambda: True)
    monkeypatch.setattr(hooks, "all_reduce", fake_all_reduce)
    outputs = {"loss": torch.tensor(1.0), "sel/x": torch.tensor(0.5), "sel/y": torch.tensor(1.0)}
    SelectivityHook().after_train_iter(_runner(), 0, outputs=outputs)
    assert reduced == [([0.5, 1.0], "mean")]  # one collective, the selectivity only
    assert float(outputs["sel/x"]) == 0.25 and float(outputs["loss"]) == 1.0
    outputs = {"sel/x": torch.tensor(0.5)}
    SelectivityHook(reduce_logs=False).after_train_iter(_runner(), 0, outputs=outputs)
    assert len(reduced) == 1 and float(outputs["sel/x"]) == 0.5


def test_selectivity_hook_typos_fail_before_training():
    """A misspelt strategy or layer of the dissection fails when the hook is built or before
    the first iteration, naming the hook, not after an epoch."""
    with pytest.raises(ValueError, match="SelectivityHook: unknown depth-bin strategy 'unifrom'"):
        SelectivityHook(num_bins=8, strategy="unifrom")
    with pytest.raises(ValueError, match=r"SelectivityHook: .*\['alpah'\]; did you mean 'alpha'"):
        SelectivityHook(num_bins=8, strategy="log:alpah=0.5")
    with pytest.raises(ValueError, match="SelectivityHook: .*unknown key"):
        SelectivityHook(layers=[dict(name="encoder.6", bins=8)])

    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    runner = SimpleNamespace(model=SimpleNamespace(backbone=backbone))
    SelectivityHook(layers=["0", dict(name="1")]).before_run(runner)
    with pytest.raises(ValueError, match="SelectivityHook: layers: layer '2' not found"):
        SelectivityHook(layers=["0", "2"]).before_run(runner)
