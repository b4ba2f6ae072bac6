#!/usr/bin/env bash
# On a one-GPU host after install.sh: issue 30's evidence at this commit. The aggregated goodput search twice on one
# compiled server at 4,096 / 256 (TTFT 2,500 ms, TPOT 25 ms), then twice at 2,048 / 128 (TTFT 1,000 ms, TPOT 50 ms),
# in the background (about 20 minutes), then waits up to SECONDS for it; wait.sh waits again and packs the runs.
#   usage: tools/gpu/one_gpu_repeat.sh [SECONDS]      then, if it is still running: tools/gpu/wait.sh repeat SECONDS
set -euo pipefail
here=$(dirname "$0")
"$here/run.sh" repeat run e4_goodput --profile h100-llama8b -p params/gpu/e4-repeat-h100.yaml \
  + run e4_goodput --profile h100-llama8b -p params/gpu/e4-repeat-2048-h100.yaml
"$here/wait.sh" repeat "${1:-480}"
