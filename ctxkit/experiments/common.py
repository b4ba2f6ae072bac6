"""What every experiment notebook does first: typed parameters from its variables, its run folder, its backends."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ctxkit import env
from ctxkit import params as P
from ctxkit.backends import AttachedTopology, Endpoint, ServingBackend, Simulated, VLLMServer
from ctxkit.runs import metadata
from ctxkit.runs.folder import RunFolder
from ctxkit.workspace import runs_root

# The run each experiment's notebook has open in this kernel: (config hash, folder). Re-running a notebook's setup
# cell with the same parameters continues that run instead of forking a new folder.
_OPEN: dict[str, tuple[str, RunFolder]] = {}


def open_run(experiment: str, namespace: dict[str, Any], *, new: bool = False,
             log: Callable[[str], None] = print) -> tuple[P.ExperimentParams, RunFolder]:
    """The checked parameters and the run folder of a notebook, from its variables.

    Under `ctxkit run` (`run_dir` injected): the folder exists and holds the resolved parameters. Otherwise the
    notebook's parameters cell names `profile`, `param_files` and `sets`, and any variable named like a parameter
    (what papermill injects with -p/-f, or what a user assigns) is a layer of its own; they are layered exactly as
    `ctxkit run` layers them, and the layers applied are printed. Within one kernel, the same parameters keep the
    same open run; other parameters, or `new=True`, start a new one."""
    run_dir = namespace.get("run_dir")
    if run_dir:
        run = RunFolder.open(Path(run_dir))
        log(f"parameters: {run.path / 'params.yaml'} (resolved by ctxkit run)")
        return P.from_dict(experiment, run.read_params()), run
    stack = P.layers(experiment, profile=namespace.get("profile", P.DEFAULT_PROFILE),
                     files=[Path(f) for f in namespace.get("param_files") or []], sets=namespace.get("sets") or [],
                     variables={n: namespace[n] for n in P.fields(experiment) if n in namespace})
    params = P.merge(experiment, stack)
    log("parameters, in the order applied: defaults, " + ", ".join(source for source, _ in stack))
    chash = P.config_hash(experiment, params)
    held = _OPEN.get(experiment)
    if held and not new and held[0] == chash and held[1].is_open():
        log(f"same parameters: continuing run {held[1].path}")
        return params, held[1]
    run = RunFolder.create(runs_root(), experiment)
    resolved = P.to_dict(params)
    run.write_params(resolved)
    run.write_json("run_metadata.json", metadata.collect(
        run_id=run.run_id, experiment=experiment, config_hash=chash, params=resolved,
        notes="opened from a notebook (JupyterLab or plain papermill), not by ctxkit run"))
    _OPEN[experiment] = (chash, run)
    log(f"new run folder {run.path}")
    return params, run


def new_run(experiment: str, namespace: dict[str, Any]) -> tuple[P.ExperimentParams, RunFolder]:
    """A fresh run folder even when the parameters are unchanged (a repeat measurement)."""
    return open_run(experiment, namespace, new=True)


def finish_run(run: RunFolder, summary: dict[str, Any], log: Callable[[str], None] = print) -> str:
    """End an interactive run: succeeded when every check passed, else failed (the folder is immutable from
    then on). Under `ctxkit run` the runner ends the run itself, after the notebook, so nothing happens here."""
    if not run.is_open() or os.environ.get(env.BATCH) == "1":
        return run.status()
    failed = [k for k, c in summary.get("checks", {}).items() if not c.get("passed")]
    status = "failed" if failed else "succeeded"
    run.set_status(status, **({"failed_checks": failed} if failed else {}))
    log(f"run {status}: {run.path}" + (f" (failed checks: {', '.join(failed)})" if failed else ""))
    return status


def show_params(params: P.ExperimentParams) -> None:
    """Show the resolved parameters as YAML (the report hides the parameters cells). Displayed, not printed: in a
    batch run the terminal shows progress, and params.yaml holds the same."""
    import yaml
    from IPython.display import Markdown, display

    text = yaml.safe_dump(P.to_dict(params), sort_keys=False, default_flow_style=None, width=110).rstrip()
    display(Markdown(f"**Resolved parameters**\n\n```yaml\n{text}\n```"))


def make_backend(params: P.ExperimentParams, name: str, run: RunFolder, *,
                 extra_args: Optional[list[str]] = None, env: Optional[dict[str, str]] = None) -> ServingBackend:
    """The backend the parameters ask for, not yet started. Use it as a context manager."""
    if params.backend == "vllm":
        return VLLMServer.from_params(params.server, seed=params.seed, name=name, log_dir=run.logs,
                                      extra_args=extra_args, env=env)
    if params.backend == "simulated":
        return Simulated(name=name, model=params.server.model, max_model_len=params.server.max_model_len,
                         log_dir=run.logs)
    if params.backend == "topology":
        assert params.topology_file, "checked by params"
        return AttachedTopology.from_file(params.topology_file, name=name)
    assert params.endpoint_url, "checked by params"
    return Endpoint(params.endpoint_url, name=name)


def token_prompts(rng: np.random.Generator, lengths: list[int], vocab_size: int, bos_id: Optional[int] = None,
                  low: int = 16) -> list[list[int]]:
    """Token-exact random prompts (ids in [low, vocab) so no special token appears by chance)."""
    out = []
    for n in lengths:
        ids = rng.integers(low, vocab_size, size=n).tolist()
        if bos_id is not None and n > 0:
            ids[0] = bos_id
        out.append([int(i) for i in ids])
    return out


def ms_text(v: Optional[float], digits: int = 2) -> str:
    """A log line's milliseconds: '-' for a value not measured (e.g. a point whose requests all failed)."""
    return "-" if v is None else f"{v:.{digits}f} ms"


def check(passed: bool, reason: str) -> dict[str, Any]:
    return {"passed": bool(passed), "reason": reason}


def server_peaks(prof: dict[str, Any]) -> dict[str, Any]:
    """One server's view of a measured window (its first metric source): peak running and waiting requests,
    peak KV cache use, and the preemptions counted over the window (labelled counters summed)."""
    srv = next(iter(prof["server"].values()), {})
    preempted = srv.get("num_preemptions", 0.0)
    preempted = sum(preempted.values()) if isinstance(preempted, dict) else preempted
    return {"peak_running": srv.get("peak_num_requests_running"), "peak_waiting": srv.get("peak_num_requests_waiting"),
            "peak_kv_usage": srv.get("peak_kv_cache_usage_perc"), "preemptions": preempted or 0.0}
