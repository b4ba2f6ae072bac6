"""Load generation: token-exact workloads, arrival processes, the async streaming client."""
