"""Mutual information on float32 stacks of any size: the count tables wait on disk and are joined range by range,
in memory about one block's values, with the result of the join made all in memory."""
from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
import torch
from conftest import write_safetensors
from test_criteria import ref_mutual_information, stack_file, values_of

import gardener
from gardener import joint_counts
from gardener.joint_counts import Spill, SpilledCounts, joint_sum_clogc_matrix
from gardener.values import BlockValues


def _shared_blocks(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """float32 blocks drawing values from one pool: values repeat within and between blocks."""
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(size * 2).astype(np.float32) * 0.02
    blocks = [rng.choice(pool, size) for _ in range(count)]
    blocks[0][:8] = [0.0, -0.0, 0.0, -0.0, 1.0, 1.0, -1.0, 3.0]  # -0.0 is 0.0 in every block
    blocks[1][:3] = [-0.0, 1.0, 3.0]
    return blocks


def _values(block: np.ndarray) -> BlockValues:
    return BlockValues([("w", block, "F32")])


def test_spilled_tables_join_as_the_tables_in_memory(tmp_path):
    blocks = _shared_blocks(6, 5000)
    spill = Spill(tmp_path)
    spilled = [spill.keep(_values(b)) for b in blocks]
    in_memory = [_values(b).counts(full=True) for b in blocks]
    assert all(isinstance(t, SpilledCounts) for t in spilled) and len(list(tmp_path.iterdir())) == 6
    np.testing.assert_allclose(joint_sum_clogc_matrix(spilled), joint_sum_clogc_matrix(in_memory), rtol=1e-12)
    assert [t.entropy() for t in spilled] == pytest.approx([t.entropy() for t in in_memory], rel=1e-12)
    np.testing.assert_array_equal(spilled[1].keys, in_memory[1].keys)  # read back whole, for a join of another kind
    np.testing.assert_array_equal(spilled[1].counts, in_memory[1].counts)


def test_a_block_keeps_the_light_table_its_entropy_needs(tmp_path):
    block = _shared_blocks(2, 3000)[0]
    values = _values(block)
    Spill(tmp_path).keep(values)
    assert values.distinct == len(np.unique(np.where(block == 0, 0, block)))
    assert values.counts().entropy() == pytest.approx(_values(block).counts().entropy(), rel=1e-12)


def test_counts_beyond_the_packed_width_join_through_a_sort_order():
    codes = [np.array([5, 9], dtype=np.uint32), np.array([5, 7], dtype=np.uint32)]
    counts = [np.array([1 << 25, 2]), np.array([3, 4])]
    c = 1 << 25
    expected = (c + 3) * np.log(c + 3) - c * np.log(c) - 3 * np.log(3)
    got = joint_counts._corrections(codes, counts)
    assert got[0, 1] == pytest.approx(expected, rel=1e-12) and got[1, 0] == got[0, 1] and got[0, 0] == 0


def test_mutual_information_mixing_float64_and_float32_blocks_joins_pair_by_pair(tmp_path):
    blocks = [torch.from_numpy(b) for b in _shared_blocks(3, 512)]
    blocks[2] = blocks[2].double()
    state = {f"blocks.{i}.fc.weight": w.reshape(-1, 8) for i, w in enumerate(blocks)}
    result = gardener.score(write_safetensors(state, tmp_path / "mixed.safetensors"), ["mutual_information"])
    expected = ref_mutual_information([values_of(w) for w in blocks])
    np.testing.assert_allclose(result.scores["mutual_information"], expected, rtol=1e-9, atol=1e-12)


def test_mutual_information_of_a_float32_stack_leaves_no_file_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    blocks = [torch.from_numpy(b) for b in _shared_blocks(4, 4096)]
    result = gardener.score(stack_file(tmp_path, blocks), ["mutual_information", "entropy"])
    np.testing.assert_allclose(result.scores["mutual_information"],
                               ref_mutual_information([values_of(w) for w in blocks]), rtol=1e-9, atol=1e-12)
    assert os.listdir(tmp_path / "tmp") == []


def test_mutual_information_needs_memory_of_about_one_block_not_of_the_stack(tmp_path):
    """24 float32 blocks of 2 MB: all count tables in memory took over 24 bytes per value of the stack (300 MB
    here, measured 335 MB); the run's peak stays within a few blocks' worth (measured 39 MB)."""
    rng = np.random.default_rng(1)
    blocks = [torch.from_numpy(rng.standard_normal(1 << 19).astype(np.float32)) for _ in range(24)]
    path = stack_file(tmp_path, blocks)
    block_bytes = 4 << 19
    tracemalloc.start()
    try:
        result = gardener.score(path, ["mutual_information"], workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(result.scores["mutual_information"]) == 24
    assert peak < 30 * block_bytes, f"peak {peak / 2**20:.1f} MB for blocks of {block_bytes / 2**20:.2f} MB"
