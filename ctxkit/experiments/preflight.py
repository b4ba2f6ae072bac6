"""Checks that need an experiment's own code (a workload file's contents, not only its parameters' types), run by
`ctxkit run` after the parameters resolve and before a run folder is made or a server starts."""
from __future__ import annotations

from ctxkit.params import ExperimentParams


def check(experiment: str, params: ExperimentParams) -> None:
    """Raise ctxkit.load.workloads.WorkloadError for input no run could use, and TopologyError for an attached
    deployment that does not answer as its topology file says (nothing is sent to it before that)."""
    if params.backend == "topology":
        from ctxkit.backends.topology import AttachedTopology
        assert params.topology_file, "checked by params"
        AttachedTopology.from_file(params.topology_file).check()
        if getattr(params, "aggregated_topology_file", None):     # E3's aggregated arm, attached as well
            AttachedTopology.from_file(params.aggregated_topology_file).check()   # type: ignore[attr-defined]
    if experiment == "e4_goodput":
        from ctxkit.experiments import e4_goodput
        e4_goodput.check_workload(params)         # type: ignore[arg-type]
