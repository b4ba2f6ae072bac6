"""The environment variables ctxkit reads, in one place (the bottom layer: it imports nothing)."""

HOME = "CTXKIT_HOME"                       # the folder holding params/, notebooks/, templates/ (default: the package's)
RUNS_DIR = "CTXKIT_RUNS_DIR"               # where plain-papermill runs create their folders
BATCH = "CTXKIT_BATCH"                     # "1": a headless run (no widgets; progress as plain lines)
PID_REGISTRY = "CTXKIT_PID_REGISTRY"       # a file where every started server's process group is appended
ALLOW_SIMULATED = "CTXKIT_ALLOW_SIMULATED_BACKEND"   # "1": the simulated backend may run (it says so everywhere)
VLLM_PYTHON = "CTXKIT_VLLM_PYTHON"         # run vLLM servers with another environment's Python
GIT_COMMIT = "CTXKIT_GIT_COMMIT"           # the commit of code that travelled without .git (GPU hosts)
