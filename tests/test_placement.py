"""Placement of servers on GPUs or cores (what the GPU runs exercised), and the pool settings that follow from it."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from ctxkit.params import ServerParams
from ctxkit.schedulers import placement
from ctxkit.schedulers.aggregated import AggregatedPool
from ctxkit.schedulers.disaggregated import DisaggregatedPool


@pytest.fixture(autouse=True)
def no_visible_devices_from_the_shell(monkeypatch):
    """The shell's CUDA_VISIBLE_DEVICES must not decide these tests (a GPU host may have it set)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def gpus(n):
    return lambda: {"available": True, "reason": None, "driver": "580",
                    "devices": [{"index": i, "name": "NVIDIA H200"} for i in range(n)]}


def test_two_gpus_one_each(monkeypatch):
    monkeypatch.setattr(placement, "gpu_inventory", gpus(2))
    slots, record = placement.place(["prefill", "decode"])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1"]
    assert record["kind"] == "gpu" and "one GPU each" in record["reason"]


def test_one_gpu_shared_caps_each_servers_memory(monkeypatch, tmp_path):
    monkeypatch.setattr(placement, "gpu_inventory", gpus(1))
    slots, record = placement.place(["aggregated", "aggregated"])
    assert all(s.env["CUDA_VISIBLE_DEVICES"] == "0" and s.gpu_memory_utilization == 0.45 for s in slots)
    # a profile's 0.9 (right for one server alone) must not be given to two servers sharing the GPU
    pool = AggregatedPool(ServerParams(gpu_memory_utilization=0.9), seed=0, replicas=2, log_dir=tmp_path)
    assert [s.gpu_memory_utilization for s in pool.servers] == [0.45, 0.45]
    pool = DisaggregatedPool(ServerParams(), seed=0, prefill=1, decode=1, connector="nixl", log_dir=tmp_path,
                             kv_buffer_device="cuda")
    assert pool.block_size == 16 and [s.gpu_memory_utilization for s in pool.servers] == [0.45, 0.45]
    cfg = json.loads(pool.servers[0].extra_args[-1])
    assert cfg == {"kv_connector": "NixlConnector", "kv_role": "kv_both", "kv_buffer_device": "cuda"}
    ports = [int(s.env["VLLM_NIXL_SIDE_CHANNEL_PORT"]) for s in pool.servers]
    assert len(set(ports)) == 2 and all(p < 32768 for p in ports)   # one each, below the ephemeral range
    with socket.socket() as taken:                        # another run's server already holds the first one
        taken.bind(("127.0.0.1", ports[0]))
        other = DisaggregatedPool(ServerParams(), seed=0, prefill=1, decode=1, connector="nixl", log_dir=tmp_path,
                                  kv_buffer_device="cuda")
        assert ports[0] not in {int(s.env["VLLM_NIXL_SIDE_CHANNEL_PORT"]) for s in other.servers}


def test_manual_devices(monkeypatch):
    monkeypatch.setattr(placement, "gpu_inventory", gpus(4))
    slots, record = placement.place(["prefill", "decode"], prefill_visible_devices="0,1", decode_visible_devices="2")
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2"] and "manual" in record["reason"]


def test_cuda_visible_devices_limits_the_gpus_used(monkeypatch):
    """Two runs on one four-GPU host, one given GPUs 2,3: its servers go there, not onto GPUs 0 and 1."""
    monkeypatch.setattr(placement, "gpu_inventory", gpus(4))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    slots, record = placement.place(["aggregated", "aggregated"])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["2", "3"]
    assert "limits ctxkit to GPUs 2,3" in record["reason"] and placement.devices_used(record) == 2
    slots, _ = placement.place(["prefill", "decode", "decode"])          # more servers than its GPUs: shared
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["2", "3", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    with pytest.raises(ValueError, match="names GPU"):
        placement.place(["aggregated"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")                    # CUDA's way of hiding every GPU
    with pytest.raises(ValueError, match="hides every GPU"):
        placement.place(["aggregated"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,3")                 # once each, not two servers on GPU 3
    slots, _ = placement.place(["aggregated", "aggregated"])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["3", "3"] and slots[0].gpu_memory_utilization == 0.45


def test_one_servers_gpu_roles_follow_its_visible_devices(monkeypatch):
    """E1, E2 and E5 tag the NVML rows of the GPU their one server runs on, not GPU 0 whatever it is given."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert placement.server_gpu_roles({}, []) == {0: "aggregated"}
    assert placement.server_gpu_roles({}, ["--tensor-parallel-size=2"]) == {0: "aggregated", 1: "aggregated"}
    assert placement.server_gpu_roles({"CUDA_VISIBLE_DEVICES": "3"}, []) == {3: "aggregated"}
    assert placement.server_gpu_roles({"CUDA_VISIBLE_DEVICES": "2,5"}, ["--tensor-parallel-size", "2"]) == \
        {2: "aggregated", 5: "aggregated"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")               # ctxkit's own environment, when the server's
    assert placement.server_gpu_roles({}, []) == {1: "aggregated"}  # parameters say nothing
    assert placement.server_gpu_roles({"CUDA_VISIBLE_DEVICES": "GPU-8f2a"}, []) == {}   # a UUID names no index


def test_cpu_cores_split(monkeypatch):
    monkeypatch.setattr(placement, "gpu_inventory",
                        lambda: {"available": False, "reason": "no NVML", "devices": []})
    monkeypatch.setattr(placement, "_cores", lambda: [0, 1])
    slots, record = placement.place(["prefill", "decode"])
    assert [s.env["VLLM_CPU_OMP_THREADS_BIND"] for s in slots] == ["0", "1"] and record["kind"] == "cpu"
    slots, record = placement.place(["a", "b", "c"])
    assert all("VLLM_CPU_OMP_THREADS_BIND" not in s.env for s in slots) and "shared" in record["reason"]


def test_handoffs_wait_for_the_routers_late_records(tmp_path, monkeypatch):
    """The router writes a handoff after relaying the last byte: a reader that just saw [DONE] waits for it."""
    monkeypatch.setattr(placement, "gpu_inventory", lambda: {"available": False, "reason": "-", "devices": []})
    pool = DisaggregatedPool(ServerParams(), seed=0, prefill=1, decode=1, connector="example", log_dir=tmp_path)
    pool.handoff_log.write_text('{"request_id": "a"}\n')

    first_read = threading.Event()

    def late() -> None:
        first_read.wait(10)           # written after the first read: a reader that does not wait sees one
        with open(pool.handoff_log, "a") as fh:
            fh.write('{"request_id": "b"}\n')
    threading.Thread(target=late).start()
    assert len(pool.handoffs()) == 1
    first_read.set()
    assert [h["request_id"] for h in pool.handoffs(expect=2, timeout_s=5)] == ["a", "b"]
    pool.stop()
