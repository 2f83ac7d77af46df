"""Every criterion equals a plain numpy / scipy / pandas reference, as PAPER.md defines it."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from conftest import random_values, write_safetensors

import gardener
from gardener import criteria
from gardener.errors import GardenerError

PAPER_ENTROPY = [9.5484, 9.4170, 9.3856, 9.3946, 9.3830, 9.3894, 9.3775, 9.3787, 9.3612, 9.3514, 9.3539, 9.3487]


def ref_entropy(w: np.ndarray) -> float:
    """The authors' notebook: pandas value_counts of the flat float64 vector, natural log."""
    p = pd.Series(np.asarray(w, dtype=np.float64)).value_counts().to_numpy() / len(w)
    return float(-(p * np.log(p)).sum())


def ref_hist_entropy(w: np.ndarray, bins: int) -> float:
    counts, _ = np.histogram(w.astype(np.float64), bins=bins, range=(w.min(), w.max()))
    p = counts[counts > 0] / w.size
    return float(-(p * np.log(p)).sum())


REFERENCES = {
    "entropy": ref_entropy,
    "efficiency": lambda w: ref_entropy(w) / math.log(w.size),
    "value_entropy": lambda w: float(scipy.stats.entropy(np.abs(w.astype(np.float64)))),
    "hist_entropy": lambda w: ref_hist_entropy(w, 2048),
    "l1": lambda w: float(np.abs(w.astype(np.float64)).sum()),
    "l2": lambda w: float(np.sqrt((w.astype(np.float64) ** 2).sum())),
    "mean": lambda w: float(np.abs(w.astype(np.float64)).mean()),
    "variance": lambda w: float(np.abs(w.astype(np.float64)).var()),
    "std": lambda w: float(np.abs(w.astype(np.float64)).std()),
    "kurtosis": lambda w: float(scipy.stats.kurtosis(w.astype(np.float64))),
    "max": lambda w: float(np.abs(w.astype(np.float64)).max()),
}


def ref_mutual_information(blocks: list[np.ndarray]) -> list[float]:
    n = len(blocks)
    mi = np.zeros((n, n))
    for a in range(n):
        for b in range(n):
            if a != b:
                mi[a, b] = ref_entropy(blocks[a]) + ref_entropy(blocks[b]) - ref_entropy(
                    np.concatenate([blocks[a], blocks[b]]))
    return list(mi.sum(axis=1) / (n - 1))


def stack_file(tmp_path: Path, blocks: list[torch.Tensor], name: str = "w.safetensors") -> Path:
    """A timm-layout checkpoint: block i holds two matrices made from blocks[i]'s values."""
    state = {}
    for i, w in enumerate(blocks):
        half = w.numel() // 2
        state[f"blocks.{i}.mlp.fc1.weight"] = w[:half].reshape(-1, 8)
        state[f"blocks.{i}.mlp.fc2.weight"] = w[half:].reshape(-1, 8)
        state[f"blocks.{i}.norm1.weight"] = torch.ones(8, dtype=w.dtype)  # 1-D: never scored by default
    return write_safetensors(state, tmp_path / name)


def values_of(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.float64).numpy()


DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(params=DTYPES, ids=["float32", "float16", "bfloat16"])
def blocks(request) -> list[torch.Tensor]:
    """Four blocks of 4,096 values with duplicates, +0.0 and -0.0, stored in the given dtype."""
    return [torch.from_numpy(random_values(4096, seed=s, dup_every=3 + s)).to(request.param) for s in range(4)]


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_block_criterion_equals_reference(tmp_path, blocks, name):
    result = gardener.score(stack_file(tmp_path, blocks), [name])
    expected = [REFERENCES[name](values_of(w)) for w in blocks]
    np.testing.assert_allclose(result.scores[name], expected, rtol=1e-9, atol=1e-12)


def test_mutual_information_equals_concatenation_reference(tmp_path, blocks):
    result = gardener.score(stack_file(tmp_path, blocks), ["mutual_information"])
    expected = ref_mutual_information([values_of(w) for w in blocks])
    np.testing.assert_allclose(result.scores["mutual_information"], expected, rtol=1e-9, atol=1e-12)


def test_negative_zero_counts_as_zero(tmp_path):
    w = torch.tensor([0.0, -0.0, 0.0, -0.0, 1.0, 2.0, 2.0, 3.0] * 4, dtype=torch.float16)
    result = gardener.score(stack_file(tmp_path, [w, w.float()]), ["entropy"])
    # values: 0 x16, 1 x4, 2 x8, 3 x4 -> the same distribution in both precisions
    p = np.array([16, 4, 8, 4]) / 32
    assert result.scores["entropy"] == pytest.approx([-(p * np.log(p)).sum()] * 2, rel=1e-12)
    assert [b.distinct for b in result.blocks] == [4, 4]


def test_paper_entropies_give_paper_removal_order():
    order = gardener.ranking.removal_order(PAPER_ENTROPY, criteria.get("entropy").removes)
    assert [i + 1 for i in order][:11] == [12, 10, 11, 9, 7, 8, 5, 3, 6, 4, 2]


@pytest.mark.parametrize("name", [n for n in criteria.names() if n not in vars(criteria.spectral)])
def test_direction_follows_paper(name):
    highest_first = {"kurtosis", "mutual_information"}
    assert criteria.get(name).removes == ("highest" if name in highest_first else "lowest")


@pytest.mark.parametrize("removes", ["lowest", "highest"])
def test_ties_break_by_block_index(removes):
    scores = [1.0, 2.0, 1.0, 2.0]
    order = gardener.ranking.removal_order(scores, removes)
    # among equal scores the later block goes first; the direction decides which pair goes first
    assert order == ([2, 0, 3, 1] if removes == "lowest" else [3, 1, 2, 0])
    assert gardener.ranking.ranks(scores, removes) == ([3, 1, 4, 2] if removes == "lowest" else [1, 3, 2, 4])


def test_random_is_seeded(tmp_path, blocks):
    path = stack_file(tmp_path, blocks)
    a, b, c = (gardener.score(path, ["random"], seed=s).scores["random"] for s in (1, 1, 2))
    assert a == b and a != c


def test_mean_orders_like_l1(tmp_path, blocks):
    result = gardener.score(stack_file(tmp_path, blocks), ["l1", "mean"])
    assert result.ranking("l1") == result.ranking("mean")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float16", "bfloat16"])
def test_nan_is_an_error_naming_the_tensor(tmp_path, dtype):
    good = torch.from_numpy(random_values(64)).to(dtype)
    bad = good.clone()
    bad[-5] = float("nan")
    path = stack_file(tmp_path, [good, bad])
    for crit in ("entropy", "l2"):
        with pytest.raises(GardenerError, match=r"blocks\.1\.mlp\.fc2\.weight.*NaN"):
            gardener.score(path, [crit], primary=crit)


def test_inf_is_an_error(tmp_path):
    bad = torch.from_numpy(random_values(64))
    bad[0] = float("inf")
    with pytest.raises(GardenerError, match=r"blocks\.0\.mlp\.fc1\.weight"):
        gardener.score(stack_file(tmp_path, [bad, bad]), ["entropy"])


def test_registry_rejects_unknown_names():
    with pytest.raises(GardenerError, match="unknown criterion 'nope'.*entropy"):
        criteria.parse("entropy,nope")
    assert criteria.parse("all") == criteria.data_free() == [n for n in criteria.names() if n not in
                                                              criteria.names("calibration")]
