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
# # E0: smoke and reproducibility
#
# **Question.** Does ctxkit drive a *real* vLLM server end to end, and does a fixed-seed request set give the same
# output tokens on two freshly started servers?
#
# **Method.** One request set, half greedy and half seeded sampling, over several prompt lengths, sent one at a time
# through the streaming completions API (token-id prompts, exact lengths) to a fresh server; then the same set to a
# second fresh server. Each pass starts with one warm-up request on a prompt of its own.

# %% tags=["parameters"]
# Parameters: a profile (params/profiles/<name>.yaml), parameter files, and `key=value` overrides, layered as
# `ctxkit run` layers them. Any variable named like a parameter (max_tokens = 32) is a layer too.
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
from ctxkit import plots
from ctxkit.experiments import e0_smoke
from ctxkit.experiments.common import finish_run, open_run, show_params

P, run = open_run("e0_smoke", globals())
print(f"ctxkit {ctxkit.__version__}; run folder {run.path}")
show_params(P)

# %% [markdown]
# ## 2. Request set on fresh servers
#
# Each pass starts its own server and stops it afterwards.

# %%
passes = [e0_smoke.serve_and_measure(P, run, f"server-{chr(ord('a') + i)}") for i in range(P.repeats)]

# %% [markdown]
# ## 3. Checks

# %% tags=["remove_input"]
summary = e0_smoke.summarize(P, run, passes)
display(e0_smoke.checks_frame(summary).style.hide(axis="index"))

# %% [markdown]
# ## 4. Latency per request
#
# TTFT is measured from the moment the request is sent; TPOT over the tokens after the first. Requests go one at a
# time, so there is no queueing.

# %% tags=["remove_input"]
table = e0_smoke.latency_table(passes)
table.to_csv(run.artifacts / "e0_requests.csv", index=False)
display(plots.latency_by_prompt(table, run.artifacts / "e0_latency.svg", title="E0: latency per request"))
lat = summary["profiling"]["latency"]
display(pd.DataFrame(lat).T[["count", "min", "p50", "p95", "max", "avg"]].round(2))

# %% [markdown]
# ## 5. Conclusion

# %% tags=["remove_input"]
ok = all(c["passed"] for c in summary["checks"].values())
ttft, tpot = lat["ttft_ms"], lat["tpot_ms"]
display(Markdown(
    f"**{'All checks passed' if ok else 'Some checks failed'}.** "
    f"{ttft['count']} measured requests on {len(passes)} fresh server(s); "
    f"median TTFT {ttft['p50']:.1f} ms (p95 {ttft['p95']:.1f} ms), median TPOT {tpot['p50']:.2f} ms "
    f"(p95 {tpot['p95']:.2f} ms) with {P.server.model}."))
status = finish_run(run, summary)
