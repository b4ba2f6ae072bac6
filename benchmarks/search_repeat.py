"""Does `ctxkit bench --search rate` give the same answer twice on one server? Starts one tiny vLLM CPU server (the
default profile's, prefix caching off so a second search with the same seed cannot hit the cache), runs the same
search command against it `--times` times in a row, each a run folder, and prints each answer with its 90% interval,
bracket, probes and closing repeat check, then whether every answer lies inside every other's interval.

    python benchmarks/search_repeat.py [--times 2] [--record docs/validation/search-repeat-cpu.md] [-- BENCH ARGS]

BENCH ARGS default to the review's case: 300-token prompts, 24 out, TTFT 600 ms / TPOT 60 ms, seed 5, every search
parameter at its default.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evidence import ROOT, code_state, record

sys.path.insert(0, str(ROOT))
from ctxkit.backends import VLLMServer  # noqa: E402
from ctxkit.params import DEFAULT_PROFILE, ServerParams, profile_path, read_yaml  # noqa: E402

CASE = ["--random-input-len", "300", "--random-output-len", "24", "--goodput", "ttft:600", "tpot:60", "--seed", "5"]


def search(url: str, runs: Path, label: str, args: list[str]) -> tuple[dict, Path, float]:
    runs = runs / label                 # a runs folder per search: its one run folder is the only one there
    cmd = [sys.executable, "-m", "ctxkit.cli", "--runs-dir", str(runs), "bench", "--base-url", url, "--search",
           "rate", "--label", label, *args]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    folder = max((runs / "bench").glob("*/summary.json"), key=lambda p: p.stat().st_mtime).parent  # --runs-dir reused
    return json.loads((folder / "summary.json").read_text()), folder, wall


def probe_lines(folder: Path) -> str:
    """Each probe in a line: what the interval and the bracket were built from."""
    out = ""
    for p in csv.DictReader((folder / "artifacts" / "bench_probes.csv").open()):
        kind = "repeat" if p["repeat"] == "True" else "scout" if p["scout"] == "True" else "full"
        out += (f"      probe {p['index']:>2} {float(p['rate']):7.2f} req/s {kind:6} {p['verdict']:9} met "
                f"{p['met']}/{p['decided']}  attainment bounds {float(p['attainment_low']):.3f}-"
                f"{float(p['attainment_high']):.3f}  p99 send lag {float(p['send_lag_p99_ms'] or 'nan'):.0f} ms"
                f"{'  (client paced: not scored)' if p['client_lagged'] == 'True' else ''}  {p['decided_by']}\n")
    return out


def line(label: str, s: dict, wall: float) -> str:
    hi = "unbounded" if s["interval_high"] is None else f"{s['interval_high']:.2f}"
    return (f"{label:>3}  {wall:6.0f} s  goodput {s['goodput']:7.2f}  90% interval {s['interval_low']:.2f}-{hi:>9}  "
            f"bracket {s['low'] or 0:.2f}-{s['high'] or float('nan'):.2f}  probes {s['probes']:2d}  converged "
            f"{s['converged']}  repeat: {s['repeat'] or 'not run'}  stopped: {s['stopped_because']}\n")


def inside(a: dict, b: dict) -> bool:
    return b["interval_low"] <= a["goodput"] and (b["interval_high"] is None or a["goodput"] <= b["interval_high"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--times", type=int, default=2)
    ap.add_argument("--record", type=Path, default=None, help="also write the output, command and commit here")
    ap.add_argument("--runs-dir", type=Path, default=None, help="keep the searches' run folders here")
    ap.add_argument("bench_args", nargs="*", help="after --: the bench flags (default: the review's case)")
    args = ap.parse_args()
    code = code_state()
    server = ServerParams(**read_yaml(profile_path(DEFAULT_PROFILE))["server"])
    text = ""
    with tempfile.TemporaryDirectory(prefix="ctxkit-repeat-") as tmp, \
            VLLMServer.from_params(server, seed=0, name="repeat", log_dir=Path(tmp) / "logs",
                                   extra_args=["--no-enable-prefix-caching"]) as srv:
        bench = args.bench_args or CASE
        text += f"one server ({' '.join(srv.command()[-8:]).replace(str(ROOT) + '/', '')}); each search: ctxkit bench --base-url URL --search " \
                f"rate {' '.join(bench)}\n"
        answers = []
        for i in range(args.times):
            summary, folder, wall = search(srv.base_url, args.runs_dir or Path(tmp) / "runs", f"r{i + 1}", bench)
            answers.append(summary["search"])
            text += line(f"r{i + 1}", summary["search"], wall) + probe_lines(folder)
            print(text, flush=True)
    agree = all(inside(a, b) for a in answers for b in answers)
    text += f"every answer inside every other's 90% interval: {'yes' if agree else 'no'}\n"
    print(text.splitlines()[-1])
    if args.record:
        record(args.record, text, code)


if __name__ == "__main__":
    main()
