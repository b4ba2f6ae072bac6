"""One immutable folder per run: runs/<experiment>/run-<UTC yyyymmddTHHMMSSZ>-<8 hex>/.

Files are written atomically (temp file + rename). While a run is open (status `running`) a step may write its
file again, so re-running a notebook cell is safe; once the run has ended (succeeded | failed | interrupted),
nothing in it is overwritten. status.json is the one file that changes.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

RUN_ID_RE = re.compile(r"^run-(\d{8}T\d{6}Z)-([0-9a-f]{8})$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STATUS_FILE = "status.json"


class RunFolderError(RuntimeError):
    pass


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"run-{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def parse_run_id(run_id: str) -> dt.datetime:
    match = RUN_ID_RE.match(run_id)
    if not match:
        raise RunFolderError(f"not a run id: {run_id!r} (expected run-<yyyymmddTHHMMSSZ>-<8 hex>)")
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)


def check_name(kind: str, name: str) -> str:
    """Experiment names and labels become paths or path parts: no separators, no '..', no hidden files."""
    if not NAME_RE.match(name) or ".." in name:
        raise RunFolderError(f"{kind} {name!r} is not allowed: use letters, digits, '_', '-', '.' "
                             "(no path separators or '..', at most 64 characters)")
    return name


def read_yaml_file(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} does not hold a mapping of parameters")
    return data


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str, *, overwrite: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise RunFolderError(f"{path} exists: run folders are never overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; run folders are meant to be shared and read
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: Path, data: Any, *, overwrite: bool = False) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n",
                             overwrite=overwrite)


def stored(path: Path) -> Optional[Path]:
    """`path`, or its gzipped copy where a results packet keeps it compressed (ctxkit.runs.packet.compact); None when
    neither is there. pandas reads either."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def experiment(self) -> str:
        return self.path.parent.name

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    @classmethod
    def create(cls, runs_root: Path, experiment: str) -> "RunFolder":
        check_name("experiment", experiment)
        parent = Path(runs_root).resolve() / experiment   # absolute: the kernel and servers run in other folders
        try:
            parent.mkdir(parents=True, exist_ok=True)
            for _ in range(5):
                path = parent / new_run_id()
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
            else:  # pragma: no cover - 32 random bits colliding five times
                raise RunFolderError(f"could not create a fresh run folder under {parent}")
            (path / "logs").mkdir()
            (path / "artifacts").mkdir()
        except OSError as exc:
            raise RunFolderError(f"cannot create a run folder under {parent}: {exc.strerror or exc}") from None
        folder = cls(path)
        folder.set_status("running")
        return folder

    @classmethod
    def open(cls, path: Path) -> "RunFolder":
        path = Path(path).resolve()
        if not path.is_dir():
            raise RunFolderError(f"{path} is not a run folder (no such directory)")
        parse_run_id(path.name)
        return cls(path)

    # --- files -----------------------------------------------------------------------------------------
    def is_open(self) -> bool:
        """A running run's steps may write their files again (a re-run cell); an ended run is immutable."""
        return self.status() == "running"

    def _writable(self, name: str) -> Path:
        if not self.is_open():
            raise RunFolderError(f"{self.path} has ended ({self.status()}): its files are never overwritten or "
                                 f"added to (not writing {name}); start a new run")
        return self.path / name

    def write_json(self, name: str, data: Any) -> Path:
        return atomic_write_json(self._writable(name), data, overwrite=True)

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self._writable(name), text, overwrite=True)

    def read_params(self) -> dict[str, Any]:
        return read_yaml_file(self.path / "params.yaml")

    def write_params(self, params: dict[str, Any]) -> Path:
        return self.write_text("params.yaml", yaml.safe_dump(params, sort_keys=False))

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    # --- status ------------------------------------------------------------------------------------------
    def set_status(self, status: str, **extra: Any) -> None:
        data = {"status": status, "updated_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        data.update(extra)
        atomic_write_json(self.path / STATUS_FILE, data, overwrite=True)

    def status(self) -> str:
        try:
            return str(self.read_json(STATUS_FILE)["status"])
        except (OSError, ValueError, KeyError):
            return "failed" if self.has("failure.json") else "unknown"
