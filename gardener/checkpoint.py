"""Lazy reading of checkpoints: HF directories, safetensors files and PyTorch state dicts.

Tensors are exposed as numpy arrays that view the file (safetensors are memory-mapped;
PyTorch zip files are loaded with `mmap=True`), so a block is only read from disk when a
criterion touches it and peak memory follows the largest block, not the checkpoint.
bfloat16, which numpy lacks, is returned as its raw uint16 bit patterns; `TensorInfo.dtype`
says which.
"""
from __future__ import annotations

import json
import pickle
import re
import struct
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
HF_WEIGHT_FILES = (
    "model.safetensors.index.json", "model.safetensors",
    "pytorch_model.bin.index.json", "pytorch_model.bin",
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

    @property
    def torch_file(self) -> _TorchFile | None:
        """The reader of a single PyTorch file (its container, nesting and prefix), if that is the format."""
        return next(iter(self._readers.values())) if self.format == "torch" else None

    def _add(self, reader: _SafetensorsFile | _TorchFile) -> None:
        for info in reader.infos.values():
            self._infos[info.name] = info
            self._readers[info.name] = reader


class _SafetensorsFile:
    """Parses a safetensors header and validates it against the file before mapping data."""

    def __init__(self, path: Path, only: set[str] | None = None):
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
                header = json.loads(handle.read(hlen))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise self._bad(f"header is not valid JSON ({exc.__class__.__name__})") from None
        if not isinstance(header, dict):
            raise self._bad("header is not a JSON object")
        self.data_start = 8 + hlen
        self.infos: dict[str, TensorInfo] = {}
        self.spans: dict[str, tuple[int, int]] = {}
        for name, entry in header.items():
            if name == "__metadata__" or (only is not None and name not in only):
                continue
            self._add_entry(name, entry, size)
        self._map: np.memmap | None = None

    def _bad(self, why: str) -> GardenerError:
        return GardenerError(f"{self.path}: not a valid safetensors file: {why}")

    def _add_entry(self, name: str, entry: object, size: int) -> None:
        try:
            dtype, shape, (start, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise self._bad(f"malformed header entry for tensor {name!r}") from None
        if dtype not in _ST_DTYPES:
            raise self._bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        info = TensorInfo(name, dtype, tuple(int(s) for s in shape))
        if end - start != info.nbytes or start < 0:
            raise self._bad(f"tensor {name!r} spans {end - start} bytes, its shape needs {info.nbytes}")
        if self.data_start + end > size:
            raise self._bad(f"truncated: tensor {name!r} ends at byte {self.data_start + end}, "
                            f"the file has {size}")
        self.infos[name] = info
        self.spans[name] = (start, end)

    def read(self, name: str) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        start, end = self.spans[name]
        info = self.infos[name]
        raw = self._map[self.data_start + start:self.data_start + end]
        return raw.view(_ST_DTYPES[info.dtype]).reshape(info.shape)


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
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            raise GardenerError(f"{path}: refused to unpickle: not a plain state dict ({_refusal(str(exc))}; "
                                f"gardener loads with weights_only=True and never runs a checkpoint's code)") from None
        except RuntimeError as exc:
            if mmap and "mmap" in str(exc):  # legacy (pre-1.6) format cannot be mapped
                continue
            raise GardenerError(f"{path}: not a readable PyTorch checkpoint "
                                f"({str(exc).splitlines()[0][:200]})") from None
        except (EOFError, OSError, ValueError, KeyError) as exc:
            raise GardenerError(f"{path}: not a readable PyTorch checkpoint ({exc.__class__.__name__}: "
                                f"{str(exc)[:200]})") from None
    raise AssertionError("unreachable")


def _refusal(message: str) -> str:
    """What torch's weights_only unpickler refused, as one whole clause (its message is a page of advice)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if found:
        return f"it holds an object of type {found.group(1)}"
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


def _open_file(path: Path, ckpt: Checkpoint, only: set[str] | None = None) -> None:
    if path.suffix == ".safetensors":
        ckpt._add(_SafetensorsFile(path, only))
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
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise GardenerError(f"{index}: has no 'weight_map'; expected a sharded-checkpoint index")
    shards: dict[str, set[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, set()).add(name)
    for shard, names in sorted(shards.items()):
        shard_path = index.parent / shard
        if not shard_path.is_file():
            raise GardenerError(f"{index}: lists shard {shard}, which is missing")
        ckpt.files.append(shard_path)
        before = set(ckpt.names())
        _open_file(shard_path, ckpt, names if shard_path.suffix == ".safetensors" else None)
        found = set(ckpt.names()) - before
        lacking = sorted(names - found)
        if lacking:  # a tensor silently absent would be scored without it and pruned away
            raise GardenerError(f"{index}: maps tensor {lacking[0]!r} to shard {shard}, which does not hold it"
                                + (f" ({len(lacking)} such tensors)" if len(lacking) > 1 else ""))


def _open_dir(path: Path) -> Checkpoint:
    config = _read_json(path / "config.json") if (path / "config.json").is_file() else None
    ckpt = Checkpoint(path=path, format="hf-dir", files=[], config=config)
    for name in HF_WEIGHT_FILES:
        candidate = path / name
        if not candidate.is_file():
            continue
        if name.endswith(".index.json"):
            ckpt.files.append(candidate)
            _open_index(candidate, ckpt)
        else:
            ckpt.files.append(candidate)
            _open_file(candidate, ckpt)
        return ckpt
    raise GardenerError(f"{path}: no weights found; expected one of {', '.join(HF_WEIGHT_FILES)}")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open an HF model directory, a .safetensors file or a PyTorch state-dict file lazily."""
    path = Path(path)
    if not path.exists():
        raise GardenerError(f"{path}: no such file or directory")
    if path.is_dir():
        ckpt = _open_dir(path)
    else:
        ckpt = Checkpoint(path=path, format="safetensors" if path.suffix == ".safetensors" else "torch",
                          files=[path])
        _open_file(path, ckpt)
    if not ckpt.names():
        raise GardenerError(f"{path}: the checkpoint holds no tensors")
    return ckpt
