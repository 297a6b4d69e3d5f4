"""Run every benchmark of the project from one place and collect their figures in one file.

Each benchmark script already reports medians (or minima) of several timed calls; this runner
runs each script ``--runs`` times in a row, keeps every output, and writes
``results/benchmarks.md``: the machine (CPU model, cores, torch and thread count) followed by the
output of each run, so the README's performance section can quote figures that anyone can rerun.

    python benchmarks/run_benchmarks.py                 # all six, 1 run each
    python benchmarks/run_benchmarks.py --runs 3 --only selectivity
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "inference": ["bench_inference.py"],
    "selectivity": ["bench_selectivity.py"],
    "ops": ["count_ops.py", "--host-time"],
    "data": ["bench_data.py"],
    "eval": ["bench_eval.py", "--threads", "2"],
    "cli": ["bench_cli.py"],
}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}"
    )


def code_version() -> str:
    """The commit the benchmarks ran on, marked when the working tree has changes."""
    try:
        run = dict(cwd=HERE, capture_output=True, text=True, check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], **run).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="times each benchmark script is run")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks.md"))
    args = parser.parse_args(argv)
    sections = [
        f"# meter-timm benchmarks\n\nMachine: {machine()}\n"
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}\nCode: {code_version()}\n"
    ]
    for name in args.only or list(BENCHMARKS):
        script = [sys.executable, str(HERE / BENCHMARKS[name][0]), *BENCHMARKS[name][1:]]
        for run in range(1, args.runs + 1):
            print(f"== {name} (run {run}/{args.runs}): {' '.join(script[1:])}", flush=True)
            proc = subprocess.run(script, capture_output=True, text=True)
            print(proc.stdout, end="", flush=True)
            if proc.returncode:
                print(proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"benchmark {name} failed with exit code {proc.returncode}")
            sections.append(
                f"## {name}, run {run}\n\n`python benchmarks/{' '.join(BENCHMARKS[name])}`\n\n"
                f"```\n{proc.stdout.strip()}\n```\n"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(sections))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
