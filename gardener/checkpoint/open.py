"""Opening a checkpoint: an HF directory (sharded or not), a safetensors file or a PyTorch file."""
from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GardenerError
from .safetensors_file import SafetensorsFile
from .tensors import HF_WEIGHT_FILES, TORCH_SUFFIXES, TensorInfo
from .torch_file import TorchFile

@dataclass
class Checkpoint:
    """A checkpoint opened for lazy reading. `read(name)` returns a (possibly mapped) array."""

    path: Path
    format: str  # "hf-dir", "safetensors" or "torch"
    files: list[Path]
    config: dict | None = None
    warnings: list[str] = field(default_factory=list)  # what is odd but readable (which weight files were read)
    _infos: dict[str, TensorInfo] = field(default_factory=dict, repr=False)
    _readers: dict[str, object] = field(default_factory=dict, repr=False)

    def names(self) -> list[str]:
        return list(self._infos)

    def info(self, name: str) -> TensorInfo:
        return self._infos[name]

    def read(self, name: str) -> np.ndarray:
        return self._readers[name].read(name)  # type: ignore[attr-defined]

    def byte_span(self, name: str) -> tuple[Path, int, int] | None:
        """(file, offset, bytes) of a tensor stored as its raw bytes (safetensors), that a copy can take as they
        are; None where it is not (a PyTorch file)."""
        reader = self._readers[name]
        return reader.byte_span(name) if isinstance(reader, SafetensorsFile) else None

    @property
    def num_params(self) -> int:
        """Parameters as a model counts them: the floating-point tensors, not integer buffers."""
        return sum(i.numel for i in self._infos.values() if i.is_parameter)

    def as_inputs(self, given: str | Path | None = None) -> list[tuple[str, Path]]:
        """The checkpoint as inputs an output must not touch (`fileio.check_output`): each file it reads
        (links resolved there), then the path it was given as."""
        return [("a file of the checkpoint", f) for f in self.files] + [("the checkpoint", Path(given or self.path))]

    @property
    def torch_file(self) -> TorchFile | None:
        """The reader of a single PyTorch file (its container, nesting and prefix), if that is the format."""
        return next(iter(self._readers.values())) if self.format == "torch" else None

    def _add(self, reader: SafetensorsFile | TorchFile) -> None:
        for info in reader.infos.values():
            if info.name in self._infos:
                raise GardenerError(f"{self.path}: tensor {info.name!r} is stored twice, in "
                                    f"{self._readers[info.name].path.name} and in {reader.path.name}")
            self._infos[info.name] = info
            self._readers[info.name] = reader


def _open_file(path: Path, ckpt: Checkpoint) -> None:
    if path.suffix == ".safetensors":
        ckpt._add(SafetensorsFile(path))
    elif path.suffix in TORCH_SUFFIXES:
        ckpt._add(TorchFile(path))
    else:
        raise GardenerError(f"{path}: unknown checkpoint type; expected .safetensors, "
                            f"{', '.join(TORCH_SUFFIXES)} or a Hugging Face model directory")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GardenerError(f"{path}: not readable JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise GardenerError(f"{path}: expected a JSON object")
    return data


def _open_index(index: Path, ckpt: Checkpoint) -> None:
    """The shards an index names, read whole, as transformers reads them: a tensor a shard holds but the
    index leaves out is read too (and said); one the index maps to a shard that lacks it, one stored in
    two shards, or a shard outside the model folder is an error."""
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise GardenerError(f"{index}: has no 'weight_map'; expected a sharded-checkpoint index")
    shards: dict[str, set[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise GardenerError(f"{index}: maps tensor {name!r} to {shard!r}; expected the name of a shard file")
        if Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise GardenerError(f"{index}: lists shard {shard!r}, which is not inside the model folder")
        shards.setdefault(shard, set()).add(name)
    unlisted: list[tuple[str, str]] = []
    for shard, names in sorted(shards.items()):
        shard_path = index.parent / shard
        if not shard_path.is_file():
            raise GardenerError(f"{index}: lists shard {shard}, which is missing")
        ckpt.files.append(shard_path)
        before = set(ckpt.names())
        _open_file(shard_path, ckpt)
        found = set(ckpt.names()) - before
        lacking = sorted(names - found)
        if lacking:  # a tensor silently absent would be scored without it and pruned away
            raise GardenerError(f"{index}: maps tensor {lacking[0]!r} to shard {shard}, which does not hold it"
                                + (f" ({len(lacking)} such tensors)" if len(lacking) > 1 else ""))
        unlisted += [(name, shard) for name in sorted(found - set(weight_map))]
    if unlisted:
        name, shard = unlisted[0]
        ckpt.warnings.append(f"{index.name} does not list {len(unlisted)} tensor(s) its shards hold (e.g. {name!r} "
                             f"in {shard}); they are read and kept, as transformers reads them")


def _open_dir(path: Path) -> Checkpoint:
    """The weights transformers would load from this folder (the first of HF_WEIGHT_FILES present)."""
    config = _read_json(path / "config.json") if (path / "config.json").is_file() else None
    ckpt = Checkpoint(path=path, format="hf-dir", files=[], config=config)
    present = [name for name in HF_WEIGHT_FILES if (path / name).is_file()]
    if not present:
        raise GardenerError(f"{path}: no weights found; expected one of {', '.join(HF_WEIGHT_FILES)}")
    candidate = path / present[0]
    ckpt.files.append(candidate)
    if candidate.name.endswith(".index.json"):
        _open_index(candidate, ckpt)
    else:
        _open_file(candidate, ckpt)
    if len(present) > 1:
        ckpt.warnings.append(f"{path} holds {' and '.join(present)}; like transformers, gardener reads {present[0]} "
                             f"and ignores the rest (a pruned copy leaves them out)")
    return ckpt


def _missing(path: Path) -> GardenerError:
    """Why a path that does not exist does not: a link loop, a broken link, or nothing there."""
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return GardenerError(f"{path}: a symbolic link loop (it never reaches a file)")
        return GardenerError(f"{path}: a broken symbolic link (to {os.readlink(path)}, which does not exist)")
    return GardenerError(f"{path}: no such file or directory")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open an HF model directory, a .safetensors file or a PyTorch state-dict file lazily."""
    path = Path(path)
    if not path.exists():
        raise _missing(path)
    if path.is_dir():
        ckpt = _open_dir(path)
    elif not path.is_file():
        raise GardenerError(f"{path}: not a regular file (a pipe, socket or device); expected a checkpoint file")
    else:
        ckpt = Checkpoint(path=path, format="safetensors" if path.suffix == ".safetensors" else "torch",
                          files=[path])
        _open_file(path, ckpt)
    if not ckpt.names():
        raise GardenerError(f"{path}: the checkpoint holds no tensors")
    return ckpt
