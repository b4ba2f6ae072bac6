"""E6 predict, then verify: calibrate the placement model on one server, predict every placement of N GPUs, then
search the host's own placements live (E4's search, each started at its prediction) and set predicted beside
measured.

Steps, one function each, as the notebook calls them:
- `calibrate_one`: one server as `server` starts it; the costs (ctxkit.experiments.calibrate) into calibration.json.
- `predict`: the plans for `plan_gpus` (ctxkit.plan.planner) and the model's goodput for each topology verified.
- `verify`: E4's search of each topology, its first probe at the prediction (E4's measure_or_record).
- `summarize`: predicted against measured per topology, with the measured interval and the ratio.
"""
from __future__ import annotations

from typing import Any, Optional

import pandas as pd

from ctxkit.experiments import calibrate, e4_goodput
from ctxkit.experiments.common import make_backend
from ctxkit.params import BenchParams, E4Params, E6Params, TopologyParams
from ctxkit.plan.costs import Calibration
from ctxkit.plan.placements import Placement, Slo, Workload, goodput
from ctxkit.plan.planner import Plan, plan, render
from ctxkit.records import JsonlWriter
from ctxkit.runs.folder import RunFolder

Log = Any


def workload_of(params: E6Params) -> Workload:
    return Workload(input_len=params.workload.input_len, output_len=params.workload.output_len)


def slo_of(params: E6Params) -> Slo:
    first = params.slos[0]
    assert first.ttft_ms and first.tpot_ms, "checked by params"
    return Slo(ttft_ms=first.ttft_ms, tpot_ms=first.tpot_ms)


def calibrate_one(params: E6Params, run: RunFolder, log: Log = print) -> Calibration:
    """Start one server, measure its costs, stop it; calibration.json in the run folder."""
    bench = BenchParams.model_validate({"server": params.server.model_dump(), "seed": params.seed,
                                        "request_timeout_s": params.request_timeout_s,
                                        "calibrate": params.calibrate.model_dump()})
    return calibrate.into_run(bench, make_backend(params, "calibrate", run), run, "e6_calibration.csv", log)


def placement_of(spec: TopologyParams) -> Placement:
    return Placement(replicas=spec.replicas) if spec.kind == "aggregated" else \
        Placement(prefill=spec.prefill, decode=spec.decode)


def predict(params: E6Params, cal: Calibration, log: Log = print) -> tuple[list[Plan], dict[str, Optional[float]]]:
    """The plans for every N of plan_gpus, and the model's goodput (req/s) of each topology to verify (None where the
    calibration cannot predict it: a disaggregated one without KV transfer figures)."""
    w, slo, target = workload_of(params), slo_of(params), params.search.target
    plans = [plan(cal, n, w, slo, target=target, draws=params.draws, seed=params.seed) for n in params.plan_gpus]
    for p in plans:
        log(render(p))
    expected: dict[str, Optional[float]] = {}
    for spec in params.topologies:
        where = placement_of(spec)
        expected[spec.label] = None if where.disaggregated and cal.transfer is None else \
            goodput(where, cal.scaled(host_share(cal, where)), w, slo, target, seed=params.seed)
    return plans, expected


def host_share(cal: Calibration, where: Placement) -> float:
    """How much slower each of a placement's servers runs on this host than the calibrated one: on the CPU tier a
    pool's servers split the host's cores (placement binds each to its share) where the calibrated server had them
    all; on GPUs each server has a GPU of its own, as the calibrated one had."""
    return float(where.gpus) if cal.device.startswith("cpu") else 1.0


def verify(params: E6Params, run: RunFolder, expected: dict[str, Optional[float]],
           log: Log = print) -> list[e4_goodput.TopologyResult]:
    """E4's search of each topology on live servers, its first probe at the prediction (else search.start_rate)."""
    results = []
    with JsonlWriter(run.path / "requests.jsonl") as out:
        for k, spec in enumerate(params.topologies):
            start = expected.get(spec.label) or params.search.start_rate       # (0: the model says out of reach)
            e4 = E4Params.model_validate({**params.model_dump(exclude={"calibrate", "plan_gpus", "draws"}),
                                          "search": {**params.search.model_dump(), "start_rate": start}})
            results.append(e4_goodput.measure_or_record(e4, run, spec, k, out, log))
    return results


def comparison(params: E6Params, expected: dict[str, Optional[float]],
               results: list[e4_goodput.TopologyResult]) -> pd.DataFrame:
    """Predicted against measured goodput per topology: the measured 90% interval, and measured / predicted (None
    where either is missing: a topology that failed, a prediction the calibration cannot make)."""
    table = e4_goodput.goodput_table(params, results)

    def number(row: dict[str, Any], key: str) -> Optional[float]:
        value = row.get(key)
        return float(value) if value is not None and pd.notna(value) else None
    rows = []
    for spec in params.topologies:
        measured = table[table["topology"] == spec.label] if len(table) else table
        row = measured.iloc[0].to_dict() if len(measured) else {}
        predicted, got = expected.get(spec.label), number(row, "goodput")
        low, high = number(row, "interval_low"), number(row, "interval_high")
        rows.append({"topology": spec.label, "predicted": predicted, "measured": got, "interval_low": low,
                     "interval_high": high,
                     "measured_over_predicted": got / predicted if predicted and got is not None else None,
                     "inside_interval": (low <= predicted and (high is None or predicted <= high))
                     if predicted is not None and low is not None else None})
    return pd.DataFrame(rows)


def summarize(params: E6Params, run: RunFolder, cal: Calibration, plans: list[Plan],
              expected: dict[str, Optional[float]], results: list[e4_goodput.TopologyResult]) -> dict[str, Any]:
    table = comparison(params, expected, results)
    table.to_csv(run.artifacts / "e6_comparison.csv", index=False)
    e4_goodput.probes_table(results).to_csv(run.artifacts / "e6_probes.csv", index=False)
    searched = [r for r in results if not r.error and r.searches]
    summary = {
        "experiment": "e6_plan",
        "run_id": run.run_id,
        "checks": {
            "calibrated": {"passed": cal.prefill.points > 0 and cal.decode.points > 0,
                           "reason": f"prefill fit R^2 {cal.prefill.r2:.3f} over {cal.prefill.points} lengths, decode "
                                     f"step fit R^2 {cal.decode.r2:.3f} over {cal.decode.points} waves"},
            "every_n_planned": {"passed": all(p.predicted for p in plans),
                                "reason": f"plans for {', '.join(str(p.gpus) for p in plans)} GPU(s)"},
            "every_topology_verified": {"passed": len(searched) == len(params.topologies),
                                        "reason": f"{len(searched)}/{len(params.topologies)} topologies searched live"},
        },
        "calibration": cal.model_dump(mode="json"),
        "plans": [p.model_dump(mode="json") for p in plans],
        "comparison": table.to_dict(orient="records"),
        "failed_topologies": {r.topology: r.error for r in results if r.error},
    }
    run.write_json("summary.json", summary)
    return summary


def conclusion(summary: dict[str, Any]) -> str:
    lines = []
    for row in summary["comparison"]:
        if row["predicted"] is None:
            lines.append(f"- {row['topology']}: no prediction (the calibration has no KV transfer figures)")
        elif row["measured"] is None:
            lines.append(f"- {row['topology']}: predicted {row['predicted']:.3g} req/s; not measured")
        else:
            high = "-" if row["interval_high"] is None else f"{row['interval_high']:.3g}"
            interval = "" if row["interval_low"] is None else f" ({row['interval_low']:.3g}-{high})"
            where = {True: ", inside the measured 90% interval", False: ", outside the measured 90% interval",
                     None: ""}[row["inside_interval"]]
            lines.append(f"- {row['topology']}: predicted {row['predicted']:.3g} req/s, measured "
                         f"{row['measured']:.3g}{interval}: measured / predicted "
                         f"{row['measured_over_predicted']:.2f}{where}" if row["predicted"] else
                         f"- {row['topology']}: the model says the SLO is out of reach; measured {row['measured']:.3g}")
    for p in summary["plans"]:
        first = p["predicted"][0]
        place = first["placement"]
        name = f"aggregated x{place['replicas']}" if place["replicas"] else f"{place['prefill']}P{place['decode']}D"
        lines.append(f"- plan for {p['gpus']} GPU(s): {name} predicted best, {first['per_gpu']:.3g} req/s a GPU")
    return "\n".join(lines)
