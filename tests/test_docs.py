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
