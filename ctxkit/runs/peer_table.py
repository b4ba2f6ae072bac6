"""A packet's E4 answers set beside a peer planner's predictions (AIConfigurator, ctxkit.peers.aiconfigurator).

The predictions are made when the packet is built with the peer's executable and kept in the packet
(aiconfigurator.json): a packet regenerated on a machine without the peer keeps the table, and a reader sees the
exact command each number came from.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, TypeAdapter

from ctxkit.models import CARDS_DIR, ModelCard, UnknownModelCard
from ctxkit.peers import aiconfigurator as aic
from ctxkit.plan.placements import Placement
from ctxkit.runs import placements
from ctxkit.runs.markdown import table

KEPT = "aiconfigurator.json"


class PeerRow(BaseModel):
    run: str
    slo: str
    topology: str
    goodput: Optional[float]
    interval_low: Optional[float]
    interval_high: Optional[float]
    ran: str                       # how the run's servers ran the model (compiled | eager): the peer assumes compiled
    prediction: Optional[aic.Prediction]
    why_none: str = ""             # where there is no prediction: why (no database for the GPU, a length spread)


ROWS = TypeAdapter(list[PeerRow])


def placement(topology: str) -> Optional[Placement]:
    """E4's topology label ("aggregated x2", "3P1D nixl") in the peer's terms."""
    if m := re.match(r"aggregated x(\d+)", topology):
        return Placement(replicas=int(m.group(1)))
    if m := re.match(r"(\d+)P(\d+)D", topology):
        return Placement(prefill=int(m.group(1)), decode=int(m.group(2)))
    return None


def why_not(params: dict[str, Any], gpu: str) -> str:
    """Why the peer cannot predict this run ("" where it can): it models fixed lengths on GPUs it has data for."""
    w = params.get("workload") or {}
    if params.get("backend") == "topology":
        return "an attached deployment (its model and placement are not the run's parameters)"
    if w.get("dataset", "random") != "random" or w.get("input_dist", "fixed") != "fixed" or \
            w.get("output_dist", "fixed") != "fixed" or w.get("prefix_len"):
        return "a workload of varying lengths or shared prefixes (the peer takes one input and output length)"
    if aic.system_for(gpu) is None:
        return f"no peer database for {gpu or 'a run without a GPU'}"
    return ""


def _value(g: dict[str, Any], key: str) -> Optional[float]:
    """A number from a summary row; a table's empty cell (NaN in summary.json) is None."""
    v = g.get(key)
    return None if v is None or v != v else float(v)


def _ran(params: dict[str, Any], topology: str) -> str:
    """How this arm's servers ran the model: the servers' settings with the topology's own flags on top."""
    spec: dict[str, Any] = next((t for t in params.get("topologies") or [] if t.get("name") == topology or
                                 placement(topology) == placement_of(t)), {})
    server = params.get("server") or {}
    merged = {**params, "server": {**server, "extra_args": list(server.get("extra_args") or []) +
                                   list(spec.get("extra_args") or [])}}
    return placements.compilation(merged)


def placement_of(spec: dict[str, Any]) -> Optional[Placement]:
    if spec.get("kind", "aggregated") == "aggregated":
        return Placement(replicas=spec.get("replicas", 1))
    return Placement(prefill=spec.get("prefill", 1), decode=spec.get("decode", 1))


def predict_one(exe: str, params: dict[str, Any], gpu: str, where: Placement, slo: dict[str, Any]) \
        -> tuple[Optional[aic.Prediction], str]:
    """The peer's prediction, or why there is none (the peer failed, an SLO without both limits, no card)."""
    if slo.get("ttft_ms") is None or slo.get("tpot_ms") is None:
        return None, "an SLO without both a TTFT and a TPOT limit (the peer takes both)"
    w = params["workload"]
    try:
        card = ModelCard.load(params["server"]["model"]).path
    except UnknownModelCard as exc:
        return None, str(exc)
    root = CARDS_DIR.parent.parent      # the command names the card as a user's checkout has it
    system = aic.system_for(gpu)
    if system is None:
        return None, f"no peer system for {gpu or 'no GPU'}"
    try:
        return aic.predict(exe, card.relative_to(root) if root in card.parents else card, system,
                           where, w["input_len"], w["output_len"], slo["ttft_ms"], slo["tpot_ms"], cwd=root), ""
    except aic.PeerError as exc:
        return None, f"the peer failed: {str(exc)[-300:]}"


def predict_rows(runs: list[tuple[str, dict[str, Any], dict[str, Any], str]], exe: str) -> list[PeerRow]:
    """runs: (folder, summary, params, GPU name) of each E4 run; one row per searched topology and SLO (a topology
    that could not be searched has no answer to set a prediction beside)."""
    rows = []
    for name, summary, params, gpu in runs:
        slos = {s["name"]: s for s in params.get("slos") or []}
        reason = why_not(params, gpu)
        for g in summary.get("goodput") or []:
            if isinstance(g.get("error"), str):
                continue
            where = placement(g["topology"])
            slo = slos.get(g.get("slo"))
            why = reason or ("" if where and slo else "a topology or SLO the peer cannot take")
            if not why and where and g.get("devices") is not None and g["devices"] != where.gpus:
                why = f"{g['devices']} GPUs used for {where.gpus} servers (shared GPUs): the peer gives each its own"
            prediction = None
            if not why and where and slo:
                prediction, why = predict_one(exe, params, gpu, where, slo)
            rows.append(PeerRow(run=name, slo=g.get("slo", "?"), topology=g["topology"], goodput=_value(g, "goodput"),
                                interval_low=_value(g, "interval_low"), interval_high=_value(g, "interval_high"),
                                ran=_ran(params, g["topology"]), prediction=prediction, why_none=why))
    return rows


def current(rows: list[PeerRow], runs: list[tuple[str, dict[str, Any]]]) -> list[PeerRow]:
    """The kept rows that still describe the packet's runs (folder, topology, SLO and goodput alike): a packet
    regenerated over other runs drops the rest."""
    now = {(name, g["topology"], g.get("slo", "?"), _value(g, "goodput"))
           for name, summary in runs for g in summary.get("goodput") or [] if not isinstance(g.get("error"), str)}
    return [r for r in rows if (r.run, r.topology, r.slo, r.goodput) in now]


def kept(out: Path) -> Optional[list[PeerRow]]:
    path = out / KEPT
    return ROWS.validate_json(path.read_bytes()) if path.is_file() else None


def keep(out: Path, rows: list[PeerRow]) -> None:
    (out / KEPT).write_bytes(ROWS.dump_json(rows, indent=1))


def inside(row: PeerRow) -> str:
    rate = row.prediction.request_rate if row.prediction else None
    if rate is None or row.interval_low is None:
        return "-"
    return "yes" if row.interval_low <= rate and (row.interval_high is None or rate <= row.interval_high) else "no"


def lines(rows: list[PeerRow]) -> list[str]:
    """The README section: each answer, its 90% interval and the peer's prediction, with the peer's commands."""
    if not rows:
        return []
    def fmt(x: Optional[float]) -> str:
        return "-" if x is None else f"{x:.2f}"
    cells = []
    for r in rows:
        p = r.prediction
        rate = p.request_rate if p else None
        interval = "- (a bracket only: before intervals)" if r.interval_low is None else \
            f"{fmt(r.interval_low)}-{'unbounded' if r.interval_high is None else fmt(r.interval_high)}"
        cells.append([r.run, r.slo, r.topology, r.ran, p.system if p else "-", fmt(r.goodput), interval,
                      (fmt(rate) if rate is not None else "- (the peer printed no such configuration)") if p else r.why_none, fmt(r.goodput / rate) if rate and r.goodput is not None else "-",
                      inside(r), p.concurrency or "-" if p else "-"])
    head = ["run", "SLO", "topology", "ran", "peer system", "goodput req/s", "90% interval", "AIConfigurator req/s",
            "measured / predicted", "prediction inside the interval", "peer's batch"]
    commands = sorted({" ".join(r.prediction.command) for r in rows if r.prediction})
    versions = sorted({r.prediction.version for r in rows if r.prediction})
    text = ["### E4 beside AIConfigurator", "",
            f"AIConfigurator {', '.join(versions) or '?'} (kept in {KEPT}) predicts the request rate of a steady batch "
            "whose requests meet the TTFT and TPOT limits; E4 measures the highest Poisson arrival rate at which the "
            "target share of requests meets them. The definitions differ, so agreement is a check, not a proof. The peer models compiled servers: "
            "an eager arm is not its equal.", ""]
    text += table(head, cells) + [""]
    return text + ["Commands:", ""] + [f"- `{c}`" for c in commands] + [""]
