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
# # Explore runs
#
# Pick an experiment, then runs (filtered by label or hardware), then the metrics to overlay on shared axes.
# Interactive in JupyterLab (ipywidgets); under papermill the same view renders once for the parameters below.

# %% tags=["parameters"]
runs_dir = None            # default: the workspace's runs/ (or $CTXKIT_RUNS_DIR)
experiment = "e2_concurrency"
metrics = []               # default: the experiment's headline metrics
label_filter = ""
hardware_filter = ""

# %%
# %matplotlib inline
# %config InlineBackend.figure_formats = ['svg']
from pathlib import Path

import ipywidgets as w
from IPython.display import display

from ctxkit.runs.catalog import runs_table
from ctxkit.runs.compare import curve_columns, overlay
from ctxkit.runs.folder import RunFolder
from ctxkit.workspace import runs_root

root = Path(runs_dir) if runs_dir else runs_root()
table = runs_table(root)
print(f"{len(table)} runs under {root}")
display(table.drop(columns=["path"]).tail(20))

# %% [markdown]
# ## Selection


# %%
def selected(exp, label, hardware):
    t = table[table["experiment"] == exp]
    if label:
        t = t[t["label"].str.contains(label, case=False, regex=False)]
    if hardware:
        t = t[t["hardware"] == hardware]
    return t


def figures(exp, run_ids, chosen):
    runs = [RunFolder(Path(p)) for p in table[table["run_id"].isin(run_ids)]["path"]]
    return overlay(exp, runs, [r.run_id[-8:] for r in runs], list(chosen) or None)


exp_w = w.Dropdown(options=sorted(table["experiment"].unique()) or [experiment],
                   value=experiment if experiment in set(table["experiment"]) else None, description="experiment")
label_w = w.Text(value=label_filter, description="label")
hw_w = w.Dropdown(options=[""] + sorted(table["hardware"].unique()), value=hardware_filter, description="hardware")
runs_w = w.SelectMultiple(description="runs", rows=8)
metric_w = w.SelectMultiple(description="metrics", rows=8)
out_w = w.Output()
holding = [False]   # set while refresh() changes several selections at once: one draw at the end


# Figures go into the Output widget as data (append_display_data), never by capturing output inside `with out_w:`.
# A headless executor (papermill, nbclient) mimics a capturing Output widget by sending comm messages back to the
# kernel while it waits for the cell's reply, and that exchange can stall it for good (nbclient issue 312).
def draw(*_):
    if holding[0]:
        return
    out_w.outputs = ()
    for fig in figures(exp_w.value, runs_w.value, metric_w.value):
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

# %% [markdown]
# ## Static view (what papermill renders)

# %%
chosen = selected(experiment, label_filter, hardware_filter)
print(f"{len(chosen)} run(s) of {experiment}: {', '.join(chosen['run_id'])}")
figs = figures(experiment, list(chosen["run_id"]), metrics)
for fig in figs:
    display(fig)
if not figs:
    print("nothing to plot for this selection")
