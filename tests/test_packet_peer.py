"""A packet sets AIConfigurator's prediction beside each E4 answer: read from the peer's own printed tables (a recorded
output of AIConfigurator 0.12 stands in for the peer, which lives in a virtualenv of its own), kept in the packet for
regenerations without the peer, and refused up front when the peer's executable is missing."""
from __future__ import annotations

import json
import stat
from pathlib import Path

from test_packet_placements import e4_run

from ctxkit.peers import aiconfigurator as aic
from ctxkit.runs import packet

from conftest import run_cli

RECORDED = Path(__file__).parent / "data" / "aiconfigurator-0.12-h200-4gpu-disagg.txt"


def fake_peer(tmp_path: Path) -> Path:
    """An executable that prints the recorded output, whatever it is asked (its arguments go to args.txt)."""
    exe = tmp_path / "bin" / "aiconfigurator"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args.txt\ncat {RECORDED}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def on_h200(run: Path, intervals: tuple[float, float]) -> Path:
    meta = json.loads((run / "run_metadata.json").read_text())
    meta["hardware"] = {"gpus": {"devices": [{"name": "NVIDIA H200"}] * 4}}
    (run / "run_metadata.json").write_text(json.dumps(meta))
    summary = json.loads((run / "summary.json").read_text())
    for g in summary["goodput"]:
        g["interval_low"], g["interval_high"] = intervals
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_the_peers_table_is_read_by_placement_counting_replicas():
    text = RECORDED.read_text()
    assert aic.parse(text, aic.Placement(prefill=3, decode=1))[0] == 20.14
    assert aic.parse(text, aic.Placement(prefill=2, decode=2))[0] is None      # printed only 2P1D (tp2 decode)
    assert aic.parse(text, aic.Placement(prefill=2, decode=1))[0] is None      # ... whose decode worker has 2 GPUs
    row = {"replicas": "2", "(p)workers": "1", "(d)workers": "1", "(p)gpus/worker": "1 (=1x1)",
           "(d)gpus/worker": "1 (=1x1)"}
    assert aic.matches(row, aic.Placement(prefill=2, decode=2))                # two replicas of 1P1D
    assert not aic.matches(row, aic.Placement(prefill=1, decode=1))


def test_a_packet_sets_the_prediction_beside_the_answer_and_keeps_it(tmp_path):
    run = on_h200(e4_run(tmp_path, "run", [("3P1D nixl", 2.5, 2.4, 2.6)]), (9.0, 10.5))
    out = tmp_path / "packet"
    text = (packet.build([run], out, aiconfigurator=str(fake_peer(tmp_path))) / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| e4_goodput | tpot-tight | 3P1D nixl"))
    assert "| compiled | h200_sxm | 10.00 | 9.00-10.50 | 20.14 | 0.50 | no | 136 (=136x1) |" in row
    args = (tmp_path / "args.txt").read_text()
    assert "--system h200_sxm" in args and "--total-gpus 4 --serving-mode disagg --isl 4096 --osl 256" in args
    assert "`aiconfigurator cli default --model-path ctxkit/models/llama-3.1-8b --system h200_sxm" in text
    again = (packet.build([run], out) / "README.md").read_text()        # no peer on this machine: the kept table
    assert row in again.splitlines()


def test_the_table_reads_empty_cells_as_missing_and_skips_a_topology_that_failed(tmp_path):
    run = on_h200(e4_run(tmp_path, "run", [("3P1D nixl", 2.5, 2.4, 2.6)], failed="1P3D nixl"), (9.0, 10.5))
    summary = json.loads((run / "summary.json").read_text())
    summary["goodput"][0]["interval_high"] = float("nan")           # unbounded, as pandas writes it
    (run / "summary.json").write_text(json.dumps(summary))
    text = (packet.build([run], tmp_path / "packet", aiconfigurator=str(fake_peer(tmp_path))) / "README.md").read_text()
    assert "| 9.00-unbounded | 20.14 | 0.50 | yes |" in text and "1P3D" not in text.split("beside AIConfigurator")[1]


def test_a_kept_table_is_dropped_for_runs_it_does_not_describe(tmp_path):
    out = tmp_path / "packet"
    packet.build([on_h200(e4_run(tmp_path, "a", [("3P1D nixl", 2.5, 2.4, 2.6)]), (9.0, 10.5))], out,
                 aiconfigurator=str(fake_peer(tmp_path)))
    other = on_h200(e4_run(tmp_path, "b", [("3P1D nixl", 3.0, 2.9, 3.1)]), (11.0, 12.5))   # also "e4_goodput"
    assert "beside AIConfigurator" not in (packet.build([other], out) / "README.md").read_text()


def test_gpu_names_map_to_the_peers_sxm_databases_only():
    assert [aic.system_for(n) for n in ("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA GB200", "NVIDIA H100 PCIe",
                                        "NVIDIA H100 NVL")] == ["h100_sxm", "h200_sxm", "gb200_sxm", None, None]


def test_a_run_the_peer_cannot_model_says_why(tmp_path):
    run = e4_run(tmp_path, "cpu", [("aggregated x4", 2.5, 2.4, 2.6)])         # no GPU in its metadata
    text = (packet.build([run], tmp_path / "packet", aiconfigurator=str(fake_peer(tmp_path))) / "README.md").read_text()
    assert "no peer database for a run without a GPU" in text
    assert not (tmp_path / "args.txt").exists()


def test_a_missing_peer_is_refused_before_anything_is_written(tmp_path):
    run = e4_run(tmp_path, "run", [("aggregated x4", 2.5, 2.4, 2.6)])
    res = run_cli("packet", str(run), "--out", str(tmp_path / "packet"), "--aiconfigurator",
                  str(tmp_path / "nowhere" / "aiconfigurator"))
    assert res.returncode == 2 and "no such executable" in res.stderr
    assert not (tmp_path / "packet").exists()
