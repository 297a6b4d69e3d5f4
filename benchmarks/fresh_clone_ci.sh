#!/usr/bin/env bash
# CI as CI runs it: a fresh clone of this repository's HEAD beside ../shared (when there is one),
# then `bash .ci/run` in it; writes the run's summary to results/ci_run.md. The clone's editable
# install replaces this checkout's, which is reinstalled at the end.
#     bash benchmarks/fresh_clone_ci.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
clone="$(dirname "$repo")/ci-fresh-clone"  # beside this checkout, so ../shared is found the same way
rm -rf "$clone"
git clone -q "$repo" "$clone"
commit=$(git -C "$clone" rev-parse --short HEAD)
log=$(mktemp)
start=$(date +%s)
set +e
(cd "$clone" && bash .ci/run) 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
seconds=$(( $(date +%s) - start ))
python -m pip install --quiet -e "$repo[test,export]" -e "$repo/plugins/meter_timm_quantile"
rm -rf "$clone"
{
  echo "# CI on a fresh clone"
  echo
  echo "\`bash benchmarks/fresh_clone_ci.sh\` on $(date -u '+%Y-%m-%d %H:%M') UTC: commit $commit, $(nproc) CPUs,"
  echo "../shared $( [ -d "$(dirname "$repo")/shared" ] && echo present || echo absent); exit code $rc, ${seconds} s wall time (installation included)."
  echo
  echo '```'
  grep -E "^(SKIPPED|FAILED|ERROR)|passed|failed" "$log" | tail -30
  echo '```'
} > "$repo/results/ci_run.md"
rm -f "$log"
echo "written: $repo/results/ci_run.md"
exit "$rc"
