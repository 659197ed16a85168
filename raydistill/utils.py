"""Small helpers shared by every stage: stable hashes, atomic writes, progress lines."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-serialisable object that does not depend on dict order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_hash(path: str | os.PathLike, length: int = 12) -> str:
    """sha256 of a file's bytes (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place.

    Readers never see a half-written directory: either ``final`` is absent (or still the old
    one) or it is complete. If the body raises, the temporary directory is removed. If
    ``final`` appeared meanwhile, the existing one is kept, unless ``replace`` asks to swap
    the new one in.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists() and replace:
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old)
        elif final.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file so that readers see the old or the new content, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Progress:
    """A single self-updating progress line on stderr (plain lines when not a TTY).

    Long stages (synthesis, pretraining, feature extraction, k-means) use it so a
    user sees how far along they are and how long is left.
    """

    def __init__(self, label: str, total: int, unit: str = "", every_s: float = 5.0):
        self.label, self.total, self.unit = label, max(int(total), 1), unit
        self.every_s = every_s
        self.start = self._last = time.monotonic()
        self.done = 0
        self.tty = sys.stderr.isatty()

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or now - self._last >= (0.2 if self.tty else self.every_s):
            self._last = now
            self._print(note)

    def _print(self, note: str) -> None:
        elapsed = time.monotonic() - self.start
        frac = min(self.done / self.total, 1.0)
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        line = (
            f"[{self.label}] {self.done}/{self.total}{self.unit} ({100 * frac:.0f}%) "
            f"{elapsed:.0f}s elapsed, ~{eta:.0f}s left"
        )
        if note:
            line += f"  {note}"
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if self.done >= self.total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch threads, then restore the previous count.

    Small per-utterance ops (MFCC, filterbanks) are many times slower with 2 threads than
    with 1 when the other core is busy (measured: 0.23 s vs 0.012 s per Kaldi MFCC).
    """
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


def read_yaml(path: str | os.PathLike, what: str):
    """Parse a YAML file; a missing or malformed one is a one-line :class:`UserError`."""
    import yaml

    from raydistill.errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, not a YAML file")
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not a text file (not UTF-8): expected YAML") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None


def read_yaml_mapping(path: str | os.PathLike, what: str, allowed, shape: str = "a mapping at the top level") -> dict:
    """:func:`read_yaml` for files whose top level is a mapping of known keys: anything else is a
    one-line :class:`UserError` naming the file (``shape`` says what was expected)."""
    from raydistill.errors import UserError

    raw = read_yaml(path, what)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected {shape}")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    return raw


def peak_memory(device="cpu") -> dict[str, float]:
    """Peak resident memory of this process so far and, on a CUDA ``device``, its peak allocated
    GPU memory, in MiB (trials report it; the benchmarks print it)."""
    import resource

    out = {"peak_host_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB
    if getattr(device, "type", str(device).split(":")[0]) == "cuda":
        import torch

        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def is_number(value) -> bool:
    """Whether ``value`` is a finite int or float (not a bool, not NaN or inf): a score that counts."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def log(msg: str) -> None:
    """A progress message for the user (stderr, so stdout stays machine-readable)."""
    sys.stderr.write(f"[raydistill] {msg}\n")
    sys.stderr.flush()


def one_line(text: str, limit: int = 300) -> str:
    """``text`` (an error message, say) as one line of at most ``limit`` characters."""
    line = " ".join(text.split()) or "no error message"
    return line if len(line) <= limit else line[:limit - 1] + "…"
