#!/usr/bin/env bash
# Wait up to SECONDS for the commands run.sh started and print their last lines. When they have ended (succeeded
# or not), pack every run folder they made under /root/runs and their log into $OUT/NAME.tar.gz; when they are
# still running at the limit, pack what they have written so far into $OUT/NAME.partial.tar.gz (a host reclaimed
# meanwhile keeps nothing: take what there is).
set -uo pipefail
name=$1; limit=${2:-540}
if [ ! -f "/root/runs/$name.log" ]; then
  echo "no run '$name' on this machine: it is a fresh one (the last was given back); nothing to wait for" >&2
  exit 3
fi
for _ in $(seq 1 "$limit"); do [ -f "/root/runs/$name.rc" ] && break; sleep 1; done
tail -n 40 "/root/runs/$name.log"
# run folders are /root/runs/<experiment>/<run id>: the ones made since run.sh started (not their experiment's
# folder, which would carry every earlier run of that experiment on this machine along)
runs=$(cd /root/runs && find . -mindepth 2 -maxdepth 2 -type d -newer "$name.start" -printf '%P\n')
if [ -f "/root/runs/$name.rc" ]; then
  echo "rc=$(cat /root/runs/$name.rc)"
  tar czf "$OUT/$name.tar.gz" -C /root/runs "$name.log" $runs && ls -la "$OUT"
else
  echo "still running; what it has so far: $name.partial.tar.gz"
  tar czf "$OUT/$name.partial.tar.gz" -C /root/runs "$name.log" $runs 2>/dev/null
fi
