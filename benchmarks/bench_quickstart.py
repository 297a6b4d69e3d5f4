"""Wall time of the README's main command, data generation included, and its result vs the
mean-depth baseline.

    python benchmarks/bench_quickstart.py [--threads 2]

Runs ``meter-timm train mm_configs/quickstart.py`` in a fresh temporary folder (so the built-in
data set is written first, as on a new machine) and prints the wall time, the metrics table with
the mean-depth baseline, and the abs_rel ratio (the quickstart must reach <= 0.6x).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP/MKL threads (default: torch's default)")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "meter_timm", "train", str(REPO / "mm_configs/quickstart.py"),
               "--work-dir", str(Path(tmp) / "run")]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        return proc.returncode
    summary = proc.stdout[proc.stdout.find("== meter-timm train"):]
    print(summary)
    ratio = re.search(r"abs_rel is ([0-9.]+)x", summary)
    print(f"\nquickstart wall time: {seconds:.1f} s (limit 300 s), CPUs {os.cpu_count()}, "
          f"abs_rel ratio {ratio.group(1) if ratio else '?'} (limit 0.60)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
