#!/usr/bin/env bash
# On the GPU host: one ctxkit command in the background (it may outlast one device call), its output in
# /root/runs/<name>.log, and its run folder packed into $OUT when it ends.
#   usage: tools/gpu/run.sh NAME ctxkit-args...      then: tools/gpu/wait.sh NAME SECONDS
set -euo pipefail
name=$1; shift
source "$(dirname "$0")/env.sh"
mkdir -p /root/runs
nohup bash -c "python3 -m ctxkit.cli --runs-dir /root/runs $* > /root/runs/$name.log 2>&1; echo \$? > /root/runs/$name.rc" \
  > /dev/null 2>&1 &
echo "started $name"
