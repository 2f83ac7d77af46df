"""Exact-value counts joined across blocks: the entropy of every pair of blocks together (mutual information),
in memory about one block's values whatever the size of the checkpoint.

16-bit blocks keep a dense 65,536-entry table each, and pairs are added densely. A float32 block has about as many
distinct values as values: kept in memory for every block of a stack, their tables took 46-60 bytes per value of
the whole stack (14.75 GB for a 1.2 GB LLaMA, 300-390 GB for a 7B one; issue 31). So a scoring run writes each
float32 block's sorted value codes to a temporary file (4 bytes a value: the size of its weights on disk), with
where each of 65,536 ranges of codes starts, and joins them range by range: a value can be shared between blocks
only within its own range, and each pass holds about one block's values of all blocks together. The result is the
in-memory join's, summed in another order.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .values import BlockValues, ValueCounts, clogc

BUCKETS, SHIFT = 1 << 16, 16  # code ranges: the top 16 bits of a float32 code (sign, exponent, 7 mantissa bits)


def order_codes(keys: np.ndarray) -> np.ndarray:
    """uint32 codes that sort like the float32 keys (+0.0 and -0.0 share one code)."""
    bits = np.where(keys == 0, np.float32(0), keys).astype(np.float32).view(np.uint32)
    return np.where(bits >> 31 == 1, ~bits, bits | np.uint32(1 << 31))


def _runs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct codes of a sorted array and how often each occurs."""
    if codes.size == 0:
        return codes, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1])))
    return codes[starts], np.diff(np.append(starts, codes.size))


@dataclass(frozen=True)
class SpilledCounts:
    """A float32 block's count table kept on disk: its sorted value codes and where each code range starts."""

    n: int
    distinct: int
    sum_clogc: float
    path: Path
    offsets: np.ndarray  # BUCKETS + 1 positions in the sorted codes
    dense: bool = False

    def entropy(self) -> float:
        """Shannon entropy (nats) of the empirical distribution of exact values."""
        return float(np.log(self.n) - self.sum_clogc / self.n)

    def read(self, first: int = 0, last: int = BUCKETS) -> tuple[np.ndarray, np.ndarray]:
        """Distinct codes, and their counts, of the code ranges first..last-1."""
        lo, hi = int(self.offsets[first]), int(self.offsets[last])
        return _runs(np.fromfile(self.path, dtype=np.uint32, count=hi - lo, offset=4 * lo))

    @property
    def keys(self) -> np.ndarray:
        """The distinct values (float32), read back whole: for a join with a table of another kind."""
        codes = self.read()[0]
        return np.where(codes >> 31 == 1, codes & np.uint32(0x7FFFFFFF), ~codes).view(np.float32)

    @property
    def counts(self) -> np.ndarray:
        return self.read()[1]


class Spill:
    """Where one scoring run keeps the count tables of its float32 blocks (a temporary folder of its own)."""

    def __init__(self, folder: Path):
        self.folder, self._ids = folder, itertools.count()

    def keep(self, values: BlockValues) -> ValueCounts | SpilledCounts:
        """The block's count table for a join: on disk for float32 values, else in memory as it is built. The
        block is told its entropy's (lighter) table, so it is not counted twice."""
        if values.width != 32:
            return values.counts(full=True)
        codes = order_codes(values.sorted_values())
        distinct, counts = _runs(codes)
        repeats = counts[counts > 1]
        values.remember(ValueCounts(values.n, repeats, None, distinct.size, dense=False))
        path = self.folder / f"{next(self._ids)}.codes"
        codes.tofile(path)
        offsets = np.concatenate(([0], np.cumsum(np.bincount(codes >> SHIFT, minlength=BUCKETS))))
        return SpilledCounts(values.n, int(distinct.size), float(np.sum(clogc(repeats))), path, offsets)


def joint_sum_clogc(a: ValueCounts, b: ValueCounts) -> float:
    """sum c ln c of the concatenation of two blocks, from their count tables alone."""
    if a.dense and b.dense:
        return float(np.sum(clogc(a.counts + b.counts)))
    if a.keys is None or b.keys is None:
        raise ValueError("joint counts need tables built with keys (full=True)")
    a_keys, b_keys, a_counts, b_counts = a.keys, b.keys, a.counts, b.counts
    (sk, sc), (lk, lc) = sorted([(a_keys, a_counts), (b_keys, b_counts)], key=lambda t: t[0].size)
    pos = np.minimum(np.searchsorted(lk, sk), lk.size - 1)
    shared = lk[pos] == sk
    ca, cb = sc[shared], lc[pos[shared]]
    correction = np.sum(clogc(ca + cb) - clogc(ca) - clogc(cb))
    return float(a.sum_clogc + b.sum_clogc + correction)


def joint_sum_clogc_matrix(tables: list[ValueCounts | SpilledCounts]) -> np.ndarray:
    """sum c ln c of every pairwise concatenation of blocks, as a symmetric matrix.

    16-bit tables are added densely. Spilled float32 tables are joined range by range (`Spill`); float32 tables in
    memory in one pass. Anything else (float64, or blocks of mixed kinds) falls back to a join per pair.
    """
    n = len(tables)
    base = np.array([t.sum_clogc for t in tables])
    joint = base[:, None] + base[None, :]
    if all(t.dense for t in tables):
        for i in range(n):
            for j in range(i + 1, n):
                joint[i, j] = joint[j, i] = np.sum(clogc(tables[i].counts + tables[j].counts))
        return joint
    if all(isinstance(t, SpilledCounts) for t in tables):
        return joint + _spilled_corrections(tables)
    if all(isinstance(t, ValueCounts) and t.keys is not None and t.keys.dtype == np.float32 for t in tables):
        return joint + _corrections([order_codes(t.keys) for t in tables], [t.counts for t in tables])
    for i in range(n):
        for j in range(i + 1, n):
            joint[i, j] = joint[j, i] = joint_sum_clogc(tables[i], tables[j])
    return joint


def _spilled_corrections(tables: list[SpilledCounts]) -> np.ndarray:
    """The shared-value corrections of spilled tables, joined over ranges of about one block's values each."""
    reached = np.zeros(BUCKETS, dtype=np.int64)  # values of all blocks up to the end of each code range
    for t in tables:
        reached += t.offsets[1:]
    target = max(max(t.n for t in tables), 1)
    cuts = np.searchsorted(reached, np.arange(1, -(-int(reached[-1]) // target)) * target, side="right")
    edges = np.unique(np.concatenate(([0], cuts, [BUCKETS])))
    corr = np.zeros((len(tables), len(tables)))
    for first, last in zip(edges[:-1], edges[1:]):
        parts = [t.read(first, last) for t in tables]
        corr += _corrections([codes for codes, _ in parts], [counts for _, counts in parts])
    return corr


def _corrections(codes: list[np.ndarray], counts: list[np.ndarray]) -> np.ndarray:
    """For each pair of blocks, sum over the values both hold of c_ab ln c_ab - c_a ln c_a - c_b ln c_b.

    The (code, block) pairs of all blocks are sorted together, so a value held by k blocks forms a run of k
    equal codes; the count rides in the low bits where it fits, else follows an argsort."""
    n = len(codes)
    corr = np.zeros(n * n)
    every = np.concatenate(counts) if counts else np.zeros(0)
    if every.size == 0:
        return corr.reshape(n, n)
    keys = np.concatenate([(c.astype(np.uint64) << np.uint64(32)) | np.uint64(i) for i, c in enumerate(codes)])
    if n < 256 and every.max() < 1 << 24:
        keys = (keys & ~np.uint64(0xFFFFFFFF)) | (keys & np.uint64(0xFF)) << np.uint64(24) | every.astype(np.uint64)
        keys.sort()
        block, every = (keys >> np.uint64(24)) & np.uint64(0xFF), keys & np.uint64(0xFFFFFF)
    else:
        order = np.argsort(keys)
        keys, every = keys[order], every[order]
        block = keys & np.uint64(0xFFFFFFFF)
    code = keys >> np.uint64(32)
    for gap in range(1, n):
        first = np.flatnonzero(code[:-gap] == code[gap:])
        if first.size == 0:
            break
        ca, cb = every[first], every[first + gap]
        pair = (block[first] * np.uint64(n) + block[first + gap]).astype(np.int64)
        corr += np.bincount(pair, weights=clogc(ca + cb) - clogc(ca) - clogc(cb), minlength=n * n)
    corr = corr.reshape(n, n)
    return corr + corr.T
