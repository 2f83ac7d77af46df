"""The lock of a run folder: one run writes a folder at a time.

A run (finetune, pretrain) holds `PARENT/.NAME.lock`, beside its folder and not in it (a fresh
run replaces the folder), with an exclusive `flock` for as long as it writes. The kernel lets go
of it when the process ends, however it ends, so a killed run never leaves a lock behind; a second
run on the same folder is refused at once, with the holder's host, pid and start time. The lock
file is removed on release; a run that got the lock checks that the file it locked is still the one
in place, so removing it cannot let two runs in.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import GardenerError
from .fileio import short_name


log = logging.getLogger("gardener")
_UNSUPPORTED = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL)  # a file system without flock


def lock_path(folder: Path) -> Path:
    """`.NAME.lock` beside the folder, its links resolved (a link to a run folder locks the folder itself)."""
    folder = Path(folder).resolve()
    return folder.with_name(f".{short_name(folder.name)}.lock")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"{info['host']} pid {info['pid']}, since {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, what: str = "run") -> Iterator[None]:
    """Hold the lock of the run folder `folder` (its parent is made if missing); a GardenerError
    naming the holder when another process holds it."""
    path = lock_path(Path(folder))
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GardenerError(f"{folder}: another {what} is writing to it ({_holder(path)}); wait for it to end "
                                f"or use another folder") from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _UNSUPPORTED:
                raise
            log.warning("%s: this file system cannot lock files (%s); the run folder is not locked", folder,
                        exc.strerror)
            with contextlib.suppress(OSError):
                path.unlink()
            yield
            return
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed the file we locked: lock the one in place now
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
