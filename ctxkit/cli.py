"""ctxkit's command line: run | bench | report | compare | packet | ls | doctor. Each command parses its arguments, checks
them before anything starts, and calls the library (ctxkit.runs, ctxkit.experiments); no measuring happens here."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

from ctxkit import __version__
from ctxkit import params as P
from ctxkit.workspace import runs_root


def _runs_root(args: argparse.Namespace) -> Path:
    return Path(args.runs_dir) if args.runs_dir else runs_root()


def cmd_run(args: argparse.Namespace) -> int:
    from ctxkit.backends.base import BackendUnavailable
    from ctxkit.backends.topology import TopologyError
    from ctxkit.experiments import preflight
    from ctxkit.load.workloads import WorkloadError
    from ctxkit.runs.execute import run_experiment
    from ctxkit.runs.folder import RunFolderError

    try:
        run, ok = run_experiment(args.experiment, profile=args.profile, files=args.param_file, sets=args.set,
                                 label=args.label or "", runs_root=_runs_root(args),
                                 resume=Path(args.resume) if args.resume else None, preflight=preflight.check)
    except (P.ParamError, WorkloadError, RunFolderError, BackendUnavailable, TopologyError) as exc:
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


def cmd_compare(args: argparse.Namespace) -> int:
    from ctxkit.runs.compare import compare
    from ctxkit.runs.folder import RunFolderError

    try:
        path = compare([Path(p) for p in args.run_dirs], _runs_root(args))
    except RunFolderError as exc:
        print(f"ctxkit compare: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from ctxkit.workspace import init_workspace

    try:
        path = init_workspace(Path(args.dir))
    except FileExistsError as exc:
        print(f"ctxkit init: {exc}", file=sys.stderr)
        return 2
    print(f"workspace {path}: notebooks/, params/ (profiles/), templates/; runs go to {path / 'runs'}", file=sys.stderr)
    print(f"next: cd {path} && ctxkit run e0_smoke   (or jupyter lab, then open notebooks/)", file=sys.stderr)
    print(path)
    return 0


def cmd_packet(args: argparse.Namespace) -> int:
    from ctxkit.runs.packet import PacketError, build

    if args.aiconfigurator and not shutil.which(args.aiconfigurator):
        print(f"ctxkit packet: --aiconfigurator {args.aiconfigurator}: no such executable (install the peer in a "
              "virtualenv of its own: python -m venv aic && aic/bin/pip install aiconfigurator; then pass "
              "aic/bin/aiconfigurator)", file=sys.stderr)
        return 2
    try:
        out = build([Path(p) for p in args.run_dirs], Path(args.out), args.title, args.allow_no_commit,
                    # absolute: the peer runs from the repository's root, where a relative path means another file
                    str(Path(shutil.which(args.aiconfigurator)).resolve()) if args.aiconfigurator else None)
    except PacketError as exc:
        print(f"ctxkit packet: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ctxkit.doctor import report

    text, ok = report()
    print(text)
    if args.links:
        from ctxkit.doctor import links_report
        text, links_ok = links_report(args.model, args.tokens)
        print(text)
        ok = ok and links_ok
    return 0 if ok else 1


def list_runs(root: Path, experiment: Optional[str] = None) -> list[dict[str, Any]]:
    from ctxkit.runs.catalog import headline, load_json, runs_table

    table = runs_table(root)
    if experiment:
        table = table[table["experiment"] == experiment]
    rows = table.to_dict(orient="records")
    for row in rows:
        row["headline"] = headline(load_json(Path(row["path"]) / "summary.json"))
    return rows


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


def bench_sets(args: argparse.Namespace) -> list[str]:
    """vLLM-style flags -> parameter overrides (the same checks as any parameter file)."""
    sets: list[str] = []

    def put(key: str, value: Any) -> None:
        if value is not None:
            sets.append(f"{key}={json.dumps(value)}")

    if args.base_url and args.topology:
        raise P.ParamError("--base-url and --topology both name what to measure: give one")
    if args.base_url:
        put("backend", "endpoint")
        put("endpoint_url", args.base_url)
    if args.topology:
        put("backend", "topology")
        put("topology_file", args.topology)
    card = args.tokenizer or args.model
    if card:
        from ctxkit.models import ModelCard, UnknownModelCard
        try:
            put("server.model", str(ModelCard.load(card).path if "/" in card else card))
        except UnknownModelCard:
            pass  # a served model name that is no card: the profile's card sizes the prompts
    put("workload.dataset", args.dataset_name)
    put("workload.dataset_path", args.dataset_path)
    put("workload.input_len", args.random_input_len)
    put("workload.output_len", args.random_output_len)
    put("workload.range_ratio", args.random_range_ratio)
    put("workload.num_prompts", args.num_prompts)
    put("workload.input_dist", args.input_dist)
    put("workload.input_std", args.input_std)
    put("workload.output_dist", args.output_dist)
    put("workload.output_std", args.output_std)
    put("workload.prefix_len", args.prefix_len)
    put("workload.num_prefixes", args.num_prefixes)
    if args.request_rate is not None:
        put("load.request_rate", None if args.request_rate == float("inf") else args.request_rate)
    put("load.burstiness", args.burstiness)
    if args.burstiness is not None and args.burstiness != 1.0 and not args.arrival:
        put("load.arrival", "gamma")
    put("load.arrival", args.arrival)
    if args.concurrency is not None:
        put("load.arrival", "concurrency")
        put("load.concurrency", args.concurrency)
    put("load.max_concurrency", args.max_concurrency)
    put("load.warmup_requests", args.warmup)
    put("load.duration_s", args.duration)
    put("load.workers", args.num_workers)
    put("seed", args.seed)
    put("request_timeout_s", args.timeout)
    put("metrics_interval_s", args.metrics_interval)
    if args.search:
        sets.append("search={}")
        put("search.target", args.target)
        put("search.start_rate", args.search_start_rate)
        put("search.tolerance", args.search_tolerance)
        put("search.max_probes", args.search_max_probes)
    elif args.target is not None:
        raise P.ParamError("--target applies to --search rate")
    if args.calibrate:
        if args.search:
            raise P.ParamError("--calibrate and --search rate are two runs: one at a time")
        sets.append("calibrate={}")
    for pair in args.goodput or []:
        name, _, ms = pair.partition(":")
        key = {"ttft": "slo.ttft_ms", "tpot": "slo.tpot_ms", "e2el": "slo.e2e_ms", "e2e": "slo.e2e_ms"}.get(name)
        if key is None or not ms:
            raise P.ParamError(f"--goodput {pair!r}: expected ttft:MS, tpot:MS or e2el:MS")
        try:
            put(key, float(ms))
        except ValueError:
            raise P.ParamError(f"--goodput {pair!r}: {ms!r} is not a number of milliseconds") from None
    return sets + list(args.set)


def cmd_bench(args: argparse.Namespace) -> int:
    from ctxkit.backends.base import BackendError
    from ctxkit.experiments import bench
    from ctxkit.experiments.common import make_backend
    from ctxkit.load.arrivals import ArrivalError
    from ctxkit.load.workloads import WorkloadError
    from ctxkit.runs import metadata
    from ctxkit.runs.execute import failure_record
    from ctxkit.runs.folder import RunFolder, RunFolderError, atomic_write_json, check_name

    try:
        params = P.resolve("bench", profile=args.profile, files=args.param_file, sets=bench_sets(args))
        if args.label:
            check_name("label", args.label)
        prepared = bench.prepare(params)           # workload files read and lengths checked: nothing started yet
        if params.backend == "endpoint":
            from ctxkit.backends import Endpoint
            Endpoint(params.endpoint_url or "", args.model).start()   # reachable and OpenAI-compatible?
        if params.backend == "topology":
            from ctxkit.backends import AttachedTopology
            AttachedTopology.from_file(params.topology_file or "", model=args.model).check()   # one model, all up
        run = RunFolder.create(_runs_root(args), "bench")
    except (P.ParamError, WorkloadError, ArrivalError, BackendError, RunFolderError) as exc:
        print(f"ctxkit bench: error: {exc}", file=sys.stderr)
        return 2
    resolved = P.to_dict(params)
    run.write_params(resolved)
    run.write_json("run_metadata.json", metadata.collect(run_id=run.run_id, experiment="bench",
                                                         config_hash=P.config_hash("bench", params),
                                                         params=resolved, label=args.label or ""))
    print(f"[ctxkit] bench: run folder {run.path}", file=sys.stderr)
    try:
        backend = make_backend(params, "bench-server" if params.backend != "endpoint" else "endpoint", run)
        if params.backend == "endpoint" and args.model:
            backend.model = args.model
        if params.backend == "topology" and args.model:
            from ctxkit.backends import AttachedTopology
            backend = AttachedTopology.from_file(params.topology_file or "", name=backend.name, model=args.model)
        summary = bench.run(params, run, backend, log=lambda s: print(s, file=sys.stderr, flush=True),
                            prepared=prepared)
        if "search" in summary:
            res = summary["search"]
            print(f"[ctxkit] goodput {res['goodput']:.3f} req/s at attainment >= {res['target']:g} "
                  f"({res['probes']} probes; {res['stopped_because']})", file=sys.stderr)
        elif "calibration" in summary:
            print(f"[ctxkit] calibration: {run.path / 'calibration.json'} (ctxkit plan --calibration ...)",
                  file=sys.stderr)
        else:
            _print_window(summary["profiling"]["latency"])
        run.set_status("succeeded")
        ok = True
    except KeyboardInterrupt as exc:
        atomic_write_json(run.path / "failure.json", failure_record(exc, "interrupted"))
        run.set_status("interrupted")
        ok = False
    except Exception as exc:  # noqa: BLE001 - recorded in the run folder and on screen
        atomic_write_json(run.path / "failure.json", failure_record(exc, "bench"))
        run.set_status("failed")
        print(f"[ctxkit] FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        ok = False
    print(run.path)
    return 0 if ok else 1


def _print_window(lat: dict[str, Any]) -> None:
    print(f"[ctxkit] completed {lat['completed']}/{lat['requests']}, {lat['request_throughput']:.2f} req/s, "
              f"{lat['output_throughput']:.1f} out tok/s, median TTFT {lat['ttft_ms']['p50'] or 0:.1f} ms, "
              f"median TPOT {lat['tpot_ms']['p50'] or 0:.2f} ms", file=sys.stderr)


SEARCH = P.SearchParams.model_fields      # the search flags' defaults, read where they are defined


def cmd_plan(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ctxkit.plan.costs import Calibration
    from ctxkit.plan.placements import Slo, Workload
    from ctxkit.plan.planner import plan, render

    try:
        cal = Calibration.load(Path(args.calibration))
        gpus = [int(n) for n in args.gpus.split(",")]
        workload = Workload(input_len=args.input_len, output_len=args.output_len)
        slo = Slo(ttft_ms=args.ttft_ms, tpot_ms=args.tpot_ms)
        if not all(1 <= n <= 64 for n in gpus) or not 0 < args.target < 1 or args.draws < 0:
            raise ValueError("--gpus takes counts from 1 to 64, --target a share between 0 and 1, --draws 0 or more")
    except (OSError, ValueError) as exc:        # pydantic's ValidationError is a ValueError
        print(f"ctxkit plan: error: {exc}", file=sys.stderr)
        return 2
    print(f"Calibration: {args.calibration} ({cal.model} on {cal.device}, {cal.engine}; runs "
          f"{', '.join(cal.runs) or '-'}, commit {cal.commit or '-'})" + ("" if cal.transfer else
          "; no KV transfer figures: aggregated placements only"))
    plans = []
    for n in gpus:
        with tqdm(desc=f"{n} GPU(s)", unit=" placement", file=sys.stderr, leave=False) as bar:
            try:
                plans.append(plan(cal, n, workload, slo, target=args.target, draws=args.draws,
                                  progress=lambda name: (bar.set_postfix_str(name), bar.update())))
            except ValueError as exc:           # a calibration whose costs no rate overwhelms
                print(f"ctxkit plan: error: {exc}", file=sys.stderr)
                return 2
        peer = _peer_rates(args.aiconfigurator, cal, plans[-1]) if args.aiconfigurator else None
        print("\n" + render(plans[-1], peer))
    if args.json:
        Path(args.json).write_text(json.dumps([p.model_dump(mode="json") for p in plans], indent=1) + "\n")
    return 0


def _peer_rates(exe: str, cal, p) -> dict:
    """AIConfigurator's req/s for each placement of a plan (None where it has none)."""
    from ctxkit.runs.peer_table import predict_one

    params = {"workload": p.workload.model_dump(), "server": {"model": cal.model}}
    gpu = cal.device.split(" x ", 1)[-1]
    rates = {}
    for r in p.predicted:
        prediction, why = predict_one(exe, params, gpu, r.placement, p.slo.model_dump())
        rates[r.placement.name] = prediction.request_rate if prediction else None
        if prediction is None:
            print(f"[ctxkit] AIConfigurator, {r.placement.name}: {why}", file=sys.stderr)
    return rates


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ctxkit", description="LLM-serving experiments on real vLLM, one run folder each.")
    ap.add_argument("--version", action="version", version=f"ctxkit {__version__}")
    ap.add_argument("--runs-dir", help="where run folders go (default: <project>/runs)")
    sub = ap.add_subparsers(dest="command", required=True)

    add_run(sub)
    add_bench(sub)
    add_reading(sub)
    add_workspace(sub)
    return ap


def add_run(sub: Any) -> None:
    run = sub.add_parser("run", help="execute an experiment notebook into a new run folder")
    run.add_argument("experiment", help=f"one of: {', '.join(sorted(P.EXPERIMENTS))}")
    run.add_argument("-p", "--param-file", action="append", default=[], type=Path, metavar="FILE",
                     help="a YAML parameter file layered over the experiment's and the profile's (repeatable)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one parameter, dotted keys (server.max_model_len=2048), YAML values")
    run.add_argument("--profile", default=P.DEFAULT_PROFILE,
                     help=f"params/profiles/<name>.yaml (default {P.DEFAULT_PROFILE})")
    run.add_argument("--label", help="a short tag kept in the run metadata")
    run.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted sweep in its own run folder, "
                                                         "skipping the points already done (e2_concurrency)")
    run.set_defaults(func=cmd_run)


def add_bench(sub: Any) -> None:
    b = sub.add_parser("bench", help="benchmark one workload against a server (vLLM's flag names)",
                       description="Without --base-url, the profile's backend is started (default cpu-tiny).")
    b.add_argument("--base-url", help="an OpenAI-compatible server already running (else the profile's is started)")
    b.add_argument("--topology", help="a deployment's topology file (entry point, instances and roles): measured "
                   "through its entry point, every instance scraped (docs/scale-out.md)")
    b.add_argument("--model", help="served model name / model card")
    b.add_argument("--tokenizer", help="model card (name or folder) whose tokenizer and vocabulary size the prompts use")
    b.add_argument("--dataset-name", choices=["random", "sharegpt", "trace"])
    b.add_argument("--dataset-path", help="ShareGPT JSON or trace JSONL")
    b.add_argument("--random-input-len", type=int)
    b.add_argument("--random-output-len", type=int)
    b.add_argument("--random-range-ratio", type=float)
    b.add_argument("--num-prompts", type=int)
    b.add_argument("--request-rate", type=float, help="req/s (inf: all at once)")
    b.add_argument("--burstiness", type=float, help="gamma shape; 1 = Poisson")
    b.add_argument("--max-concurrency", type=int)
    b.add_argument("--seed", type=int)
    b.add_argument("--goodput", nargs="+", metavar="KEY:MS", help="SLOs: ttft:MS tpot:MS e2el:MS")
    b.add_argument("--search", choices=["rate"],
                   help="search the highest Poisson rate meeting the SLOs at --target (a trace: the highest rate "
                        "of its own timestamps, scaled)")
    b.add_argument("--calibrate", action="store_true",
                   help="measure the step costs `ctxkit plan` predicts from (prefills alone, decode waves) into "
                        "the run folder's calibration.json; calibrate.* parameters shape it")
    b.add_argument("--target", type=float, help="SLO attainment the search must reach "
                   f"(default {SEARCH['target'].default:g})")
    b.add_argument("--search-start-rate", type=float, help=f"req/s of the first probe (default {SEARCH['start_rate'].default:g})")
    b.add_argument("--search-tolerance", type=float, help="stop when fail/pass rates are within 1 + this "
                   f"(default {SEARCH['tolerance'].default:g})")
    b.add_argument("--search-max-probes", type=int, help=f"probes at most (default {SEARCH['max_probes'].default})")
    b.add_argument("--arrival", choices=["poisson", "gamma", "constant", "trace", "concurrency"])
    b.add_argument("--concurrency", type=int, help="closed loop with this many clients")
    b.add_argument("--input-dist", choices=["fixed", "uniform", "normal", "lognormal"])
    b.add_argument("--input-std", type=float)
    b.add_argument("--output-dist", choices=["fixed", "uniform", "normal", "lognormal"])
    b.add_argument("--output-std", type=float)
    b.add_argument("--prefix-len", type=int, help="shared-prefix tokens per group")
    b.add_argument("--num-prefixes", type=int)
    b.add_argument("--warmup", type=int, help="warmup requests (excluded)")
    b.add_argument("--duration", type=float, help="stop sending after this many seconds")
    b.add_argument("--num-workers", type=int, help="client processes sharing the schedule (default 1): when one "
                                                   "process falls behind its send times")
    b.add_argument("--timeout", type=float, help="per-request timeout (s)")
    b.add_argument("--metrics-interval", type=float, help="also scrape /metrics every this many seconds")
    b.add_argument("--profile", default=P.DEFAULT_PROFILE,
                   help=f"params/profiles/<name>.yaml: the backend it starts without --base-url (default "
                        f"{P.DEFAULT_PROFILE})")
    b.add_argument("-p", "--param-file", action="append", default=[], type=Path, metavar="FILE",
                   help="a YAML parameter file (bench keys: workload, load, slo, ...), as for `ctxkit run`")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--label")
    b.set_defaults(func=cmd_bench)


def add_reading(sub: Any) -> None:
    """Commands that read run folders: report, compare, packet, ls."""
    rep = sub.add_parser("report", help="render report.html of a run folder again")
    rep.add_argument("run_dir")
    rep.set_defaults(func=cmd_report)

    cmp_ = sub.add_parser("compare", help="overlay runs of one experiment in one comparison report")
    cmp_.add_argument("run_dirs", nargs="+")
    cmp_.set_defaults(func=cmd_compare)

    pkt = sub.add_parser("packet", help="copy runs into a results packet whose README tables come from their summaries")
    pkt.add_argument("run_dirs", nargs="+")
    pkt.add_argument("--out", required=True, help="the packet folder (e.g. docs/results/2026-11-28-h200)")
    pkt.add_argument("--title", default=None)
    pkt.add_argument("--allow-no-commit", action="store_true", help="accept runs that recorded no commit")
    pkt.add_argument("--aiconfigurator", default=None, metavar="EXE",
                     help="set AIConfigurator's prediction beside each E4 answer (the peer's executable, in a "
                     "virtualenv of its own); kept in the packet for later regenerations")
    pkt.set_defaults(func=cmd_packet)

    pl = sub.add_parser("plan", help="predict every placement of N GPUs from a calibration (bench --calibrate)")
    pl.add_argument("--calibration", required=True, help="calibration.json of a `ctxkit bench --calibrate` run")
    pl.add_argument("--gpus", default="1,2,4,8", help="GPU counts, comma-separated (default 1,2,4,8)")
    pl.add_argument("--input-len", type=int, required=True)
    pl.add_argument("--output-len", type=int, required=True)
    pl.add_argument("--ttft-ms", type=float, required=True)
    pl.add_argument("--tpot-ms", type=float, required=True)
    pl.add_argument("--target", type=float, default=0.9, help="SLO attainment (default 0.9)")
    pl.add_argument("--draws", type=int, default=8,
                    help="calibrations drawn from the fits' spread for each placement's interval (default 8; 0: none)")
    pl.add_argument("--aiconfigurator", metavar="EXE", help="AIConfigurator's executable: its prediction beside each")
    pl.add_argument("--json", metavar="FILE", help="also write the plans as JSON")
    pl.set_defaults(func=cmd_plan)

    ls = sub.add_parser("ls", help="list runs")
    ls.add_argument("experiment", nargs="?")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)


def add_workspace(sub: Any) -> None:
    """init and doctor: the workspace and what this host can run."""
    ini = sub.add_parser("init", help="lay out a workspace (notebooks, parameter files, templates) to edit and run in")
    ini.add_argument("dir", help="a new or empty folder")
    ini.set_defaults(func=cmd_init)

    doc = sub.add_parser("doctor", help="what is installed and usable, with the fix for each problem")
    doc.add_argument("--links", action="store_true",
                     help="also measure the link a KV handoff crosses (GPU 0 -> 1 peer copies, or the tmpfs folder)")
    doc.add_argument("--model", default=None, help="model card for the handoff's descriptor size (default: "
                                                    "llama-3.1-8b on GPUs, tiny-llama on the CPU)")
    doc.add_argument("--tokens", type=int, default=2048, help="prompt tokens of the handoff (default 2048)")
    doc.set_defaults(func=cmd_doctor)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
