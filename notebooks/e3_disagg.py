# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python (ctxkit)
#     language: python
#     name: ctxkit
# ---

# %% [markdown]
# # E3: aggregated vs disaggregated serving
#
# **Question.** What does splitting prefill from decode cost (KV bytes moved, transfer time, stall) and buy
# (latency, goodput per GPU) against aggregated serving on the same total resources?
#
# **Method.** One workload, the same arrival process, against (a) an aggregated pool of replicas and (b) prefill and
# decode instances joined by a vLLM KV connector, both behind ctxkit's router, so one client measures both.
# Before measuring, a greedy correctness set goes through each topology one request at a time: outputs must be
# identical, and the decode servers' `prompt_tokens_by_source{source="external_kv_transfer"}` must grow by exactly
# the KV tokens handed over, which shows the KV was loaded, not recomputed. With `backend: topology` the
# disaggregated arm is a deployment someone else runs (a topology file: its entry point, prefill and decode
# instances); its decode servers' counters are read the same way, and what ctxkit's own broker would have shown
# per handoff is listed under the checks as not applicable.

# %% tags=["parameters"]
# Parameters: a profile (params/profiles/<name>.yaml), parameter files, and `key=value` overrides, layered as
# `ctxkit run` layers them. Any variable named like a parameter (connector = "nixl") is a layer too.
profile = "cpu-tiny"
param_files = []
sets = []
run_dir = None   # set by `ctxkit run`: the run folder, whose params.yaml holds the resolved parameters

# %% [markdown]
# ## 1. Setup

# %% tags=["remove_input"]
# %matplotlib inline
# %config InlineBackend.figure_formats = ['svg']
import pandas as pd
from IPython.display import Markdown, display

import ctxkit
from ctxkit.experiments import e3_disagg
from ctxkit.experiments.common import finish_run, open_run, show_params
from ctxkit.records import JsonlWriter

P, run = open_run("e3_disagg", globals())
print(f"ctxkit {ctxkit.__version__}; run folder {run.path}")
show_params(P)

# %% [markdown]
# ## 2. Aggregated pool

# %%
with JsonlWriter(run.path / "requests.jsonl") as out:
    agg = e3_disagg.run_mode(P, run, "aggregated", out)

# %% [markdown]
# ## 3. Disaggregated prefill -> decode

# %%
with JsonlWriter(run.path / "requests.jsonl") as out:
    dis = e3_disagg.run_mode(P, run, "disaggregated", out)

# %% [markdown]
# ### KV path settings
#
# With `variants` set (block size, `kv_buffer_device`, environment such as `UCX_TLS`, server flags), the
# disaggregated pool starts again once per setting, on the same workload and correctness set; nothing runs here
# otherwise.

# %%
with JsonlWriter(run.path / "requests.jsonl") as out:
    variants = e3_disagg.run_variants(P, run, out)

# %% [markdown]
# ## 4. Checks and headline numbers

# %% tags=["remove_input"]
summary = e3_disagg.summarize(P, run, agg, dis, variants)
figs = e3_disagg.write_artifacts(run, agg, dis, summary, variants)
display(pd.DataFrame([{"check": k, **v} for k, v in summary["checks"].items()]).style.hide(axis="index"))
for name, why in summary["not_checked"].items():
    print(f"not checked: {name}: {why}")
display(e3_disagg.headline_table(summary))
print("placement:", {m: a["reason"] for m, a in summary["gpu_assignment"].items()})

# %% [markdown]
# ## 5. Latency distributions, the TTFT breakdown, and each mode's servers through its window
#
# Under the distributions, one timeline per mode: the servers' running and waiting requests (summed over
# instances: a disaggregated request counts on its prefill and its decode server while it hands over) against the
# requests the client had in flight, each instance's KV cache use and, on GPUs, NVML's memory and utilization.

# %% tags=["remove_input"]
for fig in figs:
    display(fig)

# %% [markdown]
# ## 6. KV transfer
#
# Per handoff: bytes, transfer time, GB/s and the share of TTFT spent waiting on KV. Below, the link itself,
# measured in this run before the disaggregated servers started (one large buffer, and the handoff's own
# descriptor size), against the load window's achieved rate: the KV path's efficiency. An attached deployment has
# neither per-handoff records nor a link probe here; NixlConnector's own counters on its decode instances give the
# window's rate.

# %% tags=["remove_input"]
kv = summary["profiling"]["kv_transfer"]
display(pd.DataFrame({k: v for k, v in kv.items() if isinstance(v, dict) and "p50" in v}).T.round(4))
print({k: v for k, v in kv.items() if not isinstance(v, dict)})
link = e3_disagg.link_table(kv)
print(link) if isinstance(link, str) else display(link)
if summary["variants"]:
    display(pd.DataFrame(summary["variants"]).round(3))

# %% [markdown]
# ## 7. Conclusion

# %% tags=["remove_input"]
display(Markdown(e3_disagg.conclusions(summary)))
status = finish_run(run, summary)
