"""E2's checks can fail for the reason their names give (no server needed: a run folder made by hand)."""
from __future__ import annotations

from ctxkit.collectors.latency import summarize as summarize_latency
from ctxkit.experiments import e2_concurrency as e2
from ctxkit.params import resolve
from ctxkit.records import JsonlWriter, RequestRecord
from ctxkit.runs.folder import RunFolder, atomic_write_json


def record(rid: str, point: str, warmup: bool = False) -> RequestRecord:
    return RequestRecord(rid, 8, 4, t_sched_ns=1, t_send_ns=10, t_first_ns=2_000_010, t_last_ns=5_000_010,
                         t_end_ns=5_000_020, chunk_times_ns=[2_000_010, 5_000_010], chunk_tokens=[1, 3], n_out=4,
                         warmup=warmup, tags={"point": point, "attempt": 0})


def folder_with(tmp_path, recorded: int, measured: int):
    params = resolve("e2_concurrency", sets=["concurrency_levels=[1]"])
    run = RunFolder.create(tmp_path, "e2_concurrency")
    records = [record(f"r{i}", "c1") for i in range(measured)]
    (run.artifacts / e2.POINTS_DIR).mkdir()
    point = {**e2.points(params)[0], "attempt": 0, "latency": summarize_latency(records), "server": {}}
    atomic_write_json(run.artifacts / e2.POINTS_DIR / "c1.json", point)
    with JsonlWriter(run.path / "requests.jsonl") as out:
        out.write(record("w", "c1", warmup=True))
        for rec in records[:recorded]:
            out.write(rec)
    return params, run


def test_requests_recorded_passes_when_every_request_is_there(tmp_path):
    params, run = folder_with(tmp_path, recorded=5, measured=5)
    summary = e2.summarize(params, run, e2.curve(params, run), {})
    assert summary["checks"]["requests_recorded"]["passed"], summary["checks"]["requests_recorded"]


def test_requests_recorded_fails_when_records_are_missing(tmp_path):
    params, run = folder_with(tmp_path, recorded=3, measured=5)
    check = e2.summarize(params, run, e2.curve(params, run), {})["checks"]["requests_recorded"]
    assert not check["passed"] and "3 recorded, 5 measured" in check["reason"]
