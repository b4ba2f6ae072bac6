"""The placement model against recorded E4 answers: predicted / measured goodput per GPU for every E4 answer made
on the calibration's device, model and compilation mode, and whether the model picks the winner wherever the
measured intervals separate.

    python benchmarks/plan_accuracy.py --calibration runs/bench/<run>/calibration.json [--runs docs/results]

Each row: the packet and run, the placement, workload and SLO as the run's params.yaml has them, the measured
goodput with its 90% interval as the run recorded it (a packet made under older search rules says so in its
README), the model's goodput at that workload and SLO, and their ratio. The model's error is measured / predicted
(1.0 is exact); the issue's bar is within 15% (0.87 to 1.15).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from ctxkit.plan.costs import Calibration
from ctxkit.plan.placements import Placement, Slo, Workload, goodput
from ctxkit.runs.peer_table import placement
from ctxkit.runs.placements import compilation

BAR = 0.15


@dataclass
class Answer:
    run: str
    placement: Placement
    workload: Workload
    slo: Slo
    target: float
    measured: float
    low: Optional[float]
    high: Optional[float]
    predicted: Optional[float] = None

    @property
    def ratio(self) -> Optional[float]:
        return self.measured / self.predicted if self.predicted else None


def matches(meta: dict[str, Any], params: dict[str, Any], cal: Calibration) -> bool:
    """The run's GPU, model and compilation mode are the calibration's."""
    gpus = meta["hardware"]["gpus"]
    name = gpus["devices"][0]["name"] if gpus.get("available") and gpus.get("devices") else "cpu"
    compiled = compilation(params) == "compiled"
    return name in cal.device and params["server"]["model"] == cal.model and compiled == cal.limits.compiled


def answers(root: Path, cal: Calibration) -> Iterator[Answer]:
    for summary_path in sorted(root.glob("**/summary.json")):
        folder = summary_path.parent
        summary = json.loads(summary_path.read_text())
        if summary.get("experiment") != "e4_goodput" or not (folder / "params.yaml").is_file():
            continue
        params = yaml.safe_load((folder / "params.yaml").read_text())
        if not matches(json.loads((folder / "run_metadata.json").read_text()), params, cal):
            continue
        slos = {s["name"]: s for s in params.get("slos") or []}
        w = params["workload"]
        for row in summary.get("goodput") or []:
            where, slo = placement(row["topology"]), slos.get(row["slo"], {})
            if where is None or not row.get("converged") or not (slo.get("ttft_ms") and slo.get("tpot_ms")):
                continue
            if where.disaggregated and cal.transfer is None:
                continue                                    # the calibration has no KV handoff figures
            yield Answer(f"{folder.relative_to(root)}", where, Workload(input_len=w["input_len"],
                         output_len=w["output_len"]), Slo(ttft_ms=slo["ttft_ms"], tpot_ms=slo["tpot_ms"]),
                         row.get("target", 0.9), row["goodput_per_device"], row.get("per_device_interval_low"),
                         row.get("per_device_interval_high"))


def winners(rows: list[Answer]) -> list[str]:
    """Per run and SLO, where two placements' measured intervals separate: does the model rank them the same way?"""
    lines = []
    by_run: dict[tuple[str, Slo], list[Answer]] = {}
    for a in rows:
        by_run.setdefault((a.run, a.slo), []).append(a)
    for (run, _), group in by_run.items():
        ranged = [a for a in group if a.low is not None and a.high is not None and a.predicted is not None]
        for i, a in enumerate(ranged):
            for b in ranged[i + 1:]:
                ahead, behind = (a, b) if a.measured >= b.measured else (b, a)
                if (ahead.low or 0.0) <= (behind.high or 0.0):
                    continue                                # the intervals overlap: no measured winner
                agrees = (ahead.predicted or 0.0) > (behind.predicted or 0.0)
                lines.append(f"{run}: measured {ahead.placement.name} ahead of {behind.placement.name}; the model "
                             f"{'agrees' if agrees else 'DISAGREES'}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--runs", default="docs/results", help="folder searched for E4 run folders (default docs/results)")
    args = ap.parse_args()
    cal = Calibration.load(Path(args.calibration))
    rows = list(answers(Path(args.runs), cal))
    print(f"calibration {args.calibration}: {cal.model} on {cal.device}, {cal.engine}; {len(rows)} E4 answers match")
    print("| run | placement | in / out | TTFT / TPOT ms | measured per GPU (90% interval) | predicted | measured / "
          "predicted |\n| --- | --- | --- | --- | --- | --- | --- |")
    for a in rows:
        a.predicted = goodput(a.placement, cal, a.workload, a.slo, a.target) / a.placement.gpus
        interval = f" ({a.low:.3g}-{a.high:.3g})" if a.low is not None and a.high is not None else ""
        flag = "" if a.ratio is not None and abs(a.ratio - 1) <= BAR else " (outside 15%)"
        print(f"| {a.run} | {a.placement.name} | {a.workload.input_len} / {a.workload.output_len} | "
              f"{a.slo.ttft_ms:g} / {a.slo.tpot_ms:g} | {a.measured:.3g}{interval} | {a.predicted:.3g} | "
              f"{a.ratio:.2f}{flag} |")
    for line in winners(rows):
        print(line)


if __name__ == "__main__":
    main()
