#!/usr/bin/env bash
# One GPU session of meter-timm on a bare machine that reaches no package registry.
#
#   bash benchmarks/gpu_session.sh prepare   # here, with registry access: wheels into .gpu_wheels/
#   bash benchmarks/gpu_session.sh run       # there, in a copy of the repository (with .gpu_wheels/)
#
# "prepare" downloads the wheels the GPU machine lacks (mmengine, mmcv-lite and their small
# dependencies, timm) for CPython 3.12 on x86-64 Linux and builds the project and the example
# plugin. "run" installs them into /tmp/site, runs benchmarks/gpu_check.py (<= 5 minutes) and its
# --compile-report (<= 140 s of compiling), and copies the reports and logs to $OUT (or results/).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu_wheels

case "${1:-}" in
prepare)
    rm -rf "$WHEELS"
    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" \
        mmengine==0.10.7 mmcv-lite==2.2.0 addict yapf termcolor platformdirs timm==1.0.31
    python -m pip wheel --no-deps -w "$WHEELS" . plugins/meter_timm_quantile
    ls "$WHEELS"
    ;;
run)
    [ -d "$WHEELS" ] || { echo "no $WHEELS/: run 'bash $0 prepare' first and carry it" >&2; exit 2; }
    out="${OUT:-results}"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
    status=0
    timeout 320 python3 benchmarks/gpu_check.py 2>&1 | tee "$out/gpu_check.log" || status=$?
    [ "$out" = results ] || cp results/gpu.md "$out/" || status=$?
    timeout 160 python3 benchmarks/gpu_check.py --compile-report 2>&1 \
        | tee "$out/gpu_compile.log" || status=$?
    [ "$out" = results ] || cp results/gpu_compile.md "$out/" || status=$?
    exit "$status"
    ;;
*)
    echo "usage: bash $0 prepare|run" >&2
    exit 2
    ;;
esac
