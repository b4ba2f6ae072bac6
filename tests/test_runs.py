"""Run ids, run folders (atomic, never overwritten), metadata."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import pytest

from ctxkit.hardware import gpu_inventory
from ctxkit.runs import metadata
from ctxkit.runs.folder import RunFolder, RunFolderError, atomic_write_json, check_name, new_run_id, parse_run_id


def test_run_id_format():
    when = dt.datetime(2026, 11, 27, 13, 4, 5, tzinfo=dt.timezone.utc)
    rid = new_run_id(when)
    assert rid.startswith("run-20261127T130405Z-") and len(rid) == len("run-20261127T130405Z-") + 8
    assert parse_run_id(rid) == when
    assert new_run_id(when) != rid                   # 32 random bits
    with pytest.raises(RunFolderError):
        parse_run_id("run-2026-x")


def test_folder_layout_and_no_overwrite(runs_dir):
    run = RunFolder.create(runs_dir, "e0_smoke")
    assert run.path.parent == runs_dir / "e0_smoke" and run.logs.is_dir() and run.artifacts.is_dir()
    assert run.status() == "running"
    run.write_json("summary.json", {"a": 1})
    run.write_json("summary.json", {"a": 2})                  # while open, a step may write its file again
    assert json.loads((run.path / "summary.json").read_text()) == {"a": 2}
    assert not [p for p in run.path.iterdir() if p.name.startswith(".")]   # no temp files left
    run.set_status("succeeded")
    assert run.status() == "succeeded"
    with pytest.raises(RunFolderError, match="never overwritten"):
        run.write_json("summary.json", {"a": 3})               # an ended run is immutable
    assert json.loads((run.path / "summary.json").read_text()) == {"a": 2}
    other = RunFolder.create(runs_dir, "e0_smoke")
    assert other.path != run.path


def test_atomic_write_failure_leaves_nothing(tmp_path, monkeypatch):
    import os

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []          # neither the target nor a temp file


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".hidden", "", "x" * 65, "a b"])
def test_names_cannot_escape(bad):
    with pytest.raises(RunFolderError):
        check_name("label", bad)


def test_metadata_fields():
    meta = metadata.collect(run_id="run-20261127T000000Z-00000000", experiment="e0_smoke", config_hash="abc",
                            params={"seed": 0, "backend": "vllm", "server": {"model": "tiny-llama"}}, label="x")
    for key in ("run_id", "experiment", "config_hash", "seed", "git", "versions", "hardware", "os", "model_card",
                "backend_mode", "notes"):
        assert key in meta
    assert meta["backend_mode"] == "real"
    assert set(meta["versions"]) >= {"ctxkit", "vllm", "torch", "python"}
    gpus = meta["hardware"]["gpus"]
    assert gpus == gpu_inventory()                       # what NVML says here: GPUs or the reason there are none
    assert gpus["devices"] if gpus["available"] else gpus["reason"]
    assert meta["model_card"]["kv_bytes_per_token"] == 2048


def test_environment_redaction():
    env = {"HF_TOKEN": "hf_abc", "VLLM_CPU_KVCACHE_SPACE": "1", "MY_API_KEY": "k", "HOME": "/root",
           "CTXKIT_DB_PASSWORD": "p"}
    red = metadata.redacted_environment(env)
    assert red["HF_TOKEN"] == "<redacted>" and red["MY_API_KEY"] == "<redacted>"
    assert red["CTXKIT_DB_PASSWORD"] == "<redacted>"
    assert red["VLLM_CPU_KVCACHE_SPACE"] == "1" and "HOME" not in red


def test_the_commit_a_run_records(monkeypatch):
    """Where code travelled (a GPU host), CTXKIT_GIT_COMMIT says which commit it is, even if a stale .git lies beside
    it; in a checkout without it, git's HEAD and its dirty state."""
    from ctxkit.workspace import source_checkout
    monkeypatch.setenv("CTXKIT_GIT_COMMIT", "0123abc")
    got = metadata.git_commit(source_checkout())
    assert got == {"commit": "0123abc", "dirty": None, "source": "CTXKIT_GIT_COMMIT",
                   "package_sha256": metadata.package_sha256()}
    monkeypatch.delenv("CTXKIT_GIT_COMMIT")
    got = metadata.git_commit(source_checkout())
    assert got["source"] == "git" and len(got["commit"]) == 40 and isinstance(got["dirty"], bool)
    assert metadata.git_commit(None)["commit"] is None


def test_a_checkout_with_uncommitted_changes_is_recorded_dirty(tmp_path, monkeypatch):
    monkeypatch.delenv("CTXKIT_GIT_COMMIT", raising=False)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    (tmp_path / "f.py").write_text("x = 1\n")
    for cmd in (["init", "-q"], ["add", "f.py"], ["commit", "-qm", "one"]):
        subprocess.run(["git", "-C", str(tmp_path), *cmd], check=True, env=env)
    assert metadata.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "f.py").write_text("x = 2\n")
    assert metadata.git_commit(tmp_path)["dirty"] is True


def test_the_package_hash_changes_with_any_file_of_the_package(tmp_path):
    """The bytes CTXKIT_GIT_COMMIT vouches for: a changed module, or a renamed one, is another hash; caches are not."""
    pkg = tmp_path / "ctxkit"
    (pkg / "load").mkdir(parents=True)
    (pkg / "load" / "search.py").write_text("RATE = 1\n")
    (pkg / "models").mkdir()
    (pkg / "models" / "card.json").write_text("{}")
    first = metadata.package_sha256(pkg)
    (pkg / "load" / "__pycache__").mkdir()
    (pkg / "load" / "__pycache__" / "search.cpython-312.pyc").write_bytes(b"\0")
    assert metadata.package_sha256(pkg) == first
    (pkg / "models" / "card.json").write_text("{ }")
    assert metadata.package_sha256(pkg) != first
    (pkg / "models" / "card.json").write_text("{}")
    (pkg / "load" / "search.py").rename(pkg / "load" / "probe.py")
    assert metadata.package_sha256(pkg) != first
