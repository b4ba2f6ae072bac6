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

# %%

# %% [markdown]
# # E5: long context: KV capacity, the cost of context, prefix reuse, chunked prefill
#
# **Questions.** How many requests of a given context length does the server's KV cache hold at once, and do the
# predictions a user would make agree with what the server does (part `capacity`)? What does a longer context cost
# a request's TTFT and TPOT, and which terms of the model explain it (part `cost`)? How much does a shared prefix
# save, and does the server's prefix cache reuse what the workload offers (part `prefix`)? What do long prefills
# do to the decodes already running, with chunked prefill and without (part `chunked`)? And under a production-shaped
# trace, replayed on its timestamps, where do the queue, the cache and preemption go (part `trace`)?
#
# **Method.** One server. Its KV cache as it reports it (`vllm:cache_config_info`; its startup log's "KV cache
# size" and "Maximum concurrency" lines). For each context length L, three predictions of the requests held at once
# (each request holds L prompt tokens plus `output_len` generated ones): the cache's bytes over a request's bytes
# (block rounding ignored), vLLM's log line scaled to the request's tokens, and the cache's blocks over the whole
# blocks a request needs. Then levels of client concurrency around the block prediction (`concurrency_factors`),
# each a closed loop of fresh prompts (or, with `capacity_hold`, c requests at once, cancelled once the server has
# admitted what it will: on GPUs long prefills outlast short outputs), with the server's gauges scraped every
# `metrics_interval_s`: the peak of running requests is what the cache held; past it, requests wait or are
# preempted.
#
# **Prefix reuse.** Prompts whose first r x L tokens one prefix shares, r from `prefix_ratios`; one request fills
# the cache, then requests one at a time, with the cache used (`on`) and isolated per request through vLLM's
# `cache_salt` (`off`). The server's prefix-cache hits against the rate the workload implies, and TTFT.
#
# **Chunked prefill.** A server per setting (`chunked_settings`: chunked prefill at two token budgets, and off);
# running decodes sent first, then long prefills arriving among them; the decodes' inter-token gaps around each
# arrival.
#
# **Cost of context.** Per length in `cost_lens`, requests one at a time and then one wave of `cost_batch` sent
# together, fresh prompts. TTFT at batch 1 is fitted to a + bL + cL² (the quadratic term is attention over the prompt); TPOT
# to the KV bytes a decode step reads (batch x tokens held x the card's KV bytes per token). On GPUs with known
# peaks, each row also against E1's physical floors.

# %% tags=["parameters"]
# Parameters: a profile (params/profiles/<name>.yaml), parameter files, and `key=value` overrides, layered as
# `ctxkit run` layers them. Any variable named like a parameter (context_lens = [...]) is a layer too.
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
from ctxkit.experiments import e5_context
from ctxkit.experiments.common import finish_run, open_run, show_params

P, run = open_run("e5_context", globals())
print(f"ctxkit {ctxkit.__version__}; run folder {run.path}")
show_params(P)

# %% [markdown]
# ## 2. Measure: levels of concurrency per context length, then the cost of context

# %%
result = e5_context.sweep(P, run)

# %% [markdown]
# ## 3. Capacity: measured against predicted

# %% tags=["remove_input"]
summary = e5_context.summarize(P, run, result)
figs = e5_context.write_artifacts(run, summary, result["chunked"])
display(pd.DataFrame([{"check": k, **v} for k, v in summary["checks"].items()]).style.hide(axis="index"))
if summary["capacity"]:
    display(e5_context.capacity_view(summary))
for name in ("capacity", "levels"):
    if name in figs:
        display(figs[name])

# %% [markdown]
# ## 4. Every level
#
# Peak running and waiting requests, peak KV usage (1 = full) and preemptions, as the server's own gauges and
# counters saw them; median TTFT and TPOT from the client.

# %% tags=["remove_input"]
display(pd.DataFrame(summary["levels"]).style.hide(axis="index").format(precision=2, na_rep="-")
        if summary["levels"] else "part `capacity` is off")

# %% [markdown]
# ### The server through the levels and the trace
#
# The server's own gauges, scraped every `metrics_interval_s`, on the client's clock: requests running and waiting
# against the requests the client had in flight, a tick where its preemption counter grew, its KV cache use and, on a
# GPU, NVML's memory and utilization. Each level (and the trace) is shaded and named.

# %% tags=["remove_input"]
display(figs["server_timeline"] if "server_timeline" in figs else "no gauges were scraped (parts capacity and "
        "trace off)")

# %% [markdown]
# ## 5. Cost of context
#
# p50 TTFT and TPOT per context length and batch, the KV bytes a decode step reads, and the fits.

# %% tags=["remove_input"]
display(e5_context.cost_view(summary))
if "cost" in figs:
    display(figs["cost"])

# %% [markdown]
# ## 6. Prefix reuse
#
# Measured prefix-cache hit rate (the server's counters over each point's scored requests) against the rate the
# workload implies, and p50 TTFT, cache used and isolated.

# %% tags=["remove_input"]
display(e5_context.prefix_view(summary))
if "prefix" in figs:
    display(figs["prefix"])

# %% [markdown]
# ## 7. Chunked prefill: running decodes as long prefills arrive
#
# Per setting, a server of its own: the running decodes' inter-token gaps on the time axis, each long prefill's
# window (send to first token) shaded; the median gap outside the windows against the longest gap inside each.

# %% tags=["remove_input"]
display(e5_context.chunked_view(summary))
if "chunked" in figs:
    display(figs["chunked"])

# %% [markdown]
# ## 8. Trace replay
#
# A Mooncake-format trace on its own timestamps (part `trace`): whether the replay was faithful (lengths, the prefix
# reuse the trace implies against the server's hits, send lag) and what the server did under it.

# %% tags=["remove_input"]
display(e5_context.trace_view(summary))

# %% [markdown]
# ## 9. Conclusion

# %% tags=["remove_input"]
display(Markdown(e5_context.conclusions(summary)))
status = finish_run(run, summary)
