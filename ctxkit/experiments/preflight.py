"""Checks that need an experiment's own code (a workload file's contents, not only its parameters' types), run by
`ctxkit run` after the parameters resolve and before a run folder is made or a server starts."""
from __future__ import annotations

from ctxkit.params import ExperimentParams


def check(experiment: str, params: ExperimentParams) -> None:
    """Raise ctxkit.load.workloads.WorkloadError for input no run could use, and TopologyError for an attached
    deployment that does not answer as its topology file says (nothing is sent to it before that)."""
    if params.backend == "topology":
        from ctxkit.backends.topology import AttachedTopology, TopologyError
        assert params.topology_file, "checked by params"
        found = AttachedTopology.from_file(params.topology_file).check()
        if getattr(params, "aggregated_topology_file", None):     # E3's aggregated arm, attached as well
            other = AttachedTopology.from_file(params.aggregated_topology_file).check()   # type: ignore[attr-defined]
            if other["model"] != found["model"]:       # greedy outputs compared across arms need one model
                raise TopologyError(f"the aggregated arm's deployment ({other['name']}) serves {other['model']!r}, "
                                    f"the disaggregated one ({found['name']}) {found['model']!r}: E3 compares one "
                                    "model served two ways")
    if experiment == "e4_goodput":
        from ctxkit.experiments import e4_goodput
        e4_goodput.check_workload(params)         # type: ignore[arg-type]
