"""A safetensors file's header, validated against the file as the safetensors library does, then memory-mapped."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from ..errors import GardenerError
from .tensors import ST_DTYPES, TensorInfo

class SafetensorsFile:
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

    def _bad(self, why: str) -> GardenerError:
        return GardenerError(f"{self.path}: not a valid safetensors file: {why}")

    def _add_entry(self, name: str, entry: object) -> None:
        if isinstance(entry, _Object) and entry.repeated:
            raise self._bad(f"the entry of tensor {name!r} names {entry.repeated[0][0]!r} twice")
        try:
            dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (TypeError, KeyError):
            raise self._bad(f"malformed header entry for tensor {name!r}") from None
        if not isinstance(dtype, str) or dtype not in ST_DTYPES:
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

    def byte_span(self, name: str) -> tuple[Path, int, int]:
        """Where the tensor's bytes lie: the file, the offset of its first byte, and how many there are."""
        start, end = self.spans[name]
        return self.path, self.data_start + start, end - start

    def read(self, name: str) -> np.ndarray:
        """The tensor's values, read into memory of their own (read-only).

        Not a view of a mapping of the file: mapped pages stay resident until the file is unmapped, so scoring
        a 70B checkpoint block by block would end up holding it all (file-backed pages count against a
        container's or SLURM's memory limit). Read this way, a block's memory goes when its arrays do.
        """
        start, end = self.spans[name]
        info = self.infos[name]
        out = np.empty(end - start, dtype=np.uint8)
        with open(self.path, "rb", buffering=0) as handle:
            _read_exactly(handle, self.data_start + start, memoryview(out))
        out.flags.writeable = False
        return out.view(ST_DTYPES[info.dtype]).reshape(info.shape)


def _read_exactly(handle, offset: int, into: memoryview) -> None:
    """Fill `into` from the file at `offset` (a read may return less than asked: go on until full)."""
    handle.seek(offset)
    done = 0
    while done < len(into):
        got = handle.readinto(into[done:])
        if not got:
            raise cut_short(handle.name, offset + done, "reading")
        done += got


def cut_short(path, at: int, doing: str) -> GardenerError:
    """The error for a file that ends before a tensor its header promised (changed since it was opened)."""
    return GardenerError(f"{path}: the file ended at byte {at} while {doing} a tensor (was it changed while "
                         f"gardener read it?)")


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
