"""``meter-timm train CONFIG``: train from an mmengine config with
:class:`~meter_timm.mm.runner.MeterRunner`.

Multi-process: ``torchrun --nproc_per_node=N -m meter_timm train CONFIG --launcher pytorch``
(gloo on CPU, nccl on GPUs, unless the config names a backend). ``--amp [float16|bfloat16]``
trains in mixed precision on GPU or CPU, ``--compile`` with ``torch.compile``,
``--channels-last`` in channels-last memory layout. The built-in procedural data set of a
config (``type="SyntheticDepthDataset"``) is written by the data set itself if it is missing. At
the end the last validation metrics (next to those of predicting the mean training depth, for
the built-in data), the per-layer selectivity and the paths of the dissection plots are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from meter_timm.cli._key_value import ConfigOptionsAction

    parser.add_argument("config", help="mmengine config file (e.g. mm_configs/quickstart.py)")
    parser.add_argument(
        "--work-dir",
        help="where logs and checkpoints go "
        "(default: the config's work_dir, else work_dirs/<config name>)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="resume training: from CHECKPOINT, or (no value) from the latest "
        "checkpoint in the work dir",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=ConfigOptionsAction,
        default=None,
        metavar="KEY=VALUE",
        help="override config entries, e.g. train_cfg.max_epochs=2 model.selectivity.lam=10",
    )
    parser.add_argument(
        "--launcher",
        choices=["none", "pytorch"],
        default="none",
        help="'pytorch' under torchrun for multi-process training (default: none)",
    )
    parser.add_argument(
        "--amp",
        nargs="?",
        const="auto",
        default=None,
        choices=["auto", "float16", "bfloat16"],
        metavar="{float16,bfloat16}",
        help="mixed precision (GPU or CPU autocast): bfloat16 where supported "
        "(without a value), or float16 with dynamic loss scaling",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="step",
        default=None,
        choices=["step", "network"],
        help="torch.compile: the whole training step (without a value: mmengine's compile "
        "option) or the network only (model.compile_network=True; a fraction of the compile "
        "time, losses and optimizer eager)",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="channels-last memory layout for the network and its inputs "
        "(model.channels_last=True; faster on GPUs with tensor cores)",
    )
    parser.add_argument("--seed", type=int, default=None, help="override randomness.seed")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic algorithms (randomness.deterministic=True)",
    )


def build_config(args: argparse.Namespace):
    """The config with the command line applied (public for tests and scripts)."""
    from meter_timm.cli._errors import load_config

    path = Path(args.config)
    if not path.is_file():
        raise SystemExit(f"meter-timm train: config file not found: {path}")
    cfg = load_config(path)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = str(Path("work_dirs") / path.stem)
    if args.resume == "auto":
        cfg.resume = True
        cfg.load_from = None
    elif args.resume:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.seed is not None or args.deterministic:
        randomness = dict(cfg.get("randomness") or {})
        if args.seed is not None:
            randomness["seed"] = args.seed
        if args.deterministic:
            randomness["deterministic"] = True
        cfg.randomness = randomness
    if getattr(args, "amp", None):
        if not cfg.get("optim_wrapper"):
            raise SystemExit(
                f"meter-timm train: --amp: {path} has no optim_wrapper (a test config? "
                "meter-timm test CONFIG --checkpoint FILE evaluates one)"
            )
        wrapper = cfg.optim_wrapper
        if wrapper.get("type", "OptimWrapper") not in (
            "OptimWrapper",
            "MixedPrecisionOptimWrapper",
        ):
            raise SystemExit(
                f"meter-timm train: --amp replaces an OptimWrapper, but the config's "
                f"optim_wrapper.type is {wrapper.get('type')!r}"
            )
        wrapper.type = "MixedPrecisionOptimWrapper"
        wrapper.dtype = None if args.amp == "auto" else args.amp
    if getattr(args, "channels_last", False):
        cfg.model.channels_last = True
    # the whole step keeps torch's automatic dynamic shapes: with dynamic=False every changing
    # Python number of the step recompiled it (bench_compile: 341 s to compile, 149 ms a step,
    # against 165 s and 117 ms); the network alone compiles with static shapes (DepthEstimator)
    if getattr(args, "compile", None) == "step":
        cfg.compile = cfg.get("compile") or True
    elif getattr(args, "compile", None) == "network":
        cfg.model.compile_network = cfg.model.get("compile_network") or True
    check_compile_backends(cfg)
    check_optimizer_type(cfg)
    if args.launcher != "none":
        from meter_timm.distributed import choose_backend

        env_cfg = cfg.setdefault("env_cfg", {})
        dist_cfg = env_cfg.setdefault("dist_cfg", {})
        try:
            dist_cfg["backend"] = choose_backend(dist_cfg)
        except ValueError as exc:
            raise SystemExit(f"meter-timm train: {exc}") from exc
    return cfg


def check_optimizer_type(cfg) -> None:
    """ValueError naming ``optim_wrapper.optimizer.type`` when no registry knows it: mmengine's
    optimizer constructor fails with "None is not a callable object", naming nothing."""
    optimizer = (cfg.get("optim_wrapper") or {}).get("optimizer")
    name = optimizer.get("type") if isinstance(optimizer, dict) else None
    if not isinstance(name, str):
        return
    import meter_timm.mm  # noqa: F401  (the meter_timm scope, torch's optimizers in it)
    from meter_timm._names import did_you_mean
    from meter_timm.mm.registry import OPTIMIZERS

    if OPTIMIZERS.get(name) is None:
        known = sorted(OPTIMIZERS.module_dict) + sorted(OPTIMIZERS.parent.module_dict)
        raise ValueError(
            f"optim_wrapper.optimizer.type={name!r} is not a registered optimizer"
            f"{did_you_mean(name, known)}"
        )


def check_compile_backends(cfg) -> None:
    """ValueError naming the config key when a ``torch.compile`` backend is unknown: torch would
    fail only once the first step compiles, with a long traceback."""
    settings = {"compile": cfg.get("compile"), "model.compile_network": None}
    if isinstance(cfg.get("model"), dict):
        settings["model.compile_network"] = cfg.model.get("compile_network")
    for key, value in settings.items():
        backend = value.get("backend") if isinstance(value, dict) else None
        if not isinstance(backend, str):
            continue
        import torch._dynamo

        from meter_timm._names import did_you_mean

        known = torch._dynamo.list_backends(exclude_tags=())
        if backend not in known:
            raise ValueError(
                f"{key}.backend={backend!r} is not a torch.compile backend"
                f"{did_you_mean(backend, known)} (torch's default is 'inductor'; 'eager' runs "
                "without compiling; torch._dynamo.list_backends() lists the others)"
            )


def summarize(runner, cfg) -> str:
    """The end-of-training summary: metrics table, per-layer selectivity, plot paths."""
    hub = runner.message_hub
    metrics = {
        key[4:]: buf.current()
        for key, buf in hub.log_scalars.items()
        if key.startswith("val/")
        and not key.startswith(("val/sel/", "val/sel_preferred/"))
        and key not in ("val/time", "val/data_time")
    }
    from meter_timm.mm.datasets import SyntheticDepthDataset

    baseline = None
    dataset = getattr(runner.train_dataloader, "dataset", None)
    if metrics and isinstance(dataset, SyntheticDepthDataset):
        from meter_timm.data.synthetic import mean_depth_baseline

        baseline = mean_depth_baseline(dataset.data_root)
    lines = [
        f"\n== meter-timm train: {Path(cfg.filename).name} finished, work dir {runner.work_dir}"
    ]
    if metrics:
        lines.append("")
        header = "| metric | model |" + (" mean-depth baseline |" if baseline else "")
        lines += [header, "|---|---|" + ("---|" if baseline else "")]
        for name, value in metrics.items():
            row = f"| {name} | {float(value):.4f} |"
            if baseline:
                row += f" {baseline[name]:.4f} |" if name in baseline else " |"
            lines.append(row)
        if baseline and "abs_rel" in metrics:
            ratio = float(metrics["abs_rel"]) / baseline["abs_rel"]
            lines.append(
                f"\nabs_rel is {ratio:.2f}x that of predicting the mean training depth "
                f"({baseline['mean_depth']:.2f} m) everywhere"
            )
    report = hub.get_info("selectivity_report") or {}
    if report.get("selectivity"):
        lines.append(
            f"\nper-layer depth selectivity (dissection of the validation after epoch "
            f"{report.get('epoch')}, {report.get('num_images')} images):"
        )
        assigned = report.get("selectivity_assigned", {})
        agree = report.get("fraction_argmax_is_assigned", {})
        for layer, value in report["selectivity"].items():
            line = f"  {layer}: {value:.4f} against each unit's preferred bin"
            if assigned.get(layer) is not None:
                line += (
                    f", {assigned[layer]:.4f} against its assigned bin "
                    f"({agree.get(layer, 0.0):.0%} of the units prefer their assigned bin)"
                )
            lines.append(line)
    if report.get("files"):
        lines.append("\nplots and report written:")
        lines += [f"  {p}" for p in report["files"]]
    return "\n".join(lines)


def warn_if_nothing_to_resume(args: argparse.Namespace, cfg) -> None:
    """``--resume`` without a path resumes from the work dir's ``last_checkpoint`` as mmengine
    does, and, when there is none, trains from scratch: say so (once, on rank 0)."""
    last = Path(cfg.work_dir) / "last_checkpoint"
    if args.resume == "auto" and not last.exists() and os.environ.get("RANK", "0") == "0":
        print(
            f"meter-timm train: warning: --resume found no checkpoint in {cfg.work_dir} "
            f"(no {last.name} file): training starts from scratch",
            file=sys.stderr,
            flush=True,
        )


def run(args: argparse.Namespace) -> int:
    if args.launcher == "pytorch":
        from meter_timm.distributed import check_torchrun_environment

        check_torchrun_environment()
    cfg = build_config(args)
    missing = [k for k in ("train_dataloader", "train_cfg", "optim_wrapper") if not cfg.get(k)]
    if missing:
        raise SystemExit(
            f"meter-timm train: {args.config} has no {', '.join(missing)}: nothing to train (a "
            "test config? meter-timm test CONFIG --checkpoint FILE evaluates one)"
        )
    warn_if_nothing_to_resume(args, cfg)
    from mmengine.dist import is_main_process

    import meter_timm.mm  # noqa: F401  (registers the meter_timm scope)
    from meter_timm.distributed import exit_process_group
    from meter_timm.mm.registry import RUNNERS
    from meter_timm.mm.runner import MeterRunner

    if cfg.get("runner_type"):
        runner = RUNNERS.build(cfg)
    else:
        runner = MeterRunner.from_cfg(cfg)
    runner.train()
    if is_main_process():
        print(summarize(runner, cfg), flush=True)
    exit_process_group(0)  # under torchrun: leaves here (see meter_timm.distributed)
    return 0
