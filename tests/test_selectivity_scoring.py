"""A trained layer is scored against the bins it was trained with, everywhere: the hook's
validation dissection and ``meter-timm dissect`` on its checkpoint, for the built-in ``learned``
strategy and for a stateful third-party strategy (budget: ~40 s on 2 cores)."""

from __future__ import annotations

import json
import types

import pytest
import torch
from _training import build_runner, make_tiny_data, tiny_config

from meter_timm.cli import main as cli_main
from meter_timm.selectivity.bins import eq2_assignment, uniform_edges
from meter_timm.strategies import DepthBinStrategy
from meter_timm.strategies.plugins import get_plugin_manager, hookimpl

LAYER = "encoder.6"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("scoring") / "data", train=16, val=8)


def _report(work_dir, epoch=1):
    return json.loads((work_dir / "dissection" / f"epoch_{epoch}" / "report.json").read_text())


def _dissect_checkpoint(weights, data, out, *extra) -> dict:
    """``meter-timm dissect`` of a checkpoint of meter_xxs on LAYER at 64x64: the layer's report."""
    args = ["--model", "meter_xxs", "--weights", str(weights), "--data", str(data)]
    args += ["--layers", LAYER, "--input-size", "64", "64", "--out", str(out), "--no-plots"]
    assert cli_main(["dissect", *args, *extra]) == 0
    return json.loads((out / "report.json").read_text())["layers"][LAYER]


class _RngAtTrainStart:
    """Records the torch random state when training starts (after the selectivity hook)."""

    priority = "LOWEST"
    states: list = []

    def before_train(self, runner):
        _RngAtTrainStart.states.append(torch.get_rng_state())


def test_learned_run_is_scored_against_its_own_matching(tiny_data, tmp_path):
    selectivity = dict(
        type="SelectivityLoss",
        lam=1.0,
        relative=True,
        layers=[dict(name=LAYER, num_bins=8, strategy="learned", params=dict(resolution=2048))],
    )
    cfg = tiny_config(
        tiny_data,
        tmp_path / "learned",
        epochs=1,
        selectivity=selectivity,
        hook=dict(calibrate_frames=8, calibrate_batch_size=4),
    )
    runner = build_runner(cfg)
    runner.train()
    strategy = runner.model.selectivity.strategy(LAYER)
    assert strategy.frozen  # calibrated (edges, then the matching) before the first step
    trained = strategy.assignment()
    assert not torch.equal(trained, eq2_assignment(48, 8))  # the matching moved units
    layer = _report(tmp_path / "learned")["layers"][LAYER]
    assert layer["assigned_bin"] == trained.tolist()
    assert torch.allclose(torch.tensor(layer["bin_edges"], dtype=torch.float64), strategy.edges())
    assert not torch.allclose(strategy.edges(), uniform_edges(8, 0.0, 10.0))  # equal-frequency

    # the same scores from the checkpoint, through the command line
    checkpoint, val = tmp_path / "learned" / "epoch_1.pth", tiny_data / "val" / "official"
    cli_layer = _dissect_checkpoint(checkpoint, val, tmp_path / "dissect")
    assert cli_layer["assigned_bin"] == trained.tolist()
    meta = json.loads((tmp_path / "dissect" / "report.json").read_text())["meta"]
    assert meta["strategy_params"] == {LAYER: {"resolution": 2048}}  # the trained strategy's
    assert cli_layer["bin_edges"] == layer["bin_edges"]
    assert cli_layer["selectivity_assigned"] == pytest.approx(
        layer["selectivity_assigned"], abs=1e-5
    )
    # asking for other bins explicitly still gives them
    uniform = ["--bins", "8", "--strategy", "uniform"]
    eq2 = _dissect_checkpoint(checkpoint, val, tmp_path / "eq2", *uniform)
    assert eq2["assigned_bin"] == eq2_assignment(48, 8).tolist()


def test_calibration_leaves_the_training_randomness_alone(tiny_data, tmp_path):
    import meter_timm.mm  # noqa: F401
    from meter_timm.mm.registry import HOOKS

    if "_RngAtTrainStart" not in HOOKS.module_dict:
        from mmengine.hooks import Hook

        HOOKS.register_module(
            name="_RngAtTrainStart", module=type("_RngAtTrainStart", (_RngAtTrainStart, Hook), {})
        )
    _RngAtTrainStart.states.clear()
    for frames in (0, 8):
        selectivity = dict(
            type="SelectivityLoss",
            lam=1.0,
            layers=[dict(name=LAYER, num_bins=8, strategy="learned")],
        )
        cfg = tiny_config(
            tiny_data,
            tmp_path / f"cal{frames}",
            epochs=1,
            selectivity=selectivity,
            hook=dict(calibrate_frames=frames, dissect=False),
        )
        cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=1, val_interval=10)
        cfg.custom_hooks.append(dict(type="_RngAtTrainStart"))
        runner = build_runner(cfg)
        runner.train()
        assert runner.model.selectivity.strategy(LAYER).frozen == bool(frames)
    assert torch.equal(*_RngAtTrainStart.states)


class _ShiftingStrategy(DepthBinStrategy):
    """A stateful third-party strategy: every refit rotates the assignment by one bin."""

    name = "test-shifting"
    description = "test only: Eq. 2 rotated by one bin per refit"
    learnable = True

    def __init__(self, num_units, num_bins, min_depth=0.0, max_depth=10.0):
        super().__init__(num_units, num_bins, min_depth, max_depth)
        self.shift = 0

    def edges(self):
        return uniform_edges(self.num_bins, self.min_depth, self.max_depth)

    def assignment(self):
        return (eq2_assignment(self.num_units, self.num_bins) + self.shift) % self.num_bins

    def refit(self):
        self.shift += 1
        return True

    def state_dict(self):
        return {"shift": torch.tensor(self.shift)}

    def load_state_dict(self, state):
        self.shift = int(state["shift"])


def test_third_party_stateful_strategy_is_scored_against_its_own_state(tiny_data, tmp_path):
    plugin = types.ModuleType("test_shifting_plugin")
    plugin.meter_timm_register_strategies = hookimpl(lambda register: register(_ShiftingStrategy))
    pm = get_plugin_manager()
    pm.register(plugin, name="test-shifting-plugin")
    try:
        selectivity = dict(
            type="SelectivityLoss",
            lam=1.0,
            layers=[dict(name=LAYER, num_bins=8, strategy="test-shifting")],
        )
        cfg = tiny_config(
            tiny_data,
            tmp_path / "shift",
            epochs=1,
            selectivity=selectivity,
            hook=dict(refit_interval=1, calibrate_frames=0),
        )
        runner = build_runner(cfg)
        runner.train()
        strategy = runner.model.selectivity.strategy(LAYER)
        assert strategy.shift == 2  # 16 frames / batch 8: two refits
        layer = _report(tmp_path / "shift")["layers"][LAYER]
        assert layer["assigned_bin"] == strategy.assignment().tolist()
        assert layer["assigned_bin"] != eq2_assignment(48, 8).tolist()

        checkpoint = tmp_path / "shift" / "epoch_1.pth"
        cli_layer = _dissect_checkpoint(checkpoint, tiny_data / "val" / "official", tmp_path / "d")
        assert cli_layer["assigned_bin"] == strategy.assignment().tolist()
    finally:
        pm.unregister(name="test-shifting-plugin")
