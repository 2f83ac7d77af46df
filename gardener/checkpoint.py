"""Lazy reading of checkpoints: HF directories, safetensors files and PyTorch state dicts.

Tensors are exposed as numpy arrays that view the file (safetensors are memory-mapped;
PyTorch zip files are loaded with `mmap=True`), so a block is only read from disk when a
criterion touches it and peak memory follows the largest block, not the checkpoint.
bfloat16, which numpy lacks, is returned as its raw uint16 bit patterns; `TensorInfo.dtype`
says which.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import pickletools
import re
import struct
import warnings
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import numpy as np

from .errors import GardenerError

# safetensors dtype tag -> numpy dtype of the array we hand out (BF16 as raw bits)
_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
    "F8_E4M3": np.uint8, "F8_E5M2": np.uint8,
}
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
NESTED_KEYS = ("model", "module", "state_dict", "model_state")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
HF_WEIGHT_FILES = (  # in the order transformers' from_pretrained looks for them
    "model.safetensors", "model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class TensorInfo:
    """Name, safetensors-style dtype tag and shape of one stored tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(_ST_DTYPES[self.dtype]).itemsize


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

    @property
    def num_params(self) -> int:
        return sum(i.numel for i in self._infos.values())

    def as_inputs(self, given: str | Path | None = None) -> list[tuple[str, Path]]:
        """The checkpoint as inputs an output must not touch (`fileio.check_output`): each file it reads
        (links resolved there), then the path it was given as."""
        return [("a file of the checkpoint", f) for f in self.files] + [("the checkpoint", Path(given or self.path))]

    @property
    def torch_file(self) -> _TorchFile | None:
        """The reader of a single PyTorch file (its container, nesting and prefix), if that is the format."""
        return next(iter(self._readers.values())) if self.format == "torch" else None

    def _add(self, reader: _SafetensorsFile | _TorchFile) -> None:
        for info in reader.infos.values():
            if info.name in self._infos:
                raise GardenerError(f"{self.path}: tensor {info.name!r} is stored twice, in "
                                    f"{self._readers[info.name].path.name} and in {reader.path.name}")
            self._infos[info.name] = info
            self._readers[info.name] = reader


class _SafetensorsFile:
    """Parses a safetensors header and validates it against the file before mapping data.

    What the safetensors library refuses is refused here too, so that no tensor is silently lost
    or read from the wrong bytes: a repeated name, a shape or offset that is not a whole number of
    0 or more, a tensor whose bytes do not match its shape, and data spans that overlap, leave gaps
    or do not cover the data exactly (a truncated file, or bytes after the last tensor).
    """

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise self._bad("file is shorter than the 8-byte header length")
            (hlen,) = struct.unpack("<Q", head)
            if hlen > size - 8 or hlen > 100_000_000:
                raise self._bad(f"header length {hlen} exceeds the file size {size}")
            try:
                header = json.loads(handle.read(hlen), object_pairs_hook=_Object)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise self._bad(f"header is not valid JSON ({exc.__class__.__name__})") from None
        if not isinstance(header, dict):
            raise self._bad("header is not a JSON object")
        differing = [key for key, same in header.repeated if not same]
        if differing:  # json keeps the last entry: the bytes of the others would be lost
            raise self._bad(f"the header names {differing[0]!r} twice, with different entries")
        self.data_start = 8 + hlen
        self.infos: dict[str, TensorInfo] = {}
        self.spans: dict[str, tuple[int, int]] = {}
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise self._bad("__metadata__ must map names to strings")
        for name, entry in header.items():
            self._add_entry(name, entry)
        self._check_spans(size - self.data_start)
        self._map: np.memmap | None = None

    def _bad(self, why: str) -> GardenerError:
        return GardenerError(f"{self.path}: not a valid safetensors file: {why}")

    def _add_entry(self, name: str, entry: object) -> None:
        if isinstance(entry, _Object) and entry.repeated:
            raise self._bad(f"the entry of tensor {name!r} names {entry.repeated[0][0]!r} twice")
        try:
            dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (TypeError, KeyError):
            raise self._bad(f"malformed header entry for tensor {name!r}") from None
        if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
            raise self._bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_whole(s) for s in shape):
            raise self._bad(f"tensor {name!r} has shape {shape!r}; expected a list of whole numbers of 0 or more")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_whole(o) for o in offsets) \
                or offsets[0] > offsets[1]:
            raise self._bad(f"tensor {name!r} has data_offsets {offsets!r}; expected [begin, end] with "
                            f"0 <= begin <= end")
        info = TensorInfo(name, dtype, tuple(shape))
        start, end = offsets
        if end - start != info.nbytes:
            raise self._bad(f"tensor {name!r} spans {end - start} bytes, its shape needs {info.nbytes}")
        self.infos[name] = info
        self.spans[name] = (start, end)

    def _check_spans(self, data_bytes: int) -> None:
        """The tensors' bytes, in order of their offsets, must follow each other and fill the data exactly."""
        reached, previous = 0, None
        for name, (start, end) in sorted(self.spans.items(), key=lambda item: item[1]):
            if end > data_bytes:
                raise self._bad(f"truncated: tensor {name!r} ends at byte {self.data_start + end}, the file has "
                                f"{self.data_start + data_bytes}")
            if start < reached:
                raise self._bad(f"tensor {name!r} (data bytes {start}-{end}) overlaps tensor {previous!r}")
            if start > reached:
                raise self._bad(f"{start - reached} unused bytes lie before tensor {name!r}")
            reached, previous = end, name
        if reached != data_bytes:
            raise self._bad(f"{data_bytes - reached} bytes follow the last tensor (the header does not cover the "
                            f"data)")

    def read(self, name: str) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        start, end = self.spans[name]
        info = self.infos[name]
        raw = self._map[self.data_start + start:self.data_start + end]
        return raw.view(_ST_DTYPES[info.dtype]).reshape(info.shape)


class _Object(dict):
    """A JSON object that remembers the keys it was given twice (json keeps the last one silently), and
    whether the repeats were equal."""

    def __init__(self, pairs: list[tuple[str, object]]):
        super().__init__()
        self.repeated: list[tuple[str, bool]] = []
        for key, value in pairs:
            if key in self:
                self.repeated.append((key, self[key] == value))
            self[key] = value


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_TORCH_TAGS = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}


class _TorchFile:
    """A PyTorch state dict loaded with weights_only=True (no code runs) and mmap where possible."""

    def __init__(self, path: Path):
        import torch

        self.path = path
        self.container = _torch_load(path, torch)  # everything the file holds, for writing it back
        state, self.nest = _find_state_dict(self.container, path, torch)
        self.prefix = "module." if state and all(k.startswith("module.") for k in state) else ""
        if self.prefix:
            state = {k[len(self.prefix):]: v for k, v in state.items()}
        self.tensors = state
        self.infos = {}
        for name, tensor in state.items():
            tag = _TORCH_TAGS.get(str(tensor.dtype).removeprefix("torch."))
            if tag is None:
                raise GardenerError(f"{path}: tensor {name!r} has unsupported dtype {tensor.dtype}")
            self.infos[name] = TensorInfo(name, tag, tuple(tensor.shape))

    def read(self, name: str) -> np.ndarray:
        import torch

        tensor = self.tensors[name].detach()
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.int16).numpy().view(np.uint16)
        return tensor.numpy()


def _torch_load(path: Path, torch) -> object:
    """torch.load with weights_only=True; memory-mapped unless the file predates the zip format."""
    for mmap in (True, False):
        try:
            with warnings.catch_warnings():  # torch's advice on pickle protocols is not the user's business
                warnings.simplefilter("ignore")
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            unsafe = _unsafe_globals(path)
            why = f"it refers to {', '.join(unsafe[:3])}" if unsafe else _refusal(str(exc))
            raise GardenerError(f"{path}: refused to unpickle: not a plain state dict ({why}; gardener loads with "
                                f"weights_only=True and never runs a checkpoint's code)") from None
        except RuntimeError as exc:
            if mmap and "mmap" in str(exc):  # legacy (pre-1.6) format cannot be mapped
                continue
            raise GardenerError(f"{path}: not a readable PyTorch checkpoint "
                                f"({str(exc).splitlines()[0][:200]})") from None
        except (EOFError, OSError, ValueError, KeyError) as exc:
            raise GardenerError(f"{path}: not a readable PyTorch checkpoint ({exc.__class__.__name__}: "
                                f"{str(exc)[:200]})") from None
    raise AssertionError("unreachable")


_SAFE_GLOBALS = re.compile(r"^(torch\.|collections\.OrderedDict$|_codecs\.encode$|builtins\.(set|frozenset|"
                           r"bytearray|slice|complex)$)")


def _unsafe_globals(path: Path) -> list[str]:
    """The classes and functions a pickle refers to that a plain state dict does not, read without running
    anything (pickletools only parses its opcodes); empty when none is found."""
    import io
    import zipfile

    found: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            if zipfile.is_zipfile(path):
                archive = stack.enter_context(zipfile.ZipFile(path))
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                stream, end = io.BytesIO(archive.read(name)), archive.getinfo(name).file_size
            else:  # read as it is parsed: a legacy file may be large
                stream, end = stack.enter_context(open(path, "rb")), path.stat().st_size
            while stream.tell() < end:  # a legacy file is several pickles in a row
                strings: list[str] = []
                for op, arg, _ in pickletools.genops(stream):
                    if op.name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    if isinstance(arg, str):
                        strings.append(arg)
    except Exception:  # noqa: BLE001 - a file too broken to parse: torch's own words are used instead
        pass
    return list(dict.fromkeys(g for g in found if not _SAFE_GLOBALS.match(g)))


def _refusal(message: str) -> str:
    """What torch's weights_only unpickler refused, as one whole clause (its message is a page of advice)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if found:
        return f"it holds an object of type {found.group(1)}"
    found = re.search(r"Unsupported operand (\d+)", message)
    if found and chr(int(found.group(1))) in pickletools.code2op:
        opcode = pickletools.code2op[chr(int(found.group(1)))]
        return (f"it uses pickle opcode {opcode.name} (protocol {opcode.proto}), which a file written by torch.save "
                f"does not; save the state dict with torch.save")
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    if found:
        return found.group(1).split(". ")[0].rstrip(".")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", message).strip()
    return plain.split(". ")[0].rstrip(".") if plain else "unsupported content"


def _find_state_dict(obj: object, path: Path, torch) -> tuple[dict, list[str]]:
    """The tensor dict itself, or the one nested under conventional keys (and the keys leading to it)."""
    nest: list[str] = []
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        key = next((k for k in NESTED_KEYS if isinstance(obj.get(k), dict)), None)
        if any(isinstance(v, torch.Tensor) for v in obj.values()) or key is None:
            break
        obj = obj[key]
        nest.append(key)
    if not isinstance(obj, dict):
        raise GardenerError(f"{path}: holds a {type(obj).__name__}, expected a state dict of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise GardenerError(f"{path}: holds no tensors (looked at the top level and under "
                            f"{', '.join(NESTED_KEYS)})")
    return tensors, nest


def _open_file(path: Path, ckpt: Checkpoint) -> None:
    if path.suffix == ".safetensors":
        ckpt._add(_SafetensorsFile(path))
    elif path.suffix in TORCH_SUFFIXES:
        ckpt._add(_TorchFile(path))
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
