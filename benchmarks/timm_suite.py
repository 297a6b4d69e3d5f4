"""timm's own model tests on METER: ``tests/test_models.py`` of the installed timm version, taken
unmodified from its source distribution on PyPI, run with ``-k meter`` from a temporary folder whose
``conftest.py`` only imports ``meter_timm``.

    python benchmarks/timm_suite.py                 # writes results/timm_suite.md
    python benchmarks/timm_suite.py --sdist timm-1.0.31.tar.gz   # without downloading

Writes the timm version, the sha256 of the test file, every case's outcome grouped by test, and
the first error line of each failure.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import timm

REPO = Path(__file__).resolve().parents[1]


def download_sdist(version: str, folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", f"timm=={version}", "--no-deps"]
    cmd += ["--no-binary", ":all:", "--quiet", "-d", str(folder)]
    subprocess.run(cmd, check=True)
    found = sorted(folder.glob("timm-*.tar.gz"))
    if not found:
        raise SystemExit(f"pip download wrote no timm-{version}.tar.gz into {folder}")
    return found[0]


def extract_test_file(sdist: Path, folder: Path) -> Path:
    with tarfile.open(sdist) as archive:
        member = next(
            (m for m in archive.getmembers() if m.name.endswith("/tests/test_models.py")), None
        )
        if member is None:
            raise SystemExit(f"{sdist} holds no tests/test_models.py")
        data = archive.extractfile(member).read()
    path = folder / "test_models.py"
    path.write_bytes(data)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="timm's source distribution (default: download)")
    parser.add_argument("--keyword", default="meter", help="pytest -k expression (default: meter)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "timm_suite.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sdist = args.sdist or download_sdist(timm.__version__, tmp)
        test_file = extract_test_file(sdist, tmp)
        digest = hashlib.sha256(test_file.read_bytes()).hexdigest()
        (tmp / "conftest.py").write_text("import meter_timm  # noqa: F401  (registers METER)\n")
        cmd = ["-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-k", args.keyword]
        print(f"running timm {timm.__version__}'s test_models.py -k {args.keyword} ...", flush=True)
        start = time.perf_counter()
        env = dict(os.environ, COLUMNS="1000")  # pytest cuts summary lines at the terminal width
        proc = subprocess.run(
            [sys.executable, *cmd, test_file.name], cwd=tmp, capture_output=True, text=True, env=env
        )
        seconds = time.perf_counter() - start
    out = proc.stdout
    outcomes = re.findall(
        r"^(PASSED|FAILED|ERROR|SKIPPED) test_models\.py::(\w+)\[(.*?)\]", out, re.M
    )
    reasons = re.findall(r"^FAILED test_models\.py::(\w+\[.*?\]) - (.*)$", out, re.M)
    by_test = collections.defaultdict(collections.Counter)
    for outcome, test, _ in outcomes:
        by_test[test][outcome] += 1
    summary = out.strip().splitlines()[-1] if out.strip() else proc.stderr[-500:]
    lines = [
        "# timm's own model tests on METER",
        "",
        f"`python benchmarks/timm_suite.py` on {time.strftime('%Y-%m-%d %H:%M')}: "
        f"`tests/test_models.py` of timm {timm.__version__} (from its PyPI source distribution, "
        f"unmodified, sha256 `{digest[:16]}...`), `pytest -k {args.keyword}`, run from a "
        f"temporary folder whose `conftest.py` imports `meter_timm`; torch "
        f"{__import__('torch').__version__}; {seconds:.0f} s.",
        "",
        f"pytest: `{summary}` (exit code {proc.returncode})",
        "",
        "| test | passed | failed | skipped |",
        "|---|---|---|---|",
    ]
    for test, counts in by_test.items():
        lines.append(
            f"| `{test}` | {counts['PASSED']} | {counts['FAILED'] + counts['ERROR']} | "
            f"{counts['SKIPPED']} |"
        )
    if reasons:
        lines += ["", "Failures (first line of each error):", ""]
        lines += [f"- `{case}`: {reason}" for case, reason in reasons]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"written: {args.out}")
    return 0 if outcomes else 1


if __name__ == "__main__":
    sys.exit(main())
