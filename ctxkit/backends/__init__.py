"""Serving backends: VLLMServer (managed real vLLM), Endpoint (attach to a running server),
AttachedTopology (attach to a deployment of several instances), Simulated (opt-in)."""
from ctxkit.backends.base import BackendError, BackendUnavailable, ServerDied, ServerStartTimeout, ServingBackend
from ctxkit.backends.endpoint import Endpoint
from ctxkit.backends.simulated import SIMULATION_ENV, Simulated, simulation_allowed
from ctxkit.backends.topology import AttachedTopology, TopologyError
from ctxkit.backends.vllm_server import VLLMServer, vllm_available

__all__ = [
    "BackendError", "BackendUnavailable", "ServerDied", "ServerStartTimeout", "ServingBackend",
    "Endpoint", "AttachedTopology", "TopologyError", "Simulated", "SIMULATION_ENV", "simulation_allowed", "VLLMServer", "vllm_available",
]
