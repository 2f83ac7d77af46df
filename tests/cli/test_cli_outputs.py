"""What the commands write and say: umask, folders made as needed, the demo times, a line per job without a tty."""
from __future__ import annotations

import os

import pytest
from conftest import QUICK_CLIPS as CLIPS
from conftest import build_hf, cli, write_safetensors
from conftest import quick_recipe as _recipe

import gardener
from gardener.train import DataOptions, finetune


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_honour_the_umask(tmp_path, capsys, umask, file_mode, dir_mode):
    source = write_safetensors(build_hf("vit").state_dict(), tmp_path / "vit.safetensors")
    previous = os.umask(umask)
    try:
        assert cli(["prune", source, "-o", tmp_path / "out", "--remove", "1", "--criterion", "l2"], capsys)[0] == 0
        assert cli(["score", source, "--json", tmp_path / "s.json", "--csv", tmp_path / "s.csv"], capsys)[0] == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == dir_mode
    for path in (tmp_path / "out" / "gardener.json", tmp_path / "out" / "vit.safetensors", tmp_path / "s.json",
                 tmp_path / "s.csv", tmp_path / "s.meta.json"):
        assert path.stat().st_mode & 0o777 == file_mode, path


def test_outputs_in_folders_that_do_not_exist_yet(tmp_path, video_root, tiny_model_dir, capsys):
    source = write_safetensors(build_hf("vit").state_dict(), tmp_path / "vit.safetensors")
    assert cli(["prune", source, "-o", tmp_path / "runs" / "a" / "small", "--remove", "1", "--criterion", "l2"], capsys)[0] == 0
    assert cli(["score", source, "--json", tmp_path / "runs" / "b" / "s.json"], capsys)[0] == 0
    info = finetune(tiny_model_dir, tmp_path / "runs" / "c" / "ft", DataOptions(video_root, workers=0),
                    _recipe(max_steps=1), **CLIPS)
    assert info["steps"] == 1
    assert (tmp_path / "runs" / "a" / "small" / "gardener.json").is_file()
    assert (tmp_path / "runs" / "b" / "s.json").is_file() and (tmp_path / "runs" / "c" / "ft" / "model").is_dir()


def test_readme_and_help_give_the_same_measured_demo_times(capsys):
    from pathlib import Path

    from gardener.demo import RUN_TIMES

    readme = " ".join((Path(gardener.__file__).parents[1] / "README.md").read_text(encoding="utf-8").split())
    code, out, _ = cli(["demo", "--help"], capsys)
    shown = " ".join(out.replace("│", " ").split())
    for figure in RUN_TIMES.values():
        assert figure in readme and figure in shown, figure
    assert code == 0
