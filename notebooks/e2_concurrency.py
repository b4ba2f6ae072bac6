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
# # E2: load sweep with SLO goodput
#
# **Question.** How do throughput and latency trade off as load grows, and how much of the throughput is *goodput*
# (requests that meet every SLO)?
#
# **Method.** One server, started once and warmed up. Each point is a closed-loop concurrency level (C clients, each
# sending its next request when the previous one ends) or a Poisson arrival rate, with fresh prompts, measured for
# `requests_per_point` requests. Goodput counts only requests that meet every SLO; failed requests are misses.
# A trace workload adds replay points (`trace_speedups`): the trace's own requests on its timestamps, divided by the
# speedup, each point under its own prefix-cache salt, with the replay's fidelity (lengths, the prefix reuse the
# trace implies against the server's hits, send lag).

# %% tags=["parameters"]
# Parameters: a profile (params/profiles/<name>.yaml), parameter files, and `key=value` overrides, layered as
# `ctxkit run` layers them. Any variable named like a parameter (concurrency_levels = [...]) is a layer too.
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
from ctxkit.experiments import e2_concurrency
from ctxkit.experiments.common import finish_run, open_run, show_params

P, run = open_run("e2_concurrency", globals())
print(f"ctxkit {ctxkit.__version__}; run folder {run.path}")
show_params(P)

# %% [markdown]
# ## 2. Sweep
#
# Points already measured in this run folder (an earlier attempt, or an earlier run of this cell) are skipped.

# %%
extra = e2_concurrency.sweep(P, run)

# %% [markdown]
# ## 3. Results per point
#
# The last figure is the server's side of the sweep on the client's clock: its running and waiting requests (summed
# over instances when the backend is an attached topology) and KV cache use, scraped every `metrics_interval_s`
# and at each point's start and end, beside the requests the client had in flight; points are shaded in turn.

# %% tags=["remove_input"]
table = e2_concurrency.curve(P, run)
summary = e2_concurrency.summarize(P, run, table, extra)
figs = e2_concurrency.write_artifacts(run, table)
display(pd.DataFrame([{"check": k, **v} for k, v in summary["checks"].items()]).style.hide(axis="index"))
display(e2_concurrency.headline_table(table))
if summary.get("replay"):
    display(Markdown("**Replay fidelity** per trace point (`summary.replay`)"))
    display(e2_concurrency.replay_table(summary["replay"]))

# %% tags=["remove_input"]
for fig in figs.values():
    display(fig)

# %% [markdown]
# ## 4. Conclusion

# %% tags=["remove_input"]
best = table.loc[table["request_goodput"].idxmax()]
slo_text = ", ".join(f"{k} {v:g} ms" for k, v in summary["slo"].items() if v is not None)
display(Markdown(
    f"{e2_concurrency.saturation(table).capitalize()}. Goodput (SLOs: {slo_text}) peaks at point {best.point}: "
    f"{best.request_goodput:.2f} req/s with {100 * best.slo_attainment:.0f}% of requests within SLO, against "
    f"{best.request_throughput:.2f} req/s of throughput. Checks: "
    + ", ".join(f"{k} {'passed' if v['passed'] else 'FAILED'}" for k, v in summary["checks"].items()) + "."))
status = finish_run(run, summary)
