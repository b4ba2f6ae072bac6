"""One notebook executed by papermill into a run folder, with output a person reads.

On screen: one line per step of the notebook (its numbered sections) and what the notebook itself prints (ctxkit's
progress lines), nothing else. In the run folder: logs/papermill.log (papermill's full log: every cell's start and
end, every output) and logs/kernel.log (the kernel process's own stderr, where its startup warnings go).
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

import nbformat
from jupyter_client.manager import AsyncKernelManager

CELL_START = re.compile(r"Executing Cell (\d+)")


def steps(nb: nbformat.NotebookNode) -> dict[int, str]:
    """Cell number as papermill counts it (1-based, the injected-parameters cell included) -> the title of the
    section whose first code cell it is. A section is a markdown heading (`## 2. Sweep`); the title cell is `Setup`
    until the first heading."""
    cells = list(nb.cells)
    params_at = next((i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])), None)
    if params_at is not None:          # papermill inserts its cell after the parameters cell
        cells.insert(params_at + 1, nbformat.v4.new_code_cell("", metadata={"tags": ["injected-parameters"]}))
    out: dict[int, str] = {}
    section, seen = "", set()
    for number, cell in enumerate(cells, 1):
        if cell.cell_type == "markdown":
            heading = next((line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("##")),
                           None)
            section = heading or section
        elif section and section not in seen and cell.source.strip():
            seen.add(section)
            out[number] = section
    return out


class StepLines(logging.Handler):
    """Turns papermill's "Executing Cell N" into "[experiment] step k/K: <section>" on screen; drops the rest."""

    def __init__(self, experiment: str, nb: nbformat.NotebookNode, write: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.experiment, self.write = experiment, write
        self.steps = steps(nb)
        self.order = {number: k for k, number in enumerate(sorted(self.steps), 1)}

    def emit(self, record: logging.LogRecord) -> None:
        match = CELL_START.match(record.getMessage())
        if match and int(match.group(1)) in self.steps:
            number = int(match.group(1))
            self.write(f"[{self.experiment}] step {self.order[number]}/{len(self.steps)}: {self.steps[number]}")


class Screen:
    """A file for papermill's stdout_file / stderr_file: the notebook's own printed lines, to the terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()


def kernel_manager_logging_to(path: Path) -> type[AsyncKernelManager]:
    """A kernel manager whose kernel writes its own stderr (startup warnings, not cell output) into `path`."""

    class KernelLoggingToFile(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            with open(path, "ab") as log:   # the kernel process gets its own copy of the descriptor
                await super()._async_launch_kernel(kernel_cmd, **{**kw, "stderr": log})

    return KernelLoggingToFile


def execute(nb_in: Path, out: Path, *, experiment: str, kernel: str, parameters: dict[str, Any], cwd: Path,
            logs: Path, write: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> None:
    """papermill.execute_notebook with the output arranged as above; raises what papermill raises."""
    import papermill as pm

    logger = logging.getLogger("papermill")
    file_handler = logging.FileHandler(logs / "papermill.log")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    step_handler = StepLines(experiment, nbformat.read(nb_in, as_version=4), write)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(file_handler)
    logger.addHandler(step_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    screen = Screen(sys.stderr)
    try:
        pm.execute_notebook(str(nb_in), str(out), parameters=parameters, kernel_name=kernel, cwd=str(cwd),
                            log_output=True, stdout_file=screen, stderr_file=screen, progress_bar=False,
                            report_mode=False, kernel_manager_class=kernel_manager_logging_to(logs / "kernel.log"))
    finally:
        logger.removeHandler(file_handler)
        logger.removeHandler(step_handler)
        file_handler.close()
        logger.setLevel(old_level)
        logger.propagate = old_propagate
