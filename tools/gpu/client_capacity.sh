#!/usr/bin/env bash
# On a GPU host's idle cores: the client-capacity table at the shapes users run (benchmarks/client_capacity.py
# --shapes), from one client process and from N. Needs only ctxkit's light dependencies (no vLLM): the carried
# .whl/extra and .whl/client (pydantic, taken from the wheelhouse) beside the image's numpy, pandas and aiohttp.
#   usage: tools/gpu/client_capacity.sh [WORKERS] [SECONDS] [SHAPES]   (the record: $OUT/client-capacity-gpu-host.md)
set -euo pipefail
workers=${1:-4}; seconds=${2:-10}; shapes=${3:-4096/256,16384/512,131072/1024}
python3 -m pip install -q --no-index --find-links .whl/extra --find-links .whl/client pydantic pyyaml \
  prometheus-client psutil tqdm jinja2 nvidia-ml-py
export CTXKIT_GIT_COMMIT=$(cat tools/gpu/COMMIT) CTXKIT_ALLOW_SIMULATED_BACKEND=1 PYTHONUNBUFFERED=1
nproc; nvidia-smi -L || true
python3 benchmarks/client_capacity.py --shapes "$shapes" --workers "$workers" \
  --seconds "$seconds" --max-rate 1600 --record "${OUT:-/tmp}/client-capacity-gpu-host.md"
