"""A packet keeps a run's report and its large artifacts gzipped, and what reads a packet reads them as they are."""
from __future__ import annotations

import gzip

import pandas as pd
from test_packet_placements import e4_run

from ctxkit.runs import packet
from ctxkit.runs.compare import curve_columns
from ctxkit.runs.folder import RunFolder, stored


def test_the_report_and_artifacts_over_the_threshold_are_gzipped_and_the_readme_links_the_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(packet, "COMPRESS_BYTES", 4096)
    run = e4_run(tmp_path, "run-a", [("aggregated x4", 5.0, 4.8, 5.3)])
    (run / "report.html").write_text("<html>" + "x" * 100 + "</html>")               # small: gzipped all the same
    big = pd.DataFrame({"probe": range(2000), "rate": 1.5})
    big.to_csv(run / "artifacts/e4_probes.csv", index=False)                         # over the threshold
    (run / "artifacts/e4_goodput.svg").write_text("<svg/>")                          # under it: kept as is
    (run / "artifacts/notes.txt").write_text("not an artifact a packet keeps")
    out = packet.build([run], tmp_path / "packet")
    kept = out / "e4_goodput"
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()) == [
        "artifacts/e4_goodput.svg", "artifacts/e4_probes.csv.gz", "params.yaml", "report.html.gz",
        "run_metadata.json", "status.json", "summary.json"]
    assert gzip.decompress((kept / "report.html.gz").read_bytes()) == (run / "report.html").read_bytes()
    assert pd.read_csv(stored(kept / "artifacts/e4_probes.csv")).equals(big)        # read as it is
    assert "[e4_goodput](e4_goodput/report.html.gz)" in (out / "README.md").read_text()
    first = (kept / "report.html.gz").read_bytes()
    again = packet.build([run], tmp_path / "packet")                                 # the same bytes again
    assert (again / "e4_goodput/report.html.gz").read_bytes() == first


def test_a_packets_copy_goes_into_another_packet_and_compare_reads_its_gzipped_curve(tmp_path, monkeypatch):
    monkeypatch.setattr(packet, "COMPRESS_BYTES", 1024)
    run = e4_run(tmp_path, "run-a", [("aggregated x4", 5.0, 4.8, 5.3)])
    (run / "report.html").write_text("<html></html>")
    pd.DataFrame({"concurrency": range(200), "p99_ttft_ms": 3.0}).to_csv(run / "artifacts/e2_concurrency_curve.csv",
                                                                         index=False)
    first = packet.build([run], tmp_path / "first") / "e4_goodput"
    assert (first / "artifacts/e2_concurrency_curve.csv.gz").is_file()
    second = packet.build([first], tmp_path / "second") / "e4_goodput"
    assert (second / "report.html.gz").read_bytes() == (first / "report.html.gz").read_bytes()   # not gzipped twice
    assert "p99_ttft_ms" in curve_columns("e2_concurrency", [RunFolder(second)])
    assert stored(second / "artifacts/missing.csv") is None
