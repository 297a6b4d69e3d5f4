"""``meter-timm ablate``: do a layer's depth-selective units matter for their depth?

For every depth bin g, the units assigned to g are silenced (set to 0), and, as a control, as
many random units; the change of every bin's abs_rel is measured over the data. A faithful
selectivity raises the error most in the group's own bin.

Which units belong to which bin:

* ``--assign auto`` (default), MODEL a training config (``.py``) whose ``SelectivityLoss``
  trains ``--layer``: the config's strategy with the state stored in the weights (edges and
  assignment, learned ones included);
* ``--assign auto``, the weights a training checkpoint whose ``SelectivityLoss`` trained
  ``--layer`` (MODEL a timm name): the strategy stored there, as trained (name, parameters, bin
  count, depth range and learned state);
* otherwise, and with ``--assign strategy``: ``--strategy`` (default ``uniform``: Eq. 2) with
  ``--bins`` (default 16); or ``--assign preferred``: each unit's argmax bin, measured on the same
  data.

Example::

    meter-timm ablate meter_xxs.nyu --weights meter_xxs_nyu.pth \\
        --data ../shared/data/nyu_eigen_test_sample --layer encoder.6 --bins 16 \\
        --json ablation.json --out ablation/
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
        "model",
        help="timm model name (e.g. meter_xxs.nyu) or a training config "
        "(.py) whose SelectivityLoss holds the layer's strategy",
    )
    parser.add_argument("--weights", help=WEIGHTS_HELP)
    add_data_arguments(parser)
    parser.add_argument(
        "--layer",
        default="encoder.6",
        help="module name inside the backbone (default encoder.6, the seed's layer 6)",
    )
    parser.add_argument(
        "--assign",
        choices=("auto", "strategy", "preferred"),
        default="auto",
        help="unit groups: auto = the trained strategy when the config, or else the "
        "training checkpoint given as --weights, has one for the layer, else 'strategy'; "
        "strategy = --strategy's assignment; preferred = each unit's argmax bin on this data",
    )
    parser.add_argument("--bins", type=int, default=16, help="depth bins (default 16)")
    parser.add_argument(
        "--strategy",
        default="uniform",
        help="strategy giving the bin edges and assignment (default uniform = Eq. 2)",
    )
    add_key_value_argument(
        parser, "--strategy-param", "strategy parameter (repeatable), e.g. alpha=0.75"
    )
    parser.add_argument("--min-depth", type=float, default=0.0)
    parser.add_argument("--max-depth", type=float, default=10.0)
    parser.add_argument(
        "--random-draws",
        type=int,
        default=3,
        help="random unit sets per group for the control (default 3)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="output JSON (default OUT/ablation.json)")
    parser.add_argument("--out", required=True, help="output folder (heatmap)")
    parser.add_argument(
        "--features-only", action="store_true", help="MODEL is a timm backbone + the light decoder"
    )
    add_key_value_argument(
        parser,
        "--model-arg",
        "timm keyword argument of MODEL (repeatable), e.g. img_size=(192,256)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help=INPUT_SIZE_HELP)
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--device", default="cpu")


def stored_strategy(state: dict, weights: str, layer: str, num_units: int):
    """The strategy that a training checkpoint's ``SelectivityLoss`` stored for ``layer`` (name,
    parameters, bin count and learned state: :func:`meter_timm.strategies.trained_strategies`),
    or None. ``state``: the state dict read from ``weights``."""
    from meter_timm.strategies import trained_strategies

    strategy = trained_strategies(state, source=weights).get(layer)
    if strategy is not None and strategy.num_units != num_units:
        raise ValueError(
            f"{weights}: the stored strategy of layer {layer!r} has "
            f"{strategy.num_units} units, the layer {num_units}"
        )
    return strategy


def choose_groups(args, model, batches, num_units: int, params: dict, state: dict | None = None):
    """(edges, assignment, description of where the groups come from)."""
    import torch

    from meter_timm.selectivity import LayerCapture, ResponseAccumulator, argmax_bins
    from meter_timm.strategies import create_layer_strategy

    selectivity = getattr(model, "selectivity", None)
    trained = selectivity is not None and args.layer in getattr(selectivity, "layer_names", [])
    if args.assign == "auto" and trained:
        strategy = selectivity.build_strategy(args.layer, num_units)  # with the checkpoint's state
        return (
            strategy.edges(),
            strategy.assignment(),
            dict(
                source="trained strategy (from the weights)",
                strategy=strategy.name,
                num_bins=strategy.num_bins,
            ),
        )
    if args.assign == "auto" and state is not None:
        stored = stored_strategy(state, args.weights, args.layer, num_units)
        if stored is not None:
            return (
                stored.edges(),
                stored.assignment(),
                dict(
                    source="trained strategy (from the weights)",
                    strategy=stored.name,
                    num_bins=stored.num_bins,
                ),
            )
    layer = dict(name=args.layer, num_bins=args.bins, strategy=args.strategy, params=params)
    strategy = create_layer_strategy(layer, num_units, args.min_depth, args.max_depth)
    edges = strategy.edges()
    if args.assign in ("auto", "strategy"):
        return (
            edges,
            strategy.assignment(),
            dict(source="strategy", strategy=args.strategy, num_bins=args.bins, params=params),
        )
    accumulator = ResponseAccumulator({args.layer: edges})
    with (
        LayerCapture(model.backbone, [args.layer], detach_outputs=True) as capture,
        torch.no_grad(),
    ):
        for inputs, depth in batches:
            model.predict_depth(inputs)
            accumulator.update(dict(capture.outputs), depth)
            capture.clear()
    preferred = argmax_bins(accumulator.responses(args.layer), accumulator.counts[args.layer])
    return (
        edges,
        preferred,
        dict(
            source="preferred bins (argmax of |response| on this data)",
            strategy=args.strategy,
            num_bins=args.bins,
            params=params,
        ),
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from meter_timm.cli.dissect import iterate_batches
    from meter_timm.selectivity import LayerCapture, ablation_study

    if args.random_draws < 0:
        raise ValueError(f"--random-draws must be >= 0, got {args.random_draws}")
    params = dict(args.strategy_param)
    model, state, config_size = build_model(
        args.model, args.weights, args.features_only, args.model_arg
    )
    model = to_device(model, args.device).eval()
    capture = LayerCapture(model.backbone, [args.layer], detach_outputs=True)  # checks the name
    size = input_size(model, args.input_size, config_size)
    dataset = build_dataset(
        args,
        [
            dict(type="ResizeDepth", scale=size, resize_depth=False),
            dict(type="PackDepthInputs"),
        ],
        limit=args.limit,
    )
    # the data is reused for every group: keep the network inputs in memory
    batches = [
        (x.to(args.device), d.to(args.device))
        for x, d in iterate_batches(model, dataset, args.batch_size)
    ]
    with capture, torch.no_grad():
        model.predict_depth(batches[0][0][:1])
        num_units = capture.outputs[args.layer].shape[1]
    edges, assignment, source = choose_groups(args, model, batches, num_units, params, state)

    groups = int((torch.bincount(assignment.cpu(), minlength=edges.numel() - 1) > 0).sum())
    progress = tqdm(total=1 + groups * (1 + args.random_draws), desc="ablate", unit="pass")
    meta = dict(
        model=args.model,
        weights=args.weights,
        data=str(args.data),
        num_images=len(dataset),
        input_size=list(size),
        **source,
    )
    result = ablation_study(
        model.predict_depth,
        batches,
        model.backbone,
        args.layer,
        assignment,
        edges,
        random_draws=args.random_draws,
        seed=args.seed,
        progress=progress.update,
        meta=meta,
    )
    progress.close()
    out = Path(args.out)
    json_path = result.save_json(args.json or out / "ablation.json")
    heatmap = result.plot_heatmap(out / f"{args.layer.replace('.', '_')}_ablation.png")
    print(f"{len(dataset)} images, {len(edges) - 1} bins, units from: {source['source']}")
    print(result.format_summary())
    print(f"report: {json_path}")
    print(f"figure: {heatmap}")
    return 0
