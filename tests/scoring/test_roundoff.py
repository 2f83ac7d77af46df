"""One rule for when exact-value entropy is meaningful (issue 30): scoring's warning and the precision report's
verdict read the same share of distinct values against the same threshold, and the share they print never
falls on the other side of it from the share compared."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_hf, cli, save_hf, write_safetensors

import gardener
from gardener.scoring import precision_report
from gardener.scoring.roundoff import LIMIT, MAX_DISTINCT_SHARE, coarser_views, entropy_meaningful, percent


def share_checkpoint(path, share: float, n: int = 2000, depth: int = 4, dtype=np.float32):
    """`depth` blocks of `n` weights each, exactly round(share x n) of them distinct in every block (the
    rest repeat some of those), stored in `dtype`."""
    rng = np.random.default_rng(0)
    state = {}
    for i in range(depth):
        distinct = round(share * n)
        pool = np.unique((rng.standard_normal(4 * n) * 0.02).astype(dtype))
        values = rng.permutation(pool)[:distinct]
        weights = np.concatenate([values, rng.choice(values, n - distinct)])
        assert len(np.unique(weights)) == distinct
        state[f"blocks.{i}.fc.weight"] = torch.from_numpy(rng.permutation(weights).reshape(n // 50, 50))
    return write_safetensors(state, path)


def round_off_warnings(result) -> list[str]:
    return [c for c in result.caveats() if "decided by round-off" in c]


def shown_share(text: str) -> float:
    """The fraction a printed share stands for ("98.9 %" -> 0.989)."""
    return float(text.removesuffix(" %")) / 100


# --- the rule and how its numbers are printed ----------------------------------------------------------------


def test_the_rule_is_one_threshold_on_the_least_distinct_block():
    assert MAX_DISTINCT_SHARE == 0.9 and LIMIT == "90 %"
    assert entropy_meaningful(0.003) and entropy_meaningful(0.59)  # float16 weights: the paper's, the demo's
    assert entropy_meaningful(0.9) and not entropy_meaningful(0.9 + 1e-12)
    assert not entropy_meaningful(0.953) and not entropy_meaningful(0.989)  # float32: VideoMAE-B's size, MiniLM


@pytest.mark.parametrize("fraction", [0.989, 0.8999, 0.89996, 0.9, 0.90004, 0.9000001, 0.9 + 1e-12, 0.9 - 1e-12,
                                      0.99996, 0.999999, 1.0, 0.0, 0.5, 0.00004])
def test_the_printed_share_never_contradicts_the_rule(fraction):
    text = percent(fraction)
    assert text.endswith(" %") and "." in text
    assert entropy_meaningful(shown_share(text)) == entropy_meaningful(fraction), text
    assert (shown_share(text) == 1) == (fraction == 1), text  # "100.0 %" only when every value is distinct


def test_shares_of_real_counts_are_printed_on_their_side_of_the_rule():
    rng = np.random.default_rng(1)
    for n in [10, 2000, 12_288, 1_769_472, 7_077_888, 202_375_168]:
        around = int(MAX_DISTINCT_SHARE * n)
        for d in {*range(max(around - 3, 0), min(around + 4, n + 1)), *rng.integers(0, n + 1, 20).tolist()}:
            assert entropy_meaningful(shown_share(percent(d / n))) == entropy_meaningful(d / n), (d, n)
    assert percent(0.90004) == "90.004 %"  # not 90.0 %, which the rule would pass
    assert percent(0.989) == "98.9 %"  # MiniLM's share as its table shows it; not "at least 99 %"


def test_coarser_views_are_what_to_try_instead():
    assert coarser_views(["F32"]) == ["float16", "bfloat16"]
    assert coarser_views(["F16"]) == ["bfloat16"] and coarser_views(["F16", "F32"]) == ["float16", "bfloat16"]
    assert coarser_views(["BF16"]) == []


# --- the warning and the verdict agree -----------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.5, 0.895, 0.9, 0.905, 0.989, 1.0])
def test_warning_and_verdict_agree_on_both_sides_of_the_threshold(tmp_path, share):
    path = share_checkpoint(tmp_path / "w.safetensors", share)
    result = gardener.score(path, ["entropy"])
    report = precision_report(path)
    assert report["distinct_share"] == [share] * 4 and report["distinct_shown"] == [percent(share)] * 4
    warned = round_off_warnings(result)
    assert bool(warned) == report["verdict"].startswith("not meaningful") == (share > MAX_DISTINCT_SHARE)
    assert (result.round_off("entropy") is not None) == bool(warned)
    assert not (warned and report["meaningful"])
    for text in warned + [report["verdict"]]:  # the same share, printed alike, beside the same threshold
        assert f"{percent(share)} of the values in the least distinct block are distinct" in text
        assert f"({'over' if warned else 'within'} the 90 % up to which exact-value entropy is meaningful)" in text


def test_mostly_distinct_float16_values_get_no_round_off_warning(tmp_path):
    """The old rule warned above 50 % distinct, the report called the same checkpoint meaningful."""
    path = share_checkpoint(tmp_path / "h.safetensors", 0.7, dtype=np.float16)
    result = gardener.score(path, ["entropy"])
    assert result.stored_dtypes == ["F16"] and round_off_warnings(result) == []
    assert not precision_report(path)["verdict"].startswith("not meaningful")


def test_float16_values_nearly_all_distinct_are_told_to_try_bfloat16_only(tmp_path):
    path = share_checkpoint(tmp_path / "h.safetensors", 0.95, dtype=np.float16)
    (warning,) = round_off_warnings(gardener.score(path, ["entropy"]))
    verdict = precision_report(path)["verdict"]
    for text in (warning, verdict):
        assert "95.0 %" in text and "--dtype bfloat16, or a precision-free criterion" in text
        assert "float16 or" not in text  # never "try --dtype float16" on float16 weights


@pytest.mark.parametrize("dtype,round_off", [(torch.float32, True), (torch.float16, False)])
def test_a_tiny_model_in_float32_and_in_float16_on_the_command_line(tmp_path, capsys, dtype, round_off):
    """The same VideoMAE stored in float32 (nearly every value distinct) and in float16 (values repeat): score
    --precision-report prints the warning exactly when the verdict says round-off, with the same share."""
    src = save_hf(build_hf("videomae"), tmp_path / "m", dtype=dtype)
    code, out, err = cli(["score", src, "--criteria", "entropy", "--precision-report"], capsys)
    assert code == 0
    out, err = " ".join(out.split()), " ".join(err.split())
    least = min(precision_report(src)["distinct_share"])
    assert ("decided by round-off" in err) == round_off == ("not meaningful at the stored precision" in out)
    assert entropy_meaningful(least) != round_off and f"{percent(least)} of the values" in out
    if round_off:
        assert f"{percent(least)} of the values" in err and "try --dtype float16 or bfloat16" in err
