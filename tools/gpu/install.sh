#!/usr/bin/env bash
# On the GPU host, after every part is staged: vLLM and NIXL into /root/site beside the host's torch (no deps: the
# pins are complete), then whatever ctxkit needs that the image lacks, resolved against what it has.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat /root/stage/part* | tar xf - -C "$tmp"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site "$tmp"/*.whl
rm -f "$tmp"/*.whl
python3 -m pip install -q --no-index --find-links /root/stage/extra papermill nbconvert nbformat ipykernel ipywidgets \
  nvidia-ml-py pyyaml prometheus-client psutil tqdm jinja2 jupytext simpy
if ls /root/stage/ray?? >/dev/null 2>&1; then   # staged with build_wheelhouse.sh --ray: the Ray launcher's extra
  cat /root/stage/ray?? | tar xf - -C "$tmp"
  python3 -m pip install -q --no-index --find-links "$tmp" ray
  python3 -c "import ray; print('ray', ray.__version__)"
fi
source "$(dirname "$0")/env.sh"
python3 -c "import torch, vllm, nixl, papermill, ctxkit; print('torch', torch.__version__, 'vllm', vllm.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count())"
python3 -m ipykernel install --sys-prefix --name ctxkit --display-name "Python (ctxkit)" >/dev/null
