"""ctxkit's command line: run | report | ls (compare, bench and doctor join as they are built)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from ctxkit import __version__
from ctxkit import params as P


def _runs_root(args: argparse.Namespace) -> Path:
    return Path(args.runs_dir) if args.runs_dir else P.project_root() / "runs"


def cmd_run(args: argparse.Namespace) -> int:
    from ctxkit.backends.base import BackendUnavailable
    from ctxkit.runs.execute import run_experiment
    from ctxkit.runs.folder import RunFolderError

    try:
        run, ok = run_experiment(args.experiment, profile=args.profile, files=args.param_file, sets=args.set,
                                 label=args.label or "", runs_root=_runs_root(args))
    except (P.ParamError, RunFolderError, BackendUnavailable) as exc:
        print(f"ctxkit run: error: {exc}", file=sys.stderr)
        return 2
    print(run.path)
    return 0 if ok else 1


def cmd_report(args: argparse.Namespace) -> int:
    from ctxkit.runs.folder import RunFolderError
    from ctxkit.runs.report import ReportError, render_report

    try:
        path = render_report(Path(args.run_dir))
    except (ReportError, RunFolderError) as exc:
        print(f"ctxkit report: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _headline(summary: dict[str, Any]) -> str:
    lat = summary.get("profiling", {}).get("latency", {})
    parts = []
    for key, label in (("ttft_ms", "TTFT p50"), ("tpot_ms", "TPOT p50")):
        value = (lat.get(key) or {}).get("p50")
        if value is not None:
            parts.append(f"{label} {value:.1f} ms")
    checks = summary.get("checks", {})
    if checks:
        parts.append(f"checks {sum(c.get('passed', False) for c in checks.values())}/{len(checks)}")
    return ", ".join(parts)


def list_runs(root: Path, experiment: Optional[str] = None) -> list[dict[str, Any]]:
    from ctxkit.runs.folder import RUN_ID_RE, RunFolder

    rows = []
    for path in sorted(root.glob("*/run-*")):
        if not path.is_dir() or not RUN_ID_RE.match(path.name):
            continue
        if experiment and path.parent.name != experiment:
            continue
        run = RunFolder(path)
        meta = _load(path / "run_metadata.json")
        summary = _load(path / "summary.json")
        rows.append({"run_id": run.run_id, "experiment": run.experiment, "status": run.status(),
                     "backend_mode": meta.get("backend_mode", "?"), "label": meta.get("label", ""),
                     "headline": _headline(summary), "path": str(path)})
    return sorted(rows, key=lambda r: r["run_id"])


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def cmd_ls(args: argparse.Namespace) -> int:
    rows = list_runs(_runs_root(args), args.experiment)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs under {_runs_root(args)}")
        return 0
    fmt = "{run_id:34} {experiment:16} {status:12} {backend_mode:10} {headline}"
    print(fmt.format(run_id="RUN", experiment="EXPERIMENT", status="STATUS", backend_mode="BACKEND",
                     headline="HEADLINE"))
    for row in rows:
        print(fmt.format(**row))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ctxkit", description="LLM-serving experiments on real vLLM, one run folder each.")
    ap.add_argument("--version", action="version", version=f"ctxkit {__version__}")
    ap.add_argument("--runs-dir", help="where run folders go (default: <project>/runs)")
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute an experiment notebook into a new run folder")
    run.add_argument("experiment", help=f"one of: {', '.join(sorted(P.EXPERIMENTS))}")
    run.add_argument("-p", "--param-file", action="append", default=[], type=Path, metavar="FILE",
                     help="a YAML parameter file layered over the experiment's and the profile's (repeatable)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one parameter, dotted keys (server.max_model_len=2048), YAML values")
    run.add_argument("--profile", default=P.DEFAULT_PROFILE,
                     help=f"params/profiles/<name>.yaml (default {P.DEFAULT_PROFILE})")
    run.add_argument("--label", help="a short tag kept in the run metadata")
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="render report.html of a run folder again")
    rep.add_argument("run_dir")
    rep.set_defaults(func=cmd_report)

    ls = sub.add_parser("ls", help="list runs")
    ls.add_argument("experiment", nargs="?")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)
    return ap


def _show_notebook_output() -> None:
    """papermill logs the kernel's output (log_output=True) through `logging`: show it as plain lines."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("papermill")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _show_notebook_output()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
