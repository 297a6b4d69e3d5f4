"""CPU inference speed of meter_xxs at 192x256 next to timm's mobilevit_xxs, measured in the same run.

Prints, per model, the median latency at batch 1 (ms) and the median throughput at batch 8
(images/s), and the ratio of meter_xxs's time to mobilevit_xxs's time at batch 8. Models are
measured round-robin (one timed call of each per round) so that load from other processes on a
shared machine hits all of them alike.

    python benchmarks/bench_inference.py                 # eager + torch.compile
    python benchmarks/bench_inference.py --no-compile --rounds 30

Rows: ``meter_xxs (as built)`` is the model straight from ``timm.create_model``;
``meter_xxs fuse()`` is the same after ``model.fuse()`` (BatchNorms folded, the two convs of
each "separable" conv merged, channels-last conv weights; identical outputs up to float
rounding), ``fuse(NCHW)`` the same without channels-last; ``compiled`` rows use
``torch.compile`` (inductor). Inputs are plain NCHW tensors for every row. mobilevit_xxs is
shown as built (the yardstick) and with channels-last weights, for a like-for-like view.
"""  # noqa: E501 (the first line is the --help description)

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

import meter_timm  # noqa: F401  (registers meter_*)


def _time_call(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument(
        "--rounds", type=int, default=20, help="timed calls per model and batch size"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    mobilevit = timm.create_model("mobilevit_xxs").eval()
    mobilevit_cl = timm.create_model("mobilevit_xxs").eval().to(memory_format=torch.channels_last)
    meter = timm.create_model("meter_xxs").eval()
    fused_nchw = timm.create_model("meter_xxs").eval()
    fused_nchw.load_state_dict(meter.state_dict())
    fused_nchw.fuse(channels_last=False)
    fused = timm.create_model("meter_xxs").eval()
    fused.load_state_dict(meter.state_dict())
    fused.fuse()  # BN folding + merged separable convs + channels_last weights (what predict uses)
    models = {
        "mobilevit_xxs (timm)": mobilevit,
        "mobilevit_xxs channels_last": mobilevit_cl,
        "meter_xxs (as built)": meter,
        "meter_xxs fuse(NCHW)": fused_nchw,
        "meter_xxs fuse()": fused,
    }
    if not args.no_compile:
        models["mobilevit_xxs compiled"] = torch.compile(mobilevit)
        models["meter_xxs fuse() compiled"] = torch.compile(fused)

    print(
        f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}, "
        f"input {args.height}x{args.width}, {args.rounds} rounds, medians"
    )
    results = {}
    with torch.inference_mode():
        for batch in (1, 8):
            x = torch.randn(batch, 3, args.height, args.width)
            for model in models.values():  # warm up (and compile) first
                for _ in range(args.warmup):
                    model(x)
            times = {name: [] for name in models}
            for _ in range(args.rounds):
                for name, model in models.items():
                    times[name].append(_time_call(model, x))
            for name in models:
                results[(name, batch)] = statistics.median(times[name])

    print(f"{'model':28s} {'batch 1 latency (ms)':>22s} {'batch 8 throughput (img/s)':>28s}")
    for name in models:
        print(f"{name:28s} {results[(name, 1)] * 1e3:22.2f} {8 / results[(name, 8)]:28.1f}")
    base8, base1 = results[("mobilevit_xxs (timm)", 8)], results[("mobilevit_xxs (timm)", 1)]
    print("time relative to eager mobilevit_xxs (batch 1 / batch 8):")
    for name in models:
        if name != "mobilevit_xxs (timm)":
            print(
                f"  {name:28s} {results[(name, 1)] / base1:5.2f}x / "
                f"{results[(name, 8)] / base8:5.2f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
