"""Writes that a crash or a full disk cannot tear: ``atomic_write`` and the files written through it
(checkpoints, caches), a resume from a torn training state, and a full disk as one line."""

import errno
import json

import numpy as np
import pytest
import torch

import raydistill.utils as utils
from raydistill.cli import main
from raydistill.errors import DiskFull
from raydistill.models.checkpoint import STATE_FILE, read_train_state, save_torch
from raydistill.utils import atomic_dir, atomic_write, atomic_write_text, save_npy


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")
    with pytest.raises(ValueError), atomic_write(path) as f:
        f.write(b"half of the new")
        raise ValueError("killed mid-write")
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and leftovers(tmp_path) == []
    assert path.stat().st_mode & 0o777 == 0o666 & ~utils._umask()  # not mkstemp's 0600


def test_no_space_is_one_line_naming_the_file_and_the_space_it_needs(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "labels.npy"
    path.parent.mkdir()
    save_npy(path, np.arange(4))
    monkeypatch.setattr(utils, "free_bytes", lambda p: 3 * 10**6)
    with pytest.raises(DiskFull) as caught, atomic_write(path, size=5 * 10**6) as f:
        f.write(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(caught.value) == f"no space left on device writing {path} (needs ≈ 2.0 MB more; free: 3.0 MB)"
    assert np.load(path).tolist() == [0, 1, 2, 3] and leftovers(path.parent) == []
    with pytest.raises(DiskFull, match="disk quota exceeded writing"), atomic_write(path) as f:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")


def test_torch_saves_failure_on_a_full_disk_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """torch.save reports ENOSPC as a RuntimeError ("file write failed", "iostream error"): a full
    disk is told from the free space when it happened."""
    path = tmp_path / STATE_FILE
    save_torch({"step": 3, "w": torch.ones(4)}, path)

    def torn_save(obj, f):
        f.write(b"PK\x03\x04 a zip cut short")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", torn_save)
    monkeypatch.setattr(utils, "free_bytes", lambda p: 0)
    with pytest.raises(DiskFull, match=f"no space left on device writing {path} "):
        save_torch({"step": 6, "w": torch.ones(4)}, path)
    assert torch.load(path, weights_only=True)["step"] == 3 and leftovers(tmp_path) == []
    # the same error with space to spare is not a full disk: it passes through as it was
    monkeypatch.setattr(utils, "free_bytes", lambda p: 10**12)
    with pytest.raises(RuntimeError, match="PytorchStreamWriter"):
        save_torch({"step": 6, "w": torch.ones(4)}, path)


def test_a_directory_that_fills_the_disk_is_removed_and_named(tmp_path, monkeypatch):
    final = tmp_path / "corpora" / "smoke"
    monkeypatch.setattr(utils, "free_bytes", lambda p: 0)
    with pytest.raises(DiskFull, match=f"writing {final} \\(it filled up after .* MB; free: 0.0 MB\\)"):
        with atomic_dir(final) as tmp:
            (tmp / "a.flac").write_bytes(b"x" * 5000)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list((tmp_path / "corpora").iterdir()) == []


def test_a_torn_training_state_is_not_resumed_from(tmp_path, capsys):
    (tmp_path / STATE_FILE).write_bytes(b"PK\x03\x04 cut short by a full disk")
    assert read_train_state(tmp_path) is None
    assert "cannot resume: cannot read training state" in capsys.readouterr().err
    save_torch({"module": {}, "optimizer": {}, "scheduler": {}, "step": 3}, tmp_path / STATE_FILE)
    assert read_train_state(tmp_path)["step"] == 3


def test_the_cli_says_a_full_disk_in_one_line_and_exits_2(monkeypatch, capsys):
    """Also a write that does not go through atomic_write (an OSError ENOSPC from anywhere)."""
    import raydistill.cli as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/mlflow.db")

    monkeypatch.setattr(cli, "_dispatch", full)
    assert main(["plan", "--space", "x.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raydistill: error: no space left on device writing /runs/mlflow.db (")


def test_text_writes_replace_whole(tmp_path):
    path = tmp_path / "index.json"
    atomic_write_text(path, json.dumps({"a": 1}))
    atomic_write_text(path, json.dumps({"a": 2}))
    assert json.loads(path.read_text()) == {"a": 2} and leftovers(tmp_path) == []


def test_a_memory_mapped_output_is_allocated_before_it_is_written(tmp_path, monkeypatch):
    """A page of a sparse memory map written to a full disk is a SIGBUS: the space is taken first."""
    import os

    from raydistill.targets.store import reserve

    path = tmp_path / "labels.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.int32, shape=(1 << 20,))
    assert path.stat().st_blocks * 512 < (1 << 20)  # sparse
    reserve(path)
    assert path.stat().st_blocks * 512 >= 4 << 20

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DiskFull, match=f"no space left on device writing {path} "):
        reserve(path)


def test_a_trial_that_filled_the_disk_is_recorded_with_the_one_line(tmp_path):
    """Ray wraps the worker's error in its own: the full disk's line is found inside."""
    from raydistill.tracking.tune_callback import trial_error

    line = "no space left on device writing /runs/ray_results (needs ≈ 8.3 MB more; free: 0.0 MB)"
    error = tmp_path / "error.txt"
    error.write_text("ray.train.v2.api.exceptions.WorkerGroupError: Training failed due to worker errors:\n"
                     "[Rank 0 Error Snippet]:\nTraceback (most recent call last):\n  File \"loop.py\", line 1\n"
                     f"raydistill.errors.DiskFull: {line}\n\nThe above exception was the direct cause of:\n"
                     "ray.exceptions.RayTaskError(WorkerGroupError): (pid=1) worker group failed\n")
    assert trial_error(error) == ("error", line)


def test_an_sqlite_store_on_a_full_disk_is_one_line_too(monkeypatch, capsys, tmp_path):
    """MLflow wraps SQLite's "database or disk is full" in its own exception."""
    import sqlite3

    import raydistill.cli as cli
    from mlflow.exceptions import MlflowException

    def full(args):
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as e:
            raise MlflowException("(sqlite3.OperationalError) database or disk is full\n[SQL: UPDATE runs]") from e

    monkeypatch.setattr(cli, "_dispatch", full)
    assert main(["report", "--workdir", str(tmp_path), "--experiment", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"raydistill: error: no space left on device writing {tmp_path}/mlflow.db (")
