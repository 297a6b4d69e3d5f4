"""What ``torch.compile`` costs and gives a training run: eager, ``--compile network`` and
``--compile`` (the whole step, mmengine's option), on the quickstart.

    python benchmarks/bench_compile.py [--epochs 1] [--threads 2]

Each mode trains ``mm_configs/quickstart.py`` for ``--epochs`` epochs on the same built-in data,
in a fresh process, on whatever device the runner picks (CPU here; a GPU where there is one).
From mmengine's log it takes the first logged interval (its iterations include compiling) and
the median step time of the later intervals, and writes ``results/compile.md`` with the wall
time and abs_rel of each run. Every run gets an empty inductor cache, so compiling is timed as a
first run pays it (a warm cache makes later runs compile much faster).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {"eager": [], "compile network": ["--compile", "network"], "compile step": ["--compile"]}
INTERVAL = re.compile(r"Epoch\(train\)\s+\[\d+\]\[(\d+)/\d+\].*?\btime: ([0-9.]+)")


def run(mode: str, tmp: Path, epochs: int, env: dict) -> dict:
    cmd = [sys.executable, "-m", "meter_timm", "train", str(REPO / "mm_configs" / "quickstart.py")]
    cmd += [*MODES[mode], "--work-dir", str(tmp / mode.replace(" ", "_"))]
    cmd += ["--cfg-options", f"train_cfg.max_epochs={epochs}"]
    print(f"== {mode}: {' '.join(cmd[2:])}", flush=True)
    # an empty compile cache for every run: compiling is timed as on a first run
    env = dict(env, TORCHINDUCTOR_CACHE_DIR=str(tmp / f"inductor-{mode.replace(' ', '_')}"))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    if proc.returncode:
        print(log[-4000:])
        raise SystemExit(f"{mode}: exit code {proc.returncode}")
    intervals = [(int(it), float(t)) for it, t in INTERVAL.findall(log)]
    if len(intervals) < 3:
        raise SystemExit(f"{mode}: fewer than 3 logged intervals; train longer (--epochs)")
    first_iters, first_time = intervals[0]
    abs_rel = re.search(r"\| abs_rel \| ([0-9.]+) \|", log)
    return dict(
        wall=wall,
        first=first_iters * first_time,
        first_iters=first_iters,
        step=statistics.median(t for _, t in intervals[1:]),
        abs_rel=abs_rel.group(1) if abs_rel else "?",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, help="OMP/MKL threads (default: torch's default)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "compile.md")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # the built-in data, written once before the timed runs, as the quickstart's dataset would
        from mmengine.config import Config

        from meter_timm.data.synthetic import ensure_dataset

        synthetic = Config.fromfile(REPO / "mm_configs" / "quickstart.py").synthetic
        ensure_dataset(Path(tmp) / "data" / "synthetic", **synthetic, progress=False)
        for mode in MODES:
            r = run(mode, Path(tmp), args.epochs, env)
            rows.append(
                f"| {mode} | {r['wall']:.1f} s | {r['first']:.1f} s ({r['first_iters']} steps) "
                f"| {1e3 * r['step']:.0f} ms | {r['abs_rel']} |"
            )
            print(rows[-1], flush=True)
    text = (
        f"# torch.compile on the quickstart (`python benchmarks/bench_compile.py "
        f"--epochs {args.epochs}`)\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M')}; {device}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}. {args.epochs} epoch(s) of 64 steps at batch 16, 96x128, "
        "validation at the end. Every run starts with an empty compile cache. First steps: the "
        "first logged interval, compiling included. "
        "Step: median of mmengine's later step times.\n\n"
        "| mode | wall time | first steps | step | abs_rel |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
