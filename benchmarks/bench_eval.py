"""Speed of ``meter-timm eval`` next to the model's own forward time on the same frames.

    python benchmarks/bench_eval.py [--threads 2] [--repeats 3]

Evaluates the authors' NYU weights on ``nyu2_val.csv`` of ../shared/data/nyu_train_subset (126
real frames) with the command's own code (``meter_timm.cli.evaluate.evaluate``: reading, resizing,
forward, upsampling, metrics), and times the bare forward of the same network on the same number
of frames at the same input size and batch size. Prints both (minimum over repeats) and their
ratio: the cost of everything around the forward.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data/nyu_train_subset/nyu2_val.csv"
WEIGHTS = SHARED / "weights/meter/build_model_best_nyu_xxs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if not (DATA.is_file() and WEIGHTS.is_file()):
        print(f"bench_eval: needs {DATA} and {WEIGHTS} (../shared beside the repository)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    import meter_timm.mm  # noqa: F401
    from meter_timm.checkpoint import load_weights
    from meter_timm.cli._data import build_dataset
    from meter_timm.cli._model import input_size
    from meter_timm.cli.evaluate import add_arguments, evaluate
    from meter_timm.mm.model import DepthEstimator

    cli = argparse.ArgumentParser()
    add_arguments(cli)
    eval_args = cli.parse_args(["meter_xxs.nyu", "--weights", str(WEIGHTS), "--data", str(DATA)])
    model = DepthEstimator(backbone=dict(name="meter_xxs.nyu", pretrained=False))
    load_weights(model, str(WEIGHTS))
    model.eval()
    height, width = input_size(model, eval_args.input_size)
    pipeline = [
        dict(type="ResizeDepth", scale=(height, width), resize_depth=False),
        dict(type="PackDepthInputs"),
    ]
    dataset = build_dataset(eval_args, pipeline)
    frames = len(dataset)
    batches = [
        torch.randn(min(args.batch_size, frames - i), 3, height, width)
        for i in range(0, frames, args.batch_size)
    ]

    def forward_only():
        with torch.no_grad():
            for x in batches:
                model(x)

    def whole_eval():
        return evaluate(model, dataset, args.batch_size, 0, "cpu", progress=False)

    forward_only()  # warm-up
    metrics = whole_eval()
    t_forward, t_eval = math.inf, math.inf
    for _ in range(args.repeats):  # interleaved, so that load changes hit both alike
        start = time.perf_counter()
        forward_only()
        t_forward = min(t_forward, time.perf_counter() - start)
        start = time.perf_counter()
        whole_eval()
        t_eval = min(t_eval, time.perf_counter() - start)
    print(
        f"meter_xxs.nyu, {frames} real frames of nyu2_val.csv at {height}x{width}, batch "
        f"{args.batch_size}, {torch.get_num_threads()} threads (minimum of {args.repeats}):"
    )
    print(f"  forward only {t_forward:.2f} s; meter-timm eval {t_eval:.2f} s")
    print(f"  eval / forward = {t_eval / t_forward:.2f}x (abs_rel {metrics['abs_rel']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
