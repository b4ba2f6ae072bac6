"""The run timeline figure (E2, E5): NVML's view of each GPU under the server's KV usage on the client's clock, and a
tick where the server's preemption counter grew. Drawn from rows made here: the GPU path has no GPU in CI."""
from __future__ import annotations

import pandas as pd

from ctxkit import plots

S = 1_000_000_000          # ns in a second; the client's perf_counter clock starts anywhere
T0 = 50 * S


def gauges(preemptions: list[int]) -> pd.DataFrame:
    return pd.DataFrame([{"t_ns": T0 + i * S // 2, "server": "server", "kv_cache_usage_perc": 0.1 * i,
                          "num_requests_running": i, "num_requests_waiting": 0, "num_preemptions": p}
                         for i, p in enumerate(preemptions)])


REQUESTS = pd.DataFrame([{"span": "L=1600 c=7", "t_send_ns": T0 + S // 10, "t_end_ns": T0 + 2 * S},
                         {"span": "trace", "t_send_ns": T0 + 2 * S, "t_end_ns": T0 + 3 * S}])


def test_gpu_memory_and_utilization_sit_under_the_kv_usage_on_the_same_clock():
    gpu = pd.DataFrame([{"t_ns": T0 + k * S, "gpu": 0, "role": "aggregated", "memory_used_bytes": 40 << 30,
                         "memory_total_bytes": 80 << 30, "utilization_pct": 90} for k in range(4)]
                       + [{"t_ns": T0 - 100 * S, "gpu": 0, "role": "aggregated", "memory_used_bytes": 0,
                           "memory_total_bytes": 80 << 30, "utilization_pct": 0}])    # before the run: left out
    fig = plots.server_timeline(gauges([0] * 7), REQUESTS, gpu=gpu, span="span")
    top, kv, panel = fig.axes[:3]
    lines = {line.get_label(): line for line in panel.get_lines()}
    memory, util = lines["GPU 0 (aggregated) memory"], lines["GPU 0 (aggregated) utilization"]
    assert list(memory.get_ydata()) == [50.0] * 4 and list(util.get_ydata()) == [90] * 4
    assert list(memory.get_xdata()) == [0.0, 1.0, 2.0, 3.0]          # seconds from the first scrape, as KV usage
    assert list(kv.get_lines()[0].get_xdata())[:3] == [0.0, 0.5, 1.0]
    assert [t.get_text() for t in top.texts] == ["L=1600 c=7", "trace"]


def test_without_gpu_rows_two_panels_and_preemption_ticks_where_the_counter_grew():
    fig = plots.server_timeline(gauges([0, 0, 2, 2, 5, 5, 5]), REQUESTS, gpu=None, span="span")
    assert len(fig.axes) == 2
    (ticks,) = [line for line in fig.axes[0].get_lines() if line.get_label() == "preemptions grew"]
    assert list(ticks.get_xdata()) == [1.0, 2.0]                    # the scrapes at 1.0 s (0 -> 2), 2.0 s (2 -> 5)


def test_running_and_waiting_are_summed_over_instances_scraped_at_their_own_times():
    """Two instances, each scraped by its own thread (no two rows share a time): the servers' line is their sum,
    each instance's last value held until its next scrape."""
    rows = [{"t_ns": T0 + k * S, "server": "a", "num_requests_running": 3, "num_requests_waiting": 1} for k in range(3)]
    rows += [{"t_ns": T0 + k * S + S // 4, "server": "b", "num_requests_running": 4, "num_requests_waiting": 0}
             for k in range(3)]
    for r in rows:
        r["kv_cache_usage_perc"] = 0.5
    fig = plots.server_timeline(pd.DataFrame(rows), REQUESTS, span="span")
    (running,) = [line for line in fig.axes[0].get_lines() if line.get_label() == "servers: running"]
    assert list(running.get_ydata()) == [3, 7, 7, 7, 7, 7]           # b not yet scraped at the first time


def test_no_line_is_drawn_across_a_pause_in_scraping():
    """Scrapes every 0.5 s, then none for 18.5 s (E5 between parts, a server starting), then again: each gauge's line
    breaks in the pause instead of joining its two sides."""
    before, after = gauges([0] * 4), gauges([0] * 4)
    after["t_ns"] += 20 * S
    fig = plots.server_timeline(pd.concat([before, after], ignore_index=True), REQUESTS, span="span")
    top, kv = fig.axes[:2]
    running = next(line for line in top.get_lines() if line.get_label() == "servers: running")
    for line in (kv.get_lines()[0], running):
        x = list(line.get_xdata())
        assert len(x) == 9 and pd.isna(x[4]), x                  # 4 scrapes, the break, 4 scrapes
        assert x[3] == 1.5 and x[5] == 20.0


def test_instances_scraped_in_step_draw_one_unbroken_line():
    """Four instances, each scraped every 0.5 s by its own thread, a few ms apart: their summed line has no break
    (the pause rule goes by one instance's step, not the merged rows' ms gaps)."""
    rows = [{"t_ns": T0 + i * S // 2 + k * 3_000_000, "server": f"i{k}", "kv_cache_usage_perc": 0.1,
             "num_requests_running": 1, "num_requests_waiting": 0} for i in range(20) for k in range(4)]
    fig = plots.server_timeline(pd.DataFrame(rows), REQUESTS, span="span")
    running = next(line for line in fig.axes[0].get_lines() if line.get_label() == "servers: running")
    assert not pd.isna(list(running.get_ydata())).any() and len(running.get_xdata()) == 80
