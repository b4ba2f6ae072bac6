"""Shared fixtures. One real vLLM CPU server (tiny-llama, dummy weights) serves every test of a pytest run that
needs one: each start costs ~35 s on 2 cores."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))   # tests share helpers with the benchmarks (vllm_agreement)


def pytest_collection_modifyitems(config, items):
    """A test that uses the shared vLLM server must be marked `vllm` (so `-m "not vllm"` never starts one)."""
    unmarked = [item.nodeid for item in items
                if "vllm_server" in getattr(item, "fixturenames", ()) and item.get_closest_marker("vllm") is None]
    if unmarked:
        raise pytest.UsageError(f"tests using the vllm_server fixture without the vllm marker: {unmarked}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (rep_setup, rep_call), for fixtures that keep evidence of a failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):

    logs = tmp_path_factory.mktemp("shared-vllm")
    # Prefix caching off: tests that repeat a workload (the vLLM-agreement test) must not measure cache hits.
    with profile_server("shared", logs, ["--no-enable-prefix-caching"]) as server:
        yield server


def profile_server(name: str, log_dir: Path, extra_args: list[str]):
    """A tiny vLLM server started as the default profile (cpu-tiny) starts one, plus `extra_args`."""
    from ctxkit.backends import VLLMServer
    from ctxkit.params import DEFAULT_PROFILE, ServerParams, profile_path, read_yaml

    server = ServerParams(**read_yaml(profile_path(DEFAULT_PROFILE))["server"])
    return VLLMServer.from_params(server, seed=0, name=name, log_dir=log_dir, extra_args=extra_args)


@pytest.fixture
def runs_dir(tmp_path):
    path = tmp_path / "runs"
    path.mkdir()
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 900, cwd: Path = ROOT):
    """`ctxkit ...` in a subprocess, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ctxkit.cli", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


_BACKGROUND_THREADS = ("ctxkit-", "metrics-")


@pytest.fixture(autouse=True)
def no_leaked_background_work(request):
    """A test leaves no sampler, scraper or client thread and no server process behind: a leaked scraper thread
    takes the GIL from every later test's event loop, and a leaked server takes their CPU (a latency test two
    files later then measures the leak, not its subject). Servers of session and module fixtures are exempt: pytest
    sets up wider scopes before this function-scoped fixture, so they are among the processes seen before."""
    import threading

    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    for t in threading.enumerate():
        if t.name.startswith(_BACKGROUND_THREADS):
            t.join(timeout=5)
    threads = [t.name for t in threading.enumerate() if t.is_alive() and t.name.startswith(_BACKGROUND_THREADS)]
    born = [p for p in me.children(recursive=True) if p.pid not in before and _is_alive(p)]
    assert not threads, f"{request.node.nodeid} left background threads running: {threads}"
    assert not born, f"{request.node.nodeid} left processes running: {[_describe(p) for p in born]}"


def _is_alive(p) -> bool:
    import psutil
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(p) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:120]}"
    except Exception:
        return str(p.pid)
