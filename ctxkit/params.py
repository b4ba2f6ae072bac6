"""Typed, layered experiment parameters (pydantic models).

Layers, later wins: the models' defaults -> params/<experiment>.yaml -> a profile (params/profiles/<name>.yaml,
default `cpu-tiny`) -> parameter files in order -> `--set key=value` (dotted keys, YAML values). An unknown key or
a wrong type fails before anything starts, naming the layer it came from, the dotted key and what is accepted;
a value rule (a bound, lengths that exceed the context) is checked on the merged result and names the layer that
last set the key. A profile may hold sections named after experiments; only the running experiment's applies.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ctxkit import deployment
from ctxkit.workspace import resources_root

DEFAULT_PROFILE = "cpu-tiny"


class ParamError(ValueError):
    """Invalid parameters: raised before any process starts."""


# --------------------------------------------------------------------------------------------------------
# Parameter models: strict types (no "3" for 3, no true for 1; an int is accepted for a float), unknown keys
# refused, value rules as field constraints and validators. Errors are turned into dotted messages below.
# --------------------------------------------------------------------------------------------------------
class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=False)


class ServerParams(Params):
    """How each vLLM server is started."""
    model: str = "tiny-llama"                 # a model card (ctxkit/models/<name>) or a folder with config.json
    model_source: Optional[str] = None        # real weights (path or hub id); None: the card with dummy weights
    dtype: str = "bfloat16"
    max_model_len: int = Field(4096, gt=0)
    host: str = "127.0.0.1"
    startup_timeout_s: float = Field(300.0, gt=0)
    kv_cache_space_gib: Optional[float] = Field(1.0, gt=0)   # CPU tier: VLLM_CPU_KVCACHE_SPACE (whole GiB)
    gpu_memory_utilization: Optional[float] = Field(None, gt=0, le=1)
    # --enforce-eager: no torch.compile (and no CUDA graphs on a GPU). The cpu-tiny profile sets it: vllm-cpu 0.32
    # cannot load its own compile cache and compiles anew at every start, 10 of a 38 s start on 2 cores.
    enforce_eager: bool = False
    # CPU priority of the server's processes (nice, 0-19). The cpu-tiny profile sets 10: on 2 cores a vLLM CPU
    # server (its worker and its engine core's polling loop) left the load client runnable but unscheduled for up
    # to 10 s at a time (long prefills sent seconds late, a kept-alive connection gone stale meanwhile); GPU profiles
    # keep 0.
    cpu_nice: int = Field(0, ge=0, le=19)
    extra_args: list[str] = Field(default_factory=list)     # more `api_server` flags, verbatim
    env: dict[str, str] = Field(default_factory=dict)       # e.g. CUDA_VISIBLE_DEVICES

    @field_validator("kv_cache_space_gib")
    @classmethod
    def _whole_gib(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and not float(v).is_integer():
            raise ValueError("must be a whole number of GiB (vLLM reads VLLM_CPU_KVCACHE_SPACE as an integer)")
        return v

    @model_validator(mode="after")
    def _override_holds_one_request(self) -> "ServerParams":
        """A KV cache held to N blocks (--num-gpu-blocks-override) must hold one request of max_model_len, or vLLM
        refuses to start after loading the model (minutes on a GPU). Blocks of 128 tokens (vllm-cpu's default, the
        largest) are assumed unless --block-size says otherwise. Caught here: E5's CPU-sized 128-block cache
        carried into a 131,072-token GPU run."""
        blocks, size = flag_value(self.extra_args, "--num-gpu-blocks-override"), flag_value(self.extra_args, "--block-size")
        if blocks is not None and blocks * (size or 128) < self.max_model_len:
            raise ValueError(f"extra_args --num-gpu-blocks-override {blocks}: {blocks} blocks of "
                             f"{size or 'at most 128'} tokens hold fewer than max_model_len {self.max_model_len} "
                             "tokens, and vLLM would refuse to start; raise the blocks, lower max_model_len, or set "
                             "server.extra_args: [] for the device's own cache")
        return self


def flag_value(args: list[str], name: str) -> Optional[int]:
    """The integer value of `name` in a command line (`--x N` or `--x=N`; the last one, as argparse takes it), None
    when absent or not a whole number."""
    found: Optional[int] = None
    for i, a in enumerate(args):
        value = args[i + 1] if a == name and i + 1 < len(args) else a.split("=", 1)[1] if a.startswith(name + "=") else None
        if value is not None:
            found = int(value) if value.isascii() and value.isdigit() else None
    return found


class ExperimentParams(Params):
    """Parameters every experiment has."""
    seed: int = 0
    backend: Literal["vllm", "endpoint", "topology", "simulated"] = "vllm"
    endpoint_url: Optional[str] = None        # backend=endpoint: an OpenAI-compatible server already running
    topology_file: Optional[str] = None       # backend=topology: a deployment's entry point and instances (YAML)
    request_timeout_s: float = Field(120.0, gt=0)
    server: ServerParams = Field(default_factory=ServerParams)

    @model_validator(mode="after")
    def _endpoint_has_url(self) -> "ExperimentParams":
        if self.backend == "endpoint" and not self.endpoint_url:
            raise ValueError("backend=endpoint needs endpoint_url")
        if self.backend == "topology":
            if not self.topology_file:
                raise ValueError("backend=topology needs topology_file (docs/scale-out.md)")
            # Absolute, as dataset_path: the notebook runs in the run folder. The file's own form is checked here,
            # whether its URLs answer just before the run (ctxkit.backends.topology).
            self.topology_file = str(Path(self.topology_file).expanduser().resolve())
            try:
                deployment.load(self.topology_file)
            except deployment.TopologyFileError as exc:
                raise ValueError(f"topology_file: {exc}") from None
        return self

    def _fits(self, what: str, longest: int, extra: int, extra_name: str) -> None:
        if longest + extra > self.server.max_model_len:
            raise ValueError(f"{what}: {longest} + {extra_name} {extra} exceeds server.max_model_len "
                             f"{self.server.max_model_len}")


class E0Params(ExperimentParams):
    """E0 smoke and reproducibility: one request set, twice, on two freshly started servers."""
    prompt_lens: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [16, 64, 256, 1024], min_length=1)
    max_tokens: int = Field(16, ge=2)         # TPOT needs two tokens
    sampling_temperature: float = Field(0.8, gt=0)   # the seeded-sampling half of the set (the other half is greedy)
    repeats: int = Field(2, ge=1)             # servers started one after the other; 2 = reproducibility check

    @model_validator(mode="after")
    def _lengths_fit(self) -> "E0Params":
        if self.backend == "topology":
            raise ValueError("e0_smoke compares two freshly started servers: an attached deployment (backend "
                             "topology) is started by someone else; use backend vllm")
        self._fits("prompt_lens", max(self.prompt_lens), self.max_tokens, "max_tokens")
        return self


class WorkloadParams(Params):
    """What is sent: token-exact prompts (see ctxkit.load.workloads)."""
    dataset: Literal["random", "sharegpt", "trace"] = "random"
    dataset_path: Optional[str] = Field(None, validate_default=True)   # sharegpt JSON or trace JSONL
    num_prompts: int = Field(100, ge=1)
    input_len: int = Field(256, ge=1)         # mean input length (after any shared prefix)
    input_dist: Literal["fixed", "uniform", "normal", "lognormal"] = "fixed"
    input_std: float = Field(0.0, ge=0)       # normal / lognormal
    range_ratio: float = Field(0.0, ge=0, lt=1)   # uniform: [len x (1 - r), len x (1 + r)] (vLLM's random-range-ratio)
    output_len: int = Field(32, ge=1)
    output_dist: Literal["fixed", "uniform", "normal", "lognormal"] = "fixed"
    output_std: float = Field(0.0, ge=0)
    prefix_len: int = Field(0, ge=0)          # shared-prefix groups: tokens of each shared prefix
    num_prefixes: int = Field(1, ge=1)
    trace_start_ms: float = Field(0.0, ge=0)  # trace: the window's start, ms after the trace's first row
    trace_duration_ms: Optional[float] = Field(None, gt=0)   # trace: the window's length (null: to the end)
    trace_speedup: float = Field(1.0, gt=0)   # trace: timestamps divided by this (2 = twice the trace's rate)

    @field_validator("dataset_path")
    @classmethod
    def _file_given(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        dataset = info.data.get("dataset", "random")
        if dataset != "random" and not v:
            raise ValueError(f"dataset={dataset} needs a file (ShareGPT JSON or trace JSONL)")
        if not v or dataset == "random":          # a random workload reads no file (a stale path stays inert)
            return v
        # Absolute, and checked here: the notebook runs inside the run folder, where a path relative to the user's
        # directory names nothing, and a missing file must not cost a server start (it did, on a GPU, 2026-11-28).
        path = Path(v).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"no such file: {v} (relative paths are taken from the directory ctxkit starts in)")
        return str(path)

    def longest(self) -> tuple[int, int]:
        """The longest prompt and output a random workload can draw (files are checked when read)."""
        inp = self.prefix_len + (int(self.input_len * (1 + self.range_ratio)) if self.input_dist == "uniform"
                                 else self.input_len)
        out = int(self.output_len * (1 + self.range_ratio)) if self.output_dist == "uniform" else self.output_len
        return inp, out


class LoadParams(Params):
    """How it is sent (see ctxkit.load.arrivals)."""
    arrival: Literal["poisson", "gamma", "constant", "trace", "concurrency"] = "poisson"
    request_rate: Optional[float] = Field(None, gt=0)   # req/s; null = all at once
    burstiness: float = Field(1.0, gt=0)      # gamma shape (1 = Poisson)
    concurrency: int = Field(1, ge=1)         # arrival=concurrency: closed-loop clients
    max_concurrency: Optional[int] = Field(None, ge=1)   # cap on requests in flight (open loop)
    warmup_requests: int = Field(2, ge=0)
    duration_s: Optional[float] = Field(None, gt=0)      # stop sending after this long
    workers: int = Field(1, ge=1)             # client processes sharing the schedule (ctxkit.load.workers)

    @model_validator(mode="after")
    def _workers_fit(self) -> "LoadParams":
        if self.workers > 1 and self.max_concurrency is not None:
            raise ValueError("load.max_concurrency caps requests in flight in one process: with load.workers > 1 "
                             "it is not supported")
        if self.workers > 1 and self.arrival == "concurrency" and self.concurrency < self.workers:
            raise ValueError(f"load.concurrency {self.concurrency} < load.workers {self.workers}: each worker "
                             "needs at least one client")
        return self


class SLOParams(Params):
    """Per-request objectives in ms (null = none); a failed request misses every SLO."""
    ttft_ms: Optional[float] = Field(None, gt=0)
    tpot_ms: Optional[float] = Field(None, gt=0)
    e2e_ms: Optional[float] = Field(None, gt=0)


def slo_of_params(slo: SLOParams) -> Optional[SLOParams]:
    return slo if (slo.ttft_ms or slo.tpot_ms or slo.e2e_ms) else None


def _workload_fits(p: ExperimentParams, w: WorkloadParams, load: Optional[LoadParams]) -> None:
    if load is not None and load.arrival == "trace" and w.dataset != "trace":
        raise ValueError("load.arrival=trace needs workload.dataset=trace")
    if w.dataset == "random":
        inp, out = w.longest()
        p._fits("workload: input length", inp, out, "output")


class BenchParams(ExperimentParams):
    """`ctxkit bench`: one workload on one arrival process against one backend."""
    workload: WorkloadParams = Field(default_factory=WorkloadParams)
    load: LoadParams = Field(default_factory=LoadParams)
    slo: SLOParams = Field(default_factory=SLOParams)
    metrics_interval_s: Optional[float] = Field(None, gt=0)   # also scrape /metrics every this many seconds
    search: Optional["SearchParams"] = None   # set: search the goodput rate (`--search rate`) instead of one window
    calibrate: Optional["CalibrateParams"] = None   # set: measure the placement model's costs (`--calibrate`)

    @model_validator(mode="after")
    def _fits_server(self) -> "BenchParams":
        # a trace carries its own timestamps: replay on them unless an arrival process was chosen (as AIPerf
        # does); a default Poisson stream would send a 30-second trace in a few seconds without a word
        chosen = {"arrival", "request_rate", "burstiness", "concurrency"} & self.load.model_fields_set
        if self.workload.dataset == "trace" and not chosen:
            self.load.arrival = "trace"
        _workload_fits(self, self.workload, self.load)
        if self.search is not None and slo_of_params(self.slo) is None:
            raise ValueError("a goodput search needs an SLO: --goodput ttft:MS tpot:MS (slo.ttft_ms, slo.tpot_ms)")
        if self.search is not None:
            _search_arrival(self.search, self.workload)
        if self.calibrate is not None:
            c = self.calibrate
            self._fits("calibrate.prefill_lens", max(c.prefill_lens), 2, "its 2 output tokens")
            self._fits("calibrate.decode_lens", max(c.decode_lens), c.output_len, "calibrate.output_len")
        return self


class E1Params(ExperimentParams):
    """E1 latency vs prompt length: N requests per length, one at a time (no queueing), fixed output length."""
    prompt_lens: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [64, 128, 256, 512, 1024, 2048], min_length=1)
    requests_per_len: int = Field(5, ge=1)
    output_len: int = Field(32, ge=2)         # TPOT needs two tokens
    warmup_requests: int = Field(2, ge=0)
    gpu_sample_interval_s: float = Field(0.5, gt=0)

    @model_validator(mode="after")
    def _lengths_fit(self) -> "E1Params":
        if self.backend == "topology":
            raise ValueError("e1_latency reads one server's histograms beside each request: backend topology is "
                             "not taken yet (e2_concurrency, e4_goodput and ctxkit bench are); use backend endpoint "
                             "with the deployment's entry point")
        self._fits("prompt_lens", max(self.prompt_lens), self.output_len, "output_len")
        return self


class E2Params(ExperimentParams):
    """E2 load sweep: closed-loop concurrency levels and/or Poisson rates, one server, SLO goodput per point."""
    concurrency_levels: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    request_rates: list[Annotated[float, Field(gt=0)]] = Field(default_factory=list)   # Poisson points (req/s)
    requests_per_point: int = Field(32, ge=1)
    duration_s: Optional[float] = Field(None, gt=0)          # per point: stop sending after this long
    workers: int = Field(1, ge=1)                            # client processes per point (load.workers)
    workload: WorkloadParams = Field(default_factory=lambda: WorkloadParams(input_len=256, output_len=32))
    slo: SLOParams = Field(default_factory=lambda: SLOParams(ttft_ms=1000.0, tpot_ms=100.0))
    warmup_requests: int = Field(4, ge=0)
    metrics_interval_s: Optional[float] = Field(1.0, gt=0)
    gpu_sample_interval_s: float = Field(0.5, gt=0)
    trace_speedups: list[Annotated[float, Field(gt=0)]] = Field(default_factory=list)   # trace replay points

    @model_validator(mode="after")
    def _something_to_sweep(self) -> "E2Params":
        if self.workload.dataset == "trace" and "trace_speedups" not in self.model_fields_set:
            self.trace_speedups = [self.workload.trace_speedup]   # a trace replays on its timestamps by default
        if self.trace_speedups and self.workload.dataset != "trace":
            raise ValueError("trace_speedups replay a trace: they need workload.dataset=trace and its file")
        if not self.concurrency_levels and not self.request_rates and not self.trace_speedups:
            raise ValueError("concurrency_levels, request_rates and trace_speedups are all empty: nothing to sweep")
        _workload_fits(self, self.workload, None)
        return self


class E3Variant(Params):
    """One setting of the KV path for E3's variant sweep: the disaggregated pool started again with it."""
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    block_size: Optional[int] = Field(None, ge=1)         # vLLM --block-size (tokens per KV block)
    kv_buffer_device: Optional[Literal["cpu", "cuda"]] = None   # NixlConnector
    connector_extra: dict[str, Any] = Field(default_factory=dict)   # merged over E3's, into kv_connector_extra_config
    env: dict[str, str] = Field(default_factory=dict)     # e.g. UCX_TLS for NIXL
    extra_args: list[str] = Field(default_factory=list)   # more server flags


class E3Params(ExperimentParams):
    """E3 aggregated vs disaggregated (xPyD) on one workload, with KV-transfer accounting."""
    connector: Literal["example", "nixl"] = "example"
    prefill_instances: int = Field(1, ge=1)
    decode_instances: int = Field(1, ge=1)
    aggregated_replicas: Optional[int] = Field(None, ge=1)   # null: prefill + decode instances (same resources)
    policy: Literal["round_robin", "least_outstanding"] = "least_outstanding"
    kv_buffer_device: Literal["cpu", "cuda"] = "cpu"   # NixlConnector
    # the connector's kv_connector_extra_config, e.g. {enable_cross_layers_blocks: "True"} for NixlConnector
    connector_extra: dict[str, Any] = Field(default_factory=dict)
    prefill_visible_devices: Optional[str] = None
    decode_visible_devices: Optional[str] = None
    workload: WorkloadParams = Field(default_factory=lambda: WorkloadParams(num_prompts=24, input_len=1024,
                                                                            output_len=32))
    load: LoadParams = Field(default_factory=lambda: LoadParams(arrival="concurrency", concurrency=2))
    slo: SLOParams = Field(default_factory=lambda: SLOParams(ttft_ms=2000.0, tpot_ms=100.0))
    correctness_prompt_lens: list[Annotated[int, Field(ge=2)]] = Field(default_factory=lambda: [100, 300, 700, 1500])
    correctness_max_tokens: int = Field(16, ge=1)
    on_request_error: Literal["continue", "stop"] = "continue"
    gpu_sample_interval_s: float = Field(0.5, gt=0)
    # every server's gauges scraped through each mode's window (e3_server_timeline.csv); null: before and after only
    metrics_interval_s: Optional[float] = Field(0.5, gt=0)
    variants: list[E3Variant] = Field(default_factory=list)   # KV path settings, each a disaggregated pool of its own
    ray: Optional[RayParams] = None           # set: every pool's servers placed through Ray (docs/scale-out.md)
    # backend=topology: the disaggregated arm is the attached deployment of topology_file (prefill and decode
    # instances; `connector` says which vLLM connector it runs); the aggregated arm is this attached aggregated
    # deployment, or, null, a pool ctxkit starts here from `server` (as many replicas as the file's instances).
    # prefill/decode_instances, kv_buffer_device, connector_extra and the visible devices describe ctxkit's own
    # pools: an attached deployment is what its file lists, set up as its operators chose
    aggregated_topology_file: Optional[str] = None

    @model_validator(mode="after")
    def _servers_and_lengths(self) -> "E3Params":
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names) or {"aggregated", "disaggregated"} & set(names):
            raise ValueError(f"variant names must be distinct and not 'aggregated'/'disaggregated': {names}")
        if self.backend == "topology":
            self._attached_arms()
        elif self.backend != "vllm":
            raise ValueError("e3_disagg starts its own vLLM servers or attaches to a disaggregated deployment: "
                             "backend must be vllm or topology")
        elif self.aggregated_topology_file:
            raise ValueError("aggregated_topology_file: the aggregated arm of an attached deployment "
                             "(backend topology); with backend vllm ctxkit starts both arms")
        if self.correctness_prompt_lens:
            self._fits("correctness_prompt_lens", max(self.correctness_prompt_lens), self.correctness_max_tokens,
                       "correctness_max_tokens")
        _workload_fits(self, self.workload, self.load)
        return self

    def _attached_arms(self) -> None:
        """backend=topology: a disaggregated deployment to measure, an aggregated one (or none) to compare."""
        if not deployment.load(self.topology_file or "").disaggregated:
            raise ValueError("e3_disagg with backend topology measures a disaggregated deployment: topology_file "
                             "lists aggregated instances (give its prefill and decode instances)")
        if self.variants or self.ray is not None:
            raise ValueError("e3_disagg with backend topology: variants and ray start pools of ctxkit's own; an "
                             "attached deployment is set up by someone else")
        if self.aggregated_topology_file:
            self.aggregated_topology_file = str(Path(self.aggregated_topology_file).expanduser().resolve())
            try:
                agg = deployment.load(self.aggregated_topology_file)
            except deployment.TopologyFileError as exc:
                raise ValueError(f"aggregated_topology_file: {exc}") from None
            if agg.disaggregated:
                raise ValueError("aggregated_topology_file: the aggregated arm's deployment lists prefill/decode "
                                 "instances (give aggregated ones)")


class RayParams(Params):
    """Place a pool's servers through Ray (`pip install 'ctxkit[ray]'`) instead of as local processes."""
    address: Optional[str] = None             # a running cluster ("auto", "ray://host:10001"); null: a local one
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"   # the placement group's
    cpus_per_server: float = Field(1.0, gt=0)     # Ray refuses a bundle of nothing
    # GPUs each server's bundle holds (its tensor-parallel size); null: as this host's placement would give (none
    # on a host without GPUs, so a driver without GPUs placing onto GPU nodes must say)
    gpus_per_server: Optional[float] = Field(None, ge=0)
    local_num_cpus: Optional[int] = Field(None, ge=1)   # the local cluster's CPUs (null: Ray counts them)
    placement_timeout_s: float = Field(120.0, gt=0)


class TopologyParams(Params):
    """One serving topology: aggregated replicas, or P prefill + D decode instances joined by a KV connector."""
    name: Optional[str] = None                # a label for tables and plots (default: from the shape)
    kind: Literal["aggregated", "disaggregated"] = "aggregated"
    replicas: int = Field(1, ge=1)            # aggregated
    prefill: int = Field(1, ge=1)             # disaggregated
    decode: int = Field(1, ge=1)
    connector: Literal["example", "nixl"] = "example"
    kv_buffer_device: Literal["cpu", "cuda"] = "cpu"   # NixlConnector
    connector_extra: dict[str, Any] = Field(default_factory=dict)   # the connector's kv_connector_extra_config
    prefill_visible_devices: Optional[str] = None
    decode_visible_devices: Optional[str] = None
    policy: Literal["round_robin", "least_outstanding"] = "least_outstanding"
    # this topology's servers only, on top of `server`'s: each arm at its best (NixlConnector's cross-layer blocks
    # need vLLM's V1 model runner, VLLM_USE_V2_MODEL_RUNNER=0, on the disaggregated arm alone; a block size)
    env: dict[str, str] = Field(default_factory=dict)
    extra_args: list[str] = Field(default_factory=list)

    def server_for(self, server: "ServerParams") -> "ServerParams":
        """`server` with this topology's env and extra_args added (its own win)."""
        if not self.env and not self.extra_args:
            return server
        return ServerParams.model_validate({**server.model_dump(), "env": {**server.env, **self.env},
                                            "extra_args": list(server.extra_args) + list(self.extra_args)})

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.kind == "aggregated":
            return f"aggregated x{self.replicas}"
        return f"{self.prefill}P{self.decode}D {self.connector}"


class CalibrateParams(Params):
    """`ctxkit bench --calibrate`: the step costs the placement model needs (ctxkit.plan), measured on one server:
    prompts alone at each length (prefill), then waves of requests decoding together (decode steps)."""
    prefill_lens: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [128, 256, 512, 1024, 1536, 2048], min_length=4)
    prefill_requests: int = Field(4, ge=2)             # per length, one at a time
    # two lengths at least: at one, the requests a step decodes and the KV they read rise together (collinear)
    decode_lens: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [128, 1024], min_length=2)
    decode_batches: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 4, 16], min_length=2)
    output_len: int = Field(32, ge=8)                  # tokens each decode request generates
    # the server's scheduler limits when its flags do not set them (--max-num-seqs, --max-num-batched-tokens);
    # null: vLLM's defaults for the device, and the calibration says they were assumed
    max_num_seqs: Optional[int] = Field(None, ge=1)
    max_num_batched_tokens: Optional[int] = Field(None, ge=1)
    # KV handoffs for the disaggregated placements, where measured elsewhere (E3, a link probe): null predicts
    # aggregated placements only
    handoff_ms: Optional[float] = Field(None, ge=0)
    transfer_gb_per_s: Optional[float] = Field(None, gt=0)
    transfer_source: str = ""


class SearchParams(Params):
    """The goodput search (ctxkit.load.search): bracket by doubling, narrow to `tolerance`, 95% Wilson verdicts."""
    target: float = Field(0.9, gt=0, lt=1)            # SLO attainment a rate must reach
    start_rate: float = Field(1.0, gt=0)              # req/s of the first probe
    tolerance: float = Field(0.05, gt=0, le=1)        # stop when lowest failing / highest passing <= 1 + tolerance
    min_requests: int = Field(40, ge=10)              # scored requests before a probe may stop on a verdict
    max_requests: int = Field(160, ge=10)             # scored requests at most (then the point estimate decides)
    warmup_requests: int = Field(20, ge=0)            # unscored requests at the head of each probe's stream
    # Probes sized by time as well as count: at a high rate 40 requests go by in a second, before a queue that grows
    # shows, and two searches on one server then disagree (docs/validation/search-repeat-cpu.md). null: 3 s and 6 s
    # under Poisson arrivals, 0 on a trace's own timestamps (its window is the probe: sized in rows)
    warmup_s: Optional[float] = Field(None, ge=0)     # ... covering at least this many seconds at the probe's rate
    min_duration_s: Optional[float] = Field(None, ge=0)   # score for at least this long before a verdict stops it
    # probes before the bracket forms only pick a direction: they decide on this many scored requests, without
    # min_duration_s; a converged search's goodput rests on full probes. null: every probe full
    scout_requests: Optional[int] = Field(40, ge=10)
    # ... and (Poisson arrivals) warm up for this share of warmup_s; a scout's pass is measured again in full
    scout_warmup_share: float = Field(1 / 3, gt=0, le=1)
    # a converged search measures its bracket's two ends once more, in random order, after the caps below (two
    # probes more), and says whether their verdicts repeat
    repeat_check: bool = True
    max_probes: int = Field(16, ge=1)                 # per topology and SLO setting
    max_wall_s: float = Field(900.0, gt=0)            # per topology and SLO setting
    drain_s: float = Field(30.0, gt=0)                # wait for requests in flight at most this long
    mode: Literal["joint", "percentile"] = "joint"    # per-request (DistServe) or p<target> of each metric
    lag_bound_ms: float = Field(100.0, gt=0)          # p99 send lag over which a probe is flagged client-paced
    # poisson: a Poisson stream at the probe's rate. trace: the trace's rows on their own timestamps, scaled so that
    # the probe's mean rate is its rate (the search is over the trace's speedup); the default for a trace workload
    arrival: Literal["poisson", "trace"] = "poisson"
    # the servers' gauges scraped through every probe (E4's e4_server_timeline.csv); null: before and after only
    metrics_interval_s: Optional[float] = Field(0.5, gt=0)
    # client processes a probe sends from; a probe whose p99 send lag passes lag_bound_ms is measured again from
    # twice as many, up to max_workers (null: half this host's cores), and never scored
    workers: int = Field(1, ge=1)
    max_workers: Optional[int] = Field(None, ge=1)

    def warmup_seconds(self) -> float:
        return self.warmup_s if self.warmup_s is not None else (3.0 if self.arrival == "poisson" else 0.0)

    def min_duration_seconds(self) -> float:
        return self.min_duration_s if self.min_duration_s is not None else (6.0 if self.arrival == "poisson" else 0.0)

    @model_validator(mode="after")
    def _sizes(self) -> "SearchParams":
        if self.max_requests < self.min_requests:
            raise ValueError(f"max_requests {self.max_requests} < min_requests {self.min_requests}")
        return self


class NamedSLO(SLOParams):
    name: str = "slo"


class E4Params(ExperimentParams):
    """E4 goodput search: the highest Poisson rate each topology serves at the target SLO attainment, per GPU."""
    topologies: list[TopologyParams] = Field(
        default_factory=lambda: [TopologyParams(kind="aggregated", replicas=2),
                                 TopologyParams(kind="disaggregated", prefill=1, decode=1)], min_length=1)
    ray: Optional[RayParams] = None           # set: every topology's servers placed through Ray
    workload: WorkloadParams = Field(default_factory=lambda: WorkloadParams(input_len=512, output_len=32))
    slos: list[NamedSLO] = Field(default_factory=lambda: [NamedSLO(name="default", ttft_ms=500.0, tpot_ms=50.0)],
                                 min_length=1)
    search: SearchParams = Field(default_factory=SearchParams)
    slo_scales: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6])
    warmup_requests: int = Field(4, ge=0)             # per topology, after its servers start (one at a time)
    gpu_sample_interval_s: float = Field(0.5, gt=0)

    @model_validator(mode="after")
    def _servers_and_lengths(self) -> "E4Params":
        if self.backend not in ("vllm", "topology"):
            raise ValueError("e4_goodput starts its own vLLM servers (backend vllm) or searches an attached "
                             "deployment (backend topology); ctxkit bench --search rate measures a running endpoint")
        if any(not (s.ttft_ms or s.tpot_ms or s.e2e_ms) for s in self.slos):
            raise ValueError("slos: every SLO setting needs at least one objective (ttft_ms, tpot_ms or e2e_ms)")
        if len({s.name for s in self.slos}) < len(self.slos):
            raise ValueError("slos: names must differ")
        if len({t.label for t in self.topologies}) < len(self.topologies):
            raise ValueError("topologies: labels must differ (set name)")
        _workload_fits(self, self.workload, None)
        _search_arrival(self.search, self.workload)
        return self


def _search_arrival(search: "SearchParams", workload: WorkloadParams) -> None:
    """A trace is searched over its speedup, on its own timestamps, unless Poisson arrivals were chosen (recorded in
    the resolved parameters either way)."""
    if workload.dataset == "trace" and "arrival" not in search.model_fields_set:
        search.arrival = "trace"
    if search.arrival == "trace" and workload.dataset != "trace":
        raise ValueError("search.arrival=trace replays a trace: it needs workload.dataset=trace and its file")
    if search.arrival == "trace" and workload.trace_speedup != 1.0:
        raise ValueError("workload.trace_speedup: the search over a trace sets the speedup itself (each probe's "
                         "rate); leave it at 1")


class ChunkedSetting(Params):
    """One server setting for E5's chunked-prefill part: a name and the vLLM flags it adds."""
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    extra_args: list[str] = Field(default_factory=list)


def _default_chunked() -> list[ChunkedSetting]:
    return [ChunkedSetting(name="chunk-256", extra_args=["--max-num-batched-tokens", "256"]),
            ChunkedSetting(name="chunk-2048", extra_args=["--max-num-batched-tokens", "2048"]),
            ChunkedSetting(name="unchunked", extra_args=["--no-enable-chunked-prefill", "--max-num-batched-tokens",
                                                         "4096"])]


class E5Params(ExperimentParams):
    """E5 long context, in parts: `capacity` (how many requests of each context length the KV cache holds, against
    predictions), `cost` (TTFT and TPOT against L, fitted), `prefix` (TTFT and prefix-cache hits against the
    shared share of each prompt, cache used and isolated), `chunked` (running decodes' inter-token gaps as long
    prefills arrive, chunked prefill at two budgets and off) and `trace` (a trace on its timestamps)."""
    context_lens: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [448, 1984], min_length=1)
    output_len: int = Field(64, ge=2)                 # tokens each request generates (ignore_eos): its KV grows
    concurrency_factors: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [0.5, 1.0, 1.5, 2.0], min_length=2)   # x the server's own prediction per length
    requests_per_slot: int = Field(2, ge=1)           # a level of concurrency c sends c x this many requests
    capacity_hold: bool = False                       # a level is c requests at once, cancelled once the server has
                                                      # admitted what it will (GPUs: see the module e5_context)
    hold_settle_s: float = Field(5.0, gt=0)           # hold: no new first token for this long = admission is over
    metrics_interval_s: float = Field(0.1, gt=0)      # scrape period: the peak of running requests is sampled
    tolerance: float = Field(0.25, gt=0, lt=1)        # measured capacity within this of the analytical prediction
    parts: list[Literal["capacity", "cost", "prefix", "chunked", "trace"]] = Field(
        default_factory=lambda: ["capacity", "cost", "prefix", "chunked"], min_length=1)
    # part `trace`: a Mooncake-format trace replayed on its timestamps (`--set trace.dataset_path=FILE`, with the
    # window, speedup and request cap of any trace workload); off unless named in parts, as it needs a file
    trace: Optional[WorkloadParams] = None
    gpu_sample_interval_s: float = Field(0.5, gt=0)   # NVML, beside the server's gauges (GPUs only)
    cost_lens: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [128, 512, 1024, 1984])
    cost_batch: int = Field(4, ge=2)                  # the fixed batch (one wave of this many), beside batch 1
    cost_requests: int = Field(5, ge=1)               # per length at batch 1
    cost_output_len: int = Field(32, ge=2)
    prefix_ratios: list[Annotated[float, Field(ge=0, le=0.95)]] = Field(default_factory=lambda: [0.0, 0.5, 0.9],
                                                                       min_length=1)
    prefix_context_len: int = Field(1024, ge=2)      # prompt tokens: the shared prefix is ratio x this
    prefix_requests: int = Field(6, ge=1)             # scored per (ratio, cache arm), after one that fills the cache
    prefix_output_len: int = Field(8, ge=1)
    chunked_settings: list[ChunkedSetting] = Field(default_factory=_default_chunked, min_length=1)
    chunked_decodes: int = Field(4, ge=1)             # running decodes, sent at t = 0
    chunked_decode_len: int = Field(800, ge=2)        # their output tokens: long enough to span every arrival
    chunked_prefills: int = Field(3, ge=1)            # long prefills arriving among them
    chunked_prompt_len: int = Field(1984, ge=1)
    chunked_first_s: float = Field(0.2, ge=0)         # the first arrival, s after the decodes
    chunked_every_s: float = Field(0.4, gt=0)         # between arrivals

    @model_validator(mode="before")
    @classmethod
    def _trace_is_a_trace(cls, data: Any) -> Any:
        """`trace.dataset_path=FILE` alone names a trace: its dataset need not be spelled out (where part trace
        runs or a file is named: a profile's trace window on a run without part trace demands no file)."""
        if isinstance(data, dict) and isinstance(data.get("trace"), dict) and \
                ("trace" in (data.get("parts") or []) or data["trace"].get("dataset_path")):
            data = {**data, "trace": {"dataset": "trace", **data["trace"]}}
        return data

    @model_validator(mode="after")
    def _lengths_and_levels(self) -> "E5Params":
        self._attached_parts()
        if "capacity" in self.parts:
            self._fits("context_lens", max(self.context_lens), self.output_len, "output_len")
            if max(self.concurrency_factors) <= 1.0:
                raise ValueError("concurrency_factors: one factor must exceed 1.0, or no level goes past the capacity")
        if "cost" in self.parts:
            if len(set(self.cost_lens)) < 3:
                raise ValueError("cost_lens: the fit of TTFT to a + bL + cL^2 needs at least 3 distinct lengths")
            self._fits("cost_lens", max(self.cost_lens), self.cost_output_len, "cost_output_len")
        if "prefix" in self.parts:
            self._fits("prefix_context_len", self.prefix_context_len, self.prefix_output_len, "prefix_output_len")
        if "chunked" in self.parts:
            self._fits("chunked_prompt_len", self.chunked_prompt_len, 1, "one output token")
            if len({s.name for s in self.chunked_settings}) < len(self.chunked_settings):
                raise ValueError("chunked_settings: names must be distinct (each names a server's log)")
        if "trace" in self.parts and (self.trace is None or self.trace.dataset != "trace"):
            raise ValueError("part trace replays a trace: set trace.dataset_path to a Mooncake-format JSONL file")
        return self

    def _attached_parts(self) -> None:
        """A server someone else started (backend endpoint, or topology: an attached deployment) takes the parts
        that only send to it; part chunked starts a server per setting, and part capacity reads one server's KV
        cache (a topology of one instance; its startup log, for vLLM's own prediction, only where ctxkit started
        it)."""
        if self.backend == "simulated":
            raise ValueError("e5_context measures vLLM's KV cache and scheduler: backend must be vllm, endpoint or "
                             "topology")
        if self.backend == "vllm":
            return
        if "chunked" in self.parts:
            raise ValueError("e5_context part chunked starts a server per chunked-prefill setting: with backend "
                             f"{self.backend} (a server ctxkit does not start), leave it out of parts")
        if "capacity" in self.parts and self.backend == "topology" and \
                len(deployment.load(self.topology_file or "").instances) != 1:
            raise ValueError("e5_context part capacity reads one server's KV cache: a topology of several "
                             "instances would mix theirs; measure one instance (a topology file that lists it alone)")


BenchParams.model_rebuild()

class E6Params(E4Params):
    """E6 predict, then verify: calibrate the placement model on one server (`calibrate`), predict every placement
    of `plan_gpus` GPUs at the first SLO setting, then search `topologies` live (E4's search, from the prediction)."""
    calibrate: CalibrateParams = Field(default_factory=CalibrateParams)
    plan_gpus: list[Annotated[int, Field(ge=1, le=64)]] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1)
    draws: int = Field(4, ge=0)                         # calibrations drawn for each contender's range

    @model_validator(mode="after")
    def _one_server_and_a_joint_slo(self) -> "E6Params":
        if self.backend != "vllm":
            raise ValueError("e6_plan calibrates a server it starts and searches pools it starts: backend vllm")
        if not (self.slos[0].ttft_ms and self.slos[0].tpot_ms):
            raise ValueError("slos: the plan predicts at the first SLO setting, which needs ttft_ms and tpot_ms")
        self._fits("calibrate.prefill_lens", max(self.calibrate.prefill_lens), 2, "its 2 output tokens")
        self._fits("calibrate.decode_lens", max(self.calibrate.decode_lens), self.calibrate.output_len,
                   "calibrate.output_len")
        return self


EXPERIMENTS: dict[str, type[ExperimentParams]] = {
    "e0_smoke": E0Params,
    "e1_latency": E1Params,
    "e2_concurrency": E2Params,
    "e3_disagg": E3Params,
    "e4_goodput": E4Params,
    "e5_context": E5Params,
    "e6_plan": E6Params,
    "bench": BenchParams,
}


# --------------------------------------------------------------------------------------------------------
# Errors: pydantic's, as one line per problem naming the dotted key
# --------------------------------------------------------------------------------------------------------
VALUE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "value_error", "too_short"}
_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
           "less_than_equal": ("<=", "le")}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _field_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Optional[type[BaseModel]], Any]:
    """(the model holding the last named key of loc, that key's annotation); list indices are skipped."""
    model: Optional[type[BaseModel]] = cls
    annotation: Any = cls
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return model, None
        annotation = field.annotation
        inner = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        nxt = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else \
            (inner[0] if inner else None)
        if part != loc[-1] or nxt is not None:
            model = nxt if nxt is not None else model
    return model, annotation


def _message(cls: type[BaseModel], err: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("int", "float", "str"))))
    key, kind, ctx = _dotted(loc), err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent, _ = _field_at(cls, loc[:-1]) if loc[:-1] else (cls, None)
        prefix = _dotted(loc[:-1])
        accepted = ", ".join(f"{prefix}.{n}" if prefix else n for n in (parent or cls).model_fields)
        return f"unknown parameter {key}; accepted: {accepted}"
    if kind in _BOUNDS:
        symbol, bound = _BOUNDS[kind]
        return f"{key} must be {symbol} {ctx[bound]}"
    if kind == "value_error":
        text = str(ctx.get("error") or err["msg"]).removeprefix("Value error, ")
        return f"{key}: {text}" if key and not text.startswith(key) else text
    if kind == "too_short":
        return f"{key}: needs at least {ctx.get('min_length', 1)} item(s)"
    _, annotation = _field_at(cls, loc)
    expected = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
                "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
                "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
                "literal_error": f"one of {_type_name(annotation)}",
                "list_type": _type_name(annotation), "dict_type": _type_name(annotation),
                "model_type": f"a mapping of {_type_name(annotation)} keys"}.get(kind)
    if expected is None:
        return f"{key}: {err['msg']}"
    return f"{key}: expected {expected}, got {err.get('input')!r}"


def _errors(cls: type[BaseModel], exc: ValidationError) -> list[tuple[str, tuple[Any, ...], str]]:
    """(error type, location, message) for each problem pydantic found."""
    return [(e["type"], tuple(e["loc"]), _message(cls, e)) for e in exc.errors()]


# --------------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------------
def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ParamError(f"cannot read parameter file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping of parameters, got {type(data).__name__}")
    return data


def parse_set(assignment: str) -> dict[str, Any]:
    """`a.b=value` -> {"a": {"b": value}}; the value is read as YAML (numbers, booleans, lists)."""
    if "=" not in assignment:
        raise ParamError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ParamError(f"--set {assignment!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _profile_layer(experiment: str, data: dict[str, Any]) -> dict[str, Any]:
    """Common keys of a profile, plus its section for this experiment (other experiments' sections dropped)."""
    common = {k: v for k, v in data.items() if k not in EXPERIMENTS}
    return deep_merge(common, data.get(experiment) or {})


def experiment_class(experiment: str) -> type[ExperimentParams]:
    try:
        return EXPERIMENTS[experiment]
    except KeyError:
        raise ParamError(f"unknown experiment {experiment!r}; experiments: {', '.join(sorted(EXPERIMENTS))}") from None


def profile_path(profile: str) -> Path:
    if "/" in profile or profile.endswith((".yaml", ".yml")):
        return Path(profile)
    path = resources_root() / "params" / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (resources_root() / "params" / "profiles").glob("*.yaml"))
        raise ParamError(f"unknown profile {profile!r}; profiles: {', '.join(known)}")
    return path


def _validate(cls: type[ExperimentParams], data: dict[str, Any]) -> tuple[Optional[ExperimentParams], list]:
    try:
        return cls.model_validate(data), []
    except ValidationError as exc:
        return None, _errors(cls, exc)


def from_dict(experiment: str, data: dict[str, Any]) -> ExperimentParams:
    cls = experiment_class(experiment)
    params, errors = _validate(cls, data)
    if errors:
        raise ParamError("; ".join(message for _, _, message in errors))
    assert params is not None
    return params


def _sets(layer: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    """Whether a layer sets the key at loc (or, for a whole-model rule, anything under it)."""
    node: Any = layer
    for part in (p for p in loc if isinstance(p, str)):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


Layer = tuple[str, dict[str, Any]]   # (where it came from, the keys it sets)


def layers(experiment: str, profile: Optional[str] = DEFAULT_PROFILE, files: tuple[Path, ...] | list[Path] = (),
           sets: tuple[str, ...] | list[str] = (), variables: Optional[dict[str, Any]] = None) -> list[Layer]:
    """The layers in the order they apply: the experiment's file, the profile, parameter files, a notebook's own
    variables (what papermill injected, or what a user set in the parameters cell), then `--set` assignments."""
    experiment_class(experiment)
    out: list[Layer] = []
    base = resources_root() / "params" / f"{experiment}.yaml"
    if base.is_file():
        out.append((str(base), read_yaml(base)))
    if profile:
        path = profile_path(profile)
        out.append((str(path), _profile_layer(experiment, read_yaml(path))))
    for f in files:
        out.append((str(f), _profile_layer(experiment, read_param_file(Path(f)))))
    if variables:
        out.append(("notebook variables", dict(variables)))
    for s in sets:
        out.append((f"--set {s}", parse_set(s)))
    return out


def resolve(experiment: str, profile: Optional[str] = DEFAULT_PROFILE, files: tuple[Path, ...] | list[Path] = (),
            sets: tuple[str, ...] | list[str] = (), variables: Optional[dict[str, Any]] = None) -> ExperimentParams:
    """All layers merged and checked (see `layers` and `merge`)."""
    return merge(experiment, layers(experiment, profile, files, sets, variables))


def merge(experiment: str, stack: list[Layer]) -> ExperimentParams:
    """The layers merged, later wins. A layer that brings a wrong type or an unknown key is named at once; value
    rules are checked on the merged result (a later layer may fix an earlier one's length, say) and name the
    layer that last set the key concerned."""
    cls = experiment_class(experiment)
    merged: dict[str, Any] = {}
    for source, layer in stack:
        merged = deep_merge(merged, layer)
        _, errors = _validate(cls, merged)
        wrong = [message for kind, _, message in errors if kind not in VALUE_ERRORS]
        if wrong:
            raise ParamError(f"{source}: {'; '.join(wrong)}")
    params, errors = _validate(cls, merged)
    if errors:
        named = []
        for _, loc, message in errors:
            # A rule over several keys (lengths against the context, say) is about the keys its message names.
            keys = [loc] if loc else [tuple(k.split(".")) for k in re.findall(r"[a-z_]+(?:\.[a-z_]+)*", message)]
            source = next((src for src, layer in reversed(stack) if any(k and _sets(layer, k) for k in keys)),
                          "the merged parameters")
            named.append(f"{source}: {message}")
        raise ParamError("; ".join(named))
    assert params is not None
    return params


def read_param_file(path: Path) -> dict[str, Any]:
    """A parameter file given on the command line; a bare name that is no file is probably a profile."""
    if not Path(path).exists() and "/" not in str(path) and not str(path).endswith((".yaml", ".yml")):
        raise ParamError(f"cannot read parameter file {path}: no such file (a profile? use --profile {path})")
    return read_yaml(Path(path))


def fields(experiment: str) -> list[str]:
    """The top-level parameter names of an experiment (what a notebook's parameters cell may set)."""
    return list(experiment_class(experiment).model_fields)


def to_dict(params: ExperimentParams) -> dict[str, Any]:
    return params.model_dump(mode="python")


def config_hash(experiment: str, params: ExperimentParams) -> str:
    """sha256 over the experiment name and the resolved parameters (canonical JSON), first 16 hex digits."""
    blob = json.dumps({"experiment": experiment, "params": to_dict(params)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
