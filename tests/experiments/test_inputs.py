"""Experiment inputs: bad sweep ratios are refused in one line, named as given, before any run folder is made."""
from __future__ import annotations

from conftest import cli, one_line_error


def test_bad_sweep_ratios_leave_no_run_folder_and_are_named_as_given(tmp_path, video_root, tiny_model_dir, capsys):
    for ratios, said in (("150", "--ratios 150: 150 is not a pruning ratio"),
                         ("1", "--ratios 1: 1 is not a pruning ratio"),
                         ("0.01", "--ratios 0.01: 0.01 removes 0 of 2 blocks")):
        code, _, err = cli(["sweep", tiny_model_dir, "--data", video_root, "-o", tmp_path / "run", "--ratios", ratios,
                            "--max-steps", 1], capsys)
        assert code == 2 and said in one_line_error(err) and "--ratio " not in err
        assert not (tmp_path / "run").exists()
