"""Disaggregated serving on real vLLM CPU servers: E3 end to end with its correctness checks, and the faults a
KV handoff can meet (KV lost before decode, a prefill server killed), each a clear error in the request's record,
never a hang, and no process left behind."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from ctxkit.backends.process import group_members
from ctxkit.experiments.e3_disagg import RequestsFailed, enforce_error_policy
from ctxkit.hardware import gpu_inventory
from ctxkit.models import ModelCard
from ctxkit.params import ServerParams
from ctxkit.records import DISCONNECT, HTTP_ERROR, OK, RequestRecord
from ctxkit.schedulers import kv_store
from ctxkit.schedulers.disaggregated import DisaggregatedPool
from ctxkit.schedulers.router import RouterProcess

from browser import probe_report
from conftest import run_cli


def test_kv_store_layout():
    assert kv_store.stored_tokens(1500, 128) == 1408      # measured: a 1500-token prompt moves 1408 tokens
    assert kv_store.stored_tokens(100, 128) == 0
    assert kv_store.stored_tokens(8192, 16) == 8176        # GPU blocks: 1,071,647,488 B / 131,072 B a token


def test_the_kv_tokens_each_connector_loads():
    from ctxkit.schedulers.kv_store import loaded_tokens
    # ExampleConnector: whole blocks of all but the last prompt token, bytes alike
    assert loaded_tokens("example", 100, 16) == (96, 96) and loaded_tokens("example", 17, 16) == (0, 0)
    # NixlConnector: every prompt token, moved as whole blocks (the last one partial)
    assert loaded_tokens("nixl", 100, 16) == (100, 112) and loaded_tokens("nixl", 32, 16) == (32, 32)


def test_block_size_follows_the_servers_arguments():
    assert kv_store.block_size_of([], "gpu") == 16 and kv_store.block_size_of([], "cpu") == 128
    assert kv_store.block_size_of(["--enforce-eager", "--block-size", "64"], "gpu") == 64
    assert kv_store.block_size_of(["--block-size=32"], "cpu") == 32


def test_connector_options_reach_the_kv_transfer_config():
    """NixlConnector's options (kv_connector_extra_config) go through as given, merged over E3's own for a variant;
    with cross-layer blocks a descriptor is one block of every layer (Llama 3.1 8B: 16 x 128 KiB = 2 MiB), else one
    block of one layer's K or V (16 x 2 KiB = 32 KiB)."""
    from ctxkit.collectors.link import descriptor_bytes
    from ctxkit.experiments.e3_disagg import variant_params
    from ctxkit.params import E3Params, E3Variant
    from ctxkit.schedulers.broker import cross_layer_blocks, kv_transfer_config

    cfg = json.loads(kv_transfer_config("nixl", "decode", None, "cuda", {"enable_cross_layers_blocks": "True"}))
    assert cfg == {"kv_connector": "NixlConnector", "kv_role": "kv_both", "kv_buffer_device": "cuda",
                   "kv_connector_extra_config": {"enable_cross_layers_blocks": "True"}}
    example = json.loads(kv_transfer_config("example", "prefill", Path("/dev/shm/x"), extra={"k": 1}))
    assert example["kv_connector_extra_config"] == {"shared_storage_path": "/dev/shm/x", "k": 1}
    params = E3Params(connector="nixl", connector_extra={"num_threads": 8},
                      variants=[E3Variant(name="xl", connector_extra={"enable_cross_layers_blocks": "True"})])
    merged = variant_params(params, params.variants[0]).connector_extra
    assert merged == {"num_threads": 8, "enable_cross_layers_blocks": "True"} and cross_layer_blocks(merged)
    assert not cross_layer_blocks(params.connector_extra)
    card = ModelCard.load("llama-3.1-8b")
    assert descriptor_bytes(card, 16, "gpu", 8176) == 32 << 10
    assert descriptor_bytes(card, 16, "gpu", 8176, cross_layers=True) == 2 << 20


def test_error_policy():
    ok = RequestRecord("a", 10, 4, status=OK)
    bad = RequestRecord("b", 10, 4, status=HTTP_ERROR, error="prefill instance prefill-0 unreachable")
    enforce_error_policy("disaggregated", [ok, bad], "continue")          # kept as a miss
    with pytest.raises(RequestsFailed, match="prefill-0 unreachable"):
        enforce_error_policy("disaggregated", [ok, bad], "stop")


@pytest.mark.vllm
@pytest.mark.slow
def test_e3_end_to_end(tmp_path):
    result = run_cli("--runs-dir", str(tmp_path), "run", "e3_disagg")
    assert result.returncode == 0, result.stderr[-4000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    checks = summary["checks"]
    for name in ("greedy_outputs_equal", "kv_loaded_not_recomputed", "kv_bytes_within_2pct",
                 "broker_completed_handoffs", "success"):
        assert checks[name]["passed"], (name, checks[name])
    corr = summary["correctness"]
    assert corr["aggregated"] == corr["disaggregated"] and all(corr["aggregated"].values())
    assert len(corr["prompts_sha256"]) == 16           # what the packet compares runs' outputs by
    assert corr["external_kv_tokens"] == corr["expected_external_kv_tokens"] > 0
    handoffs = pd.read_csv(run / "artifacts/e3_handoffs.csv")
    moved = handoffs[handoffs["kv_tokens"] > 0]
    assert len(moved) == 24 and ((moved["bytes_ratio"] - 1).abs() <= 0.02).all()
    kv = summary["profiling"]["kv_transfer"]
    assert summary["broker_completed_handoffs"] == 24
    for key in ("bytes", "transfer_ms", "gb_per_s", "stall_ratio"):
        assert {"min", "max", "avg", "p50", "p95"} <= set(kv[key]), key
    assert summary["gpu_assignment"]["disaggregated"]["kind"] == ("gpu" if gpu_inventory()["available"] else "cpu")
    # the load window's KV, from the router's files for ExampleConnector: every handoff's bytes, and the rate read
    # against the link measured in the same run (write + read through the same tmpfs folder)
    window, measured_link = kv["window"], kv["link"]
    assert window["bytes"] == int(moved["kv_bytes_measured"].sum()) > 0
    assert window["gb_per_s"] > 0 and 0 < window["efficiency"] == window["gb_per_s"] / measured_link["large"]["gb_per_s"]
    assert measured_link["available"] and measured_link["kind"] == summary["gpu_assignment"]["disaggregated"]["kind"]
    # the probe's descriptor is one layer's file of a handoff: layers x piece = the bytes the connector wrote
    layers = ModelCard.load("tiny-llama").num_layers
    assert measured_link["descriptor"]["piece_bytes"] * layers == int(moved["kv_bytes_measured"].iloc[0])
    assert handoffs["efficiency"].notna().all()
    assert "% of the link" in (run / "report.html").read_text()
    for name in ("e3_headline.csv", "e3_handoffs.csv", "e3_ttft_breakdown.csv", "e3_latency_cdf.svg",
                 "e3_ttft_breakdown.svg", "e3_server_timeline_aggregated.svg", "e3_server_timeline_disaggregated.svg"):
        assert (run / "artifacts" / name).is_file(), name
    # every server of each mode scraped through that mode's window, first and last scrape bracketing its requests
    gauges = pd.read_csv(run / "artifacts/e3_server_timeline.csv")
    records = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    for mode, servers in (("aggregated", 2), ("disaggregated", 2)):
        mine = gauges[gauges["mode"] == mode]
        sent = [r for r in records if r["tags"].get("mode") == mode and not r["warmup"]]
        assert mine["server"].nunique() == servers, mode
        assert mine["t_ns"].min() <= min(r["t_send_ns"] for r in sent), mode
        assert mine["t_ns"].max() >= max(r["t_end_ns"] for r in sent), mode
    routes = [json.loads(l) for l in (run / "logs/disaggregated-routes.jsonl").read_text().splitlines()]
    assert all(r["t_recv_ns"] <= r["t_prefill_sent_ns"] <= r["t_prefill_done_ns"] <= r["t_decode_sent_ns"]
               for r in routes if not r["error"])
    for line in (run / "logs/process_groups.txt").read_text().split():
        assert not group_members(int(line))
    seen = probe_report(run / "report.html")
    assert seen["errors"] == [] and sum(f["tag"] == "img" for f in seen["figures"]) >= 2
    assert seen["wide_tables"] == [] and seen["page_width"] <= seen["viewport"], seen   # read on a laptop


@pytest.mark.vllm
@pytest.mark.slow
def test_e3_kv_path_variants(tmp_path):
    """A variant sweep of the KV path: the block size and the connector's options reach vLLM (ExampleConnector stores whole blocks, so a
    handoff of a 1,024-token prompt holds 960 tokens at block 64 against 896 at the CPU default of 128), the
    variants table has one row per setting with its rate against the link, and greedy outputs stay equal; a setting
    the servers refuse is a row with its error, not a lost run."""
    result = run_cli("--runs-dir", str(tmp_path), "run", "e3_disagg", "--set", "workload.num_prompts=6",
                     "--set", "correctness_prompt_lens=[100, 700]", "--set", "aggregated_replicas=1",
                     "--set", 'variants=[{"name": "block-64", "block_size": 64, "connector_extra": {"probe": "on"}},'
                              ' {"name": "refused", "extra_args": ["--no-such-flag"]}]')
    assert result.returncode == 0, result.stderr[-4000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    rows = {r["variant"]: r for r in summary["variants"]}
    assert list(rows) == ["disaggregated", "block-64", "refused"]
    refused = rows.pop("refused")                         # vLLM refused the flag: recorded, and the sweep went on
    assert "no-such-flag" in refused["error"] and not refused["greedy_outputs_equal"], refused
    assert rows["disaggregated"]["block_size"] == 128 and rows["block-64"]["block_size"] == 64
    assert rows["block-64"]["connector_extra"] == "probe=on" and rows["disaggregated"]["connector_extra"] is None
    started = (run / "logs/block-64-prefill-0.log").read_text()      # the option reached vLLM's own config
    assert '"probe":"on"' in started.splitlines()[0]          # in the --kv-transfer-config it was started with
    assert all(r["greedy_outputs_equal"] and r["failed"] == 0 for r in rows.values()), rows
    assert all(r["window_gb_per_s"] > 0 and r["efficiency"] > 0 for r in rows.values()), rows
    kv_per_token = 2048                                   # tiny-llama: 2 x 4 layers x 2 KV heads x 64 dims x 2 bytes
    for name, tokens in (("disaggregated", 896), ("block-64", 960)):
        handoffs = [json.loads(line) for line in (run / f"logs/{name}-handoffs.jsonl").read_text().splitlines()]
        loaded = [h for h in handoffs if h["prompt_tokens"] == 1024 and "warmup" not in h["request_id"]]
        assert len(loaded) == 6 and all(h["kv_bytes_measured"] == tokens * kv_per_token for h in loaded), name
    assert (run / "artifacts/e3_variants.csv").is_file()
    assert "KV path settings" in (run / "report.html").read_text()
    packet = run_cli("packet", str(run), "--out", str(tmp_path / "packet"))      # the sweep's table in a packet
    assert packet.returncode == 0, packet.stderr
    lines = (tmp_path / "packet/README.md").read_text().splitlines()
    assert "Disaggregated pool: connector example, KV buffer cpu, 1P1D." in lines   # the pool the rows measured
    head = next(i for i, line in enumerate(lines) if line.startswith("| setting |"))
    header = [c.strip() for c in lines[head].strip("|").split("|")]
    cells = {r[0]: dict(zip(header, r)) for r in ([c.strip() for c in line.strip("|").split("|")]
                                                 for line in lines[head + 2:head + 5])}
    assert list(cells) == ["disaggregated", "block-64", "refused"]
    for name, row in rows.items():
        assert abs(float(cells[name]["KV GB/s"]) - row["window_gb_per_s"]) <= 0.005 + 1e-9, (cells[name], row)
    assert "no-such-flag" in cells["refused"]["error"]


@pytest.mark.vllm
@pytest.mark.slow
def test_handoff_faults_are_clear_errors(tmp_path):
    pool = DisaggregatedPool(ServerParams(), seed=0, prefill=1, decode=1, connector="example", log_dir=tmp_path)
    prompt = [0] + list(range(100, 1099))                   # 1000 tokens: 896 of them move as KV
    with pool:
        assert pool.generate(prompt, 4, request_id="fine").ok
        faulty = RouterProcess(pool.router_config().model_copy(update={
            "fault": "drop_kv", "route_log": str(tmp_path / "faulty-routes.jsonl"),
            "handoff_log": str(tmp_path / "faulty-handoffs.jsonl")}), name="faulty-router", log_dir=tmp_path)
        with faulty:
            rec = faulty.generate(prompt[:-1] + [7], 4, request_id="lost-kv")
        assert rec.status == HTTP_ERROR and "not found" in rec.error and "lost-kv" in rec.error
        handoff = json.loads((tmp_path / "faulty-handoffs.jsonl").read_text().splitlines()[-1])
        assert handoff["status"] == "error" and "not found" in handoff["error"]

        groups = [s.proc.pid for s in pool.servers] + [pool.router.proc.pid]
        decode = pool.by_role("decode")[0]
        os.killpg(decode.proc.pid, signal.SIGKILL)
        decode.proc.wait(timeout=30)
        rec = pool.generate(prompt[:-1] + [8], 4, request_id="no-decode", timeout_s=60)
        assert rec.status == HTTP_ERROR and "decode instance decode-0 unreachable" in rec.error

        prefill = pool.by_role("prefill")[0]
        os.killpg(prefill.proc.pid, signal.SIGKILL)
        prefill.proc.wait(timeout=30)
        rec = pool.generate(prompt[:-1] + [9], 4, request_id="no-prefill", timeout_s=60)
        assert rec.status == HTTP_ERROR and "prefill instance prefill-0 unreachable" in rec.error

        os.killpg(pool.router.proc.pid, signal.SIGKILL)
        pool.router.proc.wait(timeout=30)
        rec = pool.generate(prompt[:-1] + [10], 4, request_id="no-router", timeout_s=60)
        assert rec.status == DISCONNECT and rec.error                 # refused at once: recorded, not a hang
        assert not pool.alive() and "exit code" in pool.death_note()
    for g in groups:
        assert not group_members(g)
    assert pool.storage is not None and not pool.storage.exists()      # the tmpfs KV folder is removed too
