"""Progress of a measured window through tqdm: a bar in a terminal, a widget in an interactive notebook, and plain
lines (about every 5 s) where output goes to a log or a batch-run notebook, so a log is never a wall of carriage
returns. Warmup requests are not counted; failures are shown as they happen."""
from __future__ import annotations

import os
import sys
from typing import Any, Optional

from tqdm import tqdm
from tqdm.auto import tqdm as tqdm_auto

from ctxkit import env
from ctxkit.records import CANCELLED, RequestRecord

# Set by `ctxkit run` (and by anything that executes notebooks headless): no widgets, plain lines.
BATCH_ENV = env.BATCH


def _interactive_notebook() -> bool:
    return "ipykernel" in sys.modules and os.environ.get(BATCH_ENV) != "1"


class _Lines:
    """A file for tqdm that turns its in-place redraws ('\r' + status) into one line each."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


class Progress:
    """Counts measured requests of one window; `update(record)` after each, `close()` at the end."""

    def __init__(self, total: int, label: str, stream: Optional[Any] = None) -> None:
        self.failed = 0
        if stream is None and _interactive_notebook():
            self.bar = tqdm_auto(total=total, desc=label, unit="req", leave=True)
            return
        # In a batch notebook, stdout (in order with the notebook's own prints); elsewhere stderr (stdout carries
        # the run folder's path for scripts).
        stream = stream or (sys.stdout if "ipykernel" in sys.modules else sys.stderr)
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=total, desc=label, unit="req", file=stream if tty else _Lines(stream), leave=True,
                        dynamic_ncols=tty, mininterval=0.2 if tty else 5.0, ascii=not tty)

    def update(self, rec: RequestRecord) -> None:
        if rec.warmup:
            return
        if not rec.ok and rec.status != CANCELLED:   # cut off by a stop rule: by design, not a failure
            self.failed += 1
            self.bar.set_postfix(failed=self.failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
