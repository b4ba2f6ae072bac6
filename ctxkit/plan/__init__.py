"""Predict, then verify: a model of vLLM instances fed by one GPU's measurements, and the placement plan it gives.

- queueing: closed forms where the truth is known (M/M/k response times), to check the model against.
- costs: the calibration file (what one step of the engine costs, KV capacity, KV transfer, the server settings
  those hold for) and the least-squares fits that make it from measurements.
- engine: a discrete-event model (simpy) of one vLLM instance's scheduler: token budget, chunked prefill,
  max_num_seqs, KV capacity with preemption.
- placements: aggregated replicas and xPyD pools on that model, and the goodput each serves at an SLO.
- planner: every placement of N GPUs, its predicted goodput per GPU with an interval from the calibration's spread.
This package imports nothing from the measuring layers: a plan runs anywhere from a calibration file.
"""
