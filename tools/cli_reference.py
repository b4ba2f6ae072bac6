"""Writes docs/cli.md, the command-line reference, from ctxkit's own argument parser (tests/test_cli_reference.py
fails when the file and the parser differ).

    python tools/cli_reference.py [docs/cli.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ctxkit.cli import build_parser  # noqa: E402


def flag(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`" + (" ..." if action.nargs in ("+", "*") else "")
    takes = action.nargs != 0
    metavar = action.metavar or (("{" + ",".join(map(str, action.choices)) + "}") if action.choices
                                 else action.dest.upper())
    return ", ".join(f"`{o} {metavar}`" if takes else f"`{o}`" for o in action.option_strings)


def what(action: argparse.Action) -> str:
    text = " ".join((action.help or "").split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    if action.option_strings and action.choices and action.metavar:
        text += f" (one of: {', '.join(map(str, action.choices))})"
    if isinstance(action, argparse._AppendAction) and "repeatable" not in text:
        text += " (repeatable)"
    if action.required and action.option_strings:
        text += " (required)"
    return text or "-"


def section(name: str, parser: argparse.ArgumentParser, about: str) -> list[str]:
    lines = [f"## `{name}`", ""]
    for text in dict.fromkeys(t for t in (about, parser.description) if t):
        lines += [text.replace("<", "&lt;").replace(">", "&gt;"), ""]
    rows = [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    if rows:
        lines += ["| argument | what it does |", "| --- | --- |"] + [f"| {flag(a)} | {what(a)} |" for a in rows]
        lines.append("")
    return lines


def reference() -> str:
    parser = build_parser()
    lines = ["# ctxkit's command line", "",
             "Written by `python tools/cli_reference.py` from the argument parser in ctxkit/cli.py "
             "(a test keeps the two equal). `ctxkit COMMAND --help` prints the same.", ""]
    lines += section("ctxkit", parser, parser.description or "")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    about = {c.dest: c.help for c in sub._choices_actions}
    for name, command in sub.choices.items():
        lines += section(f"ctxkit {name}", command, about.get(name) or "")
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "cli.md"
    out.write_text(reference())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
