"""Start-up time of the command line: ``meter-timm --help``, ``python -m meter_timm`` and
``meter-timm strategies``, each as a fresh process, median of N runs (wall clock, peak RSS).

    python benchmarks/bench_cli.py [--runs 7]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "meter-timm --help": ["meter-timm", "--help"],
    "python -m meter_timm": [sys.executable, "-m", "meter_timm"],
    "meter-timm strategies": ["meter-timm", "strategies"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("meter-timm") is None:
        sys.exit("meter-timm is not on PATH: pip install -e . first")
    print(f"CLI start-up, {args.runs} runs each, median wall time (peak RSS of the last run):")
    print("| command | median (s) | min (s) | peak RSS (MB) |")
    print("|---|---|---|---|")
    for label, cmd in COMMANDS.items():
        subprocess.run(cmd, capture_output=True, check=True)  # warm the file cache
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        # ru_maxrss of children: the largest child so far (kB on Linux)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"| `{label}` | {statistics.median(times):.2f} | {min(times):.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
