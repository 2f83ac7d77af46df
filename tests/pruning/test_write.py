"""Writing pruned weights: the streamed safetensors writer, shards, and the side files copied beside them."""
from __future__ import annotations

import numpy as np
import torch
from conftest import CONFIGS, build_hf, save_hf
from safetensors.torch import load_file

from gardener.pruning import Cut, WriteOptions, prune_checkpoint
from gardener.pruning import write as export
from gardener.scoring import ScoreSettings


def test_sharded_output_and_side_files(tmp_path):
    src = save_hf(build_hf("bert"), tmp_path / "src")
    (src / "README.md").write_text("model card")
    prune_checkpoint(src, tmp_path / "out", Cut(ratio=0.5), ScoreSettings(primary="l2"),
                     write=WriteOptions(max_shard_size="20KB"))
    out = tmp_path / "out"
    assert (out / "model.safetensors.index.json").is_file() and (out / "README.md").read_text() == "model card"
    model = CONFIGS["bert"][0].from_pretrained(out)
    assert model.config.num_hidden_layers == 2


def test_streamed_safetensors_writer_round_trips_bfloat16(tmp_path):
    t = torch.randn(5, 7).to(torch.bfloat16)
    raw = t.view(torch.int16).numpy().view(np.uint16)
    export.write_safetensors(tmp_path / "b.safetensors", [("w", "BF16", (5, 7), lambda: raw)])
    assert torch.equal(load_file(str(tmp_path / "b.safetensors"))["w"], t)
