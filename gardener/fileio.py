"""Safe output: write to a temporary sibling, then rename, and never clobber without force.

Temporaries are named after the output, this host and this process
(`.NAME.gardener-HOST-PID-XXXX.tmp`), so that a run killed before it could clean up (SIGKILL,
power loss) leaves debris the next run of the same output recognises and removes. What is
renamed into place gets the permissions the umask gives any new file, not the private ones
of a temporary.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import GardenerError

_HOST = re.sub(r"[^\w]", "_", socket.gethostname()) or "host"


def _umask() -> int:
    """The process's umask: read where Linux shows it, else set and restored (racy with other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: Path, folder: bool) -> None:
    """Give a temporary the mode a plain new file (0666) or folder (0777) gets under the umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def check_writable(path: Path, force: bool) -> None:
    """Refuse an existing output unless forced, and a place where it cannot be made.

    Missing parent folders are fine (they are made when the output is written), as long as the
    nearest existing one is a writable folder.
    """
    if path.exists() and not force:
        raise GardenerError(f"{path}: already exists; pass --force to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise GardenerError(f"{path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK):
        raise GardenerError(f"{path}: folder {existing} is not writable")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale(path: Path) -> list[Path]:
    """Remove temporaries of `path` left by processes of this host that no longer run."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.gardener-{re.escape(_HOST)}-(\d+)-[^.]+\.tmp$")
    removed = []
    if not path.parent.is_dir():
        return removed
    for item in path.parent.iterdir():
        match = pattern.match(item.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
            removed.append(item)
    return removed


def _prepare(path: Path, force: bool) -> str:
    check_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    return f".{path.name}.gardener-{_HOST}-{os.getpid()}-"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_prepare(path, force), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):
            public_mode(Path(tmp), folder=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; it becomes `path` only on success."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prepare(path, force), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        public_mode(tmp, folder=True)
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
