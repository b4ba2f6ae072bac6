"""A four-GPU placement search runs in halves (two E4 runs): the packet puts their topologies side by side where the
parameters agree, keeps apart what differs, and a packet's own copy of a run can go into a later packet."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ctxkit.runs import packet

from conftest import run_cli

SLO = {"name": "tpot-tight", "ttft_ms": 2500.0, "tpot_ms": 25.0, "e2e_ms": None}


def e4_run(root: Path, name: str, goodput: list[tuple[str, float, float, float]], input_len: int = 4096,
           slo: dict | None = None, failed: str = "", intervals: bool = True, eager: bool = False) -> Path:
    """A finished E4 run folder as the notebook leaves it (summary, metadata, params, status); goodput rows are
    (topology, per-GPU goodput, its 90% interval's low, its high) on 4 GPUs, the bracket from the goodput to the
    interval's high. intervals=False: a summary from before intervals (only the bracket, low and high)."""
    run = root / name
    (run / "artifacts").mkdir(parents=True)
    rows = [{"topology": t, "slo": "tpot-tight", "devices": 4, "goodput": g * 4, "goodput_per_device": g,
             "per_device_low": g, "per_device_high": hi,
             **({"per_device_interval_low": lo, "per_device_interval_high": hi} if intervals else
                {"per_device_low": lo})} for t, g, lo, hi in goodput]
    rows += [{"topology": failed, "slo": "tpot-tight", "error": "BackendError: the servers did not start"}] \
        if failed else []
    (run / "summary.json").write_text(json.dumps({"experiment": "e4_goodput", "checks": {}, "goodput": rows}))
    (run / "run_metadata.json").write_text(json.dumps(
        {"experiment": "e4_goodput", "run_id": name, "git": {"commit": "ab" * 20, "dirty": False}}))
    (run / "status.json").write_text(json.dumps({"status": "succeeded"}))
    (run / "params.yaml").write_text(yaml.safe_dump({
        "server": {"model": "llama-3.1-8b", "enforce_eager": eager}, "slos": [slo or SLO], "search": {"target": 0.9, "mode": "joint"},
        "workload": {"dataset": "random", "input_len": input_len, "input_dist": "fixed", "output_len": 256,
                     "output_dist": "fixed"}}))
    return run


def test_two_halves_of_a_placement_search_are_ranked_together(tmp_path):
    a = e4_run(tmp_path, "half-a", [("aggregated x4", 5.50, 5.50, 6.00), ("2P2D nixl", 4.24, 4.24, 4.63)])
    b = e4_run(tmp_path, "half-b", [("1P3D nixl", 2.38, 2.38, 2.59), ("3P1D nixl", 2.60, 2.50, 2.70)])
    other = e4_run(tmp_path, "other-workload", [("aggregated x4", 9.0, 8.5, 9.5)], input_len=1024)
    text = (packet.build([b, a, other], tmp_path / "packet") / "README.md").read_text()
    across = text.split("### E4 placements across runs", 1)[1].split("## Notes", 1)[0]
    first, second = across.split("4,096 in", 1)[1], across.split("1,024 in", 1)[1]
    order = [line.split("|")[1].strip() for line in first.split("Winner")[0].splitlines() if line.startswith("| ")]
    assert order[2:] == ["aggregated x4", "2P2D nixl", "3P1D nixl", "1P3D nixl"]     # after the header, by per GPU
    assert "Winner per GPU: aggregated x4, 1.30x the runner-up 2P2D nixl; the 90% intervals separate." in first
    assert "| aggregated x4 | 4 | 36.00 | 9.00 |" in second and "Winner" not in second   # alone: not ranked


def test_overlapping_intervals_are_said_to_overlap(tmp_path):
    a = e4_run(tmp_path, "a", [("aggregated x4", 5.0, 4.8, 5.3)])
    b = e4_run(tmp_path, "b", [("2P2D nixl", 4.9, 4.7, 5.1)])
    text = (packet.build([a, b], tmp_path / "packet") / "README.md").read_text()
    assert "1.02x the runner-up 2P2D nixl; the 90% intervals overlap" in text


def test_an_eager_arm_is_not_ranked_against_a_compiled_one(tmp_path):
    """Arms compare at their best: where the two leading placements ran differently compiled, the packet says so
    instead of an order, however far apart their intervals lie."""
    a = e4_run(tmp_path, "a", [("aggregated x4", 5.5, 5.4, 5.6)])
    b = e4_run(tmp_path, "b", [("2P2D nixl", 2.0, 1.9, 2.1)], eager=True)
    text = (packet.build([a, b], tmp_path / "packet") / "README.md").read_text()
    assert "Not compared: aggregated x4 ran compiled, 2P2D nixl eager" in text and "Winner" not in text


def test_brackets_from_before_intervals_never_settle_an_order(tmp_path):
    """A packet of runs made under earlier rules: their brackets are resolution, shown as such, and the order of
    two placements is not called settled however far apart the brackets lie."""
    a = e4_run(tmp_path, "a", [("aggregated x4", 5.5, 5.5, 6.0)], intervals=False)
    b = e4_run(tmp_path, "b", [("2P2D nixl", 4.2, 4.2, 4.6)], intervals=False)
    text = (packet.build([a, b], tmp_path / "packet") / "README.md").read_text()
    assert "| bracket 5.50-6.00 |" in text
    assert "no confidence intervals (runs from before them): the order is not settled" in text


def test_a_run_copied_into_a_packet_can_go_into_another(tmp_path):
    old = packet.build([e4_run(tmp_path, "a", [("aggregated x4", 5.0, 4.8, 5.3)])], tmp_path / "old")
    assert json.loads((old / "e4_goodput/status.json").read_text())["status"] == "succeeded"   # kept from now on
    (old / "e4_goodput/status.json").unlink()                  # as in packets written before status.json was kept
    new = run_cli("packet", str(old / "e4_goodput"), str(e4_run(tmp_path, "b", [("2P2D nixl", 4.0, 3.9, 4.1)])),
                  "--out", str(tmp_path / "new"))
    assert new.returncode == 0, new.stderr
    loose = tmp_path / "loose"
    (old / "e4_goodput").rename(loose)                         # the same files outside a packet: status unknown
    refused = run_cli("packet", str(loose), "--out", str(tmp_path / "refused"))
    assert refused.returncode == 2 and "status '?'" in refused.stderr


def test_an_slo_without_one_objective_and_a_failed_topology(tmp_path):
    """An SLO on TPOT alone is described without a TTFT; a topology whose servers failed is not ranked."""
    tpot_only = {"name": "tpot-tight", "ttft_ms": None, "tpot_ms": 25.0, "e2e_ms": None}
    a = e4_run(tmp_path, "a", [("aggregated x4", 5.0, 4.8, 5.3)], slo=tpot_only, failed="3P1D nixl")
    b = e4_run(tmp_path, "b", [("2P2D nixl", 4.0, 3.9, 4.1)], slo=tpot_only)
    text = (packet.build([a, b], tmp_path / "packet") / "README.md").read_text()
    across = text.split("### E4 placements across runs", 1)[1]
    assert "SLO tpot-tight (TPOT 25 ms)" in across
    assert "3P1D" not in across and "1.25x the runner-up 2P2D nixl" in across


def test_a_packet_is_not_packed_over_itself_and_a_stray_folder_is_not_a_run(tmp_path):
    out = packet.build([e4_run(tmp_path, "a", [("aggregated x4", 5.0, 4.8, 5.3)])], tmp_path / "pk")
    refused = run_cli("packet", str(out / "e4_goodput"), "--out", str(out))
    assert refused.returncode == 2 and "inside the packet being written" in refused.stderr
    assert (out / "e4_goodput/summary.json").is_file()               # nothing deleted
    stray = e4_run(out, "stray", [("aggregated x4", 1.0, 0.9, 1.1)])   # a folder dropped in, not in the README
    (stray / "status.json").unlink()
    again = run_cli("packet", str(stray), "--out", str(tmp_path / "other"))
    assert again.returncode == 2 and "status '?'" in again.stderr


def test_an_e4_packet_lists_the_misses_of_each_searchs_slo_scale_probe(tmp_path):
    """The probe table shows every probe with its misses by cause; the missed-requests table only those of the
    probe each search drew its SLO-scale curve from (curve_probe), longest prompt first, also beside a topology
    that failed to start (whose row's error makes the others' NaN once read back from JSON)."""
    import pandas as pd
    run = e4_run(tmp_path, "a", [("aggregated x1", 0.0, 0.0, 0.25)], failed="1P1D nixl")
    summary = json.loads((run / "summary.json").read_text())
    summary["goodput"][0] |= {"curve_probe": 1, "low": None}
    summary["goodput"][0]["error"] = float("nan")
    summary["probes"] = [{"topology": "aggregated x1", "slo": "tpot-tight", "index": i, "rate": rate, "met": 49,
                          "decided": 56, "attainment": 0.875, "wilson_low": 0.764, "wilson_high": 0.938,
                          "verdict": "fail", "decided_by": "misses beyond what the target allows",
                          "missed_ttft": 3, "missed_tpot": 4, "missed_e2e": float("nan"), "send_lag_p99_ms": 20.0}
                         for i, rate in enumerate((0.5, 0.25))]
    (run / "summary.json").write_text(json.dumps(summary))
    rows = [("aggregated x1", 0, 0.5, "ttft", 87169), ("aggregated x1", 1, 0.25, "ttft", 45922),
            ("aggregated x1", 1, 0.25, "tpot", 7324), ("aggregated x1", 1, 0.25, "ttft", 87169)]
    pd.DataFrame([{"topology": t, "slo": "tpot-tight", "probe": i, "rate": r, "missed": m, "prompt_tokens": n,
                   "output_tokens": 14, "ttft_ms": 900.0, "tpot_ms": 240.0, "others_prefill_tokens_during_ttft": 0,
                   "others_prefill_tokens_during_decode": 131091} for t, i, r, m, n in rows]) \
        .to_csv(run / "artifacts/e4_missed_requests.csv", index=False)
    text = (packet.build([run], tmp_path / "packet") / "README.md").read_text()
    assert "| aggregated x1 | tpot-tight | 0.500 | 49/56 | 87.5% | 76.4%-93.8% | fail |" in text
    assert "| ttft 3, tpot 4 | 20 |" in text
    missed = [line for line in text.splitlines() if line.startswith("| aggregated x1 | tpot-tight | 0.250 | t")]
    assert [line.split("|")[5].strip() for line in missed] == ["87,169", "45,922", "7,324"]   # probe 1 only
    assert not any(line.startswith("| aggregated x1 | tpot-tight | 0.500 | ttft |") for line in text.splitlines())
