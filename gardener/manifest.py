"""What every output records about how it was made: inputs with hashes, arguments, versions."""
from __future__ import annotations

import hashlib
import platform
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("vit-gardener", "numpy", "scipy", "torch", "transformers", "accelerate", "safetensors")


def sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# Digests by (path, size, mtime): a file is hashed once per process, and can be hashed in the
# background (hashlib releases the GIL) while a command does its real work.
_DIGESTS: dict[tuple, Future] = {}
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gardener-sha256")


def _digest_future(path: Path) -> Future:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _HASHER.submit(sha256, path)
    return _DIGESTS[key]


def prehash(paths: list[str | Path]) -> None:
    """Start hashing input files in the background; `file_record` picks the digests up."""
    for path in paths:
        _digest_future(Path(path))


def file_record(path: str | Path, label: str | None = None) -> dict[str, Any]:
    """Path (or the label to record instead), size and sha256 of one input file."""
    path = Path(path)
    return {"path": label or str(path.resolve()), "bytes": path.stat().st_size,
            "sha256": _digest_future(path).result()}


def source_hash(files: list[str | Path]) -> str:
    """One hash for a checkpoint: over the sha256 of each of its weight files."""
    digests = [file_record(f)["sha256"] for f in sorted(Path(f) for f in files)]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python and the packages whose behaviour shapes the results."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    from .plugins import loaded

    found.update({f"plugin {name}": version for name, version in loaded().items()})  # they may change scores
    return found


def manifest(kind: str, inputs: list[str | Path | tuple[Path, str]], arguments: dict[str, Any]) -> dict[str, Any]:
    """A manifest: what was made, from which files (hashed), with which arguments and versions.

    An input may be a (path, label) pair to record a portable label instead of the path.
    """
    return {
        "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]),
        "inputs": [file_record(*p) if isinstance(p, tuple) else file_record(p) for p in inputs],
        "arguments": arguments,
        "versions": versions(),
    }
