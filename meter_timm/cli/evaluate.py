"""``meter-timm eval MODEL --weights FILE --data CSV_OR_DIR``: the standard protocol without a
config, on NYU data or, with ``--depth-scale``, a folder of images and depth maps (e.g. KITTI):
resize RGB to the input size (bilinear, antialiased), ImageNet normalisation, predict, upsample
bilinearly to the ground truth, clamp to [min, max], crop (NYU's Eigen crop by default, KITTI's
Garg or Eigen crop with ``--crop``), per-image average."""

from __future__ import annotations

import argparse
from pathlib import Path

from meter_timm.cli._data import add_data_arguments, build_dataset
from meter_timm.cli._model import INPUT_SIZE_HELP, input_size, to_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="timm model name, e.g. meter_xxs.nyu (the authors' NYU weights "
        "output cm: the .nyu tag converts to metres)",
    )
    parser.add_argument("--weights", required=True, help="raw state dict or mmengine checkpoint")
    add_data_arguments(parser)
    parser.add_argument("--json", help="write the metrics to this JSON file")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help=INPUT_SIZE_HELP)
    parser.add_argument("--min-depth", type=float, default=1e-3)
    parser.add_argument("--max-depth", type=float, default=10.0)
    parser.add_argument("--no-crop", action="store_true", help="evaluate without the Eigen crop")
    parser.add_argument(
        "--crop",
        choices=("nyu_crop", "garg_crop", "eigen_crop"),
        default="nyu_crop",
        help="evaluation crop: NYU's Eigen crop (default) or KITTI's Garg / Eigen "
        "crop (use with --max-depth 80)",
    )
    parser.add_argument(
        "--features-only",
        action="store_true",
        help="MODEL is a timm backbone + the light decoder (weights of the wrapper)",
    )


def evaluate(
    model,
    dataset,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str = "cpu",
    metric=None,
    progress: bool = True,
) -> dict[str, float]:
    """Run ``model`` (a DepthEstimator) over ``dataset`` and return the averaged metrics."""
    import torch
    from mmengine.dataset import pseudo_collate
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from meter_timm.mm.metrics import DepthMetric

    metric = metric or DepthMetric()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=pseudo_collate,
    )
    model = model.to(device).eval()
    with torch.no_grad():
        for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
            outputs = model.test_step(batch)
            metric.process(batch, [o.to_dict() for o in outputs])
    return dict(metric.compute_metrics(metric.results))


def run(args: argparse.Namespace) -> int:
    import meter_timm.mm  # noqa: F401
    from meter_timm.checkpoint import load_weights
    from meter_timm.evaluation import format_table, metrics_to_json
    from meter_timm.mm.metrics import DepthMetric
    from meter_timm.mm.model import DepthEstimator

    backbone = dict(name=args.model, pretrained=False)
    if args.features_only:
        backbone["features_only"] = True
    model = DepthEstimator(backbone=backbone)
    kind = load_weights(model, args.weights)
    model = to_device(model, args.device)
    if kind == "backbone" and args.model.startswith("meter_") and "." not in args.model:
        print(
            f"note: {args.model} has no pretrained tag, so its output is taken as metres; the "
            f"authors' raw NYU weights output cm: use {args.model}.nyu"
        )
    json_out = Path(args.json) if args.json else None
    if json_out is not None:  # a bad path fails now, not after the evaluation
        json_out.parent.mkdir(parents=True, exist_ok=True)
        if json_out.is_dir():
            raise IsADirectoryError(f"--json {json_out}: is a folder")
    dataset = build_dataset(
        args,
        [
            dict(type="ResizeDepth", scale=input_size(model, args.input_size), resize_depth=False),
            dict(type="PackDepthInputs"),
        ],
    )
    metric = DepthMetric(
        min_depth_eval=args.min_depth,
        max_depth_eval=args.max_depth,
        crop_type=None if args.no_crop else args.crop,
    )
    metrics = evaluate(model, dataset, args.batch_size, args.num_workers, args.device, metric)
    print(f"{args.model} on {args.data} ({len(dataset)} images)")
    print(format_table(metrics))
    if json_out is not None:
        json_out.write_text(metrics_to_json(metrics))  # undefined metrics are null
    if all(value is None for value in metrics.values()):
        raise ValueError(
            f"no metric could be computed on {args.data}: no image has a valid ground-truth "
            f"pixel ({args.min_depth} < depth < {args.max_depth} m inside the crop) or every "
            "prediction is non-finite (see the warning above)"
        )
    return 0
