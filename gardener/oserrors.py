"""One error path for what the operating system refuses: a full disk, a name too long, a permission.

A write that fails because the disk (or the quota) is full becomes `DiskFull`, one line naming the
path, the space it needed where that is known and the space left, whichever library did the
writing (PyTorch and safetensors report a full disk in their own words). Outputs that know their
size check it before they start (`check_space`). Every other OSError that reaches the command line
is said in one line too (`describe`).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import GardenerError

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_ALMOST_FULL = 1 << 20  # a library error while less than this is free is taken for a full disk


class DiskFull(GardenerError):
    """A write that found no space left (the disk, a quota or a file size limit)."""


def size(nbytes: float | None) -> str:
    """Bytes as a short human figure: 512 B, 1.5 KB, 12.3 MB, 4.20 GB."""
    if nbytes is None:
        return "unknown"
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{int(nbytes)} B"


def _existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    return next((p for p in (path, *path.parents) if p.is_dir()), Path("/"))


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes a process may still write where `path` is (or would be) made; None when unknown."""
    try:
        return shutil.disk_usage(_existing(Path(path))).free
    except OSError:
        return None


def disk_full(path: str | os.PathLike, needed: int | None = None) -> DiskFull:
    """The one-line error of a write to `path` that found no space."""
    free = free_bytes(path)
    need = f"it needs about {size(needed)}, " if needed else ""
    return DiskFull(f"{path}: no space left on the device ({need}{size(free)} free); free some space or "
                    f"write elsewhere")


def check_space(path: str | os.PathLike, needed: int, what: str = "") -> None:
    """Refuse, before anything is written, an output of `needed` bytes where less is free."""
    free = free_bytes(path)
    if free is not None and needed > free:
        raise DiskFull(f"{path}: {what or 'the output'} needs {size(needed)}, and {size(free)} is free there; "
                       f"free some space or write elsewhere")


def _is_full(exc: BaseException, path: Path, needed: int | None) -> bool:
    if isinstance(exc, OSError) and exc.errno in FULL:
        return True
    if isinstance(exc, OSError) and exc.errno is not None:
        return False  # another OS error (a permission, a name): said as it is
    text = str(exc).lower()
    if "no space left" in text or "disk quota" in text:
        return True
    free = free_bytes(path)  # a library's own words for a failed write ("unexpected pos 704 vs 598")
    return free is not None and free < max(_ALMOST_FULL, needed or 0)


@contextlib.contextmanager
def writing(path: str | os.PathLike, needed: int | None = None) -> Iterator[None]:
    """Turn a write to `path` that fails for want of space into `DiskFull` (the caller's temporaries
    are removed on the way out, as for any error)."""
    try:
        yield
    except GardenerError:
        raise
    except Exception as exc:
        if _is_full(exc, Path(path), needed):
            raise disk_full(path, needed) from None
        raise


def describe(exc: OSError) -> str:
    """One line for an OSError that reached the command line: the path and what the system said."""
    where = exc.filename if exc.filename is not None else ""
    if exc.errno in FULL:
        return str(disk_full(where or ".", None))
    if exc.errno == errno.ENAMETOOLONG:
        shown = str(where)
        shown = shown if len(shown) <= 80 else f"{shown[:38]}...{shown[-38:]}"
        return f"{shown}: a name or path too long for the file system ({len(os.fsencode(str(where)))} bytes)"
    if exc.errno == errno.ELOOP:
        return f"{where}: a symbolic link loop"
    text = exc.strerror or exc.__class__.__name__
    second = f" -> {exc.filename2}" if exc.filename2 else ""
    return f"{where}{second}: {text}" if where else f"{text} ({exc})"
