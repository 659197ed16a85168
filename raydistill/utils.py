"""Small helpers shared by every stage: stable hashes, atomic writes, progress lines."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Sequence

from raydistill.errors import DiskFull, UserError


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


# Writes. Every file raydistill keeps (checkpoints, caches, markers, indexes) goes through
# ``atomic_write`` (or ``atomic_dir`` for a directory): a crash or a full disk leaves the last
# good state, and a lack of space is one line naming the file (docs/architecture.md#rules-the-layout-keeps).

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# below this many free bytes, a failed write is taken for a full disk: torch.save reports ENOSPC
# as a RuntimeError ("file write failed", "basic_ios::clear: iostream error", "unexpected pos")
LOW_SPACE = 1 << 20


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free (to this user) on the file system of ``path`` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _size_on_disk(path: Path) -> int:
    """Bytes a file or a directory tree holds (0 if gone)."""
    try:
        if path.is_dir():
            return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return path.stat().st_blocks * 512
    except OSError:
        return 0


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n < 10e6 else f"{n / 1e6:,.0f} MB"


def disk_full(error: BaseException, path: str | os.PathLike, *, needed: Optional[int] = None,
              free_at_failure: Optional[int] = None, written: int = 0) -> Optional[DiskFull]:
    """The :class:`DiskFull` to raise for ``error``, raised while writing ``path``, or None if the
    write did not fail for lack of space.

    It did if ``error`` (or an exception it was raised from) is an ``OSError`` ENOSPC or EDQUOT,
    or if it is an ``OSError``/``RuntimeError`` and the disk was (nearly) full when it happened
    (``free_at_failure``, measured before any temporary file was removed) or has less free than
    the write ``needed`` (its size in bytes, when known). ``written``: bytes the failed write had
    put down, said when ``needed`` is not known.
    """
    if not isinstance(error, (OSError, RuntimeError)):  # a DiskFull already said where
        return None
    chain, seen = [], error
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    codes = {getattr(e, "errno", None) for e in chain if isinstance(e, OSError)}
    free = free_bytes(Path(path).parent)
    if not codes & set(DISK_FULL_ERRNOS):
        low = free_at_failure is not None and free_at_failure < LOW_SPACE
        if not (low or (needed is not None and needed > free)):
            return None
    what = "disk quota exceeded" if errno.EDQUOT in codes else "no space left on device"
    if needed is not None and needed > free:
        amount = f"needs ≈ {_megabytes(needed - free)} more; free: {_megabytes(free)}"
    elif written:
        amount = f"it filled up after {_megabytes(written)}; free: {_megabytes(free)}"
    else:
        amount = f"free: {_megabytes(free)}"
    return DiskFull(f"{what} writing {path} ({amount})")


@contextlib.contextmanager
def disk_guard(path: str | os.PathLike, needed: Optional[int] = None) -> Iterator[None]:
    """Turn a failure of the writes in the block (to ``path``, in place) for lack of space into
    a one-line :class:`DiskFull`; other errors pass through."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        full = disk_full(e, path, needed=needed, free_at_failure=free_bytes(Path(path).parent))
        if full is None:
            raise
        raise full from e


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, size: Optional[int] = None) -> Iterator[IO]:
    """A file object whose content replaces ``path`` only once all of it is on disk.

    It writes a temporary file beside ``path`` (same directory: same file system), flushes and
    fsyncs it, then renames it over ``path``: readers, and a rerun after a crash or a full disk,
    see the old file (or none) or the new one, never a part. If the block raises, the temporary
    file is removed; a failure for lack of space becomes a one-line :class:`DiskFull` naming
    ``path`` (``size``: the bytes the file will take, when known, to say how much is missing).
    """
    path = Path(path)
    with disk_guard(path, size):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from other users
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        free, written = free_bytes(path.parent), _size_on_disk(Path(tmp))  # before the temporary file goes
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        full = disk_full(e, path, needed=size, free_at_failure=free, written=written)
        if full is None:
            raise
        raise full from e
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file so that readers see the old or the new content, never a part."""
    with atomic_write(path, "w", size=len(text.encode())) as f:
        f.write(text)


def save_npy(path: str | os.PathLike, array) -> None:
    """``np.save`` through :func:`atomic_write`."""
    import numpy as np

    array = np.asanyarray(array)
    with atomic_write(path, size=array.nbytes + 128) as f:
        np.save(f, array)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place.

    Readers never see a half-written directory: either ``final`` is absent (or still the old
    one) or it is complete. If the body raises, the temporary directory is removed (a failure
    for lack of space becomes a one-line :class:`DiskFull`). If ``final`` appeared meanwhile,
    the existing one is kept, unless ``replace`` asks to swap the new one in.
    """
    final = Path(final)
    with disk_guard(final):
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
    except BaseException as e:
        free, written = free_bytes(final.parent), _size_on_disk(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full(e, final, free_at_failure=free, written=written)
        if full is None:
            raise
        raise full from e
    _fsync_dir(final.parent)


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


def read_yaml_mapping(path: str | os.PathLike, what: str, allowed, shape: str = "a mapping at the top level",
                      item: str = "key") -> dict:
    """:func:`read_yaml` for files whose top level is a mapping of known keys: anything else is a
    one-line :class:`UserError` naming the file (``shape`` says what was expected, ``item`` what
    a key is: "unknown key(s) ...")."""
    raw = read_yaml(path, what)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected {shape}, found {type(raw).__name__}")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise UserError(f"{path}: unknown {item}(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
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


def length_batches(lengths: Sequence[int], max_samples: float, *, longest_first: bool) -> list[list[int]]:
    """Positions of ``lengths`` grouped by similar length so that each padded batch (rows ×
    its longest) holds at most ``max_samples``; a longer one is a batch of its own. The rule:
    sorted by length, longest first (``longest_first``, the evaluation's feature pass) or
    shortest first (the teacher pass), equal lengths in the given order, and a batch is cut
    where the next position would pass the budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=longest_first)  # stable
    batches: list[list[int]] = []
    for i in order:
        longest = max(lengths[batches[-1][0]], lengths[i]) if batches else lengths[i]
        if batches and (len(batches[-1]) + 1) * longest <= max_samples:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def check_choice(name: str, value, allowed: tuple) -> None:
    """A ``ValueError`` naming ``name`` and the ``allowed`` values unless ``value`` is one of them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, found {value!r}")


def is_number(value) -> bool:
    """Whether ``value`` is a finite int or float (not a bool, not NaN or inf): a score that counts."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def log(msg: str) -> None:
    """A progress message for the user (stderr, so stdout stays machine-readable)."""
    sys.stderr.write(f"[raydistill] {msg}\n")
    sys.stderr.flush()


def one_line(error: str | BaseException, limit: Optional[int] = 300, *, first_line: bool = False,
             with_type: bool = False) -> str:
    """An error (a message, or an exception's) as one line of at most ``limit`` characters.

    By default all of its lines, whitespace collapsed, cut with "…" ("no error message" if
    empty). ``first_line``: its first line only, cut without a mark (``limit`` None: not cut),
    and an exception without a message is its type's name; ``with_type`` puts the type first
    ("ValueError: ...")."""
    text = error if isinstance(error, str) else str(error)
    if not first_line:
        line = " ".join(text.split()) or "no error message"
        return line if limit is None or len(line) <= limit else line[:limit - 1] + "…"
    text = text.strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0][:limit]
    return f"{type(error).__name__}: {line}" if with_type else line
