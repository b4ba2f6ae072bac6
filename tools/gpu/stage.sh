#!/usr/bin/env bash
# On the GPU host, once per transferred part: keep it outside the working copy (which a new copy replaces).
#   usage: tools/gpu/stage.sh .whl/partNN [.whl/extra]
set -euo pipefail
mkdir -p /root/stage
for p in "$@"; do cp -r "$p" /root/stage/; done
ls /root/stage | tr '\n' ' '; echo
du -sh /root/stage
