"""Prune and round-off (issue 30): a ranking by an exact-value criterion that the rule of scoring's warning and
the precision report calls round-off is refused, in one line naming what to give instead, and nothing is
written; --allow-round-off, a coarser --dtype or another --criterion prune as before."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import build_hf, cli, one_line_error, save_hf

from gardener.errors import SettingError
from gardener.pruning import Cut, prune_checkpoint
from gardener.scoring import ScoreSettings


@pytest.fixture
def float32_vit(tmp_path):
    """A tiny ViT stored in float32: nearly every weight value of a block is distinct."""
    return save_hf(build_hf("vit"), tmp_path / "vit")


def _written(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("criterion", ["entropy", "efficiency"])  # both count exact values
def test_prune_refuses_a_round_off_ranking_in_one_line_and_writes_nothing(tmp_path, capsys, float32_vit, criterion):
    code, _, err = cli(["prune", float32_vit, "-o", tmp_path / "small", "--remove", "1", "--criterion", criterion],
                       capsys)
    line = one_line_error(err)
    assert code == 2 and line.startswith(f"error: --criterion {criterion}: ")
    assert "of the values in the least distinct block are distinct (over the 90 %" in line
    assert "ranking is decided by round-off" in line
    assert ("give --dtype float16 or bfloat16, or another --criterion (hist_entropy, stable_rank, alpha), or "
            "--allow-round-off to prune by it anyway") in line
    assert _written(tmp_path) == ["vit"]


def test_prune_by_a_round_off_ranking_when_allowed_keeps_the_warning(tmp_path, capsys, float32_vit):
    code, _, err = cli(["prune", float32_vit, "-o", tmp_path / "small", "--remove", "1", "--allow-round-off"], capsys)
    manifest = json.loads((tmp_path / "small" / "gardener.json").read_text())
    assert code == 0 and manifest["criterion"] == "entropy" and manifest["depth_after"] == 3
    said = [w for w in manifest["warnings"] if "decided by round-off" in w]
    assert len(said) == 1 and said[0][:50] in " ".join(err.split())


@pytest.mark.parametrize("extra", [["--dtype", "float16"], ["--dtype", "bfloat16"], ["--criterion", "l2"],
                                   ["--blocks", "2"]])
def test_prune_proceeds_with_a_coarser_view_another_criterion_or_named_blocks(tmp_path, capsys, float32_vit, extra):
    code, _, err = cli(["prune", float32_vit, "-o", tmp_path / "small", *(extra if "--blocks" in extra else
                                                                           ["--remove", "1", *extra])], capsys)
    manifest = json.loads((tmp_path / "small" / "gardener.json").read_text())
    assert code == 0 and manifest["depth_after"] == 3 and "round-off" not in err
    if "--dtype" in extra:
        assert manifest["dtype_view"] == extra[1] and manifest["criterion"] == "entropy"


def test_a_float16_checkpoint_prunes_by_entropy_without_a_word_on_round_off(tmp_path, capsys):
    src = save_hf(build_hf("vit"), tmp_path / "vit", dtype=torch.float16)
    code, _, err = cli(["prune", src, "-o", tmp_path / "small", "--remove", "1"], capsys)
    assert code == 0 and "round-off" not in err


def test_the_library_refuses_by_the_setting_and_takes_allow_round_off(tmp_path, float32_vit):
    with pytest.raises(SettingError) as refused:
        prune_checkpoint(float32_vit, tmp_path / "small", Cut(remove=1))
    assert refused.value.setting == "primary" and str(refused.value).startswith("primary entropy: ")
    assert "give dtype float16 or bfloat16, or another primary" in str(refused.value)
    assert "or allow_round_off to prune by it anyway" in str(refused.value) and "\n" not in str(refused.value)
    assert _written(tmp_path) == ["vit"]
    info = prune_checkpoint(float32_vit, tmp_path / "small", Cut(remove=1, allow_round_off=True),
                            ScoreSettings(primary="entropy"))
    assert info["depth_after"] == 3 and any("decided by round-off" in w for w in info["warnings"])


def test_a_ranking_file_made_by_round_off_is_refused_unless_allowed(tmp_path, capsys, float32_vit):
    for view in ("stored", "float16"):
        assert cli(["score", float32_vit, "--criteria", "entropy", "--dtype", view, "--json",
                    tmp_path / f"{view}.json"], capsys)[0] == 0
    code, _, err = cli(["prune", float32_vit, "-o", tmp_path / "a", "--remove", "1", "--ranking",
                        tmp_path / "stored.json"], capsys)
    line = one_line_error(err)
    assert code == 2 and f"--ranking {tmp_path / 'stored.json'}: ranks by entropy" in line
    assert "score again with --dtype float16 or bfloat16" in line and "--allow-round-off" in line
    assert not (tmp_path / "a").exists()
    for args in (["--ranking", tmp_path / "stored.json", "--allow-round-off"],
                 ["--ranking", tmp_path / "float16.json"]):
        assert cli(["prune", float32_vit, "-o", tmp_path / "b", "--remove", "1", "--force", *args], capsys)[0] == 0
