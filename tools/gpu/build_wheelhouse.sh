#!/usr/bin/env bash
# On a machine with package-index access: the wheels a GPU host without network needs, cut in parts of PART_MB
# (default 26 MiB) for transfers that limit a file's size; stage.sh gathers them on the host. vLLM 0.24.0 and its pins for Python 3.12 beside torch 2.11 (the host has
# torch), NIXL for NixlConnector, and ctxkit's own pure-Python dependencies under OUT/extra.
#   usage: tools/gpu/build_wheelhouse.sh OUT [--ray] -> OUT/part00.. OUT/partNN, OUT/extra/*.whl
#   --ray: also Ray (ctxkit[ray], the Ray launcher) and its dependencies, as OUT/ray00.. (a few more parts)
set -euo pipefail
out=${1:?usage: build_wheelhouse.sh OUT [--ray]}
case "$out" in -*) echo "usage: build_wheelhouse.sh OUT [--ray] (OUT first)" >&2; exit 2;; esac
here=$(cd "$(dirname "$0")" && pwd)
plats=()
for n in 39 35 34 31 28 27 26 24 17; do plats+=(--platform "manylinux_2_${n}_x86_64"); done
plats+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
work=$(mktemp -d)
pins="$(grep -v '^#' "$here/vllm-0.24.0-py312-torch2.11.txt") nixl==1.5.1 nixl-cu13==1.5.1"
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plats[@]}" \
  -d "$work/w" $pins
mkdir -p "$out/extra"
rm -f "$out"/part?? "$out"/ray??          # a rebuild into the same folder: install.sh concatenates every part
tar cf - -C "$work/w" . | split -b "${PART_MB:-26}m" -d - "$out/part"
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${plats[@]}" \
  --platform any -d "$out/extra" "papermill>=2.6" "nbconvert>=7.16" "nbformat>=5.10" "ipykernel>=6.29" \
  "ipywidgets>=8.1" "nvidia-ml-py>=12.535" "pyyaml>=6.0" "prometheus-client>=0.20" "psutil>=5.9" "tqdm>=4.66" \
  "jinja2>=3.1" "jupytext>=1.16" "simpy>=4.1"
if [ "${2:-}" = "--ray" ]; then
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${plats[@]}" \
    --platform any -d "$work/ray" "ray==2.60.0"      # the Ray the 2026-12-06 packet ran
  tar cf - -C "$work/ray" . | split -b "${PART_MB:-26}m" -d - "$out/ray"
fi
rm -rf "$work"
ls -la "$out" "$out/extra" | tail -5
