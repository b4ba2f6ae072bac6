# Source on the GPU host before running ctxkit: vLLM from /root/site, ctxkit from this working copy.
export PYTHONPATH=/root/site:$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}
export VLLM_USE_FLASHINFER_SAMPLER=0          # flashinfer is not in the wheelhouse
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1   # never NVLink multicast
export CTXKIT_GIT_COMMIT=${CTXKIT_GIT_COMMIT:-$(cat "$(dirname "${BASH_SOURCE[0]}")/COMMIT" 2>/dev/null || echo unknown)}
