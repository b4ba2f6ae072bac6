"""The docs a newcomer reads: a README read in ten minutes, and no link in README or docs/ that leads nowhere."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_stays_under_1000_words():
    words = len((ROOT / "README.md").read_text().split())
    assert words <= 1000, f"README.md has {words} words: move detail to docs/usage.md"


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(doc.read_text()):
            if "://" in target or target.startswith(("#", "mailto:")):
                continue
            if not (doc.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_the_design_documents_layer_table_is_the_one_the_layer_test_enforces():
    from test_layers import LAYERS
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", (ROOT / "docs" / "design.md").read_text(), re.M)
    documented = [{f"ctxkit.{m}" for m in re.findall(r"`(\w+)`", cell)} for _, cell in rows]
    assert documented == [layer - {"ctxkit"} for layer in LAYERS]
