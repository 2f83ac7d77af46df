"""Safe output: write to a temporary sibling, then rename, and never clobber without force."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import GardenerError


def check_writable(path: Path, force: bool) -> None:
    """Refuse an existing output unless forced, and a parent folder that cannot be written."""
    if path.exists() and not force:
        raise GardenerError(f"{path}: already exists; pass --force to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise GardenerError(f"{path}: parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise GardenerError(f"{path}: parent folder {parent} is not writable")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    check_writable(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; it becomes `path` only on success."""
    path = Path(path)
    check_writable(path, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.is_dir():  # forced: move the old folder aside, then drop it once the new one is in place
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
            return
        if path.exists():
            path.unlink()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str, force: bool = False) -> Path:
    """Write a text file atomically."""
    with atomic_file(path, force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
