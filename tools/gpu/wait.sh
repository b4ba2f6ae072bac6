#!/usr/bin/env bash
# Wait up to SECONDS for a run started by run.sh and print its last lines. When it has ended (succeeded or not),
# pack the newest run folder under /root/runs and the command's log into $OUT/NAME.tar.gz (the device returns a
# few files only). Call it again within 30 s of the previous call's end, or the machine goes back.
set -uo pipefail
name=$1; limit=${2:-540}
for _ in $(seq 1 "$limit"); do [ -f "/root/runs/$name.rc" ] && break; sleep 1; done
tail -n 40 "/root/runs/$name.log"
if [ -f "/root/runs/$name.rc" ]; then
  echo "rc=$(cat /root/runs/$name.rc)"
  run=$(ls -td /root/runs/*/ 2>/dev/null | head -n 1)
  tar czf "$OUT/$name.tar.gz" -C /root/runs "$name.log" ${run:+"$(basename "$run")"} && ls -la "$OUT"
else
  echo "still running"
fi
