"""E3 runs of one model placed differently (a local pool, the same pool through Ray): the packet says whether their
greedy outputs agree token for token, from the runs' own correctness outputs."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ctxkit.runs import packet

OUTPUTS = {"correct-0-len300": [5, 7, 5, 7], "correct-1-len8192": [9, 9, 2, 2]}


def e3_run(root: Path, name: str, *, ray: bool, outputs: dict, model: str = "llama-3.1-8b",
           prompts: str = "p1") -> Path:
    """A finished E3 run folder as the notebook leaves it: summary with the correctness set (the digest of its
    prompts), metadata, params."""
    run = root / name
    (run / "artifacts").mkdir(parents=True)
    correctness = {"prompt_lens": [300, 8192], "prompts_sha256": prompts, "aggregated": OUTPUTS,
                   "disaggregated": outputs}
    (run / "summary.json").write_text(json.dumps({"experiment": "e3_disagg", "checks": {}, "headline": [],
                                                  "correctness": correctness}))
    (run / "run_metadata.json").write_text(json.dumps(
        {"experiment": "e3_disagg", "run_id": name, "git": {"commit": "cd" * 20, "dirty": False}}))
    (run / "status.json").write_text(json.dumps({"status": "succeeded"}))
    (run / "params.yaml").write_text(yaml.safe_dump({"server": {"model": model}, "connector": "nixl",
                                                     "ray": {"address": None} if ray else None}))
    return run


def rows(text: str) -> dict[str, list[str]]:
    section = text.split("### E3 greedy outputs across runs", 1)[1].split("## Notes", 1)[0]
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines() if line.startswith("| ")]
    return {r[0]: r for r in cells[2:]}


def test_runs_placed_locally_and_through_ray_are_compared_by_their_outputs(tmp_path):
    changed = {**OUTPUTS, "correct-1-len8192": [9, 9, 2, 3]}      # one token differs
    failed = {**OUTPUTS, "correct-0-len300": []}                  # a request that failed returns no tokens
    runs = [e3_run(tmp_path, "failed", ray=False, outputs=failed),
            e3_run(tmp_path, "local", ray=False, outputs=OUTPUTS), e3_run(tmp_path, "ray", ray=True, outputs=OUTPUTS),
            e3_run(tmp_path, "ray-off", ray=True, outputs=changed),
            e3_run(tmp_path, "other-model", ray=False, outputs=OUTPUTS, model="tiny-llama"),
            e3_run(tmp_path, "other-prompts", ray=False, outputs=OUTPUTS, prompts="p2")]
    text = (packet.build(runs, tmp_path / "packet") / "README.md").read_text()
    got = rows(text)
    names = ["e3_disagg"] + [f"e3_disagg-{i}" for i in range(2, 7)]
    assert [got[n][1] for n in names[1:4]] == ["local", "Ray", "Ray"]
    assert [got[n][-1] for n in names] == ["failed", "yes", "yes", "no", "-", "-"]   # others alone with their prompts
    assert [got[n][-2] for n in names[:4]] == ["e3_disagg", "e3_disagg-2", "e3_disagg-2", "e3_disagg-2"]
    assert got["e3_disagg-2"][5] == got["e3_disagg-3"][5] != got["e3_disagg-4"][5]
    assert "every pool placed through Ray" in text.split("(e3_disagg-3)", 1)[1].split("###", 1)[0]


def test_one_e3_run_has_nothing_to_compare(tmp_path):
    out = packet.build([e3_run(tmp_path, "only", ray=False, outputs=OUTPUTS)], tmp_path / "p")
    text = (out / "README.md").read_text()
    assert "greedy outputs across runs" not in text
