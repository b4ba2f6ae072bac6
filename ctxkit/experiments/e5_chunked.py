"""E5 long context, part `chunked`: what long prefills do to the decodes already running (the interference
disaggregation removes), with chunked prefill at two token budgets and off.

Per setting (`chunked_settings`: a name and the vLLM flags, e.g. `--max-num-batched-tokens 512`, or
`--no-enable-chunked-prefill`), a server of its own. The load, one schedule on the client's clock: `chunked_decodes`
requests with short prompts and long outputs sent at t = 0 (running decodes), then `chunked_prefills` requests of
`chunked_prompt_len` tokens and one output token, the k-th at t = `chunked_first_s` + k x `chunked_every_s`
(long prefills arriving among them). The schedule runs once unscored first (fresh prompts): a server that meets a
batch shape for the first time may compile for it, a stall of seconds that is not interference. Each decode's
token times give its inter-token gaps on the time axis.
Per arrival, its window runs from the prefill's send to its first token (prefill done): the **spike** is the
longest decode gap that ends inside a window; the **baseline** is the median gap ending outside every window.
With chunking, a long prefill is split over steps that still decode (smaller spikes, longer prefills); without it,
one step computes the whole prompt and every running decode waits for it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ctxkit.experiments.common import make_backend, ms_text
from ctxkit.load.arrivals import Arrivals, run_load
from ctxkit.load.workloads import WorkItem, random_ids
from ctxkit.models import ModelCard
from ctxkit.params import E5Params
from ctxkit.records import JsonlWriter, RequestRecord, failures
from ctxkit.runs.folder import RunFolder


def schedule(params: E5Params, card: ModelCard, k: int) -> list[WorkItem]:
    """The decodes at t = 0, then the long prefills at their arrival times (fresh prompts per setting k)."""
    rng = np.random.default_rng(params.seed * 7_777 + k)
    items = [WorkItem(f"chunked{k}-decode-{i}", random_ids(rng, 32, card.vocab_size), params.chunked_decode_len,
                      arrival_ms=0.0, tags={"role": "decode"}) for i in range(params.chunked_decodes)]
    items += [WorkItem(f"chunked{k}-prefill-{j}", random_ids(rng, params.chunked_prompt_len, card.vocab_size), 1,
                       arrival_ms=1000.0 * (params.chunked_first_s + j * params.chunked_every_s),
                       tags={"role": "prefill"}) for j in range(params.chunked_prefills)]
    return items


BURST_MS = 0.1


def gaps(records: list[RequestRecord], t0_ns: int) -> list[tuple[float, float]]:
    """Every decode's (end time s from t0, gap ms) between consecutive token-carrying chunks."""
    out = []
    for r in records:
        if r.tags.get("role") != "decode":
            continue
        t = r.chunk_times_ns
        out += [((b - t0_ns) / 1e9, (b - a) / 1e6) for a, b in zip(t, t[1:])]
    return sorted(out)


def windows(records: list[RequestRecord], t0_ns: int) -> list[tuple[float, float]]:
    """Each long prefill's (send, first token) in s from t0."""
    return sorted(((r.t_send_ns - t0_ns) / 1e9, (r.t_first_ns - t0_ns) / 1e9) for r in records
                  if r.tags.get("role") == "prefill" and r.t_send_ns and r.t_first_ns)


def interference(records: list[RequestRecord]) -> dict[str, Any]:
    """Baseline gap, spike per arrival and their ratio, with the series for the time-axis plot."""
    t0 = min(r.t_sched_ns or r.t_send_ns for r in records)
    g, w = gaps(records, t0), windows(records, t0)
    inside = lambda t: any(a <= t <= b for a, b in w)  # noqa: E731
    base = [ms for t, ms in g if not inside(t)]
    spikes = [max((ms for t, ms in g if a <= t <= b), default=None) for a, b in w]
    baseline = float(np.median(base)) if base else None
    seen = [s for s in spikes if s is not None]
    lags = [(r.t_send_ns - r.t_sched_ns) / 1e6 for r in records
            if r.tags.get("role") == "prefill" and r.t_send_ns and r.t_sched_ns]
    return {"baseline_itl_ms": baseline, "spikes_ms": spikes,
            # the client's own delay in sending the long prefills: late arrivals (a starved client) move the
            # windows, and the gaps then show the client, not the server
            "arrival_lag_max_ms": max(lags) if lags else None,
            # gaps under 0.1 ms: chunks the client read from a backlog at once (no server streams one request's
            # tokens 0.1 ms apart): a client that could not keep up reads its streams in bursts
            "burst_share": float(np.mean([ms < BURST_MS for _, ms in g])) if g else None,
            "mean_spike_ms": float(np.mean(seen)) if seen else None,
            "spike_over_baseline": float(np.mean(seen)) / baseline if seen and baseline else None,
            "prefill_ms": [1000 * (b - a) for a, b in w], "windows_s": w, "gaps": g}


def measure_chunked(params: E5Params, run: RunFolder, card: ModelCard, out: JsonlWriter,
                    log=print) -> list[dict[str, Any]]:
    """One server per setting, the same schedule on each; one row per setting."""
    rows = []
    for k, setting in enumerate(params.chunked_settings):
        items = schedule(params, card, k)
        with make_backend(params, f"chunked-{setting.name}", run, extra_args=setting.extra_args) as backend:
            # the same schedule once unscored first: a server meeting a batch shape for the first time may
            # compile for it (seconds on the CPU tier), a stall that is not interference
            warm = run_load(backend.base_url, backend.model, schedule(params, card, 1000 + k), Arrivals("trace"),
                            timeout_s=params.request_timeout_s)
            records = run_load(backend.base_url, backend.model, items, Arrivals("trace"),
                               timeout_s=params.request_timeout_s)
        for r in warm:
            r.warmup = True
        for r in warm + records:
            r.tags.update({"part": "chunked", "setting": setting.name})
            out.write(r)
        failed = sum(not r.ok for r in records)
        found = interference(records) if not failed else {}
        rows.append({"setting": setting.name, "flags": " ".join(setting.extra_args), "requests": len(records),
                     "failed": failed, "errors": failures(records), **found})
        log(f"[e5] chunked {setting.name}: baseline ITL {ms_text(found.get('baseline_itl_ms'), 1)}, mean spike "
            f"{ms_text(found.get('mean_spike_ms'), 1)}, {failed} failed"
            + (f" (first: {rows[-1]['errors'][0]})" if failed else ""))
    return rows


LAG_BOUND_MS = 50.0     # a long prefill sent later than this after its due time: the client, not the server
BURST_SHARE = 0.25      # more decode gaps than this under BURST_MS: the client read its streams in bursts


def conclusion(rows: list[dict[str, Any]]) -> str:
    done = [r for r in rows if r.get("spike_over_baseline")]
    if not done:
        return ""
    text = "; ".join(f"{r['setting']}: {r['mean_spike_ms']:.1f} ms against {r['baseline_itl_ms']:.2f} ms "
                     f"({r['spike_over_baseline']:.1f}x), prefills {np.mean(r['prefill_ms']):.0f} ms"
                     for r in done)
    late = [f"{r['setting']} (prefills sent up to {r['arrival_lag_max_ms'] / 1000:.2f} s late)" for r in rows
            if (r.get("arrival_lag_max_ms") or 0) > LAG_BOUND_MS]
    late += [f"{r['setting']} ({100 * r['burst_share']:.0f}% of gaps under {BURST_MS:g} ms: streams read in "
             "bursts)" for r in rows if (r.get("burst_share") or 0) > BURST_SHARE]
    warn = (f" The client fell behind in {'; '.join(late)}: on a small host it shares cores with the server, so "
            "those gaps show the client as much as the server; do not read them as interference.") if late else ""
    return f"Decode gaps while a long prefill ran (mean spike against the median gap): {text}.{warn}"
