"""Spectral criteria equal direct numpy/scipy computations, recover known power laws, and do not
move when weights are cast or permuted; the precision report tells when exact-value entropy does."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import write_safetensors

import gardener
from gardener import criteria, spectra
from gardener.cli import main
from gardener.errors import GardenerError
from gardener.scoring import precision_report
from gardener.values import BlockValues

SPECTRAL = ["spectral_entropy", "effective_rank", "stable_rank", "alpha", "alpha_weighted", "log_spectral_norm"]
SHAPES = [(48, 32), (32, 96), (64, 64)]  # one block: attention-like, mlp-like and square matrices


def weightwatcher_fits(matrices: list[np.ndarray]) -> list[tuple[float, float]]:
    """(alpha, alpha_weighted) of each matrix as WeightWatcher itself computes them (its analyze(), defaults),
    NaN for a matrix it does not fit; each matrix is one torch Linear layer of a model handed to it."""
    import logging

    import weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    layers = []
    for m in matrices:
        layer = torch.nn.Linear(m.shape[1], m.shape[0], bias=False)
        layer.weight.data = torch.from_numpy(np.ascontiguousarray(m)).float()
        layers.append(layer)
    frame = weightwatcher.WeightWatcher(model=torch.nn.Sequential(*layers)).analyze(plot=False)
    found = {int(row.layer_id): (float(row.alpha), float(row.alpha_weighted)) for row in frame.itertuples()}
    ids = sorted(found)  # WeightWatcher numbers the layers it fits; the skipped ones are the small ones
    fitted = [i for i, m in enumerate(matrices) if min(m.shape) >= spectra.MIN_EVALS]
    assert len(ids) == len(fitted)
    out = [(math.nan, math.nan)] * len(matrices)
    for i, layer_id in zip(fitted, ids):
        out[i] = found[layer_id]
    return out


REFERENCES = {  # per matrix, from numpy / scipy directly, in float64
    "spectral_entropy": lambda w: float(scipy.stats.entropy(np.linalg.svd(w, compute_uv=False))),
    "effective_rank": lambda w: math.exp(scipy.stats.entropy(np.linalg.svd(w, compute_uv=False))),
    "stable_rank": lambda w: np.linalg.norm(w, "fro") ** 2 / np.linalg.norm(w, 2) ** 2,
    "log_spectral_norm": lambda w: math.log10(np.linalg.norm(w, 2) ** 2),
    "alpha": lambda w: weightwatcher_fits([w])[0][0],
    "alpha_weighted": lambda w: weightwatcher_fits([w])[0][1],
}


def heavy_matrix(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Gaussian weights plus a few strong directions, like a trained layer (a spectral tail)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape) * 0.05
    for k in range(4):
        w += 0.3 / (k + 1) * np.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1])) / 8
    return w.astype(np.float32)


def power_law_matrix(alpha: float, n: int, seed: int) -> np.ndarray:
    """An n x 2n matrix whose W W^T eigenvalues are Pareto draws with density exponent alpha."""
    rng = np.random.default_rng(seed)
    lam = (1 - rng.random(n)) ** (-1 / (alpha - 1))  # inverse CDF of p(x) ~ x^-alpha, x >= 1
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((2 * n, n)))
    return (u * np.sqrt(lam)) @ v.T


def block_file(tmp_path: Path, blocks: list[list[np.ndarray]], dtype=torch.float32, name="w.safetensors") -> Path:
    """A timm-layout checkpoint whose block i holds the matrices blocks[i] (and a 1-D norm, never scored)."""
    state = {}
    for i, mats in enumerate(blocks):
        for j, m in enumerate(mats):
            state[f"blocks.{i}.m{j}.weight"] = torch.from_numpy(np.ascontiguousarray(m)).to(dtype)
        state[f"blocks.{i}.norm1.weight"] = torch.ones(8, dtype=dtype)
    return write_safetensors(state, tmp_path / name)


@pytest.fixture
def block_matrices() -> list[list[np.ndarray]]:
    return [[heavy_matrix(shape, seed=10 * b + j) for j, shape in enumerate(SHAPES)] for b in range(4)]


@pytest.mark.parametrize("name", SPECTRAL)
def test_spectral_criterion_equals_direct_computation(tmp_path, block_matrices, name):
    result = gardener.score(block_file(tmp_path, block_matrices), [name], primary=name)
    expected = [np.mean([REFERENCES[name](m.astype(np.float64)) for m in mats]) for mats in block_matrices]
    np.testing.assert_allclose(result.scores[name], expected, rtol=2e-3 if "alpha" not in name else 1e-6)


@pytest.mark.parametrize("how", ["mean", "min", "max", "weighted"])
def test_aggregate_combines_matrices_as_named(tmp_path, block_matrices, how):
    result = gardener.score(block_file(tmp_path, block_matrices), ["stable_rank"], primary="stable_rank",
                            aggregate=how)
    combine = {"mean": np.mean, "min": np.min, "max": np.max,
               "weighted": lambda v: np.average(v, weights=[a * b for a, b in SHAPES])}[how]
    expected = [combine([REFERENCES["stable_rank"](m.astype(np.float64)) for m in mats]) for mats in block_matrices]
    np.testing.assert_allclose(result.scores["stable_rank"], expected, rtol=1e-4)
    assert result.aggregate == how


def test_aggregates_differ_on_the_same_block(tmp_path, block_matrices):
    path = block_file(tmp_path, block_matrices)
    values = {how: gardener.score(path, ["stable_rank"], primary="stable_rank", aggregate=how).scores["stable_rank"]
              for how in ("mean", "min", "max", "weighted")}
    for block in range(4):
        assert values["min"][block] < values["mean"][block] < values["max"][block]
        assert values["weighted"][block] != pytest.approx(values["mean"][block], rel=1e-3)


def mixed_tails() -> list[np.ndarray]:
    """Long and short tails, a spectrum under 20 eigenvalues (WeightWatcher's small-sample fit), one with
    round-off eigenvalues, one too small to fit (6 eigenvalues), a wide one and a constructed power law."""
    return [heavy_matrix((48, 32), 0), heavy_matrix((96, 64), 1), power_law_matrix(2.5, 200, 0).astype(np.float32),
            heavy_matrix((16, 12), 3), rank_deficient((64, 48), 5, 0), heavy_matrix((30, 6), 5),
            heavy_matrix((100, 300), 4), power_law_matrix(4.0, 60, 2).astype(np.float32)]


def test_alpha_is_weightwatchers_alpha_on_short_and_long_tails(tmp_path):
    matrices = mixed_tails()
    expected = weightwatcher_fits(matrices)
    for m, (alpha, _) in zip(matrices, expected):
        fit = spectra.fit_power_law(spectra.eigenvalues(spectra.singular_values(m)))
        assert fit.alpha == pytest.approx(alpha, rel=1e-9, nan_ok=True)
    assert sum(math.isnan(a) for a, _ in expected) == 1  # the 30 x 6 matrix: neither fits it
    # through the criteria: one matrix per block (the unfitted one shares its block and is left out)
    blocks = [[m] for m in matrices[:5]] + [[matrices[5], matrices[6]], [matrices[7]]]
    result = gardener.score(block_file(tmp_path, blocks), ["alpha", "alpha_weighted"], primary="alpha")
    per_block = [e for i, e in enumerate(expected) if i != 5]
    np.testing.assert_allclose(result.scores["alpha"], [a for a, _ in per_block], rtol=1e-9)
    np.testing.assert_allclose(result.scores["alpha_weighted"], [w for _, w in per_block], rtol=1e-9)


def test_alpha_of_spectra_under_20_eigenvalues_is_weightwatchers_small_sample_fit():
    """9 to 19 eigenvalues: WeightWatcher's bias-corrected fit on tails of at least 8, the least KS distance."""
    rng = np.random.default_rng(0)
    matrices = [rng.standard_normal((64, m)).astype(np.float32) for m in (9, 12, 16, 19)]
    matrices += [heavy_matrix((48, m), m) for m in (10, 14, 18)]
    for m, (alpha, _) in zip(matrices, weightwatcher_fits(matrices)):
        fit = spectra.fit_power_law(spectra.eigenvalues(spectra.singular_values(m)))
        assert fit.alpha == pytest.approx(alpha, rel=1e-9)


@pytest.mark.parametrize("alpha", [2.5, 3.5, 5.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_alpha_recovers_a_constructed_power_law(alpha, seed):
    w = power_law_matrix(alpha, 400, seed)
    s = spectra.singular_values(w)
    fit = spectra.fit_power_law(spectra.eigenvalues(s))
    assert fit.alpha == pytest.approx(alpha, rel=0.10)
    assert fit.n_tail >= 20


def test_alpha_finds_the_tail_above_a_bulk():
    """A bulk of small eigenvalues under a power-law tail: the KS choice of xmin skips the bulk."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        tail = (1 - rng.random(1000)) ** (-1 / 2.0)  # alpha 3 above xmin 1
        bulk = rng.uniform(0.05, 0.6, 1000)
        fit = spectra.fit_power_law(np.concatenate([bulk, tail]))
        assert fit.alpha == pytest.approx(3.0, rel=0.10)
        assert 0.6 <= fit.xmin <= 2.0 and fit.n_tail > 300  # above the bulk, most of the tail


def rank_deficient(shape: tuple[int, int], rank: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1])) * 0.01).astype(np.float32)


@pytest.mark.parametrize("make", [lambda shape, seed: heavy_matrix(shape, seed),
                                  lambda shape, seed: rank_deficient(shape, 5, seed)],
                         ids=["heavy", "rank-5"])
def test_gram_eigenvalues_give_the_svd_criteria(make):
    """The default route (float64 Gram eigenvalues) against LAPACK SVDs in float64 and float32."""
    for shape, seed in zip(SHAPES, range(3)):
        w = make(shape, seed)
        gram, svd64 = spectra.singular_values(w), spectra.singular_values(w, "svd")
        svd32 = spectra.singular_values(w, "svd", np.float32)
        np.testing.assert_allclose(gram[:5], svd64[:5], rtol=1e-10)
        for stat in (spectra.spectral_entropy, spectra.stable_rank, spectra.log_spectral_norm):
            assert stat(gram) == pytest.approx(stat(svd64), rel=1e-6)
            assert stat(svd32) == pytest.approx(stat(svd64), rel=1e-4)  # float32 would do as well
        assert spectra.fit_power_law(spectra.eigenvalues(gram)).alpha == pytest.approx(
            spectra.fit_power_law(spectra.eigenvalues(svd64)).alpha, rel=1e-6, nan_ok=True)


def test_spectral_criteria_survive_a_half_precision_round_trip_but_entropy_does_not(tmp_path, block_matrices):
    original = block_file(tmp_path, block_matrices, name="f32.safetensors")
    halved = [[m.astype(np.float16).astype(np.float32) for m in mats] for mats in block_matrices]
    round_trip = block_file(tmp_path, halved, name="f16_f32.safetensors")
    a = gardener.score(original, ["entropy", *SPECTRAL])
    b = gardener.score(round_trip, ["entropy", *SPECTRAL])
    for name in SPECTRAL:
        np.testing.assert_allclose(b.scores[name], a.scores[name], rtol=1e-2, err_msg=name)
    assert a.ranks("stable_rank") == b.ranks("stable_rank")
    # exact-value entropy counts distinct numbers: float16 rounding merges a third of them, and the
    # entropy moves by at least 10x the largest relative change of any spectral criterion
    spectral_change = max(np.max(np.abs(np.array(b.scores[n]) / np.array(a.scores[n]) - 1)) for n in SPECTRAL)
    entropy_change = np.abs(np.array(b.scores["entropy"]) / np.array(a.scores["entropy"]) - 1)
    assert entropy_change.min() > 0.03 and entropy_change.min() > 10 * spectral_change
    assert all(d_b < 0.75 * d_a for d_a, d_b in zip((x.distinct for x in a.blocks), (x.distinct for x in b.blocks)))


def test_spectral_criteria_ignore_row_and_column_order(tmp_path, block_matrices):
    rng = np.random.default_rng(7)
    shuffled = [[m[rng.permutation(m.shape[0])][:, rng.permutation(m.shape[1])] for m in mats]
                for mats in block_matrices]
    a = gardener.score(block_file(tmp_path, block_matrices, name="a.safetensors"), SPECTRAL)
    b = gardener.score(block_file(tmp_path, shuffled, name="b.safetensors"), SPECTRAL)
    for name in SPECTRAL:
        np.testing.assert_allclose(b.scores[name], a.scores[name], rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("name,removes", [("spectral_entropy", "highest"), ("effective_rank", "highest"),
                                          ("stable_rank", "highest"), ("alpha", "highest"),
                                          ("alpha_weighted", "highest"), ("log_spectral_norm", "lowest")])
def test_direction_is_documented(name, removes):
    crit = criteria.get(name)
    assert crit.removes == removes
    doc = criteria.spectral.__doc__
    assert "removed first" in crit.summary and "Pruning directions" in doc


def test_spectral_criteria_need_matrices():
    values = BlockValues([("blocks.0.norm.weight", np.ones(8, np.float32), "F32")])
    with pytest.raises(GardenerError, match="need 2-D weight matrices.*blocks.0.norm.weight"):
        _ = values.spectra


def test_nan_in_a_matrix_is_an_error_naming_it(tmp_path, block_matrices):
    block_matrices[2][1] = block_matrices[2][1].copy()
    block_matrices[2][1][3, 4] = np.nan
    with pytest.raises(GardenerError, match=r"blocks\.2\.m1\.weight.*NaN"):
        gardener.score(block_file(tmp_path, block_matrices), ["stable_rank"], primary="stable_rank")


def test_bad_aggregate_is_one_line_error(tmp_path, block_matrices, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(block_file(tmp_path, block_matrices)), "--aggregate", "median"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--aggregate 'median'" in err and "mean, min, max, weighted" in err and "Traceback" not in err


# --- the precision report --------------------------------------------------------------------------------


def test_precision_report_flags_float32_entropy(tmp_path, block_matrices):
    report = precision_report(block_file(tmp_path, block_matrices))
    assert report["stored_dtypes"] == ["F32"]
    assert list(report["views"]) == ["stored", "float16", "bfloat16"]  # float32 is what is stored
    assert min(report["distinct_share"]) > 0.99
    assert not report["meaningful"] and report["verdict"].startswith("not meaningful")
    for view in report["views"]:
        assert report["views"][view]["distinct"] == [
            gardener.score(block_file(tmp_path, block_matrices), ["entropy"], dtype=view).blocks[i].distinct
            for i in range(4)]
    rho = report["spearman"]
    assert rho["stored"]["float16"] == pytest.approx(scipy.stats.spearmanr(
        report["views"]["stored"]["ranks"], report["views"]["float16"]["ranks"]).statistic)
    assert rho["float16"]["stored"] == rho["stored"]["float16"]


def test_precision_report_accepts_half_precision_weights(tmp_path, block_matrices):
    """Values stored in float32 after a float16 round trip: they repeat, and every view ranks alike."""
    halved = [[m.astype(np.float16).astype(np.float32) for m in mats] for mats in block_matrices]
    report = precision_report(block_file(tmp_path, halved))
    assert max(report["distinct_share"]) < 0.75
    assert report["views"]["float16"]["entropy"] == pytest.approx(report["views"]["stored"]["entropy"], rel=1e-12)
    assert report["spearman"]["stored"]["float16"] == 1.0
    assert report["meaningful"] and report["verdict"].startswith("meaningful")


def test_precision_report_on_the_command_line(tmp_path, block_matrices, capsys):
    path = block_file(tmp_path, block_matrices)
    out_json = tmp_path / "scores.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(path), "--precision-report", "--criteria", "entropy,alpha", "--json", str(out_json),
              "--csv", str(tmp_path / "scores.csv"), "--aggregate", "max"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Spearman rho between the views" in out and "not meaningful at the stored precision" in out
    data = json.loads(out_json.read_text())
    assert data["meta"]["precision"]["verdict"].startswith("not meaningful")
    assert data["meta"]["inputs"]  # the manifest is still there beside it
    assert set(data["criteria"]) == {"entropy", "alpha"} and data["aggregate"] == "max"
    assert json.loads((tmp_path / "scores.meta.json").read_text())["aggregate"] == "max"  # beside the plain CSV


@pytest.mark.parametrize("name,axis", [("blocks.0.attn.qkv.weight", 0), ("h.0.attn.c_attn.weight", 1)])
def test_fused_attention_projection_is_read_as_query_key_value(name, axis):
    parts = [heavy_matrix((32, 32), seed) for seed in range(3)]
    fused = np.concatenate(parts, axis=axis)
    spectra_of = BlockValues([(name, fused, "F32")]).spectra
    assert [n for n, _, _ in spectra_of] == [name] * 3 and [size for _, size, _ in spectra_of] == [32 * 32] * 3
    for (_, _, s), part in zip(spectra_of, parts):
        ref = np.linalg.svd(part.astype(np.float64), compute_uv=False)
        np.testing.assert_allclose(s, ref, rtol=1e-9, atol=1e-12 * ref[0])


def test_prune_by_a_spectral_criterion_removes_what_its_scores_rank_last(tmp_path, block_matrices):
    path = block_file(tmp_path, block_matrices)
    removed = {}
    for how in ("mean", "min"):
        expected = sorted(gardener.score(path, ["alpha"], primary="alpha", aggregate=how).removal_order()[:2])
        with pytest.raises(SystemExit) as exit_info:
            main(["prune", str(path), "--ratio", "0.5", "--criterion", "alpha", "--aggregate", how,
                  "-o", str(tmp_path / f"out_{how}")])
        assert exit_info.value.code == 0
        record = json.loads((tmp_path / f"out_{how}" / "gardener.json").read_text())
        assert record["removed_blocks"] == expected and record["criterion"] == "alpha"
        removed[how] = expected
    assert removed["mean"] != removed["min"]  # so --aggregate really reached the ranking
