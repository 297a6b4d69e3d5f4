"""Every training config parses, builds its model and hooks, and names layers that exist
(budget: ~10 s; no data needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import meter_timm.mm  # noqa: F401
from meter_timm.mm.registry import HOOKS, MODELS

CONFIGS = Path(__file__).resolve().parents[1] / "mm_configs"
TRAINING = (
    sorted((CONFIGS / "selectivity").glob("*.py"))
    + sorted((CONFIGS / "meter").glob("*_1xb*.py"))
    + sorted(CONFIGS.glob("quickstart*.py"))
)
# a loss-mode forward for one METER and the non-METER backbone (the others only build: slow CPU)
FORWARD = {
    "quickstart.py",
    "resnet18-light-decoder_sel-l10-nd32_1xb32-60e_nyu-192x256.py",
    "meter-xxs_sel-multi_1xb32-60e_nyu-192x256.py",
}


def test_the_seed_table_is_there():
    names = {p.name for p in TRAINING}
    for name in (
        "meter-xxs_1xb32-60e_nyu-192x256.py",
        "meter-xxs_sel-l10-nd32_1xb32-60e_nyu-192x256.py",
        "meter-xxs_sel-l100-nd32_1xb32-60e_nyu-192x256.py",
        "meter-xxs_sel-l10-nd24_1xb32-60e_nyu-192x256.py",
        "meter-xxs_sel-l100-nd24_1xb32-60e_nyu-192x256.py",
    ):
        assert name in names


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.name)
def test_config_builds(path):
    cfg = Config.fromfile(str(path))
    assert cfg.default_scope == "meter_timm"
    model = MODELS.build(cfg.model)
    hooks = [HOOKS.build(h) for h in cfg.get("custom_hooks", [])]
    assert any(type(h).__name__ == "SelectivityHook" for h in hooks)
    if "1xb" in path.name:
        # OpenMMLab's name part {gpus}xb{batch}-{epochs}e states the recipe
        gpus, batch, epochs = map(int, re.search(r"_(\d+)xb(\d+)-(\d+)e_", path.name).groups())
        assert (gpus, batch, epochs) == (
            1,
            cfg.train_dataloader.batch_size,
            cfg.train_cfg.max_epochs,
        )
    if path.parent.name in ("selectivity", "meter"):
        # the seed's recipe
        assert cfg.train_dataloader.batch_size == 32
        assert (
            cfg.optim_wrapper.optimizer.type == "AdamW" and cfg.optim_wrapper.optimizer.lr == 1e-3
        )
        assert cfg.param_scheduler[0].milestones == [20, 40] and cfg.param_scheduler[0].gamma == 0.1
        assert cfg.train_cfg.max_epochs == 60
    if model.selectivity is not None:
        # layer names were resolved when the model attached the loss; strategies are checked
        assert model.selectivity.layer_names
    if path.name in FORWARD:
        # one loss-mode forward on a tiny batch proves the layers and strategies fit
        model.train()
        size = (64, 64)
        inputs = torch.randint(0, 255, (2, 3, *size), dtype=torch.uint8)
        from meter_timm.mm.structures import DepthDataSample

        samples = []
        for _ in range(2):
            s = DepthDataSample()
            s.gt_depth = torch.rand(1, *size) * 9 + 0.5
            samples.append(s)
        data = model.data_preprocessor(dict(inputs=list(inputs), data_samples=samples), True)
        losses = model(**data, mode="loss")
        assert "loss_selectivity" in losses and torch.isfinite(losses["loss_selectivity"])
        assert any(k.startswith("sel/") for k in losses)


def test_learned_config_refits_at_the_iterations_its_comment_gives():
    """The learned config from scratch fits its edges at iteration 1000 and its matching at 1500
    (iterations counted from 1), as its comment and the README say."""
    from types import SimpleNamespace

    from mmengine.logging import MessageHub

    path = CONFIGS / "selectivity" / "meter-xxs_sel-l10-nd32-learned_1xb32-60e_nyu-192x256.py"
    assert "iteration 1000" in path.read_text() and "iteration 1500" in path.read_text()
    hook = HOOKS.build(Config.fromfile(path).custom_hooks[0])
    refits = []

    class Module:
        def refit(self):
            refits.append(runner.iter + 1)
            return {}

    runner = SimpleNamespace(
        model=SimpleNamespace(selectivity=Module()),
        message_hub=MessageHub.get_instance("test_learned_config_refits"),
        logger=SimpleNamespace(info=lambda *a: None),
        iter=0,
    )
    for runner.iter in range(1600):
        hook.after_train_iter(runner, runner.iter)
    assert refits[:2] == [1000, 1500]
