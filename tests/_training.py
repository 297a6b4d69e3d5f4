"""Shared helpers of the training tests: tiny generated data and tiny configs."""

from __future__ import annotations

import copy
from pathlib import Path

from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "mm_configs" / "quickstart.py"
SIZE = (64, 64)  # METER needs multiples of 64 here (2x2 patches at stride 32)


def make_tiny_data(root: Path, train: int = 16, val: int = 8, seed: int = 0) -> Path:
    from meter_timm.data.synthetic import dataset_is_complete, generate_dataset

    if not dataset_is_complete(root, train, val):
        generate_dataset(
            root,
            num_train=train,
            num_val=val,
            height=SIZE[0],
            width=SIZE[1],
            seed=seed,
            frames_per_scene=4,
            workers=1,
            progress=False,
        )
    return root


def tiny_synthetic_options(data_root: Path | None = None, train: int = 8, val: int = 4) -> dict:
    """Config options shrinking the quickstart's built-in data set (written on first use by
    ``SyntheticDepthDataset``) to ``train`` + ``val`` frames of SIZE, written by one process."""
    options = {}
    for loader in ("train_dataloader", "val_dataloader"):
        options.update(
            {
                f"{loader}.dataset.num_train": train,
                f"{loader}.dataset.num_val": val,
                f"{loader}.dataset.height": SIZE[0],
                f"{loader}.dataset.width": SIZE[1],
                f"{loader}.dataset.workers": 1,
            }
        )
        if data_root is not None:
            options[f"{loader}.dataset.data_root"] = str(data_root)
    return options


def cfg_options_argv(options: dict) -> list[str]:
    """``options`` as ``--cfg-options`` items (``KEY=VALUE``)."""
    return [f"{key}={value}" for key, value in options.items()]


def tiny_config(
    data_root: Path,
    work_dir: Path,
    epochs: int = 2,
    batch_size: int = 8,
    selectivity: dict | None = "default",
    hook: dict | None = None,
    mirror: bool = True,
    checkpoint_interval: int = 1,
) -> Config:
    """The quickstart config shrunk to 64x64 images, a few iterations, no worker processes."""
    cfg = Config.fromfile(str(QUICKSTART))
    train_pipeline = ([dict(type="RandomMirror", prob=0.5)] if mirror else []) + [
        dict(type="ResizeDepth", scale=SIZE, resize_depth=True),
        dict(type="PackDepthInputs"),
    ]
    test_pipeline = [
        dict(type="ResizeDepth", scale=SIZE, resize_depth=False),
        dict(type="PackDepthInputs"),
    ]
    # the data made by make_tiny_data, read as it is (not written on first use)
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.dataset = dict(
        type="NYUDepthDataset", data_root=str(data_root), subdir="train", pipeline=train_pipeline
    )
    cfg.val_dataloader.batch_size = batch_size
    cfg.val_dataloader.dataset = dict(
        type="NYUDepthDataset",
        data_root=str(data_root),
        subdir="val/official",
        test_mode=True,
        pipeline=test_pipeline,
    )
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=epochs, val_interval=epochs)
    cfg.param_scheduler = [dict(type="MultiStepLR", by_epoch=True, milestones=[epochs], gamma=0.1)]
    if selectivity == "default":
        selectivity = dict(
            type="SelectivityLoss",
            lam=0.1,
            relative=True,
            layers=[dict(name="encoder.6", num_bins=8, strategy="uniform")],
        )
    cfg.model.selectivity = selectivity
    cfg.custom_hooks = [dict(type="SelectivityHook", **(hook or {}))]
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.default_hooks.checkpoint = dict(
        type="CheckpointHook", interval=checkpoint_interval, max_keep_ckpts=-1, save_best=None
    )
    cfg.log_processor = dict(by_epoch=True, window_size=1)
    cfg.visualizer = dict(
        type="Visualizer",
        vis_backends=[dict(type="LocalVisBackend")],
        name=f"vis_{work_dir.name}_{id(cfg)}",
    )
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0, deterministic=False)
    cfg.experiment_name = f"{work_dir.name}_{id(cfg)}"
    return cfg


def build_runner(cfg: Config):
    import meter_timm.mm  # noqa: F401
    from meter_timm.mm.runner import MeterRunner

    return MeterRunner.from_cfg(cfg)


SELECTIVITY_LAYERS = ("encoder.4", "encoder.6", "encoder.8")


def selectivity_estimator(bins: int = 32, strategy: str = "uniform", other_bins: str = "nonempty"):
    """METER xxs DepthEstimator (train mode, CPU) with the balanced loss and SelectivityLoss on
    SELECTIVITY_LAYERS: the training step of the GPU and host-sync tests."""
    import torch

    import meter_timm.mm  # noqa: F401
    from meter_timm.mm.registry import MODELS

    torch.manual_seed(0)
    layers = [dict(name=n, num_bins=bins, strategy=strategy) for n in SELECTIVITY_LAYERS]
    selectivity = dict(
        type="SelectivityLoss", lam=0.1, relative=True, other_bins=other_bins, layers=layers
    )
    return MODELS.build(
        dict(
            type="DepthEstimator",
            backbone=dict(name="meter_xxs"),
            depth_loss=dict(type="BalancedLoss"),
            selectivity=selectivity,
        )
    ).train()


def depth_batch(batch: int, height: int, width: int, device="cpu", seed: int = 0):
    """(images, depth (B, 1, H, W) metres with 3 invalid rows, data samples) on ``device``."""
    import torch

    from meter_timm.mm.structures import DepthDataSample

    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, height, width, generator=gen)
    depth = torch.rand(batch, 1, height, width, generator=gen) * 9.5 + 0.3
    depth[:, :, :3] = 0.0  # invalid rows
    images, depth = images.to(device), depth.to(device)
    return images, depth, [DepthDataSample(gt_depth=d) for d in depth]
