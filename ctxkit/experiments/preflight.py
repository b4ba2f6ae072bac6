"""Checks that need an experiment's own code (a workload file's contents, not only its parameters' types), run by
`ctxkit run` after the parameters resolve and before a run folder is made or a server starts."""
from __future__ import annotations

from ctxkit.params import ExperimentParams


def check(experiment: str, params: ExperimentParams) -> None:
    """Raise ctxkit.load.workloads.WorkloadError for input no run could use."""
    if experiment == "e4_goodput":
        from ctxkit.experiments import e4_goodput
        e4_goodput.check_workload(params)         # type: ignore[arg-type]
