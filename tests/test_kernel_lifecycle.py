"""Servers started from a notebook cell stop when the cell is interrupted (the kernel's Ctrl-C) and when the kernel
itself goes away, killed outright. A real `ctxkit` Jupyter kernel runs the cells; the server is the simulated one
(explicitly allowed), whose process handling is every managed server's."""
from __future__ import annotations

import os
import queue

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

from conftest import ROOT

START = """
import os
from ctxkit.backends import Simulated
sim = Simulated(log_dir={logs!r})
{how}
print("PID", sim.proc.pid, flush=True)
"""


def run_cell(kc, code: str, timeout: float = 60.0) -> tuple[str, str]:
    """Execute code; returns (stdout text, status). Waits for the cell's idle."""
    msg_id = kc.execute(code)
    text = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            text.append(msg["content"]["text"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:   # replies to earlier cells (an interrupted one) may come first
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return "".join(text), reply["content"]["status"]


def wait_for(kc, msg_id: str, *, pid: bool = False, timeout: float = 60.0) -> int:
    """Read the cell's messages until it printed a PID (pid=True) or went idle."""
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if pid and msg["msg_type"] == "stream" and "PID" in msg["content"]["text"]:
            return int(msg["content"]["text"].split("PID")[1].split()[0])
        if not pid and msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return 0


@pytest.fixture
def kernel(tmp_path):
    env = {**os.environ, "CTXKIT_ALLOW_SIMULATED_BACKEND": "1"}
    km, kc = start_new_kernel(kernel_name="ctxkit", cwd=str(ROOT), env=env)
    yield km, kc
    kc.stop_channels()
    if km.is_alive():
        km.shutdown_kernel(now=True)


def gone(pid: int, timeout: float = 30.0) -> bool:
    try:
        psutil.Process(pid).wait(timeout=timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


def test_interrupting_the_cell_stops_its_server(kernel, tmp_path):
    km, kc = kernel
    cell = kc.execute(START.format(logs=str(tmp_path), how="with sim:\n    print('PID', sim.proc.pid, flush=True)\n"
                                                          "    import time; time.sleep(600)"))
    pid = wait_for(kc, cell, pid=True)
    assert psutil.pid_exists(pid)
    km.interrupt_kernel()
    wait_for(kc, cell)                                                # the cell ends (KeyboardInterrupt) ...
    assert gone(pid), "the server outlived the interrupted cell"      # ... and took its server with it
    out, status = run_cell(kc, "print(sim.proc)")                     # the kernel itself lives on
    assert status == "ok" and "None" in out


def test_killing_the_kernel_stops_its_servers(kernel, tmp_path):
    km, kc = kernel
    out, status = run_cell(kc, START.format(logs=str(tmp_path), how="sim.start()"))
    assert status == "ok", out
    pid = int(out.split("PID")[1].split()[0])
    assert psutil.Process(pid).is_running()
    km.shutdown_kernel(now=True)                                      # SIGKILL: no cleanup code runs in it
    assert gone(pid), "the server outlived its kernel"
    with pytest.raises(queue.Empty):
        kc.get_iopub_msg(timeout=0.1)
