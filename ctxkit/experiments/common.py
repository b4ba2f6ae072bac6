"""What every experiment notebook does first: typed parameters from its variables, its run folder, its backends."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ctxkit import params as P
from ctxkit.backends import Endpoint, ServingBackend, Simulated, VLLMServer
from ctxkit.runs import metadata
from ctxkit.runs.folder import RunFolder


def open_run(experiment: str, namespace: dict[str, Any]) -> tuple[P.ExperimentParams, RunFolder]:
    """Parameters from the notebook's (papermill-injected) variables, checked; and the run folder.

    Under `ctxkit run` the folder exists (run_dir); under plain papermill it is created here, under runs/."""
    params = P.from_namespace(experiment, namespace)
    run_dir = namespace.get("run_dir")
    if run_dir:
        return params, RunFolder.open(Path(run_dir))
    run = RunFolder.create(Path(os.environ.get("CTXKIT_RUNS_DIR") or P.project_root() / "runs"), experiment)
    resolved = P.to_dict(params)
    run.write_params(resolved)
    run.write_json("run_metadata.json", metadata.collect(
        run_id=run.run_id, experiment=experiment, config_hash=P.config_hash(experiment, params), params=resolved,
        notes="executed by plain papermill (no ctxkit run)"))
    return params, run


def show_params(params: P.ExperimentParams) -> None:
    """Print the resolved parameters as YAML (the report hides the raw parameters cells)."""
    import yaml

    print("Resolved parameters:")
    print(yaml.safe_dump(P.to_dict(params), sort_keys=False, default_flow_style=None, width=110).rstrip())


def make_backend(params: P.ExperimentParams, name: str, run: RunFolder, *,
                 extra_args: Optional[list[str]] = None, env: Optional[dict[str, str]] = None) -> ServingBackend:
    """The backend the parameters ask for, not yet started. Use it as a context manager."""
    if params.backend == "vllm":
        return VLLMServer.from_params(params.server, seed=params.seed, name=name, log_dir=run.logs,
                                      extra_args=extra_args, env=env)
    if params.backend == "simulated":
        return Simulated(name=name, model=params.server.model, max_model_len=params.server.max_model_len,
                         log_dir=run.logs)
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


def check(passed: bool, reason: str) -> dict[str, Any]:
    return {"passed": bool(passed), "reason": reason}
