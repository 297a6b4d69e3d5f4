"""One GPU check of meter-timm in <= 5 minutes: writes results/gpu.md.

    python benchmarks/gpu_check.py                 # on a machine with one CUDA GPU
    python benchmarks/gpu_check.py --cpu-dry-run   # tiny sizes on CPU: checks this script only

On a machine without CUDA it says so and exits 0 (results/gpu.md is left as it is). Sections, in
order, each skipped (and reported as such) when the 5-minute budget would be exceeded:

1. ``pytest -m cuda`` (tests/test_cuda.py: Eq. 1 GPU = CPU, no host sync in a training step,
   mixed precision on the GPU);
2. Eq. 1 (``average_response``) against upsample-and-mask, with the kernel count and the
   memory-bound limit (bytes read / measured copy bandwidth);
3. METER xxs training step (192x256, AdamW) with and without SelectivityLoss on 3 layers / 32
   bins, interleaved, medians, at batch 8 and 64: float32, bfloat16 autocast, channels-last;
4. SelectivityLoss alone at batch 64: wall time against the profiler's kernel time, on random
   and on smooth depth (launch-bound or kernel-bound, and whether scatter contention matters);
   then inference throughput next to timm's mobilevit_xxs (batch 64, 192x256);
5. a 1-process ``torchrun ... --launcher pytorch`` run and the backend it used;
6. the quickstart command with and without ``--amp`` (wall time, metrics).

``--compile-report`` instead measures ``torch.compile`` of the network in a training step (with
SelectivityLoss, then plain; losses and AdamW eager; a subprocess with a 140 s limit) and writes
``results/gpu_compile.md``. Compiling the whole step, AdamW included, did not finish in 140 s on
an H200.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["encoder.4", "encoder.6", "encoder.8"]
BUDGET_S = 290.0
COMPILE_BUDGET_S = 140.0


# ------------------------------------------------------------------------------ timing helpers
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fns: dict, device, repeats: int, warmup: int = 3) -> dict:
    """Median seconds per call of each function, calls interleaved round-robin."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def copy_bandwidth(device, megabytes: int = 1024) -> float:
    """Measured device copy bandwidth in bytes/s (read + write of a large tensor)."""
    x = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    seconds = time_calls({"copy": lambda: y.copy_(x)}, device, repeats=10)["copy"]
    return 2 * x.numel() * 4 / seconds


def count_kernels(fn, device) -> int | None:
    """Number of GPU kernels one call of ``fn`` launches (None on CPU or without profiler)."""
    profiled = kernel_profile(fn, device, calls=1)
    return None if profiled is None else round(profiled[1])


# ------------------------------------------------------------------------------ sections
def naive_response(act, depth, edges):
    """Upsample then mask: the computation Eq. 1 describes, vectorised with a one-hot bin map."""
    up = F.interpolate(act, size=depth.shape[-2:], mode="bilinear", align_corners=False)
    index = torch.bucketize(depth[:, 0], edges) - 1
    valid = (index >= 0) & (index < edges.numel() - 1)
    onehot = F.one_hot(index.clamp(0, edges.numel() - 2), edges.numel() - 1).to(act.dtype)
    onehot = onehot * valid[..., None]
    sums = torch.einsum("bkp,bpn->kn", up.flatten(2), onehot.flatten(1, 2))
    return sums / onehot.sum((0, 1, 2)).clamp(min=1)


def section_eq1(device, quick: bool) -> list[str]:
    from meter_timm.selectivity import average_response

    bandwidth = copy_bandwidth(device, 64 if quick else 1024)
    rows = [
        f"Measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s (read + write of a "
        f"{64 if quick else 1024} MiB tensor).",
        "",
        "| configuration | upsample-and-mask | `average_response` | speedup | kernels | "
        "bytes read (act + depth) | memory-bound limit | max rel diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    configs = [
        (8, 64, (12, 16), (192, 256), 32),
        (4, 64, (60, 80), (480, 640), 64),
        (32, 160, (24, 32), (192, 256), 64),
    ]
    if quick:
        configs = [(2, 8, (6, 8), (24, 32), 8)]
    gen = torch.Generator().manual_seed(0)
    for b, k, act_hw, depth_hw, bins in configs:
        act = torch.rand(b, k, *act_hw, generator=gen).to(device)
        depth = (torch.rand(b, 1, *depth_hw, generator=gen) * 10).to(device)
        edges = torch.linspace(0, 10, bins + 1, device=device)
        ours = lambda: average_response(act, depth, edges)  # noqa: E731
        naive = lambda: naive_response(act, depth, edges)  # noqa: E731
        t = time_calls({"naive": naive, "ours": ours}, device, repeats=5 if quick else 30)
        ref, got = naive().double(), ours()[0].double()
        rel = float((got - ref).abs().max() / ref.abs().max())
        nbytes = act.numel() * act.element_size() + depth.numel() * depth.element_size()
        rows.append(
            f"| B={b} K={k} {act_hw[0]}x{act_hw[1]} -> {depth_hw[0]}x{depth_hw[1]}, "
            f"{bins} bins | {t['naive'] * 1e3:.3f} ms | {t['ours'] * 1e3:.3f} ms | "
            f"{t['naive'] / t['ours']:.1f}x | {count_kernels(ours, device)} | "
            f"{nbytes / 1e6:.2f} MB | {nbytes / bandwidth * 1e6:.1f} us | {rel:.1e} |"
        )
    return rows


def _meter_step(
    device, batch, size, selectivity, autocast_dtype=None, channels_last=False, compile_model=False
):
    import timm

    import meter_timm  # noqa: F401
    from meter_timm.losses import BalancedLoss
    from meter_timm.selectivity import SelectivityLoss

    torch.manual_seed(0)
    model = timm.create_model("meter_xxs").to(device).train()
    images = torch.rand(batch, 3, *size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    depth = torch.rand(batch, 1, *size, device=device) * 9.5 + 0.5
    target = depth[:, :, ::4, ::4].contiguous()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = BalancedLoss()
    sel = None
    if selectivity:
        sel = SelectivityLoss(
            [{"name": n, "num_bins": 32} for n in LAYERS], lam=0.1, relative=True
        ).attach(model)
    # torch.compile of the network (forward and, through AOTAutograd, backward); the forward hooks
    # that capture the selectivity layers stay on the original modules
    network = torch.compile(model) if compile_model else model

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            pred = network(images)
        base = sum(loss_fn(pred, target).values())
        loss = base + sel(depth, base_loss=base)["loss_selectivity"] if sel is not None else base
        loss.backward()
        opt.step()

    return step


def section_steps(device, quick: bool, deadline: float) -> list[str]:
    rows = [
        "| batch | precision | layout | plain step | with SelectivityLoss (3 layers, 32 bins) | "
        "overhead |",
        "|---|---|---|---|---|---|",
    ]
    size = (64, 64) if quick else (192, 256)
    variants = [(None, False), (torch.bfloat16, False), (None, True)]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        variants = [(None, False), (torch.float16, False), (None, True)]
    for batch in (2,) if quick else (8, 64):
        for dtype, channels_last in variants:
            if time.monotonic() > deadline:
                rows.append(f"| {batch} | skipped: time budget | | | | |")
                continue
            steps = {
                "plain": _meter_step(device, batch, size, False, dtype, channels_last),
                "sel": _meter_step(device, batch, size, True, dtype, channels_last),
            }
            t = time_calls(steps, device, repeats=3 if quick else 20)
            rows.append(
                f"| {batch} | {'float32' if dtype is None else str(dtype)[6:] + ' autocast'} | "
                f"{'channels-last' if channels_last else 'NCHW'} | {t['plain'] * 1e3:.1f} ms | "
                f"{t['sel'] * 1e3:.1f} ms | {100 * (t['sel'] / t['plain'] - 1):+.1f}% |"
            )
            del steps
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def kernel_profile(fn, device, calls: int = 5) -> tuple[float, float, list] | None:
    """(kernel time per call in s, kernels per call, [(name, s per call, count per call)] by time)
    of ``fn`` on a GPU, from the profiler's kernel events; None on CPU or without the profiler."""
    if device.type != "cuda":
        return None
    from collections import defaultdict

    from torch.profiler import ProfilerActivity, profile

    try:
        fn()
        _sync(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                fn()
            _sync(device)
        per_name = defaultdict(lambda: [0.0, 0])
        for event in prof.events():
            if event.device_type == torch.autograd.DeviceType.CUDA:
                entry = per_name[event.name]
                entry[0] += event.time_range.elapsed_us() * 1e-6 / calls
                entry[1] += 1 / calls
    except Exception:  # the profiler is optional: the wall times are the point
        return None
    ranked = sorted(((n, t, c) for n, (t, c) in per_name.items()), key=lambda r: -r[1])
    return sum(t for _, t, _ in ranked), sum(c for _, _, c in ranked), ranked


def meter_features(device, batch: int, size: tuple[int, int]) -> dict:
    """METER xxs activations of LAYERS on random images, as leaves that take a gradient: the
    SelectivityLoss inputs without the network."""
    import timm

    import meter_timm  # noqa: F401
    from meter_timm.selectivity import LayerCapture

    model = timm.create_model("meter_xxs").to(device).eval()
    with LayerCapture(model, LAYERS, detach_outputs=True) as capture, torch.no_grad():
        model(torch.rand(batch, 3, *size, device=device))
        return {name: act.clone().requires_grad_() for name, act in capture.outputs.items()}


def section_loss_time(device, quick: bool) -> list[str]:
    """SelectivityLoss alone at batch 64: its wall time against the GPU's kernel time (kernel
    time far below the wall time: launches bound it; close to it: the kernels, e.g. the atomics
    of the scatters, do), on random and on smooth depth (long runs of one bin per row)."""
    from meter_timm.selectivity import SelectivityLoss

    batch, size = (2, (64, 64)) if quick else (64, (192, 256))
    features = meter_features(device, batch, size)
    ramp = torch.linspace(0.5, 10.0, size[0], device=device)[None, None, :, None]
    depths = {
        "random": torch.rand(batch, 1, *size, device=device) * 9.5 + 0.5,
        "smooth": ramp.expand(batch, 1, *size).contiguous(),
    }
    loss = SelectivityLoss([{"name": n, "num_bins": 32} for n in LAYERS], lam=0.1, relative=True)
    base = torch.tensor(2.0, device=device)
    rows = [
        f"SelectivityLoss forward + backward alone on METER xxs activations (batch {batch}, "
        f"{size[0]}x{size[1]}, {', '.join(LAYERS)}, 32 bins); wall time: median of interleaved "
        "calls; kernel time: the profiler's kernels, per call.",
        "",
        "| depth | wall time | kernel time | kernels | slowest kernels (time per call) |",
        "|---|---|---|---|---|",
    ]
    calls = {
        name: (
            lambda d: (
                lambda: loss(d, base_loss=base, features=features)["loss_selectivity"].backward()
            )
        )(depth)
        for name, depth in depths.items()
    }
    wall = time_calls(calls, device, repeats=5 if quick else 50)
    for name, fn in calls.items():
        profiled = kernel_profile(fn, device)
        if profiled is None:
            rows.append(f"| {name} | {wall[name] * 1e3:.2f} ms | - | - | - |")
            continue
        kernel_s, kernels, ranked = profiled
        top = "; ".join(f"{n[:40]} {t * 1e6:.0f} us" for n, t, _ in ranked[:3])
        rows.append(
            f"| {name} | {wall[name] * 1e3:.2f} ms | {kernel_s * 1e3:.2f} ms | {kernels:.0f} | "
            f"{top} |"
        )
    return rows


def section_counts(device, quick: bool) -> list[str]:
    """Eq. 1's building blocks on the GPU path at batch 64, each next to an alternative: the
    pixels per bin as ``BinnedDepth`` counts them (a histogram per image row, summed) against one
    histogram for the whole batch (every pixel's atomic add on N_b + 1 addresses), and the bin
    masks per layer resolution against :func:`separable_masks`."""
    import meter_timm.selectivity.response as response

    batch, size, bins = (2, (24, 32), 8) if quick else (64, (192, 256), 32)
    sizes = [(6, 8)] if quick else [(48, 64), (24, 32), (12, 16)]  # encoder.4 / 6 / 8
    ramp = torch.linspace(0.05, 10.5, size[0], device=device)[None, None, :, None]
    depths = {
        "random": torch.rand(batch, 1, *size, device=device) * 10.0,
        "smooth": ramp.expand(batch, 1, *size).contiguous(),  # one bin per row, the last none
    }
    edges = torch.linspace(0.0, 10.0, bins + 1).tolist()

    def one_histogram(bin_index):
        counts = torch.zeros(bins + 1, dtype=torch.float64, device=device)
        ones = torch.ones((), dtype=torch.float64, device=device).expand(bin_index.numel())
        return counts.scatter_add_(0, bin_index.view(-1), ones)[:bins]

    counts_rows = [
        f"Batch {batch}, {size[0]}x{size[1]}, {bins} bins: median of interleaved calls.",
        "",
        "| depth | one histogram (float64) | a histogram per row, summed (BinnedDepth) | equal |",
        "|---|---|---|---|",
    ]
    mask_rows = [
        "",
        "Bin masks at each layer's resolution (adjoint of bilinear upsampling, float32):",
        "",
        "| depth | activation size | 4-corner scatter (BinnedDepth) | row scatter + matmul "
        "| max abs diff |",
        "|---|---|---|---|---|",
    ]
    repeats = 5 if quick else 50
    saved = response.LAUNCH_BOUND_DEVICES
    response.LAUNCH_BOUND_DEVICES = (device.type,)  # the GPU path, also in a CPU dry run
    try:
        for name, depth in depths.items():
            binned = response.BinnedDepth(depth, edges)
            index = binned.bin_index
            fns = {
                "one": lambda b=index: one_histogram(b),
                "rows": lambda b=index: response._pixel_counts(b, bins),
            }
            t = time_calls(fns, device, repeats=repeats)
            equal = "yes" if torch.equal(fns["one"](), fns["rows"]()) else "NO"
            counts_rows.append(
                f"| {name} | {t['one'] * 1e6:.0f} us | {t['rows'] * 1e6:.0f} us | {equal} |"
            )
            for act_size in sizes:
                tables = separable_tables(size, act_size, device)
                fns = {
                    "scatter": lambda s=act_size: binned._downsample_masks(*s, torch.float32),
                    "separable": lambda s=act_size, b=index, tb=tables: separable_masks(
                        b, bins, s, tb
                    ),
                }
                t = time_calls(fns, device, repeats=repeats)
                diff = float((fns["scatter"]() - fns["separable"]()).abs().max())
                mask_rows.append(
                    f"| {name} | {act_size[0]}x{act_size[1]} | {t['scatter'] * 1e6:.0f} us | "
                    f"{t['separable'] * 1e6:.0f} us | {diff:.1e} |"
                )
    finally:
        response.LAUNCH_BOUND_DEVICES = saved
    return counts_rows + mask_rows


def separable_tables(size: tuple[int, int], act_size: tuple[int, int], device) -> tuple:
    """The constants of :func:`separable_masks` for one depth and activation size, on ``device``
    (built once, outside the timed calls, as BinnedDepth caches its own)."""
    from meter_timm.selectivity.response import bilinear_source_index, interpolation_matrix

    (height, width), (h, w) = size, act_size
    j0, right = bilinear_source_index(width, w)  # left corner and the right one's weight
    j = torch.cat([j0, (j0 + 1).clamp(max=w - 1)]).to(device)
    weights = torch.cat([1.0 - right, right]).to(device=device, dtype=torch.float32)
    ry = interpolation_matrix(height, h).t().to(device=device, dtype=torch.float32)  # (h, H)
    return j, weights, ry


def separable_masks(bin_index, num_bins: int, act_size: tuple[int, int], tables) -> torch.Tensor:
    """A candidate for BinnedDepth's GPU masks, timed against them here: the 2 horizontal corners
    of every pixel scattered into a histogram per image row (few pixels share an address), then
    the vertical interpolation as one dense matmul. (B, N_b, h * w) like ``BinnedDepth.masks``."""
    (batch, height, width), (h, w) = bin_index.shape, act_size
    j, weights, ry = tables
    n1 = num_bins + 1
    keys = (bin_index.view(batch * height, 1, width) * w + j.view(2, width)).view(
        batch * height, -1
    )
    per_row = torch.zeros(batch * height, n1 * w, device=bin_index.device)
    per_row.scatter_add_(1, keys, weights.expand(batch * height, -1))
    out = torch.matmul(ry, per_row.view(batch, height, n1 * w))  # (B, h, N_b + 1, w)
    return out.view(batch, h, n1, w)[:, :, :num_bins].permute(0, 2, 1, 3).reshape(batch, -1, h * w)


def section_inference(device, quick: bool) -> list[str]:
    import timm

    import meter_timm  # noqa: F401

    batch, size = (2, (64, 64)) if quick else (64, (192, 256))
    x = torch.rand(batch, 3, *size, device=device)
    models = {
        "mobilevit_xxs (timm)": timm.create_model("mobilevit_xxs").to(device).eval(),
        "meter_xxs as built": timm.create_model("meter_xxs").to(device).eval(),
    }
    fused = timm.create_model("meter_xxs").to(device).eval()
    fused.fuse()
    models["meter_xxs fuse()"] = fused
    fns = {}
    for name, model in models.items():
        fns[name] = (lambda m: lambda: m(x))(model)
        fns[name + ", bf16 autocast"] = (lambda m: lambda: _autocast_call(m, x, device))(model)
    # bfloat16 weights and input: no cast kernels around every op, as autocast launches
    fused_bf16 = timm.create_model("meter_xxs").to(device).eval()
    fused_bf16.fuse()
    fused_bf16.to(torch.bfloat16)
    x_bf16 = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    fns["meter_xxs fuse(), bf16 weights"] = lambda: fused_bf16(x_bf16)
    with torch.inference_mode():
        t = time_calls(fns, device, repeats=3 if quick else 30)
    base = t["mobilevit_xxs (timm)"]
    rows = [
        f"Batch {batch}, {size[0]}x{size[1]}, medians of interleaved calls.",
        "",
        "| model | time per batch | images/s | time vs mobilevit_xxs fp32 |",
        "|---|---|---|---|",
    ]
    for name, seconds in t.items():
        rows.append(
            f"| {name} | {seconds * 1e3:.2f} ms | {batch / seconds:.0f} | {seconds / base:.2f}x |"
        )
    return rows


def _autocast_call(model, x, device):
    with torch.autocast(device.type, dtype=torch.bfloat16):
        return model(x)


def _run(cmd, cwd, timeout, env=None):
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ, **(env or {})),
        )
        return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired as exc:
        out = (
            (exc.stdout or b"").decode(errors="replace")
            if isinstance(exc.stdout, bytes)
            else (exc.stdout or "")
        )
        return None, out, time.perf_counter() - start


def _metrics(log: str) -> dict:
    found = {}
    for name in ("abs_rel", "rmse", "d1"):
        match = re.search(rf"\| {name} \| ([0-9.naif-]+) \|", log)
        if match:
            found[name] = match.group(1)
    sel = re.search(
        r"encoder\.6: ([-0-9.]+) against each unit's preferred bin(?:, ([-0-9.]+) against)?", log
    )
    if sel:
        found["sel preferred"], found["sel assigned"] = sel.group(1), sel.group(2) or "-"
    found["nan in log"] = "yes" if re.search(r"loss\w*: nan", log) else "no"
    return found


# --quick: the quickstart's built-in data set shrunk (both loaders' SyntheticDepthDataset)
_QUICK_SIZES = dict(num_train=16, num_val=8, height=64, width=64)
_QUICK_DATA = [
    f"{loader}.dataset.{key}={value}"
    for loader in ("train_dataloader", "val_dataloader")
    for key, value in _QUICK_SIZES.items()
]


def section_quickstart(tmp: Path, quick: bool, deadline: float) -> list[str]:
    from mmengine.config import Config

    from meter_timm.data.synthetic import ensure_dataset

    extra = []
    if quick:
        extra = [
            "--cfg-options",
            *_QUICK_DATA,
            "train_cfg.max_epochs=1",
            "train_cfg.val_interval=1",
            "train_dataloader.batch_size=4",
            "val_dataloader.batch_size=4",
            "param_scheduler.0.end=2",
        ]
    # the data set the runs' SyntheticDepthDataset would write (cwd tmp), written here first to
    # time it
    dataset = Config.fromfile(str(REPO / "mm_configs/quickstart.py")).train_dataloader.dataset
    spec = {
        key: dataset[key]
        for key in ("num_train", "num_val", "height", "width", "seed", "frames_per_scene")
    }
    if quick:
        spec.update(_QUICK_SIZES)
    start = time.perf_counter()
    ensure_dataset(tmp / dataset.data_root, **spec)
    rows = [
        f"Built-in data written first ({time.perf_counter() - start:.0f} s), then each run from "
        f"the "
        "same data (`meter-timm train mm_configs/quickstart.py [--amp ...]`).",
        "",
        "| command | wall time | abs_rel | rmse (m) | d1 | encoder.6 SI preferred | SI assigned | "
        "NaN losses |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for flags in ([], ["--amp"]):
        name = " ".join(["train quickstart"] + flags)
        remaining = deadline - time.monotonic()
        if remaining < 40:
            rows.append(f"| {name} | skipped: time budget | | | | | | |")
            continue
        cmd = [
            sys.executable,
            "-m",
            "meter_timm",
            "train",
            str(REPO / "mm_configs/quickstart.py"),
            "--work-dir",
            str(tmp / ("qs" + "_".join(flags))),
            *flags,
            *extra,
        ]
        code, log, seconds = _run(cmd, tmp, timeout=remaining)
        if code != 0:
            rows.append(
                f"| {name} | {'timed out' if code is None else f'failed ({code})'} after "
                f"{seconds:.0f} s | | | | | | |"
            )
            (tmp / f"{name.replace(' ', '_')}.log").write_text(log)
            rows.append("")
            rows.append("```\n" + log[-1500:] + "\n```")
            continue
        m = _metrics(log)
        rows.append(
            f"| `{name}` | {seconds:.0f} s | {m.get('abs_rel', '?')} | {m.get('rmse', '?')} | "
            f"{m.get('d1', '?')} | {m.get('sel preferred', '?')} | {m.get('sel assigned', '?')} | "
            f"{m['nan in log']} |"
        )
    return rows


def section_torchrun(tmp: Path, quick: bool, deadline: float) -> list[str]:
    remaining = deadline - time.monotonic()
    if remaining < 30:
        return ["skipped: time budget"]
    data = tmp / "data/synthetic"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=1",
        "--master_port=29531",
        "-m",
        "meter_timm",
        "train",
        str(REPO / "mm_configs/quickstart.py"),
        "--launcher",
        "pytorch",
        "--work-dir",
        str(tmp / "torchrun"),
        "--cfg-options",
        "train_cfg.max_epochs=1",
        "train_cfg.val_interval=1",
        f"train_dataloader.dataset.data_root={data}",
        f"val_dataloader.dataset.data_root={data}",
    ]
    if quick:
        cmd += [
            *_QUICK_DATA,
            "train_dataloader.batch_size=4",
            "val_dataloader.batch_size=4",
            "param_scheduler.0.end=2",
        ]
    code, log, seconds = _run(cmd, tmp, timeout=min(remaining, 120))
    backend = re.search(r"dist_cfg: (\{[^}]*\})", log)
    wrapper = re.search(r"(MMDistributedDataParallel[^\n]*)", log)
    return [
        f"`torchrun --nproc_per_node=1 -m meter_timm train mm_configs/quickstart.py "
        f"--launcher pytorch` "
        f"(1 epoch): exit code {code}, {seconds:.0f} s.",
        "",
        f"- dist_cfg logged by mmengine: `{backend.group(1) if backend else 'not found'}`",
        f"- process group backend: `{_backend_line(log)}`",
        f"- model wrapper: `{wrapper.group(1).strip() if wrapper else 'not logged'}`",
    ]


def _backend_line(log: str) -> str:
    match = re.search(r"backend[=:' ]+\W*(nccl|gloo)", log)
    return match.group(1) if match else "not found in the log"


def section_compile(tmp: Path, quick: bool, deadline: float) -> list[str]:
    remaining = deadline - time.monotonic()
    if remaining < 45:
        return ["skipped: time budget"]
    out = tmp / "compile.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-step", str(out)]
    if quick:
        cmd.append("--cpu-dry-run")
    code, log, seconds = _run(cmd, REPO, timeout=remaining)
    res = json.loads(out.read_text()) if out.is_file() else {}
    rows = [
        f"`torch.compile` of the network (forward and backward; losses and AdamW eager), "
        f"batch {res.get('batch', '?')}, {res.get('size', '?')}: "
        f"{'finished' if code == 0 else 'timed out' if code is None else 'failed'} "
        f"after {seconds:.0f} s.",
        "",
        "| step | eager | compiled | first call (compilation) |",
        "|---|---|---|---|",
    ]
    for name in ("plain", "sel"):
        if name in res:
            r = res[name]
            rows.append(
                f"| {'with SelectivityLoss' if name == 'sel' else 'plain'} "
                f"| {r['eager'] * 1e3:.1f} ms | "
                f"{r['compiled'] * 1e3:.1f} ms | {r['compile_s']:.0f} s |"
            )
    if code != 0:
        rows += ["", "```", *log.strip().splitlines()[-15:], "```"]
    return rows


def compile_step(out: Path, device, quick: bool) -> None:
    """Eager vs ``torch.compile``d network step times (losses and AdamW stay eager); the JSON is
    rewritten after each variant so that a run stopped by the time limit still reports what it
    measured. With SelectivityLoss first: the overhead question is the point."""
    batch, size = (2, (64, 64)) if quick else (64, (192, 256))
    result = {"batch": batch, "size": f"{size[0]}x{size[1]}"}
    for name in ("sel", "plain"):
        eager = _meter_step(device, batch, size, name == "sel")
        t_eager = time_calls({"e": eager}, device, repeats=3 if quick else 20)["e"]
        compiled = _meter_step(device, batch, size, name == "sel", compile_model=True)
        start = time.perf_counter()
        compiled()
        _sync(device)
        compile_s = time.perf_counter() - start
        t_comp = time_calls({"c": compiled}, device, repeats=3 if quick else 20)["c"]
        result[name] = {"eager": t_eager, "compiled": t_comp, "compile_s": compile_s}
        out.write_text(json.dumps(result))


def section_pytest(quick: bool) -> list[str]:
    code, log, seconds = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "cuda",
            "-p",
            "no:cacheprovider",
            "tests/test_cuda.py",
        ],
        REPO,
        timeout=150,
    )
    tail = [line for line in log.strip().splitlines() if line.strip()][-3:]
    return [
        f"`python -m pytest -q -m cuda tests/test_cuda.py`: exit code {code}, {seconds:.0f} s.",
        "",
        "```",
        *tail,
        "```",
    ]


# ------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default=None,
        help="report path (default results/gpu.md; with --cpu-dry-run a temporary file)",
    )
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="run every section at tiny sizes on CPU to check this script",
    )
    parser.add_argument(
        "--compile-report",
        action="store_true",
        help="only time torch.compile of the training step (writes results/gpu_compile.md)",
    )
    parser.add_argument("--compile-step", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.cpu_dry_run
    device = torch.device("cpu" if quick else "cuda")
    if args.compile_step:
        compile_step(Path(args.compile_step), device, quick)
        return 0
    if not quick and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU on this machine; nothing measured, "
            "results/gpu.md left as it is."
        )
        return 0
    start = time.monotonic()
    deadline = start + BUDGET_S
    name = "gpu_compile" if args.compile_report else "gpu"
    out = (
        Path(args.out)
        if args.out
        else (
            Path(tempfile.gettempdir()) / f"{name}_check_dry_run.md"
            if quick
            else REPO / "results" / f"{name}.md"
        )
    )
    if quick:
        gpu = "CPU DRY RUN (tiny sizes; these numbers say nothing about a GPU)"
    else:
        props = torch.cuda.get_device_properties(0)
        gpu = (
            f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
            f"bf16 {torch.cuda.is_bf16_supported()}"
        )
    lines = [
        "# meter-timm on a GPU",
        "",
        f"Written by `python benchmarks/gpu_check.py"
        f"{' --compile-report' if args.compile_report else ''}` "
        f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{gpu}; torch {torch.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs.",
        "",
    ]

    def add(title, fn, *a):
        print(f"gpu_check: {title} ...", flush=True)
        lines.extend([f"## {title}", ""])
        t0 = time.monotonic()
        try:
            lines.extend(fn(*a))
        except Exception as exc:  # a failing section is reported, the others still run
            lines.append(f"FAILED: {type(exc).__name__}: {exc}")
        lines.extend(["", f"({time.monotonic() - t0:.0f} s)", ""])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")  # partial report after every section

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.compile_report:
            add(
                "torch.compile of the training step",
                section_compile,
                tmp,
                quick,
                start + COMPILE_BUDGET_S,
            )
        else:
            add("Tests marked cuda", section_pytest, quick)
            add("Eq. 1 (average_response)", section_eq1, device, quick)
            add(
                "Training step cost of SelectivityLoss",
                section_steps,
                device,
                quick,
                deadline - 150,
            )
            add("SelectivityLoss alone: wall and kernel time", section_loss_time, device, quick)
            add("Eq. 1 building blocks at batch 64", section_counts, device, quick)
            add("Inference", section_inference, device, quick)
            add("Multi-process launch (1 process)", section_torchrun, tmp, quick, deadline - 110)
            add("Quickstart with and without --amp", section_quickstart, tmp, quick, deadline)
    budget = COMPILE_BUDGET_S if args.compile_report else BUDGET_S
    lines.append(f"Total: {time.monotonic() - start:.0f} s (budget {budget:.0f} s).")
    out.write_text("\n".join(lines) + "\n")
    print(f"gpu_check: wrote {out} in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
