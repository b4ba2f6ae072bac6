"""Notebooks are sources: each .ipynb is paired with a jupytext percent script and committed without outputs; the
parameters cells hold no defaults of their own; a notebook's setup cell layers parameters as `ctxkit run` does and
can be re-run without forking or failing."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import jupytext
import nbformat
import pytest

from ctxkit import params as P
from ctxkit.experiments import common
from ctxkit.runs.folder import RunFolderError

from conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"
EXPERIMENTS = sorted(p.stem for p in NOTEBOOKS.glob("e[0-9]_*.ipynb"))
NOTEBOOK_ONLY = {"profile", "param_files", "sets", "run_dir"}


def cells(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


def out_of_sync(ipynb: Path, script: Path) -> list[str]:
    """What differs between a notebook and its percent script, cell by cell (empty when they agree)."""
    a, b = cells(nbformat.read(ipynb, as_version=4)), cells(jupytext.read(script))
    problems = [f"{len(a)} cells in {ipynb.name}, {len(b)} in {script.name}"] if len(a) != len(b) else []
    problems += [f"cell {i}: {x[:2]} != {y[:2]}" for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return problems


def test_every_notebook_has_its_script_and_back():
    assert EXPERIMENTS == ["e0_smoke", "e1_latency", "e2_concurrency", "e3_disagg", "e4_goodput", "e5_context",
                           "e6_plan"]
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(p.stem for p in NOTEBOOKS.glob("*.py"))
    assert not (ROOT / "tools" / "make_notebooks.py").exists()        # the notebooks are the sources now


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")))
def test_pair_in_sync_and_committed_without_outputs(name):
    ipynb, script = NOTEBOOKS / f"{name}.ipynb", NOTEBOOKS / f"{name}.py"
    assert out_of_sync(ipynb, script) == []
    nb = nbformat.read(ipynb, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (name, cell.source[:60])
    assert len({c.id for c in nb.cells}) == len(nb.cells)                # stable, unique cell ids
    assert nb.metadata.kernelspec.name == "ctxkit"


def test_the_sync_check_sees_an_edit(tmp_path):
    """An edit made on one side only is reported."""
    nb = nbformat.read(NOTEBOOKS / "e0_smoke.ipynb", as_version=4)
    edited = copy.deepcopy(nb)
    edited.cells[-1].source += "\nprint('edited in JupyterLab')"
    nbformat.write(edited, tmp_path / "e0_smoke.ipynb")
    assert out_of_sync(tmp_path / "e0_smoke.ipynb", NOTEBOOKS / "e0_smoke.py")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_parameters_cell_holds_no_defaults(experiment):
    """Defaults live in the typed parameters (ctxkit/params.py) and params/*.yaml only."""
    nb = nbformat.read(NOTEBOOKS / f"{experiment}.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assigned = {t.id for node in ast.walk(ast.parse(cell.source)) if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert assigned == NOTEBOOK_ONLY
    assert not assigned & set(P.fields(experiment))


@pytest.fixture
def runs_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(common, "_OPEN", {})
    return tmp_path / "runs"


def test_a_notebook_layers_its_profile_like_the_cli(runs_env):
    ns = {"profile": "h100-llama8b", "param_files": [], "sets": ["requests_per_len=3"], "run_dir": None}
    params, run = common.open_run("e1_latency", ns, log=lambda s: None)
    assert params == P.resolve("e1_latency", profile="h100-llama8b", sets=["requests_per_len=3"])
    assert params.server.model == "llama-3.1-8b" and params.requests_per_len == 3
    assert run.read_params() == P.to_dict(params)


def test_notebook_variables_are_a_layer_and_the_layers_are_printed(runs_env):
    lines = []
    params, _ = common.open_run("e0_smoke", {"profile": "cpu-tiny", "max_tokens": 8, "sets": ["seed=5"]},
                                log=lines.append)
    assert params.max_tokens == 8 and params.seed == 5
    assert "cpu-tiny.yaml" in lines[0] and "notebook variables" in lines[0] and "--set seed=5" in lines[0]


def test_rerunning_cells_keeps_the_run_and_writes_again(runs_env):
    ns = {"profile": "cpu-tiny"}
    _, first = common.open_run("e0_smoke", ns, log=lambda s: None)
    _, again = common.open_run("e0_smoke", ns, log=lambda s: None)
    assert again == first                                             # the setup cell re-run: same folder
    first.write_json("summary.json", {"checks": {"a": {"passed": True}}})
    first.write_json("summary.json", {"checks": {"a": {"passed": True}}})    # the summary cell re-run
    _, other = common.open_run("e0_smoke", {**ns, "sets": ["seed=9"]}, log=lambda s: None)
    assert other != first                                             # other parameters: a run of their own
    _, fresh = common.new_run("e0_smoke", {**ns, "sets": ["seed=9"]})
    assert fresh != other                                             # asked for explicitly
    assert len(list((runs_env / "e0_smoke").iterdir())) == 3


def test_a_finished_run_is_immutable(runs_env):
    _, run = common.open_run("e0_smoke", {}, log=lambda s: None)
    assert common.finish_run(run, {"checks": {"a": {"passed": True}}}, log=lambda s: None) == "succeeded"
    with pytest.raises(RunFolderError, match="has ended \\(succeeded\\): its files are never overwritten"):
        run.write_json("summary.json", {})
    _, next_run = common.open_run("e0_smoke", {}, log=lambda s: None)
    assert next_run != run                                            # the ended run is not reopened


def test_batch_runs_read_the_folders_parameters(runs_env):
    params = P.resolve("e0_smoke", sets=["max_tokens=7"])
    from ctxkit.runs.folder import RunFolder
    run = RunFolder.create(runs_env, "e0_smoke")
    run.write_params(P.to_dict(params))
    got, same = common.open_run("e0_smoke", {"run_dir": str(run.path), "profile": "h100-llama8b"},
                                log=lambda s: None)
    assert got == params and same == run                              # the folder wins over the cell's profile
