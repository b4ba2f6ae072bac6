"""`ctxkit compare` sets goodput answers side by side with their 90% intervals, and says a direction only where the
intervals separate."""
from __future__ import annotations

import json

import pandas as pd
from test_packet_placements import e4_run

from ctxkit.runs.compare import against, compare, goodput_table


def answer(goodput: float, low: float, high: float | None) -> dict:
    return {"goodput": goodput, "interval_low": low, "interval_high": high}


def test_a_direction_only_where_the_intervals_separate():
    first = answer(10.0, 9.5, 10.5)
    assert against(first, answer(12.0, 11.0, 12.5)) == "higher: 1.20x, the intervals separate"
    assert against(first, answer(8.0, 7.5, 9.0)) == "lower: 0.80x, the intervals separate"
    assert against(first, answer(10.8, 10.4, 11.2)) == "the intervals overlap: no direction"
    assert against(answer(10.0, 9.5, None), answer(30.0, 29.0, 31.0)) == "the intervals overlap: no direction"
    assert against({"goodput": 10.0, "interval_low": None}, first) == "no interval (a bracket only)"


def test_e4_runs_and_a_bench_search_each_get_their_rows():
    e4 = {"goodput": [{"topology": "aggregated x2", "slo": "tight", **answer(10.0, 9.5, 10.5)},
                      {"topology": "1P1D nixl", "slo": "tight", "error": "BackendError: did not start"}]}
    again = {"goodput": [{"topology": "aggregated x2", "slo": "tight", **answer(12.0, 11.0, 12.5)}]}
    bench = {"search": answer(5.0, 4.8, None)}
    table = goodput_table(["a", "b", "c"], [e4, again, bench])
    assert list(table["run"]) == ["a", "b", "c"]
    assert list(table["against the first run"]) == ["-", "higher: 1.20x, the intervals separate", "-"]
    assert table.iloc[2]["topology"] == "(server)" and pd.isna(table.iloc[2]["90% high"])


def test_compare_writes_the_goodput_table_into_its_report(tmp_path):
    root = tmp_path / "runs" / "e4_goodput"
    runs = []
    for name, low, high in (("run-20261207T000000Z-0000000a", 19.0, 21.0), ("run-20261207T000100Z-0000000b", 23.0, 25.0)):
        run = e4_run(root, name, [("aggregated x4", 5.0, 4.8, 5.3)])
        summary = json.loads((run / "summary.json").read_text())
        summary["goodput"][0].update(goodput=low, interval_low=low, interval_high=high)
        (run / "summary.json").write_text(json.dumps(summary))
        runs.append(run)
    out = compare(runs, tmp_path / "out")
    html = (out / "report.html").read_text()
    assert "Goodput with 90% confidence intervals" in html and "higher: 1.21x, the intervals separate" in html
    assert list(pd.read_csv(out / "artifacts/goodput.csv")["goodput req/s"]) == [19.0, 23.0]
