#!/usr/bin/env bash
# Wait up to SECONDS for a run started by run.sh; print its last lines; when it has ended, pack its run folder into
# $OUT/NAME.tar.gz (the device returns a few files only).
set -uo pipefail
name=$1; limit=${2:-540}
for _ in $(seq 1 "$limit"); do [ -f "/root/runs/$name.rc" ] && break; sleep 1; done
tail -n 40 "/root/runs/$name.log"
if [ -f "/root/runs/$name.rc" ]; then
  echo "rc=$(cat /root/runs/$name.rc)"
  run=$(tail -n 1 "/root/runs/$name.log")
  [ -d "$run" ] && tar czf "$OUT/$name.tar.gz" -C "$(dirname "$run")" "$(basename "$run")" && ls -la "$OUT"
else
  echo "still running"
fi
