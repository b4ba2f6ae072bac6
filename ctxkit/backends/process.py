"""Servers run as managed child processes: own process group, die with their parent, stopped as a group.

Every server ctxkit starts is started here: in a new session (process group) so that the server and all its
children (vLLM's engine core and workers) stop together, with PR_SET_PDEATHSIG so a server dies too if the Python
process that started it is killed outright, and with its process group appended to the run's pid registry so the
CLI can sweep up after a kernel that died. `start()` waits for /health while watching the process.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Optional

import psutil

from ctxkit.backends.base import BackendError, ServerDied, ServerStartTimeout, ServingBackend, http_get

PID_REGISTRY_ENV = "CTXKIT_PID_REGISTRY"  # a file where every started process group is recorded (see runs.execute)
_PR_SET_PDEATHSIG = 1


def port_free_or_raise(host: str, port: int) -> None:
    """A port given explicitly must be free: say so now rather than after a 35 s model load."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise BackendError(f"port {port} on {host} is already in use ({exc.strerror}): pick another or leave "
                               "the port unset for a free one") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_fixed_port(start: int, exclude: set[int], host: str = "127.0.0.1") -> int:
    """The first port from `start` up that nothing is bound to now and that is not in `exclude` (chosen for servers
    not started yet). For ports a server binds seconds after they are chosen: below the kernel's ephemeral range
    (32768 and up), where the outgoing connections and bind-to-0 sockets of the servers starting meanwhile never
    land. A port from free_port() is in that range and was taken by one of vLLM's own sockets on a GPU host."""
    for port in range(start, 32768):
        if port in exclude:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port between {start} and 32767")


try:        # loaded once, before any fork: a child between fork and exec has nothing to load
    _LIBC: Optional[ctypes.CDLL] = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def die_with_parent() -> None:
    """preexec_fn (runs in the child between fork and exec): SIGTERM when the thread that forked it exits."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def lower_group_priority(pid: int, nice: int) -> None:
    """Where the kernel schedules by session (CONFIG_SCHED_AUTOGROUP, for tasks in the root cgroup), a task's nice
    counts only against tasks of its own session, and a server runs in a session of its own (setsid): its session's
    group gets `nice` too, so that the client, in another session, is not left unscheduled behind a busy server.
    Best effort: no /proc/PID/autogroup (another kernel), or a container's cgroup where the group does not apply.
    The kernel takes one such write per 100 ms from an unprivileged user (EAGAIN otherwise): tried again then."""
    for _ in range(3):
        try:
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
            return
        except BlockingIOError:
            time.sleep(0.11)
        except OSError:
            return


def at_least_nice(nice: int) -> None:  # runs in the child between fork and exec
    """This process (and what it starts later) at niceness `nice`, or at its parent's if that is higher already."""
    os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), nice))


def tail(path: Path, lines: int = 25) -> str:
    try:
        with open(path, "r", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))
    except OSError:
        return "(no log)"


def register_pgid(pgid: int) -> None:
    registry = os.environ.get(PID_REGISTRY_ENV)
    if registry:
        with open(registry, "a") as fh:
            fh.write(f"{pgid}\n")


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of a process group (one pass over the process table)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return members


def kill_group(pgid: int, grace_s: float = 15.0, reap: Optional[subprocess.Popen[bytes]] = None) -> None:
    """SIGTERM the process group, wait (psutil.wait_procs) until its members have exited, SIGKILL what is left.
    The members are found once, before the signal: a vLLM server's engine core and workers are in its group.
    `reap` is the group leader if it is our child, so that it does not linger as a zombie."""
    members = group_members(pgid)
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        members = []
    _, alive = psutil.wait_procs(members, timeout=grace_s)
    if alive:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        psutil.wait_procs(alive, timeout=5.0)
    if reap is not None:
        try:
            reap.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass


class ManagedServer(ServingBackend):
    """A server process ctxkit owns. Subclasses give `command()`, may extend `environment()` and `preflight()`."""

    kind = "server"

    def __init__(self, *, name: str, host: str = "127.0.0.1", port: Optional[int] = None,
                 env: Optional[dict[str, str]] = None, log_dir: Optional[Path] = None,
                 startup_timeout_s: float = 300.0, python: str = sys.executable, cpu_nice: int = 0) -> None:
        self.name = name
        self.cpu_nice = cpu_nice
        self.host = host
        self.port = port
        self.env = dict(env or {})
        self.log_dir = Path(log_dir) if log_dir else Path.cwd() / "logs"
        self.log_path = self.log_dir / f"{name}.log"
        self.startup_timeout_s = startup_timeout_s
        self.python = python
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.started_s: Optional[float] = None
        self._t0 = 0.0
        self._version: dict[str, Any] = {}

    def command(self) -> list[str]:
        raise NotImplementedError  # abstract: each server kind builds its own command line

    def preflight(self) -> None:
        """Raise BackendUnavailable before anything starts if the server cannot run here."""

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(PID_REGISTRY_ENV, None)
        env.update(self.env)
        return env

    def start(self) -> "ManagedServer":
        if self.proc is None:
            self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Spawn the process without waiting. PR_SET_PDEATHSIG ties the child to the *thread* that spawns it, so
        launch from a thread that outlives the server (the main thread), never from a short-lived worker."""
        if self.port:   # the cheap check first: a taken port is refused before the software is even looked for
            port_free_or_raise(self.host, self.port)
        self.preflight()
        self.port = self.port or free_port(self.host)
        self.base_url = f"http://{self.host}:{self.port}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        self._t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.environment(), start_new_session=True,
                                         preexec_fn=self._in_child)
        register_pgid(self.proc.pid)
        if self.cpu_nice:
            lower_group_priority(self.proc.pid, self.cpu_nice)

    def _in_child(self) -> None:  # between fork and exec
        die_with_parent()
        if self.cpu_nice:
            at_least_nice(self.cpu_nice)

    def wait_ready(self) -> None:
        """Wait for /health (safe from any thread); stops the process if it never becomes ready."""
        if self.started_s is not None:
            return
        try:
            self._wait_healthy(self._t0)
        except BaseException:
            self.stop()
            raise
        self.started_s = time.monotonic() - self._t0
        self.after_start()

    def after_start(self) -> None:
        """Read what the running server says it is (/version), for every record of the run."""
        self._version = self.version()

    def exit_code(self) -> Optional[int]:
        """The process's exit status, None while it runs (a server placed elsewhere asks where it runs)."""
        assert self.proc is not None
        return self.proc.poll()

    def last_lines(self) -> str:
        """Where its log is and its last lines, for an error message."""
        return f"(log {self.log_path}); last lines:\n{tail(self.log_path)}"

    def _wait_healthy(self, t0: float) -> None:
        while True:
            code = self.exit_code()
            if code is not None:
                raise ServerDied(f"{self.kind} {self.name!r} exited with code {code} during start-up "
                                 f"{self.last_lines()}")
            try:
                if http_get(f"{self.base_url}/health", timeout=2.0)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() - t0 > self.startup_timeout_s:
                raise ServerStartTimeout(f"{self.kind} {self.name!r} did not answer {self.base_url}/health within "
                                         f"{self.startup_timeout_s:g} s {self.last_lines()}")
            time.sleep(0.25)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def death_note(self) -> str:
        code = self.proc.poll() if self.proc is not None else None
        return f"{self.kind} {self.name!r} exit code {code} (log {self.log_path}); last lines:\n{tail(self.log_path, 12)}"

    def stop(self) -> None:
        if self.proc is None:
            return
        kill_group(self.proc.pid, reap=self.proc)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": self.kind, "command": self.command() if self.port else None,
                "log": str(self.log_path), "startup_s": self.started_s, "version": self._version}
