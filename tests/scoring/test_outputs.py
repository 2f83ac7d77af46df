"""Score outputs: a plain scores CSV with its metadata beside it, and a compact rank table for a deep stack."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from conftest import cli, random_values, write_safetensors

import gardener


def test_the_scores_csv_is_plain_and_its_metadata_sits_beside_it(videomae_dir, tmp_path, capsys):
    assert cli(["score", videomae_dir, "--csv", tmp_path / "s.csv", "--json", tmp_path / "s.json"], capsys)[0] == 0
    frame = pd.read_csv(tmp_path / "s.csv")
    scores = json.loads((tmp_path / "s.json").read_text())
    assert list(frame["block"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(frame["entropy"], scores["criteria"]["entropy"]["scores"], rtol=1e-15)
    meta = json.loads((tmp_path / "s.meta.json").read_text())
    assert meta["stack"] == "videomae.encoder.layer" and meta["inputs"][0]["sha256"] and meta["versions"]["numpy"]


def test_a_deep_stack_gets_a_compact_rank_table(tmp_path, capsys):
    path = write_safetensors({f"layers.{i}.mlp.weight": torch.from_numpy(random_values(64, seed=i).reshape(8, 8))
                              for i in range(200)}, tmp_path / "deep.safetensors")
    code, out, _ = cli(["score", path, "--criteria", "entropy,l1,kurtosis"], capsys)
    assert code == 0 and "least and most important of 200 blocks per criterion" in out
    assert max(len(line) for line in out.splitlines() if "│" in line) <= 120
    l1 = gardener.score(path, "l1", primary="l1").removal_order("l1")
    assert ", ".join(map(str, l1[:8])) in out


def test_scoring_imports_a_plotting_library_only_when_a_figure_is_asked_for(videomae_dir, tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom gardener.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\nprint('torch' in sys.modules, 'accelerate' in sys.modules)\n"
            "print('matplotlib' in sys.modules)")

    def plotted(*outputs) -> str:
        run = subprocess.run([sys.executable, "-c", code, "score", str(videomae_dir), *map(str, outputs)],
                             capture_output=True, text=True, check=True)
        return run.stdout.strip().splitlines()[-1]
    assert plotted("--json", tmp_path / "s.json") == "False" and (tmp_path / "s.json").is_file()
    frameworks = subprocess.run([sys.executable, "-c", code, "score", str(videomae_dir), "--criteria", "l1"],
                                capture_output=True, text=True, check=True).stdout.strip().splitlines()[-2]
    assert frameworks == "False False"  # weights alone: neither torch nor accelerate (the calibration options' check)
    assert plotted("--plot", tmp_path / "h.png") == "True" and (tmp_path / "h.png").is_file()
