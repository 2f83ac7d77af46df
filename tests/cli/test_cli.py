"""The command line: tables and files for good input, one line and a non-zero exit for bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import random_values, write_safetensors

import gardener
from gardener.cli import main


def run(args: list[str]) -> subprocess.CompletedProcess:
    """The installed entry point in a separate process, as a user runs it."""
    return subprocess.run([sys.executable, "-c", "from gardener.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    """The same entry point in-process (faster), returning (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_score_prints_table_and_removal_order(videomae_dir, capsys):
    code, out, err = cli(["score", str(videomae_dir)], capsys)
    assert code == 0
    assert "videomae.encoder.layer" in err and "4 blocks" in err and "dtype view: stored" in err
    order = gardener.score(videomae_dir).removal_order("entropy")
    assert f"Removal order by entropy (lowest first): {', '.join(map(str, order[:-1]))}" in out
    for name in gardener.criteria.data_free():  # "all": every criterion the weights alone decide
        assert name in out


def test_score_writes_json_csv_plot(videomae_dir, tmp_path, capsys):
    js, cs, png = tmp_path / "s.json", tmp_path / "s.csv", tmp_path / "h.png"
    code, _, _ = cli(["score", str(videomae_dir), "--criteria", "entropy,l1,kurtosis", "--criterion", "l1",
                      "--json", str(js), "--csv", str(cs), "--plot", str(png), "--seed", "4"], capsys)
    assert code == 0
    data = json.loads(js.read_text())
    result = gardener.ScoreResult.load(js)
    assert result.primary == "l1" and data["removal_order"] == result.removal_order("l1")
    assert data["criteria"]["kurtosis"]["removes"] == "highest"
    assert data["meta"]["inputs"][0]["sha256"] and data["meta"]["versions"]["numpy"]
    assert data["meta"]["arguments"]["seed"] == 4
    frame = pd.read_csv(cs, comment="#")
    np.testing.assert_allclose(frame["entropy"], data["criteria"]["entropy"]["scores"], rtol=1e-15)
    assert list(frame["l1_rank"]) == data["criteria"]["l1"]["ranks"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_output_needs_force(videomae_dir, tmp_path, capsys):
    js = tmp_path / "s.json"
    js.write_text("keep me")
    code, _, err = cli(["score", str(videomae_dir), "--json", str(js)], capsys)
    assert code != 0 and "already exists; pass --force" in err and js.read_text() == "keep me"
    code, _, _ = cli(["score", str(videomae_dir), "--json", str(js), "--force"], capsys)
    assert code == 0 and json.loads(js.read_text())["stack"] == "videomae.encoder.layer"


def test_dtype_view_is_stated_and_changes_entropy(tmp_path, capsys):
    w = torch.from_numpy(random_values(8192))
    path = write_safetensors({f"blocks.{i}.fc.weight": (w * (i + 1)).reshape(-1, 16) for i in range(3)},
                             tmp_path / "f32.safetensors")
    stored = gardener.score(path, ["entropy"])
    half = gardener.score(path, ["entropy"], dtype="float16")
    assert all(h < s for h, s in zip(half.scores["entropy"], stored.scores["entropy"]))
    code, _, err = cli(["score", str(path), "--dtype", "bfloat16", "--criteria", "entropy"], capsys)
    assert code == 0 and "dtype view: bfloat16 (stored as F32)" in err


def _nan_checkpoint(tmp_path):
    w = torch.ones(8, 8)
    w[0, 0] = float("nan")
    return write_safetensors({"blocks.0.fc.weight": w, "blocks.1.fc.weight": torch.ones(8, 8)},
                             tmp_path / "nan.safetensors")


def _truncated(tmp_path):
    path = write_safetensors({"blocks.0.fc.weight": torch.ones(32, 32)}, tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:-64])
    return path


def _evil(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))
    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    return tmp_path / "evil.pth"


BAD_INPUTS = {
    "missing path": (lambda p: [str(p / "missing")], "no such file or directory"),
    "dir without weights": (lambda p: [str((p / "d").mkdir() or p / "d")], "no weights found"),
    "truncated safetensors": (lambda p: [str(_truncated(p))], "truncated"),
    "pickle that runs code": (lambda p: [str(_evil(p))], "refused to unpickle"),
    "unknown stack": (lambda p: [str(_nan_checkpoint(p)), "--stack", "decoder"], "--stack 'decoder' not found"),
    "nan weights": (lambda p: [str(_nan_checkpoint(p))], "'blocks.0.fc.weight' contains NaN"),
    "unknown criterion": (lambda p: [str(_nan_checkpoint(p)), "--criteria", "entropy,bogus"],
                          "unknown criterion 'bogus'"),
    "bad dtype": (lambda p: [str(_nan_checkpoint(p)), "--dtype", "int8"], "--dtype 'int8'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_nonzero(tmp_path, case):
    make_args, message = BAD_INPUTS[case]
    proc = run(["score", *make_args(tmp_path)])
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "ran" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr


def test_criteria_command_lists_registry(capsys):
    code, out, _ = cli(["criteria"], capsys)
    assert code == 0
    assert all(name in out for name in gardener.criteria.names())


PRUNE_BAD = {
    "ratio zero": (["--ratio", "0"], "strictly between 0 and 1"),
    "ratio one": (["--ratio", "1"], "strictly between 0 and 1"),
    "ratio nan": (["--ratio", "nan"], "strictly between 0 and 1"),
    "count too large": (["--remove", "4"], "expected 1..3"),
    "duplicate blocks": (["--blocks", "2,2"], "lists a block twice"),
    "out of range": (["--blocks", "9"], "out of range 1..4"),
    "no choice": ([], "exactly one of --ratio, --remove or --blocks"),
}


@pytest.mark.parametrize("case", list(PRUNE_BAD))
def test_prune_bad_input_is_one_line(videomae_dir, tmp_path, case):
    extra, message = PRUNE_BAD[case]
    proc = run(["prune", str(videomae_dir), "-o", str(tmp_path / "out"), *extra])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_prune_existing_and_unwritable_output(videomae_dir, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    code, _, err = cli(["prune", str(videomae_dir), "-o", str(tmp_path / "out"), "--remove", "1"], capsys)
    assert code != 0 and "already exists; pass --force" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a parent that is a file cannot hold the output, even for root
    code, _, err = cli(["prune", str(videomae_dir), "-o", str(blocker / "out"), "--remove", "1"], capsys)
    assert code != 0 and "a-file is not a folder" in err and blocker.read_text() == "x"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = cli(["prune", str(videomae_dir), "-o", str(locked / "out"), "--remove", "1"], capsys)
    if os.access(locked, os.W_OK):  # root ignores permissions
        pytest.skip("running as root: permissions are not enforced")
    assert code != 0 and "not writable" in err


def test_prune_and_info_commands(videomae_dir, tmp_path, capsys):
    code, out, _ = cli(["prune", str(videomae_dir), "-o", str(tmp_path / "p"), "--ratio", "0.5",
                        "--frames", "4", "--size", "32"], capsys)
    assert code == 0 and "GFLOPs" in out and "removed blocks" in out
    manifest = json.loads((tmp_path / "p" / "gardener.json").read_text())
    assert manifest["gflops_after"] < manifest["gflops_before"] and manifest["depth_after"] == 2
    code, out, _ = cli(["info", str(tmp_path / "p"), "--frames", "4", "--size", "32"], capsys)
    assert code == 0 and "videomae.encoder.layer" in out and f"{manifest['params_after']:,}" in out
