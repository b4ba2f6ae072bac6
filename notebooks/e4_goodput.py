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
# # E4: goodput per GPU, searched on live servers
#
# **Question.** At a target SLO attainment (90% of requests meet both their TTFT and their TPOT objective), what is
# the highest Poisson request rate each serving topology sustains, divided by the GPUs it uses, and which topology
# wins, by how much, with what confidence? This is DistServe's goodput, asked of running vLLM servers rather than of
# a fitted latency model.
#
# **Method.** Each topology is started once and kept up for all of its probes. A probe sends fresh prompts on a
# Poisson schedule (the first few unscored, so queues are in steady state) and decides from a 95% Wilson interval on
# its attainment; it stops early, cancelling what is in flight, once its misses exceed what the target allows, and
# fails when misses are still rising through it (a queue that keeps growing). The rate doubles until a probe fails,
# then narrows (toward where the measured attainments cross the target, or by bisection) until the highest passing
# and lowest failing rates are within the tolerance: the goodput and its bracket. While doubling, a probe only picks
# the direction: it may pass early on fewer requests, after a shorter warmup (a scout); the goodput always rests on a full probe. Going down from a failing start,
# a search over a trace stops once halving the rate rescued none of the rows that missed: a trace's bursts (rows
# sharing a timestamp) do not shrink with its rate, and a request that misses unloaded misses at any rate. Per GPU means per distinct GPU (two servers on one GPU use one); on the CPU tier, per core set. The goodput comes with a 90% confidence interval: each probe's bounds on attainment count its requests' dependence (batch means), and the interval runs from the highest rate shown above the target to the lowest shown below, always holds the search's own answer, and widens past any rate shown both above and below (a contradiction among the probes); the bracket is the search's resolution. A converged search measures its two ends again and says whether they repeat.

# %% tags=["parameters"]
# Parameters: a profile (params/profiles/<name>.yaml), parameter files, and `key=value` overrides, layered as
# `ctxkit run` layers them. Any variable named like a parameter (slos = [...]) is a layer too.
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
from ctxkit.experiments import e4_goodput
from ctxkit.experiments.common import finish_run, open_run, show_params
from ctxkit.records import JsonlWriter

P, run = open_run("e4_goodput", globals())
print(f"ctxkit {ctxkit.__version__}; run folder {run.path}")
show_params(P)

# %% [markdown]
# ## 2. Search, one topology at a time

# %%
e4_goodput.check_workload(P)      # a trace window too short for one probe fails here, before any server starts
results = []
with JsonlWriter(run.path / "requests.jsonl") as out:
    for k, spec in enumerate(e4_goodput.topologies(P)):   # or the attached deployment (backend=topology)
        results.append(e4_goodput.measure_or_record(P, run, spec, k, out))

# %% [markdown]
# ## 3. Goodput per device
#
# The goodput is the highest rate whose probe passed; the bracket runs to the lowest rate that failed above it.

# %% tags=["remove_input"]
summary = e4_goodput.summarize(P, run, results)
figs = e4_goodput.write_artifacts(P, run, results)
display(pd.DataFrame([{"check": k, **v} for k, v in summary["checks"].items()]).style.hide(axis="index"))
display(e4_goodput.goodput_view(summary))
for fig in figs:
    display(fig)

# %% [markdown]
# ## 4. Every probe

# %% tags=["remove_input"]
display(e4_goodput.probes_view(pd.read_csv(run.artifacts / "e4_probes.csv")))
if e4_goodput.replay_view(summary) is not None:     # a trace workload: how faithfully each probe replayed it
    display(e4_goodput.replay_view(summary))

# %% [markdown]
# ## 5. Where the misses came from
#
# Misses by cause per probe; then where the time went, in ms: the servers' own queue, prefill and decode means over
# the probe by role, and for disaggregated topologies the router's breakdown of the requests that missed (router,
# prefill, KV check, decode's first token).

# %% tags=["remove_input"]
for table in e4_goodput.misses_view(pd.read_csv(run.artifacts / "e4_misses.csv")):
    display(table)

# %% [markdown]
# The requests that missed at the rate nearest each goodput (the goodput's own probe, or the lowest rate probed where
# none passed), longest prompts first: which objective each missed, and the prompt tokens of other requests that
# were waiting for their first token while it waited for its own and while it decoded. On an aggregated server a
# decode step shares its batch with those prefills; that interference is what disaggregation removes. All missed
# requests of every probe are in e4_missed_requests.csv.

# %% tags=["remove_input"]
if (view := e4_goodput.missed_view(pd.read_csv(run.artifacts / "e4_missed_requests.csv"), summary)) is not None:
    display(view)
else:     # the paragraph above announces a table: say why there is none
    print("No request missed at the rate nearest any goodput (e4_missed_requests.csv holds every probe's misses).")

# %% [markdown]
# ## 6. Conclusion

# %% tags=["remove_input"]
display(Markdown(e4_goodput.conclusions(summary)))
status = finish_run(run, summary)
