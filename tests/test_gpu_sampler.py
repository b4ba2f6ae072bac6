"""The NVML sampler against a fake NVML with two GPUs: one sampling thread however it is started, rows tagged with
each GPU's role and the sampler's tags, and the roles a placement gives each GPU."""
from __future__ import annotations

import sys
import threading
import types
from collections import Counter

import pytest

from ctxkit.collectors import gpu as gpu_module
from ctxkit.collectors.gpu import GPUSampler, write_timeline
from ctxkit.schedulers.placement import gpu_roles


@pytest.fixture
def fake_nvml(monkeypatch):
    """A pynvml with two GPUs; `enough` is set once every GPU was read 5 times."""
    enough, reads = threading.Event(), Counter()

    class NVMLError(Exception):
        pass

    def memory(h):
        reads[h] += 1
        if min(reads[0], reads[1]) >= 5:
            enough.set()
        return types.SimpleNamespace(used=1 << 30, total=80 << 30)

    fake = types.SimpleNamespace(
        NVMLError=NVMLError, NVML_CLOCK_SM=0, nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2, nvmlDeviceGetHandleByIndex=lambda i: i, nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=50),
        nvmlDeviceGetPowerUsage=lambda h: 300_000, nvmlDeviceGetClockInfo=lambda h, c: 1980)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(gpu_module, "gpu_inventory", lambda: {"available": True, "devices": [{"index": 0},
                                                                                             {"index": 1}]})
    return enough


def test_sampler_started_by_with_and_start_runs_one_thread(fake_nvml, tmp_path):
    """E1/E2 used `with sampler:` and then `sampler.start()`: two threads, every telemetry row twice."""
    sampler = GPUSampler(0.001, roles={0: "prefill", 1: "decode"}, tags={"topology": "1P1D"})
    with sampler:
        sampler.start()
        assert fake_nvml.wait(10)
        assert [t.name for t in threading.enumerate()].count("ctxkit-nvml") == 1, "two sampling threads"
    prof = sampler.stop()
    assert [t.name for t in threading.enumerate()].count("ctxkit-nvml") == 0
    assert prof["gpus"]["0"]["role"] == "prefill" and prof["gpus"]["1"]["role"] == "decode"
    assert prof["gpus"]["0"]["samples"] == sum(1 for r in sampler.rows if r["gpu"] == 0)
    assert {r["topology"] for r in sampler.rows} == {"1P1D"}
    assert write_timeline([sampler], tmp_path / "t.csv") and (tmp_path / "t.csv").read_text().startswith("topology,")


def test_no_rows_no_timeline(tmp_path):
    assert write_timeline([GPUSampler()], tmp_path / "t.csv") is False
    assert not (tmp_path / "t.csv").exists()


def test_gpu_roles_from_placement():
    def server(role, dev):
        return {"role": role, "env": {"CUDA_VISIBLE_DEVICES": dev}}
    assert gpu_roles({"kind": "gpu", "servers": [server("prefill", "0"), server("decode", "1")]}) == \
        {0: "prefill", 1: "decode"}
    assert gpu_roles({"kind": "gpu", "servers": [server("prefill", "0"), server("decode", "0")]}) == \
        {0: "prefill+decode"}
    assert gpu_roles({"kind": "gpu", "servers": [server("aggregated", "0"), server("aggregated", "1")]}) == \
        {0: "aggregated", 1: "aggregated"}
    assert gpu_roles({"kind": "cpu", "servers": [{"role": "prefill", "env": {}}]}) == {}
