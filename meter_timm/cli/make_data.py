"""``meter-timm make-data OUT``: write the built-in procedural indoor data set (NYU h5 layout)."""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out", help="output folder (gets train/<scene>/NNNNN.h5 and val/official/NNNNN.h5)"
    )
    parser.add_argument(
        "--train", type=int, default=800, help="number of training frames (default 800)"
    )
    parser.add_argument(
        "--val", type=int, default=100, help="number of validation frames (default 100)"
    )
    parser.add_argument(
        "--height", type=int, default=240, help="image height in pixels (default 240)"
    )
    parser.add_argument(
        "--width", type=int, default=320, help="image width in pixels (default 320)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the whole data set (default 0)"
    )
    parser.add_argument(
        "--frames-per-scene",
        type=int,
        default=20,
        help="training frames per room folder (default 20)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel processes (default: the CPUs available, at most 8)",
    )


def run(args: argparse.Namespace) -> int:
    from meter_timm.data.synthetic import generate_dataset

    if args.train < 0 or args.val < 0:
        raise SystemExit("make-data: --train and --val must be >= 0")
    if args.train + args.val == 0:
        raise SystemExit("make-data: --train and --val are both 0: there is nothing to write")
    if args.frames_per_scene < 1:
        raise SystemExit("make-data: --frames-per-scene must be >= 1")
    start = time.perf_counter()
    out = generate_dataset(
        args.out,
        num_train=args.train,
        num_val=args.val,
        height=args.height,
        width=args.width,
        seed=args.seed,
        frames_per_scene=args.frames_per_scene,
        workers=args.workers,
    )
    seconds = time.perf_counter() - start
    total = args.train + args.val
    print(
        f"wrote {args.train} train + {args.val} val frames ({args.height}x{args.width}) to {out} "
        f"in {seconds:.1f} s ({total / max(seconds, 1e-9):.0f} frames/s)"
    )
    return 0
