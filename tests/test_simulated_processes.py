"""The simulated server from several processes on one port: the server side of benchmarks/client_capacity.py's
workers comparison, which must measure the client processes, not one server's event loop."""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import psutil
import pytest

from ctxkit.backends import Simulated
from ctxkit.backends.simulated import SIMULATION_ENV


def _answered_by(base_url: str) -> int:
    """One request on a connection of its own; the pid of the process that answered it."""
    body = json.dumps({"model": "simulated", "prompt": [1, 2, 3], "max_tokens": 2, "stream": True}).encode()
    req = urllib.request.Request(base_url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert b"[DONE]" in resp.read()
        return int(resp.headers["X-Sim-Pid"])


def test_simulated_server_answers_from_several_processes_and_stops_them_all(tmp_path, monkeypatch):
    monkeypatch.setenv(SIMULATION_ENV, "1")
    with pytest.raises(ValueError, match="one queue needs one process"):
        Simulated(processes=2, queue_servers=1, service_ms=10, log_dir=tmp_path)
    with Simulated(ttft_ms=0, tpot_ms=0, log_dir=tmp_path, processes=3) as sim:
        leader = psutil.Process(sim.proc.pid)
        procs = [leader, *leader.children()]
        assert len(procs) == 3, procs
        assert sim.listening() == 3           # start() waited for every process, not only the one /health reached
        seen: set[int] = set()
        deadline = time.monotonic() + 30      # the kernel spreads connections by a hash: all three answer at once
        while len(seen) < 3 and time.monotonic() < deadline:
            seen.add(_answered_by(sim.base_url))
        assert seen == {p.pid for p in procs}
    _, alive = psutil.wait_procs(procs, timeout=20)
    assert not alive, alive


def test_the_siblings_die_with_a_killed_leader(tmp_path, monkeypatch):
    """SIGKILL reaches the leader alone (no group kill): its siblings go by their death signal, serving no one."""
    monkeypatch.setenv(SIMULATION_ENV, "1")
    with Simulated(ttft_ms=0, tpot_ms=0, log_dir=tmp_path, processes=2) as sim:
        siblings = psutil.Process(sim.proc.pid).children()
        assert len(siblings) == 1
        os.kill(sim.proc.pid, signal.SIGKILL)
        _, alive = psutil.wait_procs(siblings, timeout=20)
        assert not alive, alive
