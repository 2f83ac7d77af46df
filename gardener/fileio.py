"""Safe output: never onto an input, never over what exists without force, whole or not at all.

Every command that writes goes through here:
- `check_output` refuses an output that is, holds, or lies inside one of the command's inputs
  (compared as given and with symlinks resolved), even with force, and then `check_writable`;
- `check_writable` refuses an existing output without force, a name or path longer than the file
  system allows, and a place where nothing can be made;
- `atomic_file` / `atomic_dir` write to a temporary sibling and rename it into place; without
  force the rename never replaces what appeared meanwhile (another run writing the same output), and
  a file output never replaces a folder; whatever fails for want of space while the temporary is
  written becomes one `DiskFull` line (`oserrors.writing`).

Temporaries are named after the output, this host and this process
(`.NAME.gardener-HOST-PID-XXXX.tmp`, NAME shortened with a hash when it is long), so that a run
killed before it could clean up (SIGKILL, power loss) leaves debris the next run of the same
output recognises and removes. What is renamed into place gets the permissions the umask gives
any new file, not the private ones of a temporary.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import GardenerError, SettingError
from .oserrors import writing

def _host_tag() -> str:
    """This host in a file name: its name, shortened with a hash when long (two hosts never share one)."""
    name = re.sub(r"[^\w]", "_", socket.gethostname()) or "host"
    return name if len(name) <= 40 else f"{name[:28]}~{hashlib.sha256(name.encode()).hexdigest()[:10]}"


_HOST = _host_tag()
_LONG_NAME = 120  # a longer output name is shortened (with a hash) inside its temporary's name


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


# --- outputs against inputs ----------------------------------------------------------------------------

def _forms(path: Path) -> set[Path]:
    """A path as given (made absolute, `..` folded) and with every symlink resolved."""
    return {Path(os.path.abspath(path)), Path(path).resolve()}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def touches(out: Path, item: Path) -> str | None:
    """How writing `out` would touch `item`: "is", "is inside" or "holds"; None when it would not."""
    if _same_file(out, item):
        return "is"
    for a in _forms(out):
        for b in _forms(item):
            if a == b:
                return "is"
            if a.is_relative_to(b):
                return "is inside"
            if b.is_relative_to(a):
                return "holds"
    return None


def check_output(out: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike | None]], force: bool,
                 flag: str = "-o") -> None:
    """Refuse an output that is, lies inside, or holds one of `inputs` ((what, path) pairs: "the model",
    "the data", ...), whether or not `force` is given; then `check_writable(out, force)`.

    Inputs are compared as given and with symlinks resolved, so a link to an input, or a folder
    whose link leads above one, counts as the input itself.
    """
    out = Path(out)
    for what, item in inputs:
        if item is None:
            continue
        how = touches(out, Path(item))
        if how is not None:
            where = {"is": f"is {what} {item}", "is inside": f"is inside {what} {item}",
                     "holds": f"holds {what} {item}"}[how]
            if flag.startswith("-"):  # a command's own check, in its flags
                raise GardenerError(f"{flag} {out}: {where}; an output never replaces or writes into an input "
                                    f"(--force included): write it elsewhere")
            raise SettingError(flag, f"{out}: {where}; an output never replaces or writes into an input "
                                     f"({{force}} included): write it elsewhere")
    check_writable(out, force)


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_writable(path: Path, force: bool) -> None:
    """Refuse an existing output unless forced, a name or path too long for the file system, and a
    place where it cannot be made.

    Missing parent folders are fine (they are made when the output is written), as long as the
    nearest existing one is a writable folder.
    """
    path = Path(path)
    if len(os.fsencode(os.path.abspath(path))) >= 4096:
        raise GardenerError(f"{shown(path)}: the path is {len(os.fsencode(os.path.abspath(path)))} bytes long; "
                            f"the system allows 4095")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    limit = _name_max(existing if existing.is_dir() else Path("."))
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise GardenerError(f"{shown(path)}: the name {part[:24]}... is {len(os.fsencode(part))} bytes long; "
                                f"the file system allows {limit}")
    if (path.exists() or path.is_symlink()) and not force:
        raise GardenerError(f"{path}: already exists; pass --force to overwrite it")
    if not existing.is_dir():
        raise GardenerError(f"{path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK):
        raise GardenerError(f"{path}: folder {existing} is not writable")


def shown(path: Path) -> str:
    """A path short enough to show in a one-line message."""
    text = str(path)
    return text if len(text) <= 80 else f"{text[:38]}...{text[-38:]}"


# --- temporaries ----------------------------------------------------------------------------------------

def short_name(name: str) -> str:
    """The output's name as its temporaries carry it: shortened, with a hash, when it is long."""
    if len(os.fsencode(name)) <= _LONG_NAME:
        return name
    return f"{name[:60]}~{hashlib.sha256(os.fsencode(name)).hexdigest()[:12]}"


def alive(pid: int) -> bool:
    """Whether a process of this host runs (one of someone else's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # someone else's process, or no pid we can ask about
        return True
    return True


def clean_stale(path: Path) -> list[Path]:
    """Remove temporaries of `path` left by processes of this host that no longer run."""
    pattern = re.compile(rf"^\.{re.escape(short_name(path.name))}\.gardener-{re.escape(_HOST)}-(\d+)-[^.]+\.tmp$")
    removed = []
    if not path.parent.is_dir():
        return removed
    for item in path.parent.iterdir():
        match = pattern.match(item.name)
        if match and int(match.group(1)) != os.getpid() and not alive(int(match.group(1))):
            shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
            removed.append(item)
    return removed


def _prepare(path: Path, force: bool, folder: bool) -> str:
    check_writable(path, force)
    if not folder and path.is_dir() and not path.is_symlink():  # --force replaces a file, never a folder
        raise GardenerError(f"{path}: is a folder; give a file name for this output")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    return f".{short_name(path.name)}.gardener-{_HOST}-{os.getpid()}-"


# --- putting a finished output in place -------------------------------------------------------------------

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst` unless `dst` exists (FileExistsError): atomically where the kernel and the
    file system offer it (Linux renameat2), else by looking first."""
    call = getattr(_LIBC, "renameat2", None) if _LIBC is not None else None
    if call is not None:
        if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(dst))
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
            raise OSError(code, os.strerror(code), str(dst))
    if os.path.lexists(dst):  # a file system without RENAME_NOREPLACE: the short race of a look first
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def _appeared(path: Path) -> GardenerError:
    return GardenerError(f"{path}: appeared while this command was writing it (another run writing the same "
                         f"output?); it was left as it is; pass --force to replace it")


def _put_in_place(tmp: Path, path: Path, force: bool) -> None:
    """The finished temporary becomes `path`: replacing what is there only with `force`."""
    if not force:
        try:
            rename_noreplace(tmp, path)
        except FileExistsError:
            raise _appeared(path) from None
        return
    if path.is_dir() and not path.is_symlink():  # forced: move the old folder aside, drop it once the new one is in
        old = Path(tempfile.mkdtemp(prefix=f".{short_name(path.name)}.old-", dir=path.parent))
        os.replace(path, old / "old")
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old / "old", path)  # the old output goes back where it was
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    if tmp.is_dir() and (path.exists() or path.is_symlink()):
        path.unlink()
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, force: bool = False, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it becomes `path` only if the block succeeds (`needed`: the
    bytes it takes, said if the disk fills up)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_prepare(path, force, folder=False), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with writing(path, needed):
            yield Path(tmp)
        if os.path.exists(tmp):
            public_mode(Path(tmp), folder=False)
        _put_in_place(Path(tmp), path, force)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False, needed: int | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; it becomes `path` only on success (`needed`: the
    bytes it takes, said if the disk fills up)."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prepare(path, force, folder=True), suffix=".tmp", dir=path.parent))
    try:
        with writing(path, needed):
            yield tmp
        public_mode(tmp, folder=True)
        _put_in_place(tmp, path, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str, force: bool = False) -> Path:
    """Write a text file atomically."""
    with atomic_file(path, force, len(text.encode())) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
