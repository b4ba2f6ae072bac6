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
