"""docs/cli.md is the argument parser's own reference: regenerated, it is the same file."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_cli_reference_is_the_parsers(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import cli_reference
    text = cli_reference.reference()
    assert (ROOT / "docs" / "cli.md").read_text() == text, "docs/cli.md is stale: python tools/cli_reference.py"
    for command in ("run", "bench", "report", "compare", "packet", "plan", "ls", "init", "doctor"):
        assert f"## `ctxkit {command}`" in text
    assert "`--search-max-probes SEARCH_MAX_PROBES` | probes at most (default 16)" in text   # defaults read live
    sys.modules.pop("cli_reference", None)
