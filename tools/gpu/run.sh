#!/usr/bin/env bash
# On an air-gapped GPU host: ctxkit commands in the background, one after another, in their own process session,
# so they outlive the shell that started them (a dropped SSH session, say). Commands are separated by a lone '+';
# each runs whatever the one before did. They run from a private copy of the working tree (so the copy may be
# replaced meanwhile), write their output to /root/runs/<name>.log, and wait.sh packs every run folder they made
# into $OUT when the last one ends.
#   usage: tools/gpu/run.sh NAME ctxkit-args... [+ ctxkit-args...]   then: tools/gpu/wait.sh NAME SECONDS
#   e.g.   tools/gpu/run.sh one run e1_latency --profile h100-llama8b + run e2_concurrency --profile h100-llama8b
set -euo pipefail
name=$1; shift
src=/root/src/$name
mkdir -p /root/runs "$src"
tar cf - --exclude=./.whl --exclude=./.venv --exclude=./.git . | tar xf - -C "$src"
cd "$src"
source tools/gpu/env.sh
script="rc=0"; cmd=""
flush() { [ -n "$cmd" ] && script+="; python3 -m ctxkit.cli --runs-dir /root/runs$cmd >> /root/runs/$name.log 2>&1 || rc=\$?"; cmd=""; }
# each argument quoted as it came (%q): bash -c reads the script again, and --set 'parts=[a, b]' must stay one word
for arg in "$@"; do if [ "$arg" = "+" ]; then flush; else printf -v q ' %q' "$arg"; cmd+=$q; fi; done
flush
: > /root/runs/$name.log; rm -f /root/runs/$name.rc   # before it starts: wait.sh must find it at once
touch /root/runs/$name.start                         # wait.sh packs the run folders newer than this
setsid nohup bash -c "$script; echo \$rc > /root/runs/$name.rc" > /dev/null 2>&1 < /dev/null &
echo "started $name from $src (commit $CTXKIT_GIT_COMMIT)"
