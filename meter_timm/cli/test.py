"""``meter-timm test CONFIG --checkpoint FILE``: mmengine's test loop on a config.

``--checkpoint`` is an mmengine checkpoint of the config's model or a raw state dict of its
backbone (e.g. the METER authors' files); both are read with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from meter_timm.cli._key_value import ConfigOptionsAction

    parser.add_argument("config", help="mmengine config file")
    parser.add_argument(
        "--checkpoint", required=True, help="weights: mmengine checkpoint or raw state dict"
    )
    parser.add_argument(
        "--data",
        help="override test_dataloader.dataset.data_root (NYU: csv, h5 folder "
        "or .mat; or the folder of a DepthFolderDataset / KITTI images)",
    )
    parser.add_argument(
        "--work-dir",
        help="folder for logs (default: the config's work_dir, else work_dirs/<config name>)",
    )
    parser.add_argument("--json", help="also write the metrics to this JSON file")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=ConfigOptionsAction,
        default={},
        help="override config entries, e.g. test_dataloader.batch_size=4",
    )
    parser.add_argument(
        "--launcher",
        choices=["none", "pytorch"],
        default="none",
        help="distributed launcher (with torchrun: pytorch)",
    )


def run(args: argparse.Namespace) -> int:
    import meter_timm.mm  # noqa: F401  (registers the meter_timm scope)
    from meter_timm.checkpoint import load_weights
    from meter_timm.cli._errors import load_config
    from meter_timm.evaluation import format_table, metrics_to_json
    from meter_timm.mm.runner import MeterRunner

    config = Path(args.config)
    if not config.is_file():
        raise SystemExit(f"meter-timm test: config file not found: {config}")
    if not Path(args.checkpoint).is_file():
        raise SystemExit(f"meter-timm test: checkpoint not found: {args.checkpoint}")
    cfg = load_config(config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    use_validation_as_test(cfg, config)
    if args.data:
        dataset = cfg.test_dataloader.dataset
        dataset.data_root = args.data
        if str(dataset.get("type", "")).endswith("NYUDepthDataset"):  # any NYU layout
            dataset.data_format = "auto"
            dataset.pop("subdir", None)
    cfg.launcher = args.launcher
    if args.launcher == "pytorch":
        from meter_timm.distributed import check_torchrun_environment

        check_torchrun_environment("test CONFIG --checkpoint FILE")
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or str(Path("work_dirs") / config.stem)
    cfg.load_from = None  # weights are loaded below, weights_only=True
    cfg.resume = False

    if "runner_type" in cfg:
        from meter_timm.mm.registry import RUNNERS

        runner = RUNNERS.build(cfg)
    else:  # MeterRunner: mmengine's Runner that also runs multi-process on CPU (gloo)
        runner = MeterRunner.from_cfg(cfg)
    from mmengine.model import is_model_wrapper

    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    kind = load_weights(model, args.checkpoint)
    runner.logger.info(f"loaded {args.checkpoint} into the {kind}")
    metrics = runner.test()
    metrics = {k: None if v is None else float(v) for k, v in metrics.items()}
    from mmengine.dist import is_main_process

    if is_main_process():
        print(format_table(metrics))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(metrics_to_json(metrics))  # undefined metrics are null
    from meter_timm.distributed import exit_process_group

    exit_process_group(0)  # under torchrun: leaves here (see meter_timm.distributed)
    return 0


def use_validation_as_test(cfg, config: Path) -> None:
    """A config without a test loop (a training config such as the real-NYU study's) is tested
    on its validation data and evaluator; one with neither is a one-line error."""
    if cfg.get("test_dataloader") and cfg.get("test_evaluator"):
        return
    if not (cfg.get("val_dataloader") and cfg.get("val_evaluator")):
        raise SystemExit(
            f"meter-timm test: {config} has neither test_dataloader/test_evaluator nor "
            "val_dataloader/val_evaluator to test on"
        )
    print(f"meter-timm test: {config} has no test loop; testing on its validation data")
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    cfg.test_cfg = cfg.get("test_cfg") or dict(type="TestLoop")
