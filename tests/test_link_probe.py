"""The link probe on the CPU tier: what `ctxkit doctor --links` prints, and the tmpfs copy it measures."""
from __future__ import annotations

import re

from ctxkit.collectors.link import tmpfs_copy

from conftest import run_cli


def test_doctor_links_measures_the_tmpfs_folder():
    result = run_cli("doctor", "--links", "--tokens", "1024", timeout=120)
    out = result.stdout
    assert "KV link" in out and "/dev/shm" in out, out
    rows = re.findall(r"(\d+) x\s+([\d,]+) B:\s+([\d.]+) GB/s", out)
    assert len(rows) == 2, out
    (n_large, large_bytes, large_rate), (n_pieces, piece_bytes, piece_rate) = rows
    assert int(n_large) == 1 and float(large_rate) > 0 and float(piece_rate) > 0
    # tiny-llama, 1024 prompt tokens, block 128: 896 stored tokens x 2,048 B / 4 layers per layer file
    assert int(piece_bytes.replace(",", "")) == 896 * 2048 // 4
    assert int(n_pieces) * int(piece_bytes.replace(",", "")) <= int(large_bytes.replace(",", ""))


def test_tmpfs_copy_moves_every_byte_and_leaves_nothing(tmp_path):
    res = tmpfs_copy(tmp_path, 1 << 20, 1 << 16)
    assert res["large"]["bytes"] == 1 << 20 and res["large"]["pieces"] == 1
    assert res["descriptor"]["pieces"] == 16 and res["descriptor"]["bytes"] == 1 << 20
    assert all(res[k]["gb_per_s"] > 0 and res[k]["read_gb_per_s"] > 0 for k in ("large", "descriptor"))
    assert list(tmp_path.iterdir()) == []


def test_nixl_counters_near_one_decode_step_per_transfer_are_called_the_polling_level():
    """Numbers of the four-H200 run: 12 handoffs of 268 MB counted as 0.217 s in all (18 ms each) by NIXL, on a
    decode server stepping every 21.2 ms. vLLM checks transfers once a step, so the counted 14.8 GB/s is the
    polling; the window says so, with the level (268 MB per 21.2 ms step), and a fast transfer is not flagged."""
    from ctxkit.experiments.e3_disagg import ModeResult, window_kv

    def mode(xfer_s):
        decode = {"nixl_bytes_transferred": 12 * 268435456.0, "nixl_xfer_time_seconds": xfer_s,
                  "nixl_num_descriptors": 20.0, "nixl_post_time_seconds": 0.0013, "mean_itl_ms": 21.2,
                  "itl_count": 1524.0}
        return ModeResult("disaggregated", [], {}, {}, {"prefill-0": {"mean_itl_ms": None}, "decode-0": decode}, {},
                          handoffs=[{"status": "ok"}] * 12)
    kv = {"total_kv_bytes_expected": 12 * 268435456}
    win = window_kv(mode(0.216979), kv, 381.5)
    assert round(win["gb_per_s"], 2) == 14.85 and win["transfers"] == 12
    assert round(win["transfer_ms_mean"], 1) == 18.1 and win["at_step_level"]
    assert round(win["step_level_gb_per_s"], 2) == 12.66             # 268.4 MB per 21.2 ms
    fast = window_kv(mode(12 * 0.0015), kv, 381.5)       # 1.5 ms a transfer: the link, not the polling
    assert not fast["at_step_level"] and fast["gb_per_s"] > 150
