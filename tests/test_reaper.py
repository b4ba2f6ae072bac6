"""The reaper (ctxkit.backends.reaper) takes a command's whole process group down with it: on SIGTERM, when the
command exits leaving children behind, and when whoever started it dies (its parent-death signal). The Ray launcher
runs every server under it, because a vLLM server killed from a Ray actor left its engine core running."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

from conftest import ROOT

REAPER = [sys.executable, "-m", "ctxkit.backends.reaper"]
# a command that leaves a child of its own in the background, as vLLM's API server leaves its engine core
TREE = ["bash", "-c", "sleep 600 & echo $! ; sleep 600"]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def until_gone(pids: list[int], deadline_s: float = 20.0) -> list[int]:
    end = time.monotonic() + deadline_s
    while any(running(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.05)
    return [p for p in pids if running(p)]


def test_sigterm_stops_the_whole_group():
    reaper = subprocess.Popen(REAPER + TREE, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    background = int(reaper.stdout.readline())
    command = [p.pid for p in psutil.Process(reaper.pid).children(recursive=True)]
    assert background in command and len(command) == 2        # bash execs its last command: two sleeps
    reaper.send_signal(signal.SIGTERM)
    assert reaper.wait(timeout=30) == 128 + signal.SIGTERM
    assert until_gone(command) == []


def test_a_command_that_exits_takes_what_it_left_behind_and_its_status():
    reaper = subprocess.Popen(REAPER + ["bash", "-c", "sleep 600 & echo $! ; exit 3"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    background = int(reaper.stdout.readline())
    assert reaper.wait(timeout=30) == 3
    assert until_gone([background]) == []


def test_the_group_goes_when_the_process_that_started_it_is_killed():
    starter = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "from ctxkit.backends.process import die_with_parent\n"
        f"p = subprocess.Popen({REAPER + TREE!r}, start_new_session=True, preexec_fn=die_with_parent)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    reaper = int(starter.stdout.readline())
    end = time.monotonic() + 20                      # the reaper's command has started its own child
    while len(psutil.Process(reaper).children(recursive=True)) < 2 and time.monotonic() < end:
        time.sleep(0.05)
    group = [reaper] + [p.pid for p in psutil.Process(reaper).children(recursive=True)]
    starter.kill()
    starter.wait(timeout=30)
    assert until_gone(group) == []


def test_a_sigkilled_reaper_still_takes_its_command_down():
    """Ray SIGKILLs the direct children of a worker that exits, the reaper among them: its command then gets the
    SIGTERM of its own parent-death signal (a vLLM server shuts its engine core down on it)."""
    reaper = subprocess.Popen(REAPER + ["sleep", "600"], cwd=ROOT, start_new_session=True)
    end = time.monotonic() + 20
    while not psutil.Process(reaper.pid).children() and time.monotonic() < end:
        time.sleep(0.05)
    command = [p.pid for p in psutil.Process(reaper.pid).children()]
    assert len(command) == 1
    reaper.kill()
    reaper.wait(timeout=30)
    assert until_gone(command) == []


def test_a_server_with_cpu_nice_runs_its_whole_tree_below_the_client(tmp_path):
    """The cpu-tiny profile's servers run at nice 10 (params server.cpu_nice): the process and what it starts later
    (vLLM's engine core and workers), and its session's scheduling group where the kernel has one, so that the
    load client is not left unscheduled behind a busy server on 2 cores."""
    from pathlib import Path

    from ctxkit import params as P
    from ctxkit.backends.process import ManagedServer

    class Tree(ManagedServer):
        def command(self) -> list[str]:
            return TREE

    nice = P.resolve("e2_concurrency", "cpu-tiny").server.cpu_nice
    assert nice == 10 and P.resolve("e2_concurrency", "h100-llama8b").server.cpu_nice == 0
    server = Tree(name="tree", log_dir=tmp_path, cpu_nice=nice)
    try:
        server.launch()
        leader = psutil.Process(server.proc.pid)
        deadline = time.monotonic() + 20
        while not leader.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = [leader] + leader.children(recursive=True)
        expected = max(nice, psutil.Process().nice())           # never above the client's own priority
        assert len(tree) == 2 and all(p.nice() == expected for p in tree), [(p.pid, p.nice()) for p in tree]
        group = Path(f"/proc/{leader.pid}/autogroup")
        if group.exists():                                      # CONFIG_SCHED_AUTOGROUP kernels: the group's nice
            assert group.read_text().split()[-1] == str(nice), group.read_text()
    finally:
        server.stop()
