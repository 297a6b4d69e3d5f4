"""Wall time of the README's main command, data generation included, and its result vs the
mean-depth baseline and the same run without the selectivity loss.

    python benchmarks/bench_quickstart.py [--threads 2]

Runs ``meter-timm train mm_configs/quickstart.py`` in a fresh temporary folder (so the built-in
data set is written first, as on a new machine), then ``mm_configs/quickstart_no-selectivity.py``
on the same data, and prints and writes to ``results/quickstart.md`` the wall time and the
end-of-run summaries (metrics table with the mean-depth baseline, per-layer selectivity); the
quickstart must reach <= 0.6x the baseline's abs_rel.
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
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP/MKL threads (default: torch's default)"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in ("quickstart.py", "quickstart_no-selectivity.py"):
            cmd = [
                sys.executable,
                "-m",
                "meter_timm",
                "train",
                str(REPO / "mm_configs" / config),
                "--work-dir",
                str(Path(tmp) / config),
            ]
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if proc.returncode:
                print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
                return proc.returncode
            summary = proc.stdout[proc.stdout.find("== meter-timm train") :].strip()
            summary = summary.replace(tmp, "<tmp>")
            ratio = re.search(r"abs_rel is ([0-9.]+)x", summary)
            note = "data generation included" if config == "quickstart.py" else "same data"
            sections.append(
                f"## `meter-timm train mm_configs/{config}`\n\nwall time {seconds:.1f} s "
                f"({note}), {os.cpu_count()} CPUs, abs_rel ratio to the mean-depth baseline "
                f"{ratio.group(1) if ratio else '?'} (limit 0.60)\n\n```\n{summary}\n```\n"
            )
            print(sections[-1], flush=True)
    out = REPO / "results" / "quickstart.md"
    out.write_text(
        "# The README's quickstart, as printed (`python benchmarks/bench_quickstart.py`)\n\n"
        + "\n".join(sections)
    )
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
