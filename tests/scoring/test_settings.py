"""Settings objects: built once, passed whole; the library names a bad setting by its Python name and the
command line by its flag."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli

import gardener
from gardener import Cut, ScoreSettings, SettingError
from gardener.pruning import WriteOptions


def test_a_settings_object_scores_as_its_keywords_do(videomae_dir):
    settings = ScoreSettings(criteria=("entropy", "l2"), primary="l2", dtype="float16", seed=3)
    whole = gardener.score(videomae_dir, settings=settings)
    keywords = gardener.score(videomae_dir, ["entropy", "l2"], primary="l2", dtype="float16", seed=3)
    assert whole.scores == keywords.scores and whole.primary == "l2" and whole.dtype_view == "float16"
    assert gardener.score(videomae_dir, settings=settings, dtype="stored").dtype_view == "stored"  # a field on top
    with pytest.raises(TypeError, match="no field 'criterion'"):
        gardener.score(videomae_dir, criterion="l2")


def test_prune_from_python_removes_what_the_command_removes(videomae_dir, tmp_path, capsys):
    settings = ScoreSettings(primary="l2")
    info = gardener.prune_checkpoint(videomae_dir, tmp_path / "py", Cut(ratio=0.5), settings)
    assert run_cli("prune", videomae_dir, "-o", tmp_path / "cli", "--ratio", "0.5", "--criterion", "l2") == 0
    cli = json.loads((tmp_path / "cli" / "gardener.json").read_text())
    assert info["removed_blocks"] == cli["removed_blocks"] and info["criterion"] == cli["criterion"] == "l2"
    assert info["removed_blocks"] == sorted(gardener.score(videomae_dir, ["l2"], primary="l2").removal_order()[:2])


@pytest.mark.parametrize("call, python, flag", [
    (lambda path, out: gardener.score(path, dtype="f8"), "dtype 'f8': expected one of", "--dtype 'f8': expected one of"),
    (lambda path, out: gardener.score(path, bins=1), "bins 1: expected at least 2", "--bins 1: expected at least 2"),
    (lambda path, out: gardener.prune_checkpoint(path, out, Cut(ratio=1.5)), "ratio 1.5: expected a fraction",
     "--ratio 1.5: expected a fraction"),
    (lambda path, out: gardener.prune_checkpoint(path, out, Cut(blocks=(2,), protect=(2,))),
     "blocks and protect both name block 2", "--blocks and --protect both name block 2"),
    (lambda path, out: gardener.prune_checkpoint(path, out, Cut()),
     "exactly one of ratio, remove or blocks", "exactly one of --ratio, --remove or --blocks"),
    (lambda path, out: gardener.prune_checkpoint(path, out, Cut(remove=1), write=WriteOptions(max_shard_size="0MB")),
     "max_shard_size '0MB'", "--max-shard-size '0MB'"),
    (lambda path, out: gardener.prune_checkpoint(path, out, Cut(remove=1), ScoreSettings(primary="nope")),
     "unknown criterion 'nope'", "unknown criterion 'nope'"),
])
def test_the_library_names_settings_and_the_command_line_names_flags(videomae_dir, tmp_path, call, python, flag):
    with pytest.raises(gardener.GardenerError) as raised:
        call(videomae_dir, tmp_path / "out")
    assert python in str(raised.value) and "--" not in str(raised.value).split(":")[0]
    if isinstance(raised.value, SettingError):
        from gardener.cli._app import flag_of

        assert flag in raised.value.render(flag_of)
    assert not (tmp_path / "out").exists()


def test_the_command_line_shows_a_setting_error_under_its_flag(videomae_dir, tmp_path, capsys):
    assert run_cli("score", videomae_dir, "--dtype", "f8") == 2
    assert "error: --dtype 'f8': expected one of stored, float16, bfloat16, float32" in capsys.readouterr().err
    assert run_cli("prune", videomae_dir, "-o", tmp_path / "o", "--blocks", "2", "--protect", "2") == 2
    assert "error: --blocks and --protect both name block 2" in capsys.readouterr().err
    assert run_cli("prune", videomae_dir, "-o", tmp_path / "o", "--remove", "1", "--criterion", "nope") == 2
    assert "error: unknown criterion 'nope'" in capsys.readouterr().err
