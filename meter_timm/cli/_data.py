"""The ``--data`` options shared by the commands that read depth data (eval, dissect, ablate)."""

from __future__ import annotations

import argparse

DATA_HELP = (
    "NYU data (DenseDepth csv or its folder, folder of h5 files, labeled .mat), or with "
    "--depth-scale a folder of images and depth maps matched by name"
)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--split-file`` and the folder-data options."""
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument(
        "--split-file", help="for .mat data: splits.mat (testNdxs) or 1-based index list"
    )
    _add_folder_arguments(parser)


def _add_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of folder data (``--data DIR --depth-scale S``)."""
    group = parser.add_argument_group("folder data (images + depth maps matched by name)")
    group.add_argument(
        "--depth-scale",
        type=float,
        help="metres per stored depth unit: 0.001 for millimetre PNGs, 0.00390625 "
        "(1/256) for KITTI-style PNGs, 1 for float metres; reads --data as a "
        "folder (rgb/ + depth/ sub-folders, or one folder with --depth-suffix)",
    )
    group.add_argument("--image-dir", help="image sub-folder (default: rgb, image(s), color(s))")
    group.add_argument("--depth-dir", help="depth sub-folder (default: depth(s))")
    group.add_argument("--image-suffix", default="", help="image name ending, e.g. _colors")
    group.add_argument("--depth-suffix", help="depth name ending (default _depth in one folder)")
    group.add_argument(
        "--invalid-value",
        type=float,
        help="stored depth value meaning 'no measurement', e.g. 0 or 65535",
    )


def build_dataset(args: argparse.Namespace, pipeline: list, limit: int | None = None):
    """The data set named by ``--data`` and the folder options."""
    from meter_timm.mm.datasets import build_depth_dataset

    folder = {}
    given = [
        f"--{k.replace('_', '-')}"
        for k in ("image_dir", "depth_dir", "image_suffix", "depth_suffix", "invalid_value")
        if getattr(args, k) not in (None, "")
    ]
    if args.depth_scale is None and given:
        raise ValueError(f"{', '.join(given)} describe folder data: give --depth-scale too")
    if args.depth_scale is not None:
        folder = dict(
            image_dir=args.image_dir,
            depth_dir=args.depth_dir,
            image_suffix=args.image_suffix,
            depth_suffix=args.depth_suffix,
            invalid_value=args.invalid_value,
        )
    return build_depth_dataset(
        args.data,
        pipeline,
        max_depth=args.max_depth,
        depth_scale=args.depth_scale,
        split_file=getattr(args, "split_file", None),
        limit=limit,
        **folder,
    )
