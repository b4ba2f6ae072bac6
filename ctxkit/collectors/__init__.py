"""Collectors: latency (client-side), server metrics (Prometheus), GPU (NVML), KV transfer."""
