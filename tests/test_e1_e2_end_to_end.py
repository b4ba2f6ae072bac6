"""E1 and E2 end to end on the cpu-tiny profile, the interrupted-and-resumed sweep, the comparison report, and
every report opened in headless Chromium."""
from __future__ import annotations

import gzip
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ctxkit.hardware import gpu_inventory
from ctxkit.runs import packet

from browser import probe_report
from conftest import ROOT, run_cli

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

E2_FAST = ["--set", "concurrency_levels=[1, 2, 4, 8]", "--set", "requests_per_point=16"]


def last_line_path(result) -> Path:
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_dir(), result.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def e1_run(runs_root):
    result = run_cli("--runs-dir", str(runs_root), "run", "e1_latency")
    assert result.returncode == 0, result.stderr[-4000:]
    return last_line_path(result), result


@pytest.fixture(scope="module")
def e2_run(runs_root):
    result = run_cli("--runs-dir", str(runs_root), "run", "e2_concurrency", *E2_FAST, "--label", "full")
    assert result.returncode == 0, result.stderr[-4000:]
    return last_line_path(result), result


def assert_report_renders(report: Path, min_figures: int):
    seen = probe_report(report)
    assert seen["errors"] == [], seen["errors"]
    assert seen["wide_tables"] == [] and seen["page_width"] <= seen["viewport"], seen   # nothing scrolls sideways
    figures = [f for f in seen["figures"] if f["tag"] == "img"]
    assert len(figures) >= min_figures, seen["figures"]
    for f in figures:
        assert f["width"] > 0 and f["height"] > 0 and f["natural"] > 0, f


def test_e1_folder_curves_and_report(e1_run):
    run, result = e1_run
    for name in ("artifacts/e1_latency_curve.csv", "artifacts/e1_ttft_curve.svg", "artifacts/e1_tpot_curve.svg",
                 "summary.json", "report.html", "requests.jsonl", "notebook.ipynb"):
        assert (run / name).is_file(), name
    curve = pd.read_csv(run / "artifacts/e1_latency_curve.csv")
    assert list(curve["prompt_len"]) == [64, 128, 256, 512, 1024, 2048]
    for col in ("count", "p50_ttft_ms", "p95_ttft_ms", "avg_ttft_ms", "min_ttft_ms", "max_ttft_ms",
                "p50_tpot_ms", "p95_tpot_ms", "avg_tpot_ms", "min_tpot_ms", "max_tpot_ms"):
        assert col in curve, col
    assert (curve["count"] == 5).all()
    assert curve["p50_ttft_ms"].iloc[-1] > curve["p50_ttft_ms"].iloc[0]           # TTFT rises with length
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    gpu = summary["profiling"]["gpu"]
    assert gpu["available"] == gpu_inventory()["available"]                     # sampled where there are GPUs
    assert gpu["gpus"] if gpu["available"] else gpu["reason"]
    assert "point 6/6" in result.stderr                                          # progress on screen
    assert_report_renders(run / "report.html", min_figures=2)


def test_e2_folder_curves_goodput_and_report(e2_run):
    run, _ = e2_run
    for name in ("artifacts/e2_concurrency_curve.csv", "artifacts/e2_throughput_curve.svg",
                 "artifacts/e2_latency_curve.svg", "artifacts/e2_goodput_curve.svg", "report.html"):
        assert (run / name).is_file(), name
    curve = pd.read_csv(run / "artifacts/e2_concurrency_curve.csv")
    assert list(curve["concurrency"]) == [1, 2, 4, 8]
    assert curve["output_throughput"].iloc[-1] > curve["output_throughput"].iloc[0]
    for col in ("p50_ttft_ms", "p95_ttft_ms", "p99_ttft_ms", "p50_tpot_ms", "p99_e2e_ms", "slo_attainment"):
        assert col in curve, col
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert_report_renders(run / "report.html", min_figures=4)


def test_e2_server_gauges_sit_on_the_clients_clock(e2_run):
    """The server's gauges, scraped every metrics_interval_s (default 1 s), are stamped on the clock of the
    requests' records, so the report's timeline shows them beside the client's requests in flight."""
    run, _ = e2_run
    timeline = pd.read_csv(run / "artifacts/e2_server_timeline.csv")
    assert set(timeline["server"]) == {"server"}
    records = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    for point in ("c1", "c2", "c4", "c8"):
        sent = [r for r in records if not r["warmup"] and r["tags"]["point"] == point]
        rows = timeline[timeline["point"] == point]
        assert len(rows) >= 2, point                                 # its window's first and last scrape at least
        # the first scrape comes before the point's first send, the last after its last answer, within seconds
        assert min(r["t_send_ns"] for r in sent) - 5e9 < rows["t_ns"].min() <= min(r["t_send_ns"] for r in sent)
        assert max(r["t_end_ns"] for r in sent) <= rows["t_ns"].max() < max(r["t_end_ns"] for r in sent) + 5e9
    assert (run / "artifacts/e2_server_timeline.svg").is_file()


@pytest.fixture(scope="module")
def e2_resumed(runs_root):
    """An E2 run (40 requests a point: one parameter differs from e2_run, and the points after the first last long
    enough to be interrupted in) interrupted by Ctrl-C after its first point, then finished with --resume. Returns
    the run, what was done before the resume, and both results."""
    proc = subprocess.Popen([sys.executable, "-m", "ctxkit.cli", "--runs-dir", str(runs_root), "run",
                             "e2_concurrency", *E2_FAST, "--set", "requests_per_point=40", "--label", "resumed"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    point = None
    while time.monotonic() < deadline and point is None:
        found = list((runs_root / "e2_concurrency").glob("run-*/artifacts/e2_points/c1.json"))
        point = next((p for p in found if "resumed" in (p.parents[2] / "run_metadata.json").read_text()), None)
        time.sleep(0.1)
    assert point is not None, "first point never finished"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    run = point.parents[2]
    interrupted = {"returncode": proc.returncode, "stderr": err,
                   "status": json.loads((run / "status.json").read_text())["status"],
                   "failure": json.loads((run / "failure.json").read_text()) if (run / "failure.json").exists()
                   else None,
                   "done": {p.name for p in (run / "artifacts/e2_points").glob("*.json")},
                   "lines": (run / "requests.jsonl").read_text().splitlines()}
    from ctxkit.backends.process import group_members
    interrupted["alive"] = [g for g in (run / "logs/process_groups.txt").read_text().split() if group_members(int(g))]
    resumed = run_cli("--runs-dir", str(runs_root), "run", "e2_concurrency", "--resume", str(run))
    return run, interrupted, resumed


def test_e2_interrupted_then_resumed(e2_resumed):
    """Ctrl-C after the first point: status interrupted, servers gone; --resume measures only what is missing."""
    run, before, result = e2_resumed
    assert before["returncode"] == 1, before["stderr"][-3000:]
    assert before["status"] == "interrupted"
    assert before["failure"] is not None, before["stderr"][-3000:]
    assert before["failure"]["error_type"] in ("KeyboardInterrupt", "Interrupted")
    assert before["alive"] == []
    for line in before["lines"]:
        json.loads(line)                                                         # every line valid JSON
    assert "c1.json" in before["done"] and len(before["done"]) < 4

    assert result.returncode == 0, result.stderr[-4000:]
    assert last_line_path(result) == run
    assert "already done" in result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["resumed_points"]) == {p[:-5] for p in before["done"]}
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert [p["requests"] for p in summary["sweep"]] == [40] * 4
    assert (run / "notebook.attempt-0.ipynb").is_file() and (run / "failure.attempt-0.json").is_file()
    assert json.loads((run / "status.json").read_text())["status"] == "succeeded"


def test_compare_two_e2_runs(e2_run, e2_resumed, runs_root):
    full, resumed = e2_run[0], e2_resumed[0]
    result = run_cli("--runs-dir", str(runs_root), "compare", str(full), str(resumed))
    assert result.returncode == 0, result.stderr
    out = last_line_path(result)
    head = pd.read_csv(out / "artifacts/headline.csv")
    assert set(head["label"]) == {"full", "resumed"}
    diff = pd.read_csv(out / "artifacts/differences.csv")
    (row,) = diff[diff["key"] == "requests_per_point"].to_dict("records")   # the one parameter that differs
    assert (row["kind"], row[full.name], row[resumed.name]) == ("parameter", 16, 40)
    assert diff["kind"].eq("parameter").sum() == 1
    seen = probe_report(out / "report.html")
    assert seen["errors"] == [] and sum(f["tag"] == "svg" and f["width"] > 0 for f in seen["figures"]) >= 3
    bad = run_cli("--runs-dir", str(runs_root), "compare", str(full))
    assert bad.returncode == 2 and "at least two" in bad.stderr


def readme_table(text: str, heading_start: str) -> list[dict[str, str]]:
    """The first markdown table under the '### ' heading that starts with heading_start, as dicts."""
    lines = text.split(f"### [{heading_start}", 1)[1].splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([c.strip() for c in line.strip("|").split("|")])
    return [dict(zip(block[0], row)) for row in block[2:]]


def close(cell: str, value: float, digits: int) -> bool:
    return abs(float(cell.replace(",", "").rstrip("%")) - value) <= 0.5 * 10 ** -digits + 1e-9


def test_packet_tables_are_the_runs_summaries(e1_run, e2_run, tmp_path, monkeypatch):
    """`ctxkit packet` on two real runs: every headline cell is its summary's number; notes survive a rebuild; a
    run without a recorded commit is refused before anything is written; a file over the size cap stays out and
    the README names it."""
    (e1, _), (e2, _) = e1_run, e2_run
    out = tmp_path / "packet"
    result = run_cli("packet", str(e1), str(e2), "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = (out / "README.md").read_text()
    s1, s2 = (json.loads((p / "summary.json").read_text()) for p in (e1, e2))
    rows = readme_table(text, "e2_concurrency")
    assert [r["point"] for r in rows] == [p["point"] for p in s2["sweep"]]
    for row, point in zip(rows, s2["sweep"]):
        assert close(row["req/s"], point["request_throughput"], 2), (row, point)
        assert close(row["p99 TTFT ms"], point["p99_ttft_ms"], 1), (row, point)
        assert close(row["in SLO"], 100 * point["slo_attainment"], 0), (row, point)
    rows = readme_table(text, "e1_latency")
    assert [int(r["prompt tokens"].replace(",", "")) for r in rows] == [p["prompt_len"] for p in s1["sweep"]]
    assert all(close(r["p50 TTFT ms"], p["p50_ttft_ms"], 1) for r, p in zip(rows, s1["sweep"]))
    commit = json.loads((e1 / "run_metadata.json").read_text())["git"]["commit"]
    assert commit and commit[:12] in text
    for name in ("summary.json", "run_metadata.json", "params.yaml", "report.html.gz"):   # the report kept gzipped
        assert (out / "e2_concurrency" / name).is_file(), name
    assert "[e2_concurrency](e2_concurrency/report.html.gz)" in text
    assert gzip.decompress((out / "e2_concurrency/report.html.gz").read_bytes()) == (e2 / "report.html").read_bytes()
    assert (out / "e2_concurrency/artifacts/e2_concurrency_curve.csv").is_file()

    notes = "Hand-written: the TTFT knee sits between concurrency 4 and 8."
    (out / "README.md").write_text(text.replace("<!-- ctxkit packet: end of notes -->",
                                                notes + "\n<!-- ctxkit packet: end of notes -->"))
    assert run_cli("packet", str(e1), str(e2), "--out", str(out)).returncode == 0
    again = (out / "README.md").read_text()
    assert notes in again and again.replace(notes + "\n", "") == text

    no_commit = tmp_path / "no-commit"
    shutil.copytree(e1, no_commit)
    (no_commit / "run_metadata.json").chmod(0o644)    # a run's files are read-only: this is a doctored copy
    meta = json.loads((no_commit / "run_metadata.json").read_text())
    meta["git"] = {"commit": None, "dirty": None, "source": "none: no git checkout and no CTXKIT_GIT_COMMIT"}
    (no_commit / "run_metadata.json").write_text(json.dumps(meta))
    refused = run_cli("packet", str(e2), str(no_commit), "--out", str(tmp_path / "refused"))
    assert refused.returncode == 2 and "recorded no commit" in refused.stderr
    assert not (tmp_path / "refused").exists()
    assert run_cli("packet", str(no_commit), "--out", str(tmp_path / "allowed"), "--allow-no-commit").returncode == 0

    report_bytes = (out / "e2_concurrency/report.html.gz").stat().st_size
    monkeypatch.setattr(packet, "MAX_FILE_BYTES", report_bytes - 1)      # the report alone is over the cap, gzipped
    small = packet.build([e2], tmp_path / "small")
    text = (small / "README.md").read_text()
    assert not list((small / "e2_concurrency").glob("report.html*")) and (small / "e2_concurrency/summary.json").is_file()
    assert f"e2_concurrency/report.html.gz ({report_bytes / 2**20:.1f} MiB)" in text
    assert "(e2_concurrency/report.html" not in text     # no link to what is not there
