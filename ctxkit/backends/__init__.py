"""Serving backends: VLLMServer (managed real vLLM), Endpoint (attach to a running server), Simulated (opt-in)."""
from ctxkit.backends.base import BackendError, BackendUnavailable, ServerDied, ServerStartTimeout, ServingBackend
from ctxkit.backends.endpoint import Endpoint
from ctxkit.backends.simulated import SIMULATION_ENV, Simulated, simulation_allowed
from ctxkit.backends.vllm_server import VLLMServer, vllm_available

__all__ = [
    "BackendError", "BackendUnavailable", "ServerDied", "ServerStartTimeout", "ServingBackend",
    "Endpoint", "Simulated", "SIMULATION_ENV", "simulation_allowed", "VLLMServer", "vllm_available",
]
