"""Markdown a packet's README is written in (shared by packet.py and the tables it gathers from other modules)."""
from __future__ import annotations


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]
