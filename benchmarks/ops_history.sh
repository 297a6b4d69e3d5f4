#!/usr/bin/env bash
# Operations SelectivityLoss adds to a METER xxs step (benchmarks/count_ops.py, today's script) on
# the code of each GPU run and on this commit: writes results/ops_history.md.
#     bash benchmarks/ops_history.sh
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A LABEL=(
  [fada3e6]="code of the first GPU run (results/gpu_logs/gpu_first_run_2026-11-27.md)"
  [b6e4a39]="code of the second GPU run (results/gpu.md)"
)
out=results/ops_history.md
{
  echo "# Operations the selectivity loss adds, by code version"
  echo
  echo "\`bash benchmarks/ops_history.sh\`: \`benchmarks/count_ops.py\` of $(git rev-parse --short HEAD) run on each version of the package."
  for commit in fada3e6 b6e4a39 HEAD; do
    tree=$(mktemp -d)
    git worktree add --detach -q "$tree" "$commit"
    echo
    echo "## $(git rev-parse --short "$commit"): ${LABEL[$commit]:-this commit}"
    echo
    echo '```'
    (cd benchmarks && PYTHONPATH="$tree" python count_ops.py 2>/dev/null)
    echo '```'
    git worktree remove --force "$tree"
  done
} > "$out"
echo "written: $out"
