"""Schedulers: the router (aggregated pools and disaggregated prefill -> decode), KV handoff accounting."""
