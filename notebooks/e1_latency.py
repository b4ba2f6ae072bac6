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
# # E1: latency vs prompt length
#
# **Question.** How do time to first token (prefill) and time per output token (decode) grow with the prompt?
#
# **Method.** One server, warmed up. For each prompt length, `requests_per_len` requests with fresh token-exact
# prompts, sent one at a time (no queueing), each generating `output_len` tokens (ignore_eos). Where the GPU is
# known, each curve is drawn against its physical floor: prefill needs at least 2 x parameters x tokens FLOP at the
# GPU's bf16 peak; each decode step reads every weight once from HBM.

# %% tags=["parameters"]
# Parameters: a profile (params/profiles/<name>.yaml), parameter files, and `key=value` overrides, layered as
# `ctxkit run` layers them. Any variable named like a parameter (prompt_lens = [...]) is a layer too.
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
from ctxkit.experiments import e1_latency
from ctxkit.experiments.common import finish_run, open_run, show_params
from ctxkit.models import ModelCard

P, run = open_run("e1_latency", globals())
card = ModelCard.load(P.server.model)
print(f"ctxkit {ctxkit.__version__}; run folder {run.path}")
show_params(P)

# %% [markdown]
# ## 2. Sweep
#
# The server starts once; lengths are measured in increasing order.

# %%
records, extra = e1_latency.sweep(P, run)

# %% [markdown]
# ## 3. Latency per prompt length

# %% tags=["remove_input"]
fl = e1_latency.floors(card)
table = e1_latency.curve(records, fl)
summary = e1_latency.summarize(P, run, records, extra, table, fl)
figs = e1_latency.write_artifacts(run, table)
display(pd.DataFrame([{"check": k, **v} for k, v in summary["checks"].items()]).style.hide(axis="index"))
cols = ["prompt_len", "count", "p50_ttft_ms", "p95_ttft_ms", "p50_tpot_ms", "p95_tpot_ms"]
cols += [c for c in ("prefill_floor_ms", "ttft_over_floor", "decode_floor_ms", "tpot_over_floor") if c in table]
display(table[cols].style.hide(axis="index").format(precision=2))
print("floors:", fl or summary["floors"]["reason"])

# %% tags=["remove_input"]
for fig in figs:
    display(fig)

# %% [markdown]
# ## 4. GPU and server

# %% tags=["remove_input"]
gpu = summary["profiling"]["gpu"]
print("GPU telemetry:", gpu if not gpu.get("available") else "")
if gpu.get("available"):
    display(pd.DataFrame(gpu["gpus"]).T)
srv = pd.DataFrame(summary["profiling"]["server"]).T
display(srv[[c for c in ("ttft_count", "mean_ttft_ms", "mean_prefill_ms", "mean_decode_ms", "prompt_tokens")
             if c in srv]].round(2))

# %% [markdown]
# ## 5. Conclusion

# %% tags=["remove_input"]
first, last = table.iloc[0], table.iloc[-1]
ratio = last["p50_ttft_ms"] / first["p50_ttft_ms"]
text = (f"From {int(first.prompt_len)} to {int(last.prompt_len)} prompt tokens "
        f"({last.prompt_len / first.prompt_len:.0f}x), median TTFT goes from {first.p50_ttft_ms:.1f} ms to "
        f"{last.p50_ttft_ms:.1f} ms ({ratio:.1f}x), while median TPOT goes from {first.p50_tpot_ms:.2f} ms to "
        f"{last.p50_tpot_ms:.2f} ms.")
if fl:
    text += (f" On {fl['gpu']}, TTFT at {int(last.prompt_len)} tokens is {last.ttft_over_floor:.1f}x its compute "
             f"floor and TPOT {last.tpot_over_floor:.1f}x its bandwidth floor.")
else:
    text += " No GPU peak numbers apply here, so no physical floors are drawn."
checks = summary["checks"]
text += " Checks: " + ", ".join(f"{k} {'passed' if v['passed'] else 'FAILED'}" for k, v in checks.items()) + "."
display(Markdown(text))
status = finish_run(run, summary)
