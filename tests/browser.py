"""Open an HTML report in headless Chromium (Debian's `chromium`) at a laptop's 1280 px and report what a reader's
browser saw: script and resource errors, the rendered size of every image and SVG figure, and tables wider than
the window."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PROBE = """<script>
window.__ctxkitErrors = [];
window.addEventListener('error', function (e) {
  var t = e.target && e.target !== window ? (e.target.src || e.target.href || e.target.tagName) : '';
  window.__ctxkitErrors.push(String(e.message || 'resource failed: ' + t));
}, true);
window.addEventListener('load', function () {
  var figs = [];
  document.querySelectorAll('img, svg').forEach(function (el) {
    if (el.tagName.toLowerCase() === 'svg' && el.parentElement && el.parentElement.closest('svg')) return;
    var r = el.getBoundingClientRect();
    figs.push({tag: el.tagName.toLowerCase(), width: r.width, height: r.height,
               natural: el.naturalWidth === undefined ? null : el.naturalWidth});
  });
  var wide = [];
  document.querySelectorAll('table').forEach(function (t) {
    var r = t.getBoundingClientRect();
    if (r.right > window.innerWidth + 1) wide.push({right: r.right, text: t.innerText.slice(0, 80)});
  });
  var out = document.createElement('pre');
  out.id = 'ctxkit-probe';
  out.textContent = JSON.stringify({errors: window.__ctxkitErrors, figures: figs, viewport: window.innerWidth,
                                    page_width: document.documentElement.scrollWidth, wide_tables: wide});
  document.body.appendChild(out);
});
</script>"""

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000", "--window-size=1280,900"]   # a laptop screen


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("headless Chromium is needed for the report test: apt-get install chromium "
                           "(.ci/run installs it)")
    return path


def probe_report(report: Path) -> dict:
    text = Path(report).read_text()
    probed = re.sub(r"<head>", "<head>" + PROBE, text, count=1)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(probed)
        out = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile", "--dump-dom",
                              page.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="ctxkit-probe">(.*?)</pre>', out.stdout, re.S)
    if not match:
        raise AssertionError(f"the page did not finish loading in Chromium: {out.stderr[-1500:]}")
    import html
    return json.loads(html.unescape(match.group(1)))
