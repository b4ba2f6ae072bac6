"""Faults survived: a server killed mid-sweep, Ctrl-C and SIGTERM, a port already taken, a server that never
becomes healthy, a request that times out, a run folder that cannot be written. Each is recorded as what it is,
never a hang, and no process is left behind."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctxkit.backends import BackendError, ServerStartTimeout, Simulated, VLLMServer
from ctxkit.backends.base import ServerDied
from ctxkit.backends.process import ManagedServer, group_members
from ctxkit.collectors.latency import SLO, summarize
from ctxkit.records import TIMEOUT

from conftest import ROOT, run_cli

# 40 requests a point: the points after the first last long enough for the fault to land inside the sweep
E2_FAST = ["--set", "concurrency_levels=[1, 2, 4, 8]", "--set", "requests_per_point=40"]


def start_e2(runs: Path, label: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ctxkit.cli", "--runs-dir", str(runs), "run", "e2_concurrency",
                             *E2_FAST, "--label", label], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_first_point(runs: Path, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((runs / "e2_concurrency").glob("run-*/artifacts/e2_points/c1.json"))
        if found:
            return found[0].parents[2]
        time.sleep(0.3)
    raise AssertionError("the first sweep point never finished")


def assert_clean(run: Path) -> None:
    for g in (run / "logs/process_groups.txt").read_text().split():
        assert not group_members(int(g)), f"process group {g} still alive"
    for line in (run / "requests.jsonl").read_text().splitlines():
        json.loads(line)                                          # every line is valid JSON


@pytest.mark.vllm
@pytest.mark.slow
def test_server_killed_mid_sweep(tmp_path):
    proc = start_e2(tmp_path, "killed")
    run = wait_for_first_point(tmp_path)
    server_pgid = int((run / "logs/process_groups.txt").read_text().split()[0])
    os.killpg(server_pgid, signal.SIGKILL)
    t_kill = time.monotonic()
    out, err = proc.communicate(timeout=120)
    said = f"stderr ends:\n{err[-3000:]}"                  # what the run said, in the message of any failure here
    assert time.monotonic() - t_kill < 30, said
    assert proc.returncode == 1, said
    assert json.loads((run / "status.json").read_text())["status"] == "failed", said
    failure = json.loads((run / "failure.json").read_text())
    assert failure["error_type"] == "ServerDied" and "died during the measured window" in failure["message"], failure
    assert "ServerDied" in err, said
    assert_clean(run)
    # the failed run can be resumed: reopened with its own parameters, its finished point kept for the resume to
    # skip, the failed attempt set aside. (Resuming runs the same code for a failed and an interrupted run; the
    # whole resume, servers and all, is test_e1_e2_end_to_end's interrupted-then-resumed run.)
    from ctxkit.experiments.e2_concurrency import done_points
    from ctxkit.runs.execute import reopen_for_resume
    reopened, params = reopen_for_resume("e2_concurrency", run)
    assert reopened.path == run and params.requests_per_point == 40
    assert "c1" in done_points(reopened)
    assert (run / "failure.attempt-0.json").is_file() and not (run / "failure.json").exists()


@pytest.mark.vllm
@pytest.mark.slow
def test_sigterm_stops_servers_and_marks_interrupted(tmp_path):
    proc = start_e2(tmp_path, "sigterm")
    run = wait_for_first_point(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    assert (run / "failure.json").is_file() and (run / "notebook.ipynb").is_file()
    assert_clean(run)


def test_port_already_taken_is_refused_at_once(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=f"port {port} on 127.0.0.1 is already in use"):
            VLLMServer("tiny-llama", port=port, log_dir=tmp_path).start()
        assert time.monotonic() - t0 < 30


class NeverHealthy(ManagedServer):
    kind = "test server"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(600)"]


def test_server_never_healthy_times_out_and_is_stopped(tmp_path):
    server = NeverHealthy(name="never", log_dir=tmp_path, startup_timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(ServerStartTimeout, match="did not answer .*/health within 2 s"):
        server.start()
    assert time.monotonic() - t0 < 10
    assert server.proc is None


def test_request_timeout_is_a_recorded_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    with Simulated(ttft_ms=5000, tpot_ms=10, log_dir=tmp_path) as sim:
        t0 = time.monotonic()
        rec = sim.generate([1, 2, 3], 4, timeout_s=1.0)
        assert time.monotonic() - t0 < 3
    assert rec.status == TIMEOUT and "1 s" in rec.error and rec.t_first_ns is None
    s = summarize([rec], SLO(ttft_ms=10_000))
    assert s["failed"] == 1 and s["slo_attainment"] == 0.0 and s["request_goodput"] == 0.0


def test_unwritable_runs_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs folder should be")
    result = run_cli("--runs-dir", str(blocker), "run", "e0_smoke")
    assert result.returncode == 2
    assert "cannot create a run folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_failed_summary_write_is_not_success(tmp_path, monkeypatch):
    """A disk that fills while the summary is written: the write raises, nothing half-written remains."""
    from ctxkit.runs import execute
    from ctxkit.runs.folder import RunFolder
    run = RunFolder.create(tmp_path, "e0_smoke")
    assert execute.checks_failure(run)["error_type"] == "MissingSummary"   # no summary: the run is not a success

    def full(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space"):
        run.write_json("summary.json", {"checks": {}})
    monkeypatch.undo()
    assert not (run.path / "summary.json").exists()
    assert execute.checks_failure(run)["error_type"] == "MissingSummary"


def test_report_on_damaged_run_folder_says_what_is_missing(tmp_path):
    from ctxkit.runs.folder import RunFolder
    run = RunFolder.create(tmp_path, "e0_smoke")
    result = run_cli("report", str(run.path))
    assert result.returncode == 1 and "missing run_metadata.json, notebook.ipynb" in result.stderr
    (run.path / "run_metadata.json").write_text("{}")
    (run.path / "notebook.ipynb").write_text("{not json")
    result = run_cli("report", str(run.path))
    assert result.returncode == 1 and "notebook.ipynb is damaged" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("report", str(tmp_path / "nothing-here"))
    assert result.returncode == 1 and "no such directory" in result.stderr


class DyingBackend:
    """A backend whose leader process is still exiting for `exits_after` more looks (alive() answers True), and
    whose health check answers `healthy`."""
    name = "server"

    def __init__(self, exits_after: int, healthy: bool) -> None:
        self.looks, self.exits_after, self._healthy = 0, exits_after, healthy

    def alive(self) -> bool:
        self.looks += 1
        return self.looks <= self.exits_after

    def healthy(self) -> bool:
        return self._healthy

    def death_note(self) -> str:
        return "exit code -9"


def test_a_window_that_lost_its_requests_waits_for_the_server_to_be_gone_or_healthy(monkeypatch):
    """A killed server's requests fail before its leader process has exited: the window is not taken for a
    finished one (E2 would save the point, and --resume skip it) while the server neither answers nor is gone."""
    from ctxkit.load import engine
    from ctxkit.records import DISCONNECT, OK, RequestRecord
    lost = [RequestRecord("a", 8, 4, status=OK), RequestRecord("b", 8, 4, status=DISCONNECT)]
    with pytest.raises(ServerDied, match="died during the measured window: exit code -9"):
        engine.check_alive(DyingBackend(exits_after=3, healthy=False), lost)      # alive at the first look
    engine.check_alive(DyingBackend(exits_after=10**6, healthy=True), lost)       # alive and answering: a blip
    quiet = DyingBackend(exits_after=10**6, healthy=False)
    engine.check_alive(quiet, lost[:1])                 # nothing lost: it looks, and does not wait on the health check
    assert quiet.looks == 2
    monkeypatch.setattr(engine, "DEATH_GRACE_S", 0.5)
    with pytest.raises(ServerDied, match="stopped answering during the measured window"):
        engine.check_alive(DyingBackend(exits_after=10**6, healthy=False), lost)
