"""Write a pruned checkpoint in its own format, tensor by tensor, without building the model."""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..checkpoint import HF_WEIGHT_FILES, Checkpoint
from ..checkpoint.safetensors_file import cut_short
from ..checkpoint.tensors import TensorInfo
from ..errors import SettingError

DEFAULT_SHARD_BYTES = 5 * 1024**3
_SKIP = set(HF_WEIGHT_FILES) | {"gardener.json"}


def parse_size(text: str | int) -> int:
    """Bytes (at least 1) from '5GB', '500MB', '20KB' or a plain integer."""
    value = text if isinstance(text, int) else _size_of(text)
    if value is None or value < 1:
        raise SettingError("max_shard_size", f"{text!r}: expected a size above 0 like 5GB or 500MB")
    return value


def _size_of(text: str) -> int | None:
    units = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "B": 1}
    for unit, scale in units.items():
        if text.upper().endswith(unit):
            try:
                number = float(text[: -len(unit)])
            except ValueError:
                return None
            return int(number * scale) if math.isfinite(number) else None
    try:
        return int(text)
    except ValueError:
        return None


class Source:
    """How a kept tensor's bytes are had: `read()` gives its values; `span` (file, offset, bytes), where set,
    lets the kernel copy them file to file (a pruned 1B checkpoint is written at the speed of `cp`, no byte
    passing through Python)."""

    def __init__(self, read: Callable[[], np.ndarray], span: tuple[Path, int, int] | None = None):
        self.read, self.span = read, span

    def __call__(self) -> np.ndarray:
        return self.read()


def write_safetensors(path: Path, tensors: list[tuple[str, str, tuple, Callable[[], np.ndarray]]]) -> int:
    """Stream (name, dtype tag, shape, read) tensors into one safetensors file; returns data bytes."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, tag, shape, _ in tensors:
        nbytes = TensorInfo(name, tag, tuple(shape)).nbytes
        header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb", buffering=0) as handle:  # unbuffered: kernel copies and writes share one position
        _write_all(handle, len(blob).to_bytes(8, "little") + blob)
        for name, tag, shape, read in tensors:
            span = getattr(read, "span", None)
            if span is not None:
                _copy_span(handle, *span)
            else:
                _write_all(handle, np.ascontiguousarray(read()).reshape(-1).view(np.uint8))
    return offset


def _write_all(handle, data) -> None:
    """Write every byte of `data` (an unbuffered write may take only part of it)."""
    view = memoryview(data).cast("B")
    while view.nbytes:
        view = view[handle.write(view):]


def _copy_span(handle, source: Path, offset: int, length: int) -> None:
    """Append `length` bytes of `source` from `offset`: by the kernel (copy_file_range) where it can, else in
    chunks of 64 MB."""
    with open(source, "rb", buffering=0) as src:
        done = 0
        while done < length and hasattr(os, "copy_file_range"):
            try:
                moved = os.copy_file_range(src.fileno(), handle.fileno(), length - done, offset + done)
            except OSError as exc:
                if exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    break  # not between these files: copy in chunks
                raise
            if not moved:
                raise cut_short(source, offset + done, "copying")
            done += moved
        src.seek(offset + done)
        while done < length:
            chunk = src.read(min(length - done, 64 << 20))
            if not chunk:
                raise cut_short(source, offset + done, "copying")
            _write_all(handle, chunk)
            done += len(chunk)


def _shards(items: list, max_bytes: int) -> list[list]:
    shards, current, size = [], [], 0
    for item in items:
        nbytes = item[4]
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(item[:4])
        size += nbytes
    return shards + ([current] if current else [])


def renamed_tensors(ckpt: Checkpoint, rename: Callable[[str], str | None]) -> list:
    """(new name, dtype, shape, reader, bytes) of every kept tensor, in stored order."""
    out = []
    for name in ckpt.names():
        new = rename(name)
        if new is not None:
            info = ckpt.info(name)
            out.append((new, info.dtype, info.shape, Source(lambda n=name: ckpt.read(n), ckpt.byte_span(name)),
                        info.nbytes))
    return out


def write_hf_weights(out: Path, tensors: list, max_bytes: int = DEFAULT_SHARD_BYTES) -> list[Path]:
    """model.safetensors, or model-0000k-of-0000n.safetensors shards plus their index json."""
    shards = _shards(tensors, max_bytes)
    if len(shards) == 1:
        write_safetensors(out / "model.safetensors", shards[0])
        return [out / "model.safetensors"]
    weight_map, total, files = {}, 0, []
    for k, shard in enumerate(shards, start=1):
        name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        total += write_safetensors(out / name, shard)
        weight_map.update({t[0]: name for t in shard})
        files.append(out / name)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return files + [out / "model.safetensors.index.json"]


def _allowed_target(item: Path, root: Path) -> bool:
    """Whether a symlink inside the model folder `root` may be followed: to a file inside the folder, or to
    a blob of the same Hugging Face cache repository (`<repo>/snapshots/<rev>/` links into `<repo>/blobs/`)."""
    try:
        target = item.resolve(strict=True)
    except (OSError, RuntimeError):  # broken, or a loop
        return False
    real_root = root.resolve()
    blobs = real_root.parent.parent / "blobs" if real_root.parent.name == "snapshots" else None
    return target.is_relative_to(real_root) or (blobs is not None and target.is_relative_to(blobs))


def _side_file_kind(item: Path, root: Path) -> str | None:
    """"file" or "folder" for what may be copied; None for what may not (`_why_skipped` says why)."""
    if item.is_symlink() and (item.is_dir() or not _allowed_target(item, root)):
        return None
    if item.is_dir():
        return "folder"
    return "file" if item.is_file() else None


def _why_skipped(item: Path) -> str:
    if item.is_symlink():
        try:
            target = item.resolve(strict=True)
        except RuntimeError:
            return "a symbolic link loop"
        except OSError:
            return "a broken symbolic link"
        if target.is_dir():
            return "a symbolic link to a folder"
        return f"a symbolic link to {target}, outside the model folder"
    return "not a regular file (a pipe, socket or device)"


def copy_side_files(src: Path, out: Path, skip: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """Copy everything of an HF directory except its weights (and `skip`): configs, tokenizer, README.

    Only regular files and folders are copied, and a symbolic link only when it leads to a file inside
    the folder (or to the blobs of the Hugging Face cache repository it belongs to): a link to a file
    elsewhere (a private key, say) must not have its content copied into the output. Returns the names
    copied and what was skipped, with why.
    """
    copied, skipped = [], []
    excluded = _SKIP | set(skip)

    def walk(folder: Path, target: Path, top: bool) -> None:
        for item in sorted(folder.iterdir()):
            is_shard = item.name.startswith(("model-", "pytorch_model-")) and item.suffix in (".safetensors", ".bin")
            if top and (item.name in excluded or is_shard) or item.name.startswith("."):
                continue
            kind = _side_file_kind(item, src)
            name = str(item.relative_to(src))
            if kind is None:
                skipped.append(f"{name} ({_why_skipped(item)})")
            elif kind == "folder":
                (target / item.name).mkdir()
                walk(item, target / item.name, False)
            else:
                shutil.copy2(item, target / item.name)
                copied.append(name)

    walk(src, out, True)
    return copied, skipped


def _tensor_count(value: object) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return 1
    if isinstance(value, dict):
        return sum(_tensor_count(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_count(v) for v in value)
    return 0


def _optimizer_like(key: object, value: object) -> bool:
    """An optimizer's state without tensors (plain SGD) still indexes the unpruned model's parameters."""
    return (isinstance(value, dict) and "param_groups" in value) or str(key).lower().startswith("optim")


def torch_container(reader, tensors: list) -> tuple[object, list[dict]]:
    """What a PyTorch file held, with its state dict replaced by `tensors`, and what had to go.

    Non-tensor entries (epoch, args, nested settings) stay as they were, wherever they are.
    Entries beside the state dict that hold tensors (optimizer state, an EMA copy) or an
    optimizer's state describe the unpruned model: they are dropped and listed as {"entry", "tensors"}.
    """
    import torch

    state = {}
    for name, tag, _, read, _ in tensors:
        tensor = torch.from_numpy(np.array(read()))
        state[reader.prefix + name] = tensor.view(torch.bfloat16) if tag == "BF16" else tensor
    dropped: list[dict] = []

    def rebuild(obj: dict, nest: list[str], where: str) -> dict:
        out = {} if nest else dict(state)
        for key, value in obj.items():
            if nest and key == nest[0]:
                out[key] = rebuild(value, nest[1:], f"{where}{key}.")
            elif not nest and isinstance(key, str) and isinstance(value, torch.Tensor):
                continue  # a tensor of the state dict: `state` holds what is kept of them
            elif (count := _tensor_count(value)) or _optimizer_like(key, value):
                dropped.append({"entry": f"{where}{key}", "tensors": count})
            else:
                out[key] = value
        return out

    return rebuild(reader.container, list(reader.nest), ""), dropped


def write_torch_state(path: Path, tensors: list, reader) -> list[dict]:
    """A .pth/.pt/.bin file shaped like the input's (nesting, prefix, metadata); returns what was dropped."""
    import torch

    container, dropped = torch_container(reader, tensors)
    torch.save(container, path)
    return dropped
