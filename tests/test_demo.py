"""The README's main command: `gardener demo` writes a real checkpoint and its scores."""
from __future__ import annotations

import json

import pytest
from safetensors import safe_open

import gardener
from gardener.cli import main


def test_demo_writes_checkpoint_scores_and_manifest(tmp_path, capsys):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", str(out), "--seed", "1"])
    assert exit_info.value.code == 0
    assert "Removal order by entropy" in capsys.readouterr().out
    with safe_open(out / "model" / "model.safetensors", "np") as f:
        assert f.get_tensor("videomae.encoder.layer.0.output.dense.weight").dtype.name == "float16"
    scores = json.loads((out / "scores.json").read_text())
    rescored = gardener.score(out / "model", "all", seed=1)
    assert scores["removal_order"] == rescored.removal_order()
    assert scores["criteria"]["entropy"]["scores"] == rescored.scores["entropy"]
    manifest = json.loads((out / "gardener.json").read_text())
    assert manifest["arguments"]["seed"] == 1 and len(manifest["inputs"][0]["sha256"]) == 64
    assert (out / "histograms.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    with pytest.raises(SystemExit) as again:
        main(["demo", str(out)])
    assert again.value.code != 0 and "already exists" in capsys.readouterr().err
