"""E4 end to end on real vLLM (the tiny card on the 2 CPU cores): aggregated x2 against 1P1D with ExampleConnector,
each searched on a small budget; the run completes with both topologies searched, every probe recorded, and a
conclusion that names the winner from the numbers. Also `ctxkit bench --search rate` against a running server."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ctxkit.runs import packet

from browser import probe_report
from conftest import run_cli

pytestmark = pytest.mark.vllm


@pytest.mark.slow
def test_e4_end_to_end(tmp_path):
    result = run_cli("--runs-dir", str(tmp_path), "run", "e4_goodput", timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "[e4_goodput] step 2/6: 2. Search, one topology at a time" in result.stderr     # progress per step
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    goodput = pd.read_csv(run / "artifacts/e4_goodput.csv")
    assert set(goodput["topology"]) == {"aggregated x2", "1P1D example"}
    assert (goodput["devices"] == 2).all() and (goodput["unit"] == "CPU core set").all()   # one core each
    assert goodput["config"].str.startswith("eager; block vLLM's default; ").all()    # what each arm ran
    assert "per-layer blocks" in goodput.set_index("topology").loc["1P1D example", "config"]
    probes = pd.read_csv(run / "artifacts/e4_probes.csv")
    for topo, g in probes.groupby("topology"):
        searched = g[~g["repeat"].astype(bool)]                             # the repeat check adds two probes
        assert 1 <= len(searched) <= 10 and len(g) - len(searched) in (0, 2), topo  # within the probe cap
        assert set(g["verdict"]) <= {"pass", "fail"}
    records = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    scored = [r for r in records if not r["warmup"] and "probe" in r["tags"]]
    assert len(scored) == int(probes["sent"].sum())                       # every probe's requests recorded
    missed = pd.read_csv(run / "artifacts/e4_missed_requests.csv")       # one row per missed request, per probe
    assert missed.groupby(["topology", "slo", "probe"]).size().to_dict() == \
        {(t, s, i): n for t, s, i, n in zip(probes["topology"], probes["slo"], probes["index"], probes["missed"]) if n}
    (comparison,) = summary["comparison"]
    best = goodput.sort_values("goodput_per_device", ascending=False).iloc[0]
    assert comparison["winner"] == best["topology"]                       # the winner is read off the numbers
    html = (run / "report.html").read_text()
    assert comparison["winner"] in html and "per CPU core set" in html
    for name in ("e4_probes.csv", "e4_goodput.csv", "e4_slo_scale.csv", "e4_misses.csv", "e4_missed_requests.csv",
                 "e4_attainment.svg",
                 "e4_goodput_per_device.svg", "e4_server_timeline_aggregated-x2.svg",
                 "e4_server_timeline_1P1D-example.svg"):
        assert (run / "artifacts" / name).is_file(), name
    gauges = pd.read_csv(run / "artifacts/e4_server_timeline.csv")      # every probe's servers, scraped through it
    assert set(zip(gauges["topology"], gauges["probe"])) == set(zip(probes["topology"], probes["index"]))
    seen = probe_report(run / "report.html")
    assert seen["errors"] == [] and seen["wide_tables"] == [], seen
    text = (packet.build([run], tmp_path / "packet") / "README.md").read_text()   # a packet lists every probe
    for _, p in probes.iterrows():
        assert f"| {p['topology']} | {p['slo']} | {p['rate']:.3f} | {p['met']}/{p['decided']} |" in text


def test_bench_search_rate_against_a_running_server(vllm_server, runs_dir):
    result = run_cli("--runs-dir", str(runs_dir), "bench", "--base-url", vllm_server.base_url, "--model", "tiny-llama",
                     "--random-input-len", "128", "--random-output-len", "8", "--goodput", "ttft:300", "tpot:60",
                     "--search", "rate", "--target", "0.9", "--search-start-rate", "4", "--search-tolerance", "0.25",
                     "--search-max-probes", "4", "--set", "search.min_requests=20",
                     "--set", "search.max_requests=40", "--set", "search.warmup_requests=5", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "probe" in result.stderr and "goodput" in result.stderr         # the probes and the result, printed
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    search = summary["search"]
    assert 1 <= search["probes"] <= 4 and search["target"] == 0.9
    assert search["goodput"] == (search["low"] or 0.0)
    probes = pd.read_csv(run / "artifacts/bench_probes.csv")
    assert len(probes) == search["probes"]
    gauges = pd.read_csv(run / "artifacts/bench_server_timeline.csv")        # scraped through every probe (0.5 s)
    assert set(gauges["probe"]) == set(probes["index"]) and "t_wall_s" in gauges
    assert "<svg" in (run / "artifacts/bench_server_timeline.svg").read_text()
