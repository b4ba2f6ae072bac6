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
# # E6: predict, then verify
#
# **Question.** From one server's measurements, which placement of N GPUs (aggregated replicas or prefill and
# decode servers) serves a workload at an SLO with the most goodput per GPU, by how much, and how far is such a
# prediction from what the same placements serve live?
#
# **Method.** One server is calibrated: prompts of several lengths alone (prefill time against prompt length) and
# waves of requests decoding together (a decode step's time against the requests it carries and the KV they read),
# fitted by least squares with their covariance, beside the server's KV capacity and scheduler limits
# (calibration.json). A discrete-event model of vLLM's scheduler (token budget, chunked prefill, max_num_seqs,
# KV blocks and preemption, async scheduling) fed by those costs gives each placement's goodput: the highest
# Poisson rate at which 90% of requests meet both their TTFT and TPOT objectives, E4's definition, with a range
# over calibrations drawn from the fits' spread. Then E4's search measures the host's own placements, each
# started at its prediction, and the two are set side by side (docs/plan.md says what the model leaves out).

# %% tags=["parameters"]
# Parameters: a profile (params/profiles/<name>.yaml), parameter files, and `key=value` overrides, layered as
# `ctxkit run` layers them. Any variable named like a parameter (draws = 8) is a layer too.
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
from ctxkit.experiments import e6_plan
from ctxkit.experiments.common import finish_run, open_run, show_params

P, run = open_run("e6_plan", globals())
print(f"ctxkit {ctxkit.__version__}; run folder {run.path}")
show_params(P)

# %% [markdown]
# ## 2. Calibration
#
# One server, started and stopped here. Each point is a median (prefill) or a steady window's time per token
# (decode); the fits' coefficients are costs, none below zero.

# %%
cal = e6_plan.calibrate_one(P, run)

# %% tags=["remove_input"]
display(pd.read_csv(run.artifacts / "e6_calibration.csv").round(4))
step = cal.step_cost()
display(Markdown(
    f"Prefill alone: TTFT = {cal.prefill['one']:.2f} + {cal.prefill['L']:.3g} L + {cal.prefill['L2']:.3g} L² ms "
    f"(R² {cal.prefill.r2:.3f}); a decode step: {cal.decode['one']:.2f} + {cal.decode['seqs']:.3g} per request + "
    f"{cal.decode['kv_tokens']:.3g} per KV token read ms (R² {cal.decode.r2:.3f}); KV cache "
    f"{cal.limits.kv_capacity_tokens:,} tokens; max_num_seqs {cal.limits.max_num_seqs}, token budget "
    f"{cal.limits.max_num_batched_tokens} ({cal.limits_from}); KV handoff: "
    f"{cal.transfer.source if cal.transfer else 'none (aggregated placements only)'}."))

# %% [markdown]
# ## 3. The plan
#
# Every placement of each N, best first: its goodput, per GPU, and for the contenders the 5th-95th percentile over
# calibrations drawn from the fits' spread (how far the measurements' noise moves the answer, not the model's
# error, which section 4 measures).

# %%
plans, expected = e6_plan.predict(P, cal, log=lambda text: display(Markdown(text)))

# %% [markdown]
# ## 4. Verification on live servers
#
# E4's search of each of this host's placements, its first probe at the model's answer. On the CPU tier a pool's
# servers split the host's cores, which the calibrated server had to itself, so each is predicted with its costs
# times the pool's server count (`e6_plan.host_share`); GPU servers have a device each.

# %%
results = e6_plan.verify(P, run, expected)

# %% tags=["remove_input"]
summary = e6_plan.summarize(P, run, cal, plans, expected, results)
display(pd.DataFrame(summary["comparison"]).round(3).style.hide(axis="index"))
display(pd.DataFrame({k: {"passed": c["passed"], "reason": c["reason"]} for k, c in summary["checks"].items()}).T)

# %% [markdown]
# ## 5. Conclusion

# %% tags=["remove_input"]
display(Markdown(e6_plan.conclusion(summary)))
status = finish_run(run, summary)
