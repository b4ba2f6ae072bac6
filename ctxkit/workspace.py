"""Where ctxkit finds its notebooks, parameter files and templates, and where runs go.

A workspace is a folder holding `notebooks/` and `params/profiles/` (the source checkout is one; `ctxkit init DIR`
makes one from the installed package). Resources come from, in order: $CTXKIT_HOME; the workspace that holds the
current directory (it or a parent, as git finds its repository); the source checkout the package was imported from;
the copies packaged in the wheel (`ctxkit/resources/`). Runs go to $CTXKIT_RUNS_DIR, else `runs/` of that same
workspace or checkout, else `./runs`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ctxkit import env

PACKAGE = Path(__file__).resolve().parent
PACKAGED = PACKAGE / "resources"


def is_workspace(path: Path) -> bool:
    return (path / "notebooks").is_dir() and (path / "params" / "profiles").is_dir()


def enclosing_workspace(start: Optional[Path] = None) -> Optional[Path]:
    """The nearest folder at or above `start` (default: the current directory) that is a workspace."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_workspace(folder):
            return folder
    return None


def source_checkout() -> Optional[Path]:
    """The repository the package was imported from (an editable install), if it is one."""
    root = PACKAGE.parent
    return root if is_workspace(root) and (root / "pyproject.toml").is_file() else None


def resources_root() -> Path:
    """The folder holding notebooks/, params/ and templates/."""
    if os.environ.get(env.HOME):
        return Path(os.environ[env.HOME]).resolve()
    return enclosing_workspace() or source_checkout() or PACKAGED


def runs_root() -> Path:
    if os.environ.get(env.RUNS_DIR):
        return Path(os.environ[env.RUNS_DIR])
    home = Path(os.environ[env.HOME]).resolve() if os.environ.get(env.HOME) else None
    root = home or enclosing_workspace() or source_checkout()
    return (root / "runs") if root is not None else Path.cwd() / "runs"


def init_workspace(target: Path) -> Path:
    """Copy the notebooks, parameter files and templates ctxkit runs from into `target` (never over a file that is
    there already), with an empty runs/ folder. ctxkit run/JupyterLab inside it then use these copies."""
    import shutil

    target = Path(target).resolve()
    source = resources_root()
    taken = [name for name in ("notebooks", "params", "templates") if (target / name).exists()]
    if taken:
        raise FileExistsError(f"{target} already has {', '.join(taken)}: a workspace is made in a new folder")
    for name in ("notebooks", "params", "templates"):
        shutil.copytree(source / name, target / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "__init__.py"))
    (target / "runs").mkdir(exist_ok=True)
    if (source / "jupytext.toml").is_file():
        shutil.copy2(source / "jupytext.toml", target / "jupytext.toml")
    return target
