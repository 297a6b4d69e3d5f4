"""``benchmarks/gpu_check.py`` runs only on a lent GPU, with minutes of budget and no second try:
its CPU dry run (every section at tiny sizes) keeps the script working between GPU sessions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = (
    "Tests marked cuda",
    "Eq. 1 (average_response)",
    "Training step cost of SelectivityLoss",
    "SelectivityLoss alone: wall and kernel time",
    "Eq. 1 building blocks at batch 64",
    "Inference",
    "Multi-process launch (1 process)",
    "Quickstart with and without --amp",
)

pytestmark = pytest.mark.slow


def _dry_run(tmp_path: Path, *options: str) -> str:
    out = tmp_path / "report.md"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--cpu-dry-run", "--out", str(out), *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out.read_text()


def test_gpu_check_dry_run_completes_every_section(tmp_path):
    report = _dry_run(tmp_path)
    assert "CPU DRY RUN" in report  # never mistaken for GPU figures
    assert "FAILED" not in report, report
    assert [s for s in SECTIONS if f"## {s}\n" not in report] == []
    assert "process group backend: `gloo`" in report  # no CUDA: gloo, chosen at launch
    # both quickstart runs finished with metrics and finite losses
    rows = [line for line in report.splitlines() if line.startswith("| `train quickstart")]
    assert len(rows) == 2 and all(row.rstrip().endswith("| no |") for row in rows)


def test_gpu_check_compile_report_dry_run_times_both_steps(tmp_path):
    report = _dry_run(tmp_path, "--compile-report")
    assert "FAILED" not in report, report
    rows = [line for line in report.splitlines() if line.startswith(("| plain |", "| with Sel"))]
    assert len(rows) == 2 and all(" ms |" in row for row in rows)
