"""Operations the selectivity loss adds to a training step, counted on CPU.

    python benchmarks/count_ops.py

A METER xxs training step (forward, balanced loss, backward, AdamW; batch 2, 64x64: the count
does not depend on the size) with and without SelectivityLoss on encoder.4/6/8 with 32 bins. Every
aten operation dispatched in the third step is counted with a ``TorchDispatchMode``, through the
CPU path of Eq. 1 and through the GPU path forced onto the CPU. On a GPU a small network's step is
bound by kernel launches, so these counts are what the loss costs there. Views (no kernel) are
counted apart.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import _meter_step  # noqa: E402

import meter_timm.selectivity.response as response  # noqa: E402

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


def main() -> int:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
