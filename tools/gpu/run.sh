#!/usr/bin/env bash
# On the GPU host: one ctxkit command in the background, in its own process session (the device ends a call's
# processes when the call returns, except those that started a session of their own), so it may outlast one call.
# It runs from a private copy of the working tree (each call replaces the working copy), writes its output to
# /root/runs/<name>.log, and wait.sh packs its run folder into $OUT when it ends.
#   usage: tools/gpu/run.sh NAME ctxkit-args...      then: tools/gpu/wait.sh NAME SECONDS (within 30 s of each call)
set -euo pipefail
name=$1; shift
src=/root/src/$name
mkdir -p /root/runs "$src"
tar cf - --exclude=./.whl --exclude=./.venv --exclude=./.git . | tar xf - -C "$src"
cd "$src"
source tools/gpu/env.sh
: > /root/runs/$name.log; rm -f /root/runs/$name.rc   # before it starts: wait.sh must find it at once
setsid nohup bash -c "python3 -m ctxkit.cli --runs-dir /root/runs $* > /root/runs/$name.log 2>&1; echo \$? > /root/runs/$name.rc" \
  > /dev/null 2>&1 < /dev/null &
echo "started $name from $src (commit $CTXKIT_GIT_COMMIT)"
