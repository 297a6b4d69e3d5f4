"""CPU latency of METER in PyTorch eager, PyTorch after ``fuse()``, and ONNX Runtime, side by side.

All variants are measured round-robin in one process (one timed call of each per round), so load
from other processes hits them alike. Rows:

- ``PyTorch eager``: the model as built by ``timm.create_model``;
- ``PyTorch fuse()``: BatchNorms folded, separable convs merged, channels-last weights (what
  ``meter-timm predict`` runs);
- ``ONNX Runtime``: the file ``meter-timm export`` writes (without ``--fuse``), CPU execution
  provider, default graph optimisations;
- ``ONNX Runtime (--fuse)``: the file written with ``--fuse``.

Prints medians of batch-1 latency (ms) and batch-8 throughput (images/s), and the largest relative
difference of each variant's output from eager PyTorch. Needs the export extra.

    python benchmarks/bench_onnx.py [--weights FILE] [--rounds 30] [--threads 1 2]
        [--out results/onnx_latency.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from meter_timm.deploy import build_model, export_onnx


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def _torch_runner(model):
    def run(x):
        with torch.inference_mode():
            return model(x).numpy()

    return run


def measure(args, threads: int) -> str:
    """The markdown table of every variant with ``threads`` threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)

    eager = build_model(args.model, args.weights)
    fused = build_model(args.model, args.weights)
    fused.load_state_dict(eager.state_dict())
    height, width = (
        args.height or eager.pretrained_cfg["input_size"][1],
        args.width or eager.pretrained_cfg["input_size"][2],
    )
    with tempfile.TemporaryDirectory() as tmp:
        plain_onnx = export_onnx(eager, Path(tmp) / "plain.onnx", height, width)["path"]
        fused_for_onnx = build_model(args.model, args.weights)
        fused_for_onnx.load_state_dict(eager.state_dict())
        fused_onnx = export_onnx(
            fused_for_onnx.fuse(channels_last=False), Path(tmp) / "fused.onnx", height, width
        )["path"]
        fused.fuse()
        variants = {
            "PyTorch eager": _torch_runner(eager),
            "PyTorch fuse()": _torch_runner(fused),
            "ONNX Runtime": _ort_session(plain_onnx, threads),
            "ONNX Runtime (--fuse)": _ort_session(fused_onnx, threads),
        }
        g = torch.Generator().manual_seed(0)
        inputs = {
            1: torch.randn(1, 3, height, width, generator=g),
            8: torch.randn(8, 3, height, width, generator=g),
        }
        reference = variants["PyTorch eager"](inputs[8])
        rel = {
            name: float(np.abs(run(inputs[8]) - reference).max() / np.abs(reference).max())
            for name, run in variants.items()
        }
        times = {(name, b): [] for name in variants for b in inputs}
        for batch, x in inputs.items():
            for _ in range(args.warmup):
                for run in variants.values():
                    run(x)
            for _ in range(args.rounds):
                for name, run in variants.items():
                    start = time.perf_counter()
                    run(x)
                    times[(name, batch)].append(time.perf_counter() - start)

    import onnxruntime

    base8 = statistics.median(times[("PyTorch eager", 8)])
    lines = [
        f"{args.model} at {height}x{width}, CPU, {threads} threads, {args.rounds} rounds "
        f"round-robin, medians "
        f"({'weights ' + Path(args.weights).name if args.weights else 'random weights'}).",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; "
        f"torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; load average at the end {os.getloadavg()[0]:.1f} "
        "(other processes on the machine).",
        "",
        "| variant | batch 1 latency (ms) | batch 8 throughput (img/s) | time vs eager at batch 8 "
        "| max rel. diff vs eager |",
        "|---|---|---|---|---|",
    ]
    for name in variants:
        t1 = statistics.median(times[(name, 1)])
        t8 = statistics.median(times[(name, 8)])
        lines.append(
            f"| {name} | {t1 * 1e3:.2f} | {8 / t8:.1f} | {t8 / base8:.2f}x | {rel[name]:.1e} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="meter_xxs.nyu")
    parser.add_argument(
        "--weights",
        default=None,
        help="weights file (default: random weights; timings do not depend on the values)",
    )
    parser.add_argument("--height", type=int, default=None, help="default: the tag's input height")
    parser.add_argument("--width", type=int, default=None, help="default: the tag's input width")
    parser.add_argument(
        "--rounds", type=int, default=30, help="timed calls per variant and batch size"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="threads for both PyTorch and ONNX Runtime, one table per count (default: torch's)",
    )
    parser.add_argument("--out", default=None, help="also write the table to this markdown file")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    sections = []
    for threads in args.threads or [torch.get_num_threads()]:
        text = measure(args, threads)
        print(text, flush=True)
        sections.append(f"## {threads} thread{'s' if threads > 1 else ''}\n\n{text}\n")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            f"# ONNX Runtime vs PyTorch on CPU ({args.model})\n\n"
            f"`python benchmarks/bench_onnx.py {' '.join(argv)}`".rstrip()
            + "\n\n"
            + "\n".join(sections)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
