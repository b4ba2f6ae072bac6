"""A real browser over a real JupyterLab, as a user works: `jupyter lab` on 127.0.0.1 with a token over a workspace
made by `ctxkit init`, Chromium driven by playwright (Debian's chromium, through executable_path). explore_runs runs
all its cells over run folders made here and redraws when a widget selection changes; an experiment notebook with
`profile` set runs its setup cell and opens a run with that profile's parameters."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from ctxkit.backends.process import free_port
from ctxkit.workspace import init_workspace

from browser import chromium
from conftest import run_cli

SIM = {"CTXKIT_ALLOW_SIMULATED_BACKEND": "1"}
FIGURES_IN_WIDGET = "document.querySelectorAll('.widget-output .jp-RenderedSVG img')"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = init_workspace(tmp_path_factory.mktemp("lab") / "ws")
    for label in ("lab-a", "lab-b"):
        result = run_cli("--runs-dir", str(ws / "runs"), "run", "e2_concurrency", "--set", "backend=simulated",
                         "--set", "concurrency_levels=[1, 4]", "--set", "requests_per_point=8", "--label", label,
                         env=SIM)
        assert result.returncode == 0, result.stderr[-3000:]
    return ws


@pytest.fixture(scope="module")
def lab(workspace):
    """JupyterLab serving the workspace; its kernels inherit its environment (no CTXKIT_RUNS_DIR: the workspace's
    runs/ is found from the notebook's folder)."""
    port, token = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "CTXKIT_RUNS_DIR"}
    log = open(workspace.parent / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
                             f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={workspace}", "--LabApp.news_url=None"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (workspace.parent / "lab.log").read_text()
            time.sleep(0.5)
    yield url, token
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(autouse=True)
def kernels_shut_down(lab):
    """Each test's kernels are shut down when it ends, as a user closing the notebook would (a kernel left running
    until the module ends is a process the next test did not start)."""
    yield
    url, token = lab
    kernels = json.loads(urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=10).read())
    for k in kernels:
        req = urllib.request.Request(f"{url}/api/kernels/{k['id']}?token={token}", method="DELETE")
        urllib.request.urlopen(req, timeout=30)     # returns once the kernel process is gone


@pytest.fixture
def page(request, tmp_path):
    """A Chromium page; what it showed last is saved as failure.png under the test's tmp dir if the test fails."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        yield page
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        browser.close()


ACTIVE = ".jp-NotebookPanel:not(.lm-mod-hidden)"   # the notebook in front (Lab may restore other tabs)


def open_and_run_all(page, url: str, token: str, notebook: str) -> None:
    page.goto(f"{url}/lab/tree/notebooks/{notebook}?reset&token={token}")   # reset: no tabs from earlier tests
    page.wait_for_selector(f"{ACTIVE} .jp-Cell", timeout=120_000)
    # the kernel is connected and idle (the status bar says "Python (ctxkit) | Idle"; it starts as "Connecting")
    page.wait_for_function("(document.querySelector('.jp-StatusBar-Widget .jp-KernelStatus') || document.body)"
                           ".textContent.includes('Python (ctxkit) | Idle')", timeout=120_000)
    page.click("li.lm-MenuBar-item:has-text('Run')")
    page.click("li.lm-Menu-item[data-command='runmenu:run-all']")


def test_explore_runs_in_jupyterlab(lab, page, tmp_path):
    url, token = lab
    open_and_run_all(page, url, token, "explore_runs.ipynb")
    page.wait_for_function(f"{FIGURES_IN_WIDGET}.length >= 3", timeout=180_000)   # the headline metrics
    before = page.evaluate(f"Array.from({FIGURES_IN_WIDGET}).map(i => decodeURIComponent(i.src).length)")
    page.screenshot(path=str(tmp_path / "explore_all.png"))
    metrics = page.locator(".widget-select-multiple:has-text('metrics') select")
    metrics.select_option("p95_ttft_ms")                                       # the user picks one metric
    page.wait_for_function(f"{FIGURES_IN_WIDGET}.length == 1", timeout=60_000)
    src = page.evaluate(f"decodeURIComponent({FIGURES_IN_WIDGET}[0].src)")
    assert "p95_ttft_ms" in src and len(before) >= 3                           # ... and sees that metric drawn
    page.locator(".widget-output").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "explore_p95_ttft.png"))
    assert (tmp_path / "explore_p95_ttft.png").stat().st_size > 10_000


def test_experiment_notebook_with_a_profile_runs_its_setup(lab, page, workspace):
    """The first cells of E1 (question, parameters, setup) with `profile = "h100-llama8b"`: setup opens a run with
    that profile's parameters, without starting anything."""
    url, token = lab
    nb = nbformat.read(workspace / "notebooks" / "e1_latency.ipynb", as_version=4)
    setup = next(i for i, c in enumerate(nb.cells) if "open_run(" in c.source)
    nb.cells = nb.cells[:setup + 1]
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = params.source.replace('profile = "cpu-tiny"', 'profile = "h100-llama8b"')
    assert 'profile = "h100-llama8b"' in params.source
    nbformat.write(nb, workspace / "notebooks" / "e1_gpu_setup.ipynb")
    open_and_run_all(page, url, token, "e1_gpu_setup.ipynb")
    # textContent, not innerText: JupyterLab skips rendering cells scrolled out of view
    page.wait_for_function(f"document.querySelector('{ACTIVE} .jp-Notebook').textContent"
                           ".includes('Resolved parameters')", timeout=180_000)     # the setup cell's last output
    text = page.text_content(f"{ACTIVE} .jp-Notebook")
    assert "h100-llama8b.yaml" in text and "new run folder" in text and "model: llama-3.1-8b" in text
    (run,) = list((workspace / "runs" / "e1_latency").iterdir())
    assert "model: llama-3.1-8b" in (run / "params.yaml").read_text()
    meta = json.loads((run / "run_metadata.json").read_text())
    assert meta["notes"].startswith("opened from a notebook")
