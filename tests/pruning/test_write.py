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


def _source_file(tmp_path):
    torch.manual_seed(0)
    state = {"a": torch.randn(300, 70).to(torch.bfloat16), "empty": torch.zeros(0, 4), "b": torch.arange(12.0)}
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "src.safetensors"))
    return state, tmp_path / "src.safetensors"


def _copied(tmp_path, name):
    from gardener.checkpoint import open_checkpoint

    ckpt = open_checkpoint(_source_file(tmp_path)[1])
    tensors = [(f"x.{n}", ckpt.info(n).dtype, ckpt.info(n).shape,
                export.Source(lambda n=n: ckpt.read(n), ckpt.byte_span(n))) for n in ckpt.names()]
    export.write_safetensors(tmp_path / name, tensors)
    return load_file(str(tmp_path / name))


def test_kept_tensors_are_copied_file_to_file_bit_for_bit(tmp_path):
    state = _source_file(tmp_path)[0]
    out = _copied(tmp_path, "kernel.safetensors")
    assert sorted(out) == ["x.a", "x.b", "x.empty"] and all(torch.equal(out[f"x.{n}"], t) for n, t in state.items())


def test_where_the_kernel_cannot_copy_the_bytes_are_copied_in_chunks(tmp_path, monkeypatch):
    import errno

    def refuse(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr("os.copy_file_range", refuse, raising=False)
    state = _source_file(tmp_path)[0]
    out = _copied(tmp_path, "chunks.safetensors")
    assert sorted(out) == ["x.a", "x.b", "x.empty"] and all(torch.equal(out[f"x.{n}"], t) for n, t in state.items())
