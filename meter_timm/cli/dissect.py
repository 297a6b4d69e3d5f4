"""``meter-timm dissect``: depth selectivity of the units of chosen layers over a NYU data set.

Runs the model over the images, accumulates each unit's average |activation| per ground-truth
depth bin (Eq. 1, exact, at the depth map's full resolution), then writes ``report.json`` (per
layer, per unit: responses per bin, assigned and argmax bin, selectivity against both) and PNG
figures (the seed's bar charts of chosen units, selectivity histograms, unit-by-bin heatmaps).

Example::

    meter-timm dissect --model meter_xxs.nyu --weights meter_xxs_nyu.pth \\
        --data ../shared/data/nyu_eigen_test_sample --layers encoder.6 --bins 32 --out dissect/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from meter_timm.cli._data import add_data_arguments, build_dataset
from meter_timm.cli._model import (
    INPUT_SIZE_HELP,
    WEIGHTS_HELP,
    build_model,
    input_size,
    to_device,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from meter_timm.cli._key_value import add_key_value_argument

    parser.add_argument(
        "--model",
        required=True,
        help="timm model name (e.g. meter_xxs.nyu) or a training config (.py) whose model "
        "is built (any backbone and decoder it names)",
    )
    parser.add_argument("--weights", help=WEIGHTS_HELP)
    add_data_arguments(parser)
    parser.add_argument(
        "--layers",
        nargs="+",
        default=["encoder.6"],
        help="module names inside the model (default: encoder.6, the seed's layer 6)",
    )
    parser.add_argument(
        "--bins",
        type=int,
        default=None,
        help="depth bins per layer (default: the trained strategy's for a layer "
        "the checkpoint trained, else min(32, units))",
    )
    parser.add_argument(
        "--strategy",
        default=None,
        help="assignment strategy giving the bin edges and assigned bins "
        "(see `meter-timm strategies`). Default: for a layer trained with "
        "selectivity, the strategy stored in the checkpoint (its own edges "
        "and assignment, e.g. a learned matching); else uniform = Eq. 2",
    )
    add_key_value_argument(
        parser, "--strategy-param", "strategy parameter (repeatable), e.g. alpha=0.75"
    )
    parser.add_argument("--min-depth", type=float, default=0.0)
    parser.add_argument("--max-depth", type=float, default=10.0)
    parser.add_argument(
        "--units",
        type=int,
        nargs="+",
        default=[12, 24, 40],
        help="units shown in the bar charts (default 12 24 40, as in the seed)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help=INPUT_SIZE_HELP)
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-abs", action="store_true", help="average raw activations, not |a|")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--features-only",
        action="store_true",
        help="MODEL is a timm backbone + the light decoder (any timm backbone)",
    )
    add_key_value_argument(
        parser,
        "--model-arg",
        "timm keyword argument of the model (repeatable), e.g. img_size=(192,256)",
    )


def iterate_batches(model, dataset, batch_size: int):
    """Yield (network inputs (B,3,h,w), depth (B,1,H,W) metres, 0 = invalid): the dataset's
    pipeline and the model's data preprocessor, exactly as in evaluation. Every depth map keeps
    its own resolution: a batch whose maps differ in size (KITTI's frames do) is split into one
    batch per size, so the statistics do not depend on the batch size."""
    import torch
    from mmengine.dataset import pseudo_collate
    from torch.utils.data import DataLoader

    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=pseudo_collate):
        data = model.data_preprocessor(batch, False)
        depths = [sample.gt_depth.float() for sample in data["data_samples"]]
        by_size: dict[tuple, list[int]] = {}
        for i, depth in enumerate(depths):
            by_size.setdefault(tuple(depth.shape[-2:]), []).append(i)
        for rows in by_size.values():
            yield data["inputs"][rows], torch.stack([depths[i] for i in rows])


def dissection_layers(args: argparse.Namespace, params: dict) -> list:
    """The layer specs of ``--layers``: plain names (a layer the checkpoint trained is then scored
    with its trained strategy) unless ``--bins``, ``--strategy`` or ``--strategy-param`` ask for
    bins (strategy default uniform), which every layer then gets, trained ones included unless
    they are exactly the trained ones."""
    if args.strategy is None and args.bins is None and not params:
        return list(args.layers)
    return [
        dict(name=name, num_bins=args.bins, strategy=args.strategy or "uniform", params=params)
        for name in args.layers
    ]


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from meter_timm.selectivity import LayerCapture
    from meter_timm.selectivity.dissection import Dissection, trained_layers_from_checkpoint

    params = dict(args.strategy_param)
    model, state, config_size = build_model(
        args.model, args.weights, args.features_only, args.model_arg
    )
    model = to_device(model, args.device).eval()
    size = input_size(model, args.input_size, config_size)
    dataset = build_dataset(
        args,
        [
            dict(type="ResizeDepth", scale=size, resize_depth=False),
            dict(type="PackDepthInputs"),
        ],
        limit=args.limit,
    )
    if not len(dataset):
        raise SystemExit(f"{args.data}: no images")
    # unknown names fail here
    capture = LayerCapture(model.backbone, args.layers, detach_outputs=True)
    trained = {}
    if state is not None:  # the layers a training checkpoint trained, with their strategies
        trained = trained_layers_from_checkpoint(state, source=args.weights)
    dissection = Dissection(
        dissection_layers(args, params),
        args.min_depth,
        args.max_depth,
        trained=trained,
        use_abs=not args.no_abs,
    )
    # the bar is closed on errors too, so that an error message starts on its own line
    with capture, torch.no_grad(), tqdm(total=len(dataset), desc="dissect", unit="img") as progress:
        for images, depth in iterate_batches(model, dataset, args.batch_size):
            model.predict_depth(images)
            features = dict(capture.outputs)
            capture.clear()
            dissection.update(features, depth.to(args.device))
            progress.update(images.shape[0])

    used = {
        name: f"{s.name} (trained, from the checkpoint)"
        if dissection.from_training[name]
        else s.name
        for name, s in dissection.strategies.items()
    }
    meta = {
        "model": args.model,
        "weights": args.weights,
        "data": str(args.data),
        "strategy": used,
        # per layer: a trained layer's stored parameters, else those given with --strategy-param
        "strategy_params": {
            name: dict(dissection.trained[name].spec.get("params") or {})
            if dissection.from_training[name]
            else params
            for name in dissection.strategies
        },
        "input_size": list(size),
    }
    report = dissection.report(meta)
    out = Path(args.out)
    json_path = report.save_json(out / "report.json")
    print(f"report: {json_path}")
    if not args.no_plots:
        for path in report.plot(out, units=tuple(args.units)):
            print(f"figure: {path}")
    bins = ", ".join(
        f"{name}: {layer['num_bins']} bins over ({layer['bin_edges'][0]:g}, "
        f"{layer['bin_edges'][-1]:g}] m, {used[name]}"
        for name, layer in report.layers.items()
    )
    print(
        f"{report.meta['num_images']} images; {bins}; ground truth kept in "
        f"({args.min_depth}, {args.max_depth}] m"
    )
    for name, layer in report.layers.items():  # trained bins keep their own range
        low, high = layer["bin_edges"][0], layer["bin_edges"][-1]
        if high > args.max_depth or low < args.min_depth:
            print(
                f"warning: {name}'s bins span ({low:g}, {high:g}] m, but ground truth is kept "
                f"only in ({args.min_depth}, {args.max_depth}] m (--min-depth/--max-depth): "
                "the bins outside stay empty"
            )
    print(report.format_summary())
    if not any(sum(layer["counts"]) > 0 for layer in report.layers.values()):
        raise ValueError(
            f"no depth pixel of {args.data} lies in ({args.min_depth}, {args.max_depth}] m: "
            "every bin is empty, so the report holds no selectivity"
        )
    return 0
