"""Operations the selectivity loss adds to a training step, counted on CPU.

    python benchmarks/count_ops.py

A METER xxs training step (forward, balanced loss, backward, AdamW; batch 2, 64x64: the count
does not depend on the size) with and without SelectivityLoss on encoder.4/6/8 with 32 bins. Every
aten operation dispatched in the third step is counted with a ``TorchDispatchMode``, through the
CPU path of Eq. 1 and through the GPU path forced onto the CPU. On a GPU a small network's step is
bound by kernel launches, so these counts are what the loss costs there. Views (no kernel) are
counted apart.

    python benchmarks/count_ops.py --host-time

also times the loss alone, forward and backward, on METER xxs activations of a tiny input (GPU path,
one thread). At this size the arithmetic is negligible: the time is the host's cost of running the
loss's Python and dispatching its operations, which is what the loss costs a launch-bound GPU step.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import LAYERS, _meter_step, meter_features  # noqa: E402

import meter_timm.selectivity.response as response  # noqa: E402
from meter_timm.selectivity import SelectivityLoss  # noqa: E402

VIEWS = {
    "view",
    "_unsafe_view",
    "expand",
    "slice",
    "select",
    "transpose",
    "unsqueeze",
    "squeeze",
    "detach",
    "unbind",
    "permute",
    "alias",
    "t",
    "as_strided",
    "split",
    "reshape",
}


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count(selectivity: bool) -> tuple[int, int]:
    step = _meter_step(torch.device("cpu"), 2, (64, 64), selectivity)
    step()
    step()
    with CountOps() as mode:
        step()
    views = sum(n for name, n in mode.counts.items() if name in VIEWS)
    return sum(mode.counts.values()) - views, views


def host_time(repeats: int = 400) -> float:
    """Median seconds of SelectivityLoss forward + backward on METER xxs activations of a tiny
    input (batch 1, 32x32): the loss alone, without the network's noise."""
    features = meter_features(torch.device("cpu"), 1, (32, 32))
    depth = torch.rand(1, 1, 32, 32) * 9.5 + 0.5
    loss = SelectivityLoss([{"name": n, "num_bins": 32} for n in LAYERS], lam=0.1, relative=True)
    base = torch.tensor(2.0)

    def run():
        loss(depth, base_loss=base, features=features)["loss_selectivity"].backward()

    for _ in range(20):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host-time", action="store_true", help="also time a tiny step")
    args = parser.parse_args()
    torch.manual_seed(0)
    for path, devices in (("CPU path", ("cuda",)), ("GPU path", ("cuda", "cpu"))):
        response.LAUNCH_BOUND_DEVICES = devices
        plain, plain_views = count(False)
        sel, sel_views = count(True)
        print(
            f"{path}: plain step {plain} operations (+{plain_views} views); with SelectivityLoss "
            f"(3 layers, 32 bins) {sel} (+{sel_views} views): the loss adds {sel - plain} "
            f"operations ({100 * (sel - plain) / plain:.1f}%) and {sel_views - plain_views} views"
        )
    if args.host_time:  # response.LAUNCH_BOUND_DEVICES still selects the GPU path
        torch.set_num_threads(1)
        print(
            f"host time, GPU path: SelectivityLoss forward + backward on METER xxs activations "
            f"(batch 1, 32x32 input, 1 thread, median of 400): {host_time() * 1e6:.0f} us"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
