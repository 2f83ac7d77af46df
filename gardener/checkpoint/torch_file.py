"""A PyTorch state-dict file loaded with weights_only=True (no code runs), memory-mapped where possible."""
from __future__ import annotations

import contextlib
import pickle
import pickletools
import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import GardenerError
from .tensors import NESTED_KEYS, TensorInfo

_TORCH_TAGS = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}


class TorchFile:
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
