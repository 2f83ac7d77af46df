"""A block's weights as one flat multiset of numbers, with the statistics criteria read from it.

Exact-value counting is the heart of the paper's entropy. 16-bit values are counted into a
dense 65,536-entry table of bit patterns (one `bincount` pass, no sort); wider values are
sorted once and equal runs counted. Either way -0.0 counts as 0.0, as pandas' value_counts
does, and a NaN or Inf is an error naming the tensor. Moments are streamed in float64 chunks,
so memory stays near the size of the block as stored.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import GardenerError, SettingError
from .families import split_fused

VIEWS = ("stored", "float16", "bfloat16", "float32")
VIEW_TAGS = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}  # the stored tag each cast view equals
_WIDTH = {"F16": 16, "BF16": 16, "F32": 32, "F64": 64}
_CHUNK = 1 << 20
_NONFINITE_16 = {  # bit patterns whose exponent field is all ones
    "F16": (np.arange(1 << 16) & 0x7C00) == 0x7C00,
    "BF16": (np.arange(1 << 16) & 0x7F80) == 0x7F80,
}


def to_float(arr: np.ndarray, tag: str, dtype: type = np.float64) -> np.ndarray:
    """Numeric values of a stored array (bfloat16 arrives as raw uint16 bits)."""
    if tag == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32).astype(dtype, copy=False)
    return arr.astype(dtype, copy=False)


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even); returns the uint16 bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def in_view(arr: np.ndarray, tag: str, view: str) -> tuple[np.ndarray, str]:
    """The array in the requested precision view: ('stored' keeps it as it is on disk)."""
    if view == "stored" or VIEW_TAGS.get(view) == tag or tag.startswith("F8"):  # float8: as stored (unscored)
        return arr, tag
    if view == "float16":
        return to_float(arr, tag, np.float32 if tag == "BF16" else arr.dtype).astype(np.float16), "F16"
    if view == "bfloat16":
        return bf16_bits(to_float(arr, tag, np.float32)), "BF16"
    if view == "float32":
        return to_float(arr, tag, np.float32), "F32"
    raise SettingError("dtype", f"{view!r}: expected one of {', '.join(VIEWS)}")


@dataclass
class ValueCounts:
    """How often each distinct value occurs in a block.

    16-bit blocks keep a dense table indexed by bit pattern (`keys` is None); wider blocks
    keep the sorted distinct values in `keys` (or, when only entropy is needed, just the
    counts of the values that repeat, with `keys` None and `distinct` recorded).
    """

    n: int
    counts: np.ndarray
    keys: np.ndarray | None
    distinct: int
    dense: bool

    @cached_property
    def sum_clogc(self) -> float:
        """sum over distinct values of c * ln(c); values seen once contribute nothing."""
        c = self.counts[self.counts > 1].astype(np.float64)
        return float(np.sum(c * np.log(c)))

    def entropy(self) -> float:
        """Shannon entropy (nats) of the empirical distribution of exact values."""
        return float(np.log(self.n) - self.sum_clogc / self.n)


_CLOGC_TABLE = np.arange(1 << 16, dtype=np.float64) * np.log(np.maximum(np.arange(1 << 16), 1))


def clogc(c: np.ndarray) -> np.ndarray:
    """c ln c elementwise (0 for c <= 1), by table lookup for the common small counts."""
    c = np.asarray(c)
    if c.size and c.max() < _CLOGC_TABLE.size:
        return _CLOGC_TABLE[c.astype(np.intp)]
    c = c.astype(np.float64)
    return np.where(c > 1, c * np.log(np.maximum(c, 1)), 0.0)


@dataclass(frozen=True)
class Moments:
    """Streamed sums over a block: enough for norms, moments, value entropy and ranges."""

    n: int
    total: float
    sum_abs: float
    sum_sq: float
    sum_abs_log_abs: float
    max_abs: float
    lo: float
    hi: float
    central2: float  # sum (x - mean)^2
    central4: float  # sum (x - mean)^4
    abs_central2: float  # sum (|x| - mean|x|)^2


class BlockValues:
    """The values of one block (several tensors, one multiset) in one precision view."""

    def __init__(self, parts: list[tuple[str, np.ndarray, str]]):
        found = sorted({tag for _, _, tag in parts})
        parts = [(name, arr, tag) for name, arr, tag in parts if tag in _WIDTH]
        if not parts:
            raise GardenerError(f"no tensor gardener can score: its tensors are {', '.join(found) or 'none'}, and "
                                f"criteria read {', '.join(sorted(_WIDTH))} (float8 and integer weights are not "
                                f"supported)")
        self.shapes = {name: np.shape(arr) for name, arr, _ in parts}
        self.parts = [(name, np.ravel(arr), tag) for name, arr, tag in parts]
        self.n = sum(arr.size for _, arr, _ in parts)
        self.tags = sorted({tag for _, _, tag in parts})
        self._counts: ValueCounts | None = None
        self._hist: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def width(self) -> int:
        """Bits per value for counting; mixed precisions are counted as (exact) float32 or wider."""
        if len(self.tags) == 1:
            return _WIDTH[self.tags[0]]
        return max(32, *(_WIDTH[t] for t in self.tags))

    @property
    def distinct(self) -> int | None:
        """Distinct exact values, if a criterion has counted them (counting is not done for this)."""
        return self._counts.distinct if self._counts is not None else None

    def counts(self, full: bool = False) -> ValueCounts:
        """The exact-value count table (cached; `full` keeps distinct keys of wide dtypes)."""
        if self._counts is None or (full and self._counts.keys is None and not self._counts.dense):
            self._counts = self._dense_counts() if self.width == 16 else self._sorted_counts(full)
        return self._counts

    def _dense_counts(self) -> ValueCounts:
        table = np.zeros(1 << 16, dtype=np.int64)
        for _, arr, _ in self.parts:
            bits = arr.view(np.uint16)
            for start in range(0, bits.size, _CHUNK):
                table += np.bincount(bits[start:start + _CHUNK], minlength=1 << 16)
        if table[_NONFINITE_16[self.tags[0]]].any():
            self._raise_nonfinite()
        table[0] += table[0x8000]  # -0.0 is 0.0
        table[0x8000] = 0
        return ValueCounts(self.n, table, None, int(np.count_nonzero(table)), dense=True)

    def remember(self, counts: ValueCounts) -> None:
        """Keep a count table made elsewhere from `sorted_values` (the spilled tables of `joint_counts`)."""
        self._counts = counts

    def sorted_values(self) -> np.ndarray:
        """The block's values as one sorted float32 array (float64 if wider); a NaN or Inf is an error."""
        dtype = np.float64 if self.width == 64 else np.float32
        flat = np.concatenate([to_float(arr, tag, dtype) for _, arr, tag in self.parts])
        flat.sort()  # float order puts -0.0 beside 0.0 and == treats them as equal
        if not (np.isfinite(flat[0]) and np.isfinite(flat[-1])):
            self._raise_nonfinite()
        return flat

    def _sorted_counts(self, full: bool) -> ValueCounts:
        flat = self.sorted_values()
        same = flat[1:] == flat[:-1]
        if full:
            starts = np.flatnonzero(np.concatenate(([True], ~same)))
            counts = np.diff(np.append(starts, flat.size)).astype(np.uint32 if flat.size < 1 << 32 else np.int64)
            return ValueCounts(self.n, counts, flat[starts], int(starts.size), dense=False)
        repeats = np.flatnonzero(same)  # position i repeats value i+1; runs of these are one value
        breaks = np.flatnonzero(np.diff(repeats) != 1) + 1
        counts = np.diff(np.concatenate(([0], breaks, [repeats.size]))) + 1 if repeats.size else repeats
        return ValueCounts(self.n, counts, None, int(self.n - repeats.size), dense=False)

    def _raise_nonfinite(self) -> None:
        for name, arr, tag in self.parts:
            for start in range(0, arr.size, _CHUNK):
                if not np.isfinite(to_float(arr[start:start + _CHUNK], tag, np.float32)).all():
                    raise GardenerError(f"tensor {name!r} contains NaN or Inf values; "
                                        f"block scores would be meaningless")
        raise AssertionError("non-finite value reported but not found")

    @cached_property
    def spectra(self) -> list[tuple[str, int, np.ndarray]]:
        """(tensor, parameter count, singular values) of each matrix (2-D or more) of the block."""
        from .spectra import singular_values

        out = []
        for name, arr, tag in self.parts:
            shape = self.shapes[name]
            if len(shape) >= 2 and min(shape[0], arr.size // max(shape[0], 1)) > 0:
                matrix = to_float(arr, tag, np.float64).reshape(shape)
                if not np.isfinite(matrix).all():
                    self._raise_nonfinite()
                for piece in split_fused(name, matrix):  # q, k, v apart, whichever layout
                    out.append((name, piece.size, singular_values(piece)))
        if not out:
            raise GardenerError("spectral criteria need 2-D weight matrices; this block has none "
                                "(its tensors: " + ", ".join(self.shapes) + ")")
        return out

    def float_chunks(self) -> Iterator[np.ndarray]:
        """The block's values as float64 chunks of about a million numbers."""
        for _, arr, tag in self.parts:
            for start in range(0, arr.size, _CHUNK):
                yield to_float(arr[start:start + _CHUNK], tag)

    @cached_property
    def moments(self) -> Moments:
        """Two streamed passes: plain sums first, then sums around the means."""
        n, total, sum_abs, sum_sq, sal, max_abs, lo, hi = self.n, 0.0, 0.0, 0.0, 0.0, 0.0, np.inf, -np.inf
        for x in self.float_chunks():
            if not np.isfinite(x).all():
                self._raise_nonfinite()
            a = np.abs(x)
            nz = a[a > 0]
            total, sum_abs, sum_sq = total + x.sum(), sum_abs + a.sum(), sum_sq + np.dot(x, x)
            sal += float(np.dot(nz, np.log(nz)))
            max_abs, lo, hi = max(max_abs, a.max()), min(lo, x.min()), max(hi, x.max())
        mean, mean_abs = total / n, sum_abs / n
        c2 = c4 = ac2 = 0.0
        for x in self.float_chunks():
            d = x - mean
            d2 = d * d
            da = np.abs(x) - mean_abs
            c2, c4, ac2 = c2 + d2.sum(), c4 + np.dot(d2, d2), ac2 + np.dot(da, da)
        return Moments(n, float(total), float(sum_abs), float(sum_sq), sal, float(max_abs),
                       float(lo), float(hi), float(c2), float(c4), float(ac2))

    def histogram(self, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """Counts and edges of `bins` equal bins spanning the block's own min..max."""
        if bins not in self._hist:
            lo, hi = self.moments.lo, self.moments.hi
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            counts = np.zeros(bins, dtype=np.int64)
            for x in self.float_chunks():
                counts += np.histogram(x, bins=bins, range=(lo, hi))[0]
            self._hist[bins] = (counts, np.linspace(lo, hi, bins + 1))
        return self._hist[bins]
