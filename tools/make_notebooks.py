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
%matplotlib inline
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
display(fig)
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

E1 = [
    md("""
# E1: latency vs prompt length

**Question.** How do time to first token (prefill) and time per output token (decode) grow with the prompt?

**Method.** One server, warmed up. For each prompt length, `requests_per_len` requests with fresh token-exact
prompts, sent one at a time (no queueing), each generating `output_len` tokens (ignore_eos). Where the GPU is
known, each curve is drawn against its physical floor: prefill needs at least 2 x parameters x tokens FLOP at the
GPU's bf16 peak; each decode step reads every weight once from HBM.
"""),
    code("""
# Parameters (papermill injects the resolved values below this cell)
seed = 0
backend = "vllm"
endpoint_url = None
request_timeout_s = 120.0
server = {"model": "tiny-llama"}
prompt_lens = [64, 128, 256, 512, 1024, 2048]
requests_per_len = 5
output_len = 32
warmup_requests = 2
gpu_sample_interval_s = 0.5
run_dir = None
""", "parameters"),
    md("## 1. Setup"),
    code(SETUP + """
from ctxkit.experiments import e1_latency
from ctxkit.models import ModelCard
P, run = open_run("e1_latency", globals())
card = ModelCard.load(P.server.model)
print(f"ctxkit {ctxkit.__version__}; run folder {run.path}")
show_params(P)
""", "remove_input"),
    md("## 2. Sweep\n\nThe server starts once; lengths are measured in increasing order."),
    code("""
records, extra = e1_latency.sweep(P, run)
"""),
    md("## 3. Latency per prompt length"),
    code("""
fl = e1_latency.floors(card)
table = e1_latency.curve(records, fl)
summary = e1_latency.summarize(P, run, records, extra, table, fl)
figs = e1_latency.write_artifacts(run, table)
display(pd.DataFrame([{"check": k, **v} for k, v in summary["checks"].items()]).style.hide(axis="index"))
cols = ["prompt_len", "count", "p50_ttft_ms", "p95_ttft_ms", "p50_tpot_ms", "p95_tpot_ms"]
cols += [c for c in ("prefill_floor_ms", "ttft_over_floor", "decode_floor_ms", "tpot_over_floor") if c in table]
display(table[cols].round(3).style.hide(axis="index"))
print("floors:", fl or summary["floors"]["reason"])
""", "remove_input"),
    code("""
for fig in figs:
    display(fig)
""", "remove_input"),
    md("## 4. GPU and server"),
    code("""
gpu = summary["profiling"]["gpu"]
print("GPU telemetry:", gpu if not gpu.get("available") else pd.DataFrame(gpu["gpus"]).T)
srv = pd.DataFrame(summary["profiling"]["server"]).T
display(srv[[c for c in ("ttft_count", "mean_ttft_ms", "mean_prefill_ms", "mean_decode_ms", "prompt_tokens") if c in srv]].round(2))
""", "remove_input"),
    md("## 5. Conclusion"),
    code("""
first, last = table.iloc[0], table.iloc[-1]
ratio = last["p50_ttft_ms"] / first["p50_ttft_ms"]
text = (f"From {int(first.prompt_len)} to {int(last.prompt_len)} prompt tokens ({last.prompt_len / first.prompt_len:.0f}x), "
        f"median TTFT goes from {first.p50_ttft_ms:.1f} ms to {last.p50_ttft_ms:.1f} ms ({ratio:.1f}x), while median TPOT "
        f"goes from {first.p50_tpot_ms:.2f} ms to {last.p50_tpot_ms:.2f} ms.")
if fl:
    text += (f" On {fl['gpu']}, TTFT at {int(last.prompt_len)} tokens is {last.ttft_over_floor:.1f}x its compute floor "
             f"and TPOT {last.tpot_over_floor:.1f}x its bandwidth floor.")
else:
    text += " No GPU peak numbers apply here, so no physical floors are drawn."
checks = summary["checks"]
text += " Checks: " + ", ".join(f"{k} {'passed' if v['passed'] else 'FAILED'}" for k, v in checks.items()) + "."
display(Markdown(text))
""", "remove_input"),
]

E2 = [
    md("""
# E2: load sweep with SLO goodput

**Question.** How do throughput and latency trade off as load grows, and how much of the throughput is *goodput*
(requests that meet every SLO)?

**Method.** One server, started once and warmed up. Each point is a closed-loop concurrency level (C clients, each
sending its next request when the previous one ends) or a Poisson arrival rate, with fresh prompts, measured for
`requests_per_point` requests. Goodput counts only requests that meet every SLO; failed requests are misses.
"""),
    code("""
# Parameters (papermill injects the resolved values below this cell)
seed = 0
backend = "vllm"
endpoint_url = None
request_timeout_s = 120.0
server = {"model": "tiny-llama"}
concurrency_levels = [1, 2, 4, 8, 16]
request_rates = []
requests_per_point = 32
duration_s = None
workload = {"input_len": 256, "output_len": 32}
slo = {"ttft_ms": 1000.0, "tpot_ms": 100.0}
warmup_requests = 4
metrics_interval_s = 1.0
gpu_sample_interval_s = 0.5
run_dir = None
""", "parameters"),
    md("## 1. Setup"),
    code(SETUP + """
from ctxkit.experiments import e2_concurrency
P, run = open_run("e2_concurrency", globals())
print(f"ctxkit {ctxkit.__version__}; run folder {run.path}")
show_params(P)
""", "remove_input"),
    md("## 2. Sweep\n\nPoints already measured in an earlier attempt of this run folder are skipped (`--resume`)."),
    code("""
extra = e2_concurrency.sweep(P, run)
"""),
    md("## 3. Results per point"),
    code("""
table = e2_concurrency.curve(P, run)
summary = e2_concurrency.summarize(P, run, table, extra)
figs = e2_concurrency.write_artifacts(run, table)
display(pd.DataFrame([{"check": k, **v} for k, v in summary["checks"].items()]).style.hide(axis="index"))
cols = ["point", "request_throughput", "output_throughput", "p50_ttft_ms", "p95_ttft_ms", "p99_ttft_ms",
        "p50_tpot_ms", "p95_tpot_ms", "p95_e2e_ms", "slo_attainment", "request_goodput", "failed"]
display(table[[c for c in cols if c in table]].round(3).style.hide(axis="index"))
""", "remove_input"),
    code("""
for fig in figs.values():
    display(fig)
""", "remove_input"),
    md("## 4. Conclusion"),
    code("""
best = table.loc[table["request_goodput"].idxmax()]
slo_text = ", ".join(f"{k} {v:g} ms" for k, v in summary["slo"].items() if v is not None)
display(Markdown(
    f"{e2_concurrency.saturation(table).capitalize()}. Goodput (SLOs: {slo_text}) peaks at point {best.point}: "
    f"{best.request_goodput:.2f} req/s with {100 * best.slo_attainment:.0f}% of requests within SLO, against "
    f"{best.request_throughput:.2f} req/s of throughput. Checks: "
    + ", ".join(f"{k} {'passed' if v['passed'] else 'FAILED'}" for k, v in summary["checks"].items()) + "."))
""", "remove_input"),
]

E3 = [
    md("""
# E3: aggregated vs disaggregated serving

**Question.** What does splitting prefill from decode cost (KV bytes moved, transfer time, stall) and buy
(latency, goodput per device) against aggregated serving on the same total resources?

**Method.** One workload, the same arrival process, against (a) an aggregated pool of replicas and (b) prefill and
decode instances joined by a vLLM KV connector, both behind ctxkit's router, so one client measures both.
Before measuring, a greedy correctness set goes through each topology one request at a time: outputs must be
identical, and the decode servers' `prompt_tokens_by_source{source="external_kv_transfer"}` must grow by exactly the
KV tokens handed over, which shows the KV was loaded, not recomputed.
"""),
    code("""
# Parameters (papermill injects the resolved values below this cell)
seed = 0
backend = "vllm"
endpoint_url = None
request_timeout_s = 120.0
server = {"model": "tiny-llama"}
connector = "example"
prefill_instances = 1
decode_instances = 1
aggregated_replicas = None
policy = "least_outstanding"
kv_buffer_device = "cpu"
prefill_visible_devices = None
decode_visible_devices = None
workload = {"num_prompts": 24, "input_len": 1024, "output_len": 32}
load = {"arrival": "concurrency", "concurrency": 2}
slo = {"ttft_ms": 2000.0, "tpot_ms": 100.0}
correctness_prompt_lens = [100, 300, 700, 1500]
correctness_max_tokens = 16
on_request_error = "continue"
run_dir = None
""", "parameters"),
    md("## 1. Setup"),
    code(SETUP + """
from ctxkit.experiments import e3_disagg
from ctxkit.records import JsonlWriter
P, run = open_run("e3_disagg", globals())
print(f"ctxkit {ctxkit.__version__}; run folder {run.path}")
show_params(P)
""", "remove_input"),
    md("## 2. Aggregated pool"),
    code("""
with JsonlWriter(run.path / "requests.jsonl") as out:
    agg = e3_disagg.run_mode(P, run, "aggregated", out)
"""),
    md("## 3. Disaggregated prefill -> decode"),
    code("""
with JsonlWriter(run.path / "requests.jsonl") as out:
    dis = e3_disagg.run_mode(P, run, "disaggregated", out)
"""),
    md("## 4. Checks and headline numbers"),
    code("""
summary = e3_disagg.summarize(P, run, agg, dis)
figs = e3_disagg.write_artifacts(run, agg, dis, summary)
display(pd.DataFrame([{"check": k, **v} for k, v in summary["checks"].items()]).style.hide(axis="index"))
display(pd.DataFrame(summary["headline"]).round(3).style.hide(axis="index"))
print("placement:", {m: a["reason"] for m, a in summary["gpu_assignment"].items()})
""", "remove_input"),
    md("## 5. Latency distributions and the TTFT breakdown"),
    code("""
for fig in figs:
    display(fig)
""", "remove_input"),
    md("## 6. KV transfer"),
    code("""
kv = summary["profiling"]["kv_transfer"]
display(pd.DataFrame({k: v for k, v in kv.items() if isinstance(v, dict)}).T.round(4))
print({k: v for k, v in kv.items() if not isinstance(v, dict)})
""", "remove_input"),
    md("## 7. Conclusion"),
    code("""
display(Markdown(e3_disagg.conclusions(summary)))
""", "remove_input"),
]

EXPLORE = [
    md("""
# Explore runs

Pick an experiment, then runs (filtered by label or hardware), then the metrics to overlay on shared axes.
Interactive in JupyterLab (ipywidgets); under papermill the same view renders once for the parameters below.
"""),
    code("""
# Parameters
runs_dir = None            # default: the project's runs/
experiment = "e2_concurrency"
metrics = []               # default: the experiment's headline metrics
label_filter = ""
hardware_filter = ""
""", "parameters"),
    code("""
%matplotlib inline
%config InlineBackend.figure_formats = ['svg']
from pathlib import Path
import ipywidgets as w
import pandas as pd
from IPython.display import display, clear_output
from ctxkit.params import project_root
from ctxkit.runs.catalog import runs_table
from ctxkit.runs.compare import curve_columns, overlay
from ctxkit.runs.folder import RunFolder

root = Path(runs_dir) if runs_dir else project_root() / "runs"
table = runs_table(root)
print(f"{len(table)} runs under {root}")
display(table.drop(columns=["path"]).tail(20))
"""),
    md("## Selection"),
    code("""
def selected(exp, label, hardware):
    t = table[table["experiment"] == exp]
    if label:
        t = t[t["label"].str.contains(label, case=False, regex=False)]
    if hardware:
        t = t[t["hardware"] == hardware]
    return t

def render(exp, run_ids, chosen, out=None):
    runs = [RunFolder(Path(p)) for p in table[table["run_id"].isin(run_ids)]["path"]]
    labels = [r.run_id[-8:] for r in runs]
    figs = overlay(exp, runs, labels, list(chosen) or None)
    for fig in figs:
        display(fig)
    if not figs:
        print("nothing to plot for this selection")
    return figs

exp_w = w.Dropdown(options=sorted(table["experiment"].unique()) or [experiment],
                   value=experiment if experiment in set(table["experiment"]) else None, description="experiment")
label_w = w.Text(value=label_filter, description="label")
hw_w = w.Dropdown(options=[""] + sorted(table["hardware"].unique()), value=hardware_filter, description="hardware")
runs_w = w.SelectMultiple(description="runs", rows=8)
metric_w = w.SelectMultiple(description="metrics", rows=8)
out_w = w.Output()

# Figures go into the Output widget as data (append_display_data), never by capturing output inside `with out_w:`.
# A headless executor (papermill, nbclient) mimics a captured Output widget by sending comm messages back to the
# kernel while it waits for the cell's reply, and that exchange can stall it for good (nbclient issue 312).
holding = [False]   # set while refresh() changes several selections at once: one draw at the end

def draw(*_):
    if holding[0]:
        return
    runs = [RunFolder(Path(p)) for p in table[table["run_id"].isin(runs_w.value)]["path"]]
    figs = overlay(exp_w.value, runs, [r.run_id[-8:] for r in runs], list(metric_w.value) or None)
    out_w.outputs = ()
    for fig in figs:
        out_w.append_display_data(fig)

def refresh(*_):
    t = selected(exp_w.value, label_w.value, hw_w.value)
    holding[0] = True
    runs_w.options = list(t["run_id"])
    runs_w.value = tuple(t["run_id"])
    metric_w.options = curve_columns(exp_w.value, [RunFolder(Path(p)) for p in t["path"]])
    metric_w.value = tuple(m for m in metrics if m in metric_w.options)
    holding[0] = False
    draw()

for widget in (exp_w, label_w, hw_w):
    widget.observe(refresh, names="value")
for widget in (runs_w, metric_w):
    widget.observe(draw, names="value")
display(w.VBox([w.HBox([exp_w, label_w, hw_w]), w.HBox([runs_w, metric_w]), out_w]))
refresh()
"""),
    md("## Static view (what papermill renders)"),
    code("""
chosen = selected(experiment, label_filter, hardware_filter)
print(f"{len(chosen)} run(s) of {experiment}: {', '.join(chosen['run_id'])}")
figs = render(experiment, list(chosen["run_id"]), metrics)
"""),
]

NOTEBOOKS = {"e0_smoke": E0, "e1_latency": E1, "e2_concurrency": E2, "e3_disagg": E3, "explore_runs": EXPLORE}


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
