"""Start-up time of the command line: ``meter-timm --help``, ``python -m meter_timm`` and
``meter-timm strategies``, each as a fresh process, median of N runs (wall clock) and the peak
resident memory of each process; ``import torch`` alone is the yardstick.

    python benchmarks/bench_cli.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "meter-timm --help": ["meter-timm", "--help"],
    "python -m meter_timm": [sys.executable, "-m", "meter_timm"],
    "meter-timm strategies": ["meter-timm", "strategies"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of ``cmd``, a fresh process."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a full pipe would block the child
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
        if proc.returncode:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed: {err.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("meter-timm") is None:
        sys.exit("meter-timm is not on PATH: pip install -e . first")
    print(f"CLI start-up, {args.runs} fresh processes each: wall time and peak RSS per process")
    print("| command | median (s) | min (s) | peak RSS, median (MB) |")
    print("|---|---|---|---|")
    for label, cmd in COMMANDS.items():
        timed(cmd)  # warm the file cache
        runs = [timed(cmd) for _ in range(args.runs)]
        times = [t for t, _ in runs]
        rss = statistics.median(r for _, r in runs)
        print(f"| `{label}` | {statistics.median(times):.2f} | {min(times):.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
