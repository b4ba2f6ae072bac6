"""Typed, layered experiment parameters.

Layers, later wins: the dataclass defaults -> params/<experiment>.yaml -> a profile (params/profiles/<name>.yaml,
default `cpu-tiny`) -> `-p FILE` files in order -> `--set key=value` (dotted keys, YAML values).
Every layer is checked against the experiment's dataclass: an unknown key or a wrong type fails before anything
starts, naming the key and what is accepted. A profile may hold sections named after experiments; only the
section of the experiment being run applies.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

DEFAULT_PROFILE = "cpu-tiny"


class ParamError(ValueError):
    """Invalid parameters: raised before any process starts."""


def project_root() -> Path:
    """The folder holding params/, notebooks/ and runs/ (CTXKIT_HOME overrides)."""
    env = os.environ.get("CTXKIT_HOME")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------------------
# Parameter dataclasses
# --------------------------------------------------------------------------------------------------------
@dataclass
class ServerParams:
    """How each vLLM server is started."""
    model: str = "tiny-llama"                 # a model card (ctxkit/models/<name>) or a folder with config.json
    model_source: Optional[str] = None        # real weights (path or hub id); None: the card with dummy weights
    dtype: str = "bfloat16"
    max_model_len: int = 4096
    host: str = "127.0.0.1"
    startup_timeout_s: float = 300.0
    kv_cache_space_gib: Optional[float] = 1.0  # CPU tier: VLLM_CPU_KVCACHE_SPACE
    gpu_memory_utilization: Optional[float] = None
    extra_args: list[str] = field(default_factory=list)   # more `api_server` flags, verbatim
    env: dict[str, str] = field(default_factory=dict)     # e.g. CUDA_VISIBLE_DEVICES


@dataclass
class ExperimentParams:
    """Parameters every experiment has."""
    seed: int = 0
    backend: Literal["vllm", "endpoint", "simulated"] = "vllm"
    endpoint_url: Optional[str] = None        # backend=endpoint: an OpenAI-compatible server already running
    request_timeout_s: float = 120.0
    server: ServerParams = field(default_factory=ServerParams)


@dataclass
class E0Params(ExperimentParams):
    """E0 smoke and reproducibility: one request set, twice, on two freshly started servers."""
    prompt_lens: list[int] = field(default_factory=lambda: [16, 64, 256, 1024])
    max_tokens: int = 16
    sampling_temperature: float = 0.8         # the seeded-sampling half of the set (the other half is greedy)
    repeats: int = 2                          # servers started one after the other; 2 = reproducibility check


@dataclass
class WorkloadParams:
    """What is sent: token-exact prompts (see ctxkit.load.workloads)."""
    dataset: Literal["random", "sharegpt", "trace"] = "random"
    dataset_path: Optional[str] = None        # sharegpt JSON or trace JSONL
    num_prompts: int = 100
    input_len: int = 256                      # mean input length (after any shared prefix)
    input_dist: Literal["fixed", "uniform", "normal", "lognormal"] = "fixed"
    input_std: float = 0.0                    # normal / lognormal
    range_ratio: float = 0.0                  # uniform: [len x (1 - r), len x (1 + r)] (vLLM's random-range-ratio)
    output_len: int = 32
    output_dist: Literal["fixed", "uniform", "normal", "lognormal"] = "fixed"
    output_std: float = 0.0
    prefix_len: int = 0                       # shared-prefix groups: tokens of each shared prefix
    num_prefixes: int = 1


@dataclass
class LoadParams:
    """How it is sent (see ctxkit.load.arrivals)."""
    arrival: Literal["poisson", "gamma", "constant", "trace", "concurrency"] = "poisson"
    request_rate: Optional[float] = None      # req/s; null = all at once
    burstiness: float = 1.0                   # gamma shape (1 = Poisson)
    concurrency: int = 1                      # arrival=concurrency: closed-loop clients
    max_concurrency: Optional[int] = None     # cap on requests in flight (open loop)
    warmup_requests: int = 2
    duration_s: Optional[float] = None        # stop sending after this long


@dataclass
class SLOParams:
    """Per-request objectives in ms (null = none); a failed request misses every SLO."""
    ttft_ms: Optional[float] = None
    tpot_ms: Optional[float] = None
    e2e_ms: Optional[float] = None


@dataclass
class BenchParams(ExperimentParams):
    """`ctxkit bench`: one workload on one arrival process against one backend."""
    workload: WorkloadParams = field(default_factory=WorkloadParams)
    load: LoadParams = field(default_factory=LoadParams)
    slo: SLOParams = field(default_factory=SLOParams)
    metrics_interval_s: Optional[float] = None  # also scrape /metrics every this many seconds


@dataclass
class E1Params(ExperimentParams):
    """E1 latency vs prompt length: N requests per length, one at a time (no queueing), fixed output length."""
    prompt_lens: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    requests_per_len: int = 5
    output_len: int = 32
    warmup_requests: int = 2
    gpu_sample_interval_s: float = 0.5


@dataclass
class E2Params(ExperimentParams):
    """E2 load sweep: closed-loop concurrency levels and/or Poisson rates, one server, SLO goodput per point."""
    concurrency_levels: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    request_rates: list[float] = field(default_factory=list)     # Poisson points (req/s), after the levels
    requests_per_point: int = 32
    duration_s: Optional[float] = None                           # per point: stop sending after this long
    workload: WorkloadParams = field(default_factory=lambda: WorkloadParams(input_len=256, output_len=32))
    slo: SLOParams = field(default_factory=lambda: SLOParams(ttft_ms=1000.0, tpot_ms=100.0))
    warmup_requests: int = 4
    metrics_interval_s: Optional[float] = 1.0
    gpu_sample_interval_s: float = 0.5


@dataclass
class E3Params(ExperimentParams):
    """E3 aggregated vs disaggregated (xPyD) on one workload, with KV-transfer accounting."""
    connector: Literal["example", "nixl"] = "example"
    prefill_instances: int = 1
    decode_instances: int = 1
    aggregated_replicas: Optional[int] = None     # null: prefill + decode instances (the same total resources)
    policy: Literal["round_robin", "least_outstanding"] = "least_outstanding"
    kv_buffer_device: Literal["cpu", "cuda"] = "cpu"   # NixlConnector
    prefill_visible_devices: Optional[str] = None
    decode_visible_devices: Optional[str] = None
    workload: WorkloadParams = field(default_factory=lambda: WorkloadParams(num_prompts=24, input_len=1024,
                                                                             output_len=32))
    load: LoadParams = field(default_factory=lambda: LoadParams(arrival="concurrency", concurrency=2))
    slo: SLOParams = field(default_factory=lambda: SLOParams(ttft_ms=2000.0, tpot_ms=100.0))
    correctness_prompt_lens: list[int] = field(default_factory=lambda: [100, 300, 700, 1500])
    correctness_max_tokens: int = 16
    on_request_error: Literal["continue", "stop"] = "continue"


EXPERIMENTS: dict[str, type[ExperimentParams]] = {
    "e3_disagg": E3Params,
    "e0_smoke": E0Params,
    "e1_latency": E1Params,
    "e2_concurrency": E2Params,
    "bench": BenchParams,
}


# --------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _check(tp: Any, value: Any, key: str) -> Any:
    """Return value converted to tp (int -> float only), or raise ParamError naming key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamError(f"{key}: expected a mapping of {_type_name(tp)} keys, got {value!r}")
        return _build(tp, value, prefix=key + ".")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ParamError(f"{key}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ParamError(f"{key}: must not be null (expected {_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(arg, value, key)
            except ParamError as exc:
                errors.append(str(exc))
        raise ParamError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ParamError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_check(kt, k, f"{key} key"): _check(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"{key}: expected a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ParamError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported parameter type {tp!r} for {key}")  # a programming error, not user input


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ParamError(f"unknown parameter {prefix}{key!s}; accepted: {', '.join(prefix + n for n in names)}")
    kwargs = {name: _check(hints[name], data[name], prefix + name) for name in names if name in data}
    return cls(**kwargs)


def _positive(params: ExperimentParams) -> None:
    """Value checks that types alone do not catch, shared by every experiment."""
    s = params.server
    checks = [
        (s.max_model_len > 0, "server.max_model_len must be > 0"),
        (s.startup_timeout_s > 0, "server.startup_timeout_s must be > 0"),
        (params.request_timeout_s > 0, "request_timeout_s must be > 0"),
        (s.kv_cache_space_gib is None or (s.kv_cache_space_gib > 0 and float(s.kv_cache_space_gib).is_integer()),
         "server.kv_cache_space_gib must be a whole number > 0 (vLLM reads VLLM_CPU_KVCACHE_SPACE as an integer)"),
        (s.gpu_memory_utilization is None or 0 < s.gpu_memory_utilization <= 1,
         "server.gpu_memory_utilization must be in (0, 1]"),
        (params.backend != "endpoint" or bool(params.endpoint_url), "backend=endpoint needs endpoint_url"),
    ]
    for ok, message in checks:
        if not ok:
            raise ParamError(message)
    if isinstance(params, BenchParams):
        _check_workload(params.workload, params.load, s.max_model_len)
    if isinstance(params, E1Params):
        if not params.prompt_lens or min(params.prompt_lens) < 1:
            raise ParamError("prompt_lens: needs at least one length, each >= 1")
        if max(params.prompt_lens) + params.output_len > s.max_model_len:
            raise ParamError(f"prompt_lens: {max(params.prompt_lens)} + output_len {params.output_len} exceeds "
                             f"server.max_model_len {s.max_model_len}")
        if params.requests_per_len < 1 or params.output_len < 2 or params.warmup_requests < 0:
            raise ParamError("requests_per_len >= 1, output_len >= 2 (TPOT needs two tokens), warmup_requests >= 0")
    if isinstance(params, E2Params):
        if not params.concurrency_levels and not params.request_rates:
            raise ParamError("concurrency_levels and request_rates are both empty: nothing to sweep")
        if any(c < 1 for c in params.concurrency_levels):
            raise ParamError("concurrency_levels: each must be >= 1")
        if any(not r > 0 for r in params.request_rates):
            raise ParamError("request_rates: each must be > 0")
        if params.requests_per_point < 1 or params.warmup_requests < 0:
            raise ParamError("requests_per_point must be >= 1 and warmup_requests >= 0")
        if params.duration_s is not None and params.duration_s <= 0:
            raise ParamError("duration_s must be > 0")
        _check_workload(params.workload, LoadParams(), s.max_model_len)
    if isinstance(params, E3Params):
        if params.prefill_instances < 1 or params.decode_instances < 1:
            raise ParamError("prefill_instances and decode_instances must be >= 1")
        if params.aggregated_replicas is not None and params.aggregated_replicas < 1:
            raise ParamError("aggregated_replicas must be >= 1")
        if params.correctness_prompt_lens and max(params.correctness_prompt_lens) + params.correctness_max_tokens \
                > s.max_model_len:
            raise ParamError("correctness_prompt_lens: the longest + correctness_max_tokens exceeds "
                             f"server.max_model_len {s.max_model_len}")
        if any(n < 2 for n in params.correctness_prompt_lens):
            raise ParamError("correctness_prompt_lens: each must be >= 2")
        if params.connector == "nixl" and params.backend != "vllm":
            raise ParamError("connector nixl needs backend vllm")
        if params.backend != "vllm":
            raise ParamError("e3_disagg starts its own vLLM servers: backend must be vllm")
        _check_workload(params.workload, params.load, s.max_model_len)
    if isinstance(params, E0Params):
        if not params.prompt_lens or min(params.prompt_lens) < 1:
            raise ParamError("prompt_lens: needs at least one length, each >= 1")
        if max(params.prompt_lens) + params.max_tokens > s.max_model_len:
            raise ParamError(f"prompt_lens: {max(params.prompt_lens)} + max_tokens {params.max_tokens} exceeds "
                             f"server.max_model_len {s.max_model_len}")
        if params.max_tokens < 2:
            raise ParamError("max_tokens must be >= 2 (TPOT needs two tokens)")
        if params.repeats < 1:
            raise ParamError("repeats must be >= 1")
        if params.sampling_temperature <= 0:
            raise ParamError("sampling_temperature must be > 0")


def _check_workload(w: WorkloadParams, load: LoadParams, max_model_len: int) -> None:
    rules = [
        (w.num_prompts >= 1, "workload.num_prompts must be >= 1"),
        (w.input_len >= 1, "workload.input_len must be >= 1"),
        (w.output_len >= 1, "workload.output_len must be >= 1"),
        (w.input_std >= 0 and w.output_std >= 0, "workload.input_std/output_std must be >= 0"),
        (0 <= w.range_ratio < 1, "workload.range_ratio must be in [0, 1)"),
        (w.prefix_len >= 0 and w.num_prefixes >= 1, "workload.prefix_len >= 0 and workload.num_prefixes >= 1"),
        (w.dataset == "random" or bool(w.dataset_path), f"workload.dataset={w.dataset} needs workload.dataset_path"),
        (load.request_rate is None or load.request_rate > 0, "load.request_rate must be > 0 (null: all at once)"),
        (load.burstiness > 0, "load.burstiness must be > 0"),
        (load.concurrency >= 1, "load.concurrency must be >= 1"),
        (load.max_concurrency is None or load.max_concurrency >= 1, "load.max_concurrency must be >= 1"),
        (load.warmup_requests >= 0, "load.warmup_requests must be >= 0"),
        (load.duration_s is None or load.duration_s > 0, "load.duration_s must be > 0"),
        (load.arrival != "trace" or w.dataset == "trace", "load.arrival=trace needs workload.dataset=trace"),
    ]
    for ok, message in rules:
        if not ok:
            raise ParamError(message)
    if w.dataset == "random":
        longest = w.prefix_len + (int(w.input_len * (1 + w.range_ratio)) if w.input_dist == "uniform"
                                  else w.input_len)
        most_out = int(w.output_len * (1 + w.range_ratio)) if w.output_dist == "uniform" else w.output_len
        if longest + most_out > max_model_len:
            raise ParamError(f"workload: input length {longest} + output {most_out} exceeds "
                             f"server.max_model_len {max_model_len}")


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
    path = project_root() / "params" / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (project_root() / "params" / "profiles").glob("*.yaml"))
        raise ParamError(f"unknown profile {profile!r}; profiles: {', '.join(known)}")
    return path


def from_dict(experiment: str, data: dict[str, Any]) -> ExperimentParams:
    cls = experiment_class(experiment)
    params = _build(cls, data)
    _positive(params)
    return params


def resolve(experiment: str, profile: Optional[str] = DEFAULT_PROFILE, files: tuple[Path, ...] | list[Path] = (),
            sets: tuple[str, ...] | list[str] = ()) -> ExperimentParams:
    """All layers merged and checked. Each layer is checked on its own first, so an error names its source."""
    cls = experiment_class(experiment)
    layers: list[tuple[str, dict[str, Any]]] = []
    base = project_root() / "params" / f"{experiment}.yaml"
    if base.is_file():
        layers.append((str(base), read_yaml(base)))
    if profile:
        path = profile_path(profile)
        layers.append((str(path), _profile_layer(experiment, read_yaml(path))))
    for f in files:
        layers.append((str(f), _profile_layer(experiment, read_yaml(Path(f)))))
    for s in sets:
        layers.append((f"--set {s}", parse_set(s)))
    merged: dict[str, Any] = {}
    for source, layer in layers:
        try:
            _build(cls, deep_merge(merged, layer))
        except ParamError as exc:
            raise ParamError(f"{source}: {exc}") from None
        merged = deep_merge(merged, layer)
    return from_dict(experiment, merged)


def from_namespace(experiment: str, namespace: dict[str, Any]) -> ExperimentParams:
    """Parameters from a notebook's variables (what papermill injected over the parameters cell)."""
    names = [f.name for f in dataclasses.fields(experiment_class(experiment))]
    return from_dict(experiment, {n: namespace[n] for n in names if n in namespace})


def to_dict(params: ExperimentParams) -> dict[str, Any]:
    return dataclasses.asdict(params)


def config_hash(experiment: str, params: ExperimentParams) -> str:
    """sha256 over the experiment name and the resolved parameters (canonical JSON), first 16 hex digits."""
    blob = json.dumps({"experiment": experiment, "params": to_dict(params)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
