"""`ctxkit run`: resolve parameters, make the run folder, execute the experiment's notebook with papermill
(kernel `ctxkit`, the run folder as working directory), record failure, sweep up processes, render the report."""
from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ctxkit import params as P
from ctxkit.backends.process import PID_REGISTRY_ENV, group_members, kill_group
from ctxkit.env import BATCH as BATCH_ENV
from ctxkit.runs import metadata, papermill_exec
from ctxkit.runs.folder import RunFolder, atomic_write_json, check_name
from ctxkit.runs.report import render_report
from ctxkit.workspace import resources_root
from ctxkit.workspace import runs_root as default_runs_root

KERNEL_NAME = "ctxkit"


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: stop servers, mark the run interrupted."""


def notebook_path(experiment: str) -> Path:
    path = resources_root() / "notebooks" / f"{experiment}.ipynb"
    if not path.is_file():
        raise P.ParamError(f"no notebook for experiment {experiment!r} at {path}")
    return path


def ensure_kernel() -> str:
    """The Jupyter kernel `ctxkit` for this Python; registered into sys.prefix if missing."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name="Python (ctxkit)", prefix=sys.prefix)
    return KERNEL_NAME


def sweep_processes(registry: Path) -> list[int]:
    """Stop every process group a server start recorded that is still alive (e.g. after a kernel crash)."""
    stopped: list[int] = []
    if not registry.is_file():
        return stopped
    for line in registry.read_text().split():
        try:
            pgid = int(line)
        except ValueError:
            continue
        if group_members(pgid):
            kill_group(pgid, grace_s=10.0)
            stopped.append(pgid)
    return stopped


def failure_record(exc: BaseException, where: str) -> dict[str, Any]:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        return {"error_type": exc.ename, "message": exc.evalue, "where": f"notebook cell {exc.exec_count}",
                "traceback": "\n".join(exc.traceback)[-8000:]}
    return {"error_type": type(exc).__name__, "message": str(exc), "where": where,
            "traceback": "".join(traceback.format_exception(exc))[-8000:]}


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def _on_sigint(signum: int, frame: Any) -> None:
    # Raised where the main thread is. Left at Python's default, SIGINT inside papermill's event loop becomes an
    # asyncio task cancellation (asyncio.Runner's handler), which the notebook client can swallow: the run would
    # go on to the end as if nothing had been asked.
    raise KeyboardInterrupt(f"signal {signum}")


RESUMABLE = {"e2_concurrency"}


def reopen_for_resume(experiment: str, run_dir: Path) -> tuple[RunFolder, P.ExperimentParams]:
    """An interrupted or failed run of a resumable experiment, its parameters as resolved then, and its previous
    attempt's notebook and failure kept aside as notebook.attempt-N.ipynb / failure.attempt-N.json."""
    from ctxkit.runs.folder import RunFolderError, read_yaml_file

    if experiment not in RESUMABLE:
        raise P.ParamError(f"--resume: {experiment} cannot resume (resumable: {', '.join(sorted(RESUMABLE))})")
    run = RunFolder.open(run_dir)
    if run.experiment != experiment:
        raise P.ParamError(f"--resume: {run.path} is a run of {run.experiment}, not {experiment}")
    if run.status() == "succeeded":
        raise P.ParamError(f"--resume: {run.path} already succeeded; nothing to resume")
    if not run.has("params.yaml"):
        raise RunFolderError(f"--resume: {run.path} has no params.yaml")
    params = P.from_dict(experiment, read_yaml_file(run.path / "params.yaml"))
    attempt = len(list(run.path.glob("notebook.attempt-*.ipynb")))
    for name, aside in (("notebook.ipynb", f"notebook.attempt-{attempt}.ipynb"),
                        ("failure.json", f"failure.attempt-{attempt}.json"),
                        ("report.html", f"report.attempt-{attempt}.html")):
        if run.has(name):
            os.replace(run.path / name, run.path / aside)
    return run, params


def run_experiment(experiment: str, *, profile: Optional[str] = P.DEFAULT_PROFILE, files: Sequence[Path] = (),
                   sets: Sequence[str] = (), label: str = "", runs_root: Optional[Path] = None,
                   resume: Optional[Path] = None,
                   log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
                   preflight: Optional[Callable[[str, P.ExperimentParams], None]] = None) -> tuple[RunFolder, bool]:
    """Execute one experiment into a new run folder (or, with resume, into an interrupted one).
    Returns (folder, succeeded). Parameter errors raise ParamError, and `preflight(experiment, params)` its own,
    before anything is created or started."""
    if resume is not None:
        if files or sets:
            raise P.ParamError("--resume takes the run's own params.yaml: no -p or --set with it")
        run, params = reopen_for_resume(experiment, resume)
        nb_in = notebook_path(experiment)
        kernel = ensure_kernel()
        resolved = P.to_dict(params)
        run.set_status("running")
        log(f"[ctxkit] {experiment}: resuming {run.path}")
    else:
        params = P.resolve(experiment, profile=profile, files=list(files), sets=list(sets))
        if label:
            check_name("label", label)
        if preflight is not None:
            preflight(experiment, params)
        nb_in = notebook_path(experiment)
        if params.backend == "simulated":
            from ctxkit.backends.simulated import require_simulation_allowed
            require_simulation_allowed()
        kernel = ensure_kernel()
        resolved = P.to_dict(params)
        run = RunFolder.create(Path(runs_root or default_runs_root()), experiment)
        run.write_params(resolved)
        run.write_json("run_metadata.json", metadata.collect(
            run_id=run.run_id, experiment=experiment, config_hash=P.config_hash(experiment, params),
            params=resolved, label=label))
        log(f"[ctxkit] {experiment}: run folder {run.path}")
    chash = P.config_hash(experiment, params)
    log(f"[ctxkit] config hash {chash}; backend {params.backend}; model {params.server.model}")
    registry = run.logs / "process_groups.txt"
    registry.touch()
    # The kernel inherits this process's environment: where to record server process groups, and batch mode
    # (progress as plain lines, no widgets: an executed notebook and its report must not need a widget frontend).
    kernel_env = {PID_REGISTRY_ENV: str(registry), BATCH_ENV: "1"}
    old_env = {k: os.environ.get(k) for k in kernel_env}
    os.environ.update(kernel_env)
    old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    old_int = signal.signal(signal.SIGINT, _on_sigint)
    status, failure = "succeeded", None
    t0 = time.monotonic()
    try:
        # Only the folder goes in: the notebook reads the resolved parameters from its params.yaml.
        papermill_exec.execute(nb_in, run.path / "notebook.ipynb", experiment=experiment, kernel=kernel,
                               parameters={"run_dir": str(run.path)}, cwd=run.path, logs=run.logs, write=log)
    except KeyboardInterrupt as exc:
        status, failure = "interrupted", failure_record(exc, "interrupted by the user (Ctrl-C or SIGTERM)")
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, then reported
        status, failure = "failed", failure_record(exc, "papermill execution")
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stopped = sweep_processes(registry)
        if stopped:
            log(f"[ctxkit] stopped {len(stopped)} leftover server process group(s): {stopped}")
    if status == "succeeded":
        failure = checks_failure(run)
        if failure:
            status = "failed"
    if failure:
        atomic_write_json(run.path / "failure.json", failure)
        log(f"[ctxkit] {status.upper()}: {failure['error_type']}: {failure['message']}")
    run.set_status(status, wall_s=round(time.monotonic() - t0, 1))
    if run.has("notebook.ipynb"):
        try:
            render_report(run.path)
        except Exception as exc:  # noqa: BLE001 - a report failure must not hide the run's own outcome
            log(f"[ctxkit] report not rendered: {type(exc).__name__}: {exc}")
    return run, status == "succeeded"


def checks_failure(run: RunFolder) -> Optional[dict[str, Any]]:
    """A run whose notebook finished still fails if summary.json is missing or one of its checks failed."""
    if not run.has("summary.json"):
        return {"error_type": "MissingSummary", "message": "the notebook finished without writing summary.json",
                "where": "after execution"}
    checks = run.read_json("summary.json").get("checks", {})
    failed = {name: c.get("reason", "") for name, c in checks.items() if not c.get("passed")}
    if failed:
        return {"error_type": "ChecksFailed", "message": "; ".join(f"{k}: {v}" for k, v in failed.items()),
                "where": "summary.json checks", "failed_checks": sorted(failed)}
    return None
