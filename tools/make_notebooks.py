"""Write the experiment notebooks from the cell sources below (run after editing; the .ipynb files are committed).

    python tools/make_notebooks.py

Keeping the sources here makes notebook diffs reviewable; the notebooks stay thin: parameters, one ctxkit call
per step, a table or a plot after each."""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent


def code(src: str, *tags: str):
    cell = new_code_cell(src.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def md(src: str):
    return new_markdown_cell(src.strip())


SETUP = """
%config InlineBackend.figure_formats = ['svg']
from pathlib import Path
import pandas as pd
from IPython.display import display, Markdown
import ctxkit
from ctxkit.experiments.common import open_run, show_params
"""

E0 = [
    md("""
# E0: smoke and reproducibility

**Question.** Does ctxkit drive a *real* vLLM server end to end, and does a fixed-seed request set give the same
output tokens on two freshly started servers?

**Method.** One request set, half greedy and half seeded sampling, over several prompt lengths, sent one at a time
through the streaming completions API (token-id prompts, exact lengths) to a fresh server; then the same set to a
second fresh server. Each pass starts with one warm-up request on a prompt of its own.
"""),
    code("""
# Parameters (papermill injects the resolved values below this cell)
seed = 0
backend = "vllm"
endpoint_url = None
request_timeout_s = 120.0
server = {"model": "tiny-llama"}
prompt_lens = [16, 64, 256, 1024]
max_tokens = 16
sampling_temperature = 0.8
repeats = 2
run_dir = None
""", "parameters"),
    md("## 1. Setup"),
    code(SETUP + """
from ctxkit.experiments import e0_smoke
from ctxkit.params import to_dict
P, run = open_run("e0_smoke", globals())
print(f"ctxkit {ctxkit.__version__}; run folder {run.path}")
show_params(P)
""", "remove_input"),
    md("## 2. Request set on fresh servers\n\nEach pass starts its own server and stops it afterwards."),
    code("""
passes = [e0_smoke.serve_and_measure(P, run, f"server-{chr(ord('a') + i)}") for i in range(P.repeats)]
"""),
    md("## 3. Checks"),
    code("""
summary = e0_smoke.summarize(P, run, passes)
display(e0_smoke.checks_frame(summary).style.hide(axis="index"))
""", "remove_input"),
    md("## 4. Latency per request\n\nTTFT is measured from the moment the request is sent; TPOT over the "
       "tokens after the first. Requests go one at a time, so there is no queueing."),
    code("""
from ctxkit import plots
table = e0_smoke.latency_table(passes)
table.to_csv(run.artifacts / "e0_requests.csv", index=False)
fig = plots.latency_by_prompt(table, run.artifacts / "e0_latency.svg", title="E0: latency per request")
lat = summary["profiling"]["latency"]
display(pd.DataFrame(lat).T[["count", "min", "p50", "p95", "max", "avg"]].round(2))
""", "remove_input"),
    md("## 5. Conclusion"),
    code("""
ok = all(c["passed"] for c in summary["checks"].values())
ttft, tpot = lat["ttft_ms"], lat["tpot_ms"]
display(Markdown(
    f"**{'All checks passed' if ok else 'Some checks failed'}.** "
    f"{ttft['count']} measured requests on {len(passes)} fresh server(s); "
    f"median TTFT {ttft['p50']:.1f} ms (p95 {ttft['p95']:.1f} ms), median TPOT {tpot['p50']:.2f} ms "
    f"(p95 {tpot['p95']:.2f} ms) with {P.server.model}."))
""", "remove_input"),
]

NOTEBOOKS = {"e0_smoke": E0}


def write(name: str, cells: list) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "ctxkit", "display_name": "Python (ctxkit)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = ROOT / "notebooks" / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        print(write(name, cells))
