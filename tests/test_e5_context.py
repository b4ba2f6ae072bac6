"""E5 long context, part capacity, as a user types it (`ctxkit run e5_context`, the default cpu-tiny profile and
params/e5_context.yaml: 128 KV blocks of 128 tokens on the tiny card): the requests held at once at two context
lengths against the predictions, and a level past the capacity held back."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from browser import probe_report
from conftest import ROOT, run_cli

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

# 128 blocks x 128 tokens = 16,384 tokens; a request holds 448 + 64 = 512 tokens (4 blocks) or 1,984 + 64 = 2,048
# (16 blocks). By bytes: 32 and 8 requests. vLLM keeps one block aside (its null block): 127 // 4 = 31, 127 // 16 = 7.
ANALYTICAL = {448: 32.0, 1984: 8.0}
BLOCKS = {448: 31.0, 1984: 7.0}
TRACE = ROOT / "tests/data/prefix_trace.jsonl"


def test_e5_kv_capacity_against_the_predictions(tmp_path):
    result = run_cli("--runs-dir", str(tmp_path), "run", "e5_context", timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert summary["cache"]["num_blocks"] == 128 and summary["cache"]["block_size"] == 128
    by_len = {c["context_len"]: c for c in summary["capacity"]}
    assert set(by_len) == set(ANALYTICAL)
    for length, row in by_len.items():
        assert row["analytical"] == ANALYTICAL[length] and row["cache_config"] == BLOCKS[length]
        assert row["vllm_log"] == pytest.approx(ANALYTICAL[length])      # the log line counts the null block too
        assert 0.75 * ANALYTICAL[length] <= row["measured"] <= ANALYTICAL[length], row   # within 25%
        top = max((lv for lv in summary["levels"] if lv["context_len"] == length), key=lambda lv: lv["concurrency"])
        assert top["concurrency"] > row["measured"] and top["peak_running"] < top["concurrency"]   # held back
        assert top["peak_waiting"] > 0 or top["preemptions"] > 0
    cost = summary["cost"]                                  # part cost, on by default
    lengths = sorted({r["context_len"] for r in cost["rows"]})
    assert lengths == [128, 512, 1024, 1984] and {r["batch"] for r in cost["rows"]} == {1, 4}
    kv_per_token = 2048                                     # tiny-llama: 2 x 4 layers x 2 KV heads x 64 dims x 2 B
    row = next(r for r in cost["rows"] if r["context_len"] == 512 and r["batch"] == 4)
    assert row["kv_bytes_per_step"] == 4 * (512 + 16) * kv_per_token
    assert all(r["p50_tpot_steady_ms"] is not None for r in cost["rows"] if r["batch"] == 4)   # what the fit uses
    assert cost["fit"]["ttft"]["longest"] == 1984 and cost["fit"]["tpot"] is not None   # both fits made (tests/
    assert summary["checks"]["ttft_grows_with_context"]["passed"]                         # test_e5_cost: the fit)
    prefix = {(r["prefix_ratio"], r["cache"]): r for r in summary["prefix"]["rows"]}   # part prefix, on by default
    assert set(prefix) == {(r, arm) for r in (0.0, 0.5, 0.9) for arm in ("on", "off")}
    # 1,024-token prompts, 128-token blocks: 512 shared tokens are 4 whole blocks (0.5), 922 are 7 (0.875)
    assert prefix[(0.5, "on")]["implied_hit_rate"] == 0.5 and prefix[(0.9, "on")]["implied_hit_rate"] == 0.875
    assert prefix[(0.9, "on")]["hit_rate"] >= 0.8 * 0.875 and prefix[(0.5, "on")]["hit_rate"] >= 0.8 * 0.5
    assert all(prefix[(r, "off")]["hit_rate"] <= 0.05 for r in (0.0, 0.5, 0.9))   # cache_salt isolates each request
    chunked = {r["setting"]: r for r in summary["chunked"]}      # part chunked: a server per setting
    assert list(chunked) == ["chunk-256", "unchunked"]           # the CPU tier's two (params/e5_context.yaml)
    for r in chunked.values():        # decode gaps recorded inside every long prefill's window, and outside them
        assert len(r["spikes_ms"]) == 3 and all(s is not None and s > 0 for s in r["spikes_ms"]), r
        assert r["baseline_itl_ms"] > 0 and len(r["windows_s"]) == 3
    assert "--no-enable-chunked-prefill" in (run / "logs/chunked-unchunked.log").read_text().splitlines()[0]
    packet = run_cli("packet", str(run), "--out", str(tmp_path / "packet"), "--allow-no-commit")
    assert packet.returncode == 0, packet.stderr[-2000:]
    assert "TTFT at batch 1 = a + bL + cL^2" in (tmp_path / "packet/README.md").read_text()
    assert "| shared ratio | cache |" in (tmp_path / "packet/README.md").read_text()
    chunk_rows = {line.split("|")[1].strip(): line for line in (tmp_path / "packet/README.md").read_text().splitlines()
                  if line.startswith("| chunk-") or line.startswith("| unchunked")}
    assert set(chunk_rows) == set(chunked)          # one row per setting, its spikes as the summary has them
    for name, r in chunked.items():
        assert " / ".join(f"{x:,.1f}" for x in r["spikes_ms"]) in chunk_rows[name]
    for name in ("e5_capacity.csv", "e5_levels.csv", "e5_capacity.svg", "e5_levels.svg", "e5_cost.csv",
                 "e5_cost.svg", "e5_prefix.csv", "e5_prefix.svg",
                 "e5_chunked.csv", "e5_chunked_itl.csv", "e5_chunked.svg"):
        assert (run / "artifacts" / name).is_file(), name
    assert "KV capacity" in (run / "report.html").read_text()
    seen = probe_report(run / "report.html")
    assert seen["errors"] == [] and seen["wide_tables"] == [], seen


def test_e5_capacity_hold_levels_then_a_trace_on_one_server_timeline(tmp_path):
    """Hold levels (the GPU setting) on the CPU tier: c requests at once, each asking for 448 tokens beyond its
    1,600-token prompt (16 blocks a request in the end, 13 at admission), ended by the hold rule or by the requests
    themselves. The capacity is measured from the levels without preemption and lies within 25% of the analytical
    8 requests; the level past it is held back; nothing fails (cancellations are the design, counted apart).
    Then part trace on the same server: the ten-row trace replayed on its timestamps, lengths exact, the server's
    prefix hits at least 80% of what the trace implies; the server's gauges through both levels and the trace on
    one timeline, each span's scrapes bracketing its requests."""
    result = run_cli("--runs-dir", str(tmp_path), "run", "e5_context", "--set", "parts=[capacity, trace]",
                     "--set", "capacity_hold=true", "--set", "context_lens=[1600]", "--set", "output_len=448",
                     "--set", "concurrency_factors=[1.0,1.5]", "--set", f"trace.dataset_path={TRACE}", timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    (cap,) = summary["capacity"]
    assert cap["analytical"] == 8.0 and cap["cache_config"] == 7.0
    assert 6 <= cap["measured"] <= 10, cap                  # within 25% of 8
    levels = sorted(summary["levels"], key=lambda lv: lv["concurrency"])
    assert [lv["concurrency"] for lv in levels] == [7, 10]
    assert levels[0]["held"] and levels[0]["peak_running"] == 7
    assert levels[1]["peak_running"] < 10 and (levels[1]["peak_waiting"] > 0 or levels[1]["preemptions"] > 0)
    assert all(lv["failed"] == 0 and lv["requests"] == lv["concurrency"] for lv in levels)
    trace = summary["trace"]
    fid = trace["fidelity"]
    assert trace["requests"] == 10 and trace["failed"] == 0 and fid["lengths_exact"] and fid["on_trace_timestamps"]
    assert fid["implied_reusable_tokens"] > 0 and fid["measured_prefix_hits"] >= 0.8 * fid["implied_reusable_tokens"]
    assert summary["checks"]["trace_lengths_exact"]["passed"]
    timeline = pd.read_csv(run / "artifacts/e5_server_timeline.csv")
    records = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    spans = {"L=1600 c=7", "L=1600 c=10", "trace"}
    assert set(timeline["span"]) == spans
    for span in spans:
        mine = [r for r in records if r["tags"].get("span") == span]
        scraped = timeline[timeline["span"] == span]["t_ns"]
        assert mine and scraped.min() <= min(r["t_send_ns"] for r in mine), span
        assert scraped.max() >= max(r["t_end_ns"] for r in mine if r["t_end_ns"]), span
    finished = timeline[timeline["span"] == "trace"].sort_values("t_ns")["requests_finished"]
    assert finished.iloc[-1] - finished.iloc[0] == 10        # the scrapes are of the server that served the trace
    assert (run / "artifacts/e5_server_timeline.svg").is_file() and (run / "artifacts/e5_trace.csv").is_file()
    assert summary["profiling"]["gpu"]["available"] is False         # no GPU here: said, not sampled
    assert "Trace replay: 10 requests" in (run / "report.html").read_text()     # the conclusion, from the numbers
    packet = run_cli("packet", str(run), "--out", str(tmp_path / "packet"), "--allow-no-commit")
    assert packet.returncode == 0, packet.stderr[-2000:]
    readme = (tmp_path / "packet/README.md").read_text()
    assert "| 10 (0) | 1.00x |" in readme and "| trace | 10 | True |" in readme    # the server's view, the fidelity
