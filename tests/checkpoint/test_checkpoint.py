"""Reading checkpoints: tensors come back bit-exact, families are told apart, bad files are refused in one line."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
import transformers as T
from conftest import build_hf, cli, one_line_error, random_values, save_hf, write_safetensors

import gardener
from gardener.checkpoint import open_checkpoint
from gardener.errors import GardenerError


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_tensors_read_bit_exact(tmp_path, dtype, fmt):
    t = torch.from_numpy(random_values(96)).to(dtype).reshape(12, 8)
    if fmt == "safetensors":
        path = write_safetensors({"blocks.0.fc.weight": t}, tmp_path / "a.safetensors")
    else:
        path = tmp_path / "a.pth"
        torch.save({"blocks.0.fc.weight": t}, path)
    ckpt = open_checkpoint(path)
    arr = ckpt.read("blocks.0.fc.weight")
    assert arr.shape == (12, 8)
    bits = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
            torch.float64: torch.int64}[dtype]
    assert np.array_equal(arr.view(t.view(bits).numpy().dtype), t.view(bits).numpy())


def test_a_safetensors_tensor_is_read_into_memory_of_its_own(tmp_path):
    """Not a view of a file mapping: mapped pages would stay resident after the block is scored."""
    path = write_safetensors({"blocks.0.fc.weight": torch.arange(4096.0).reshape(64, 64)}, tmp_path / "m.safetensors")
    arr = open_checkpoint(path).read("blocks.0.fc.weight")
    assert not any(isinstance(base, np.memmap) for base in (arr, arr.base, getattr(arr.base, "base", None)))
    assert not arr.flags.writeable and np.array_equal(arr, np.arange(4096.0, dtype=np.float32).reshape(64, 64))


def test_a_file_cut_short_after_it_was_opened_is_said(tmp_path):
    path = write_safetensors({"blocks.0.fc.weight": torch.ones(64, 64)}, tmp_path / "m.safetensors")
    ckpt = open_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(GardenerError, match=r"m\.safetensors: the file ended at byte \d+ while reading a tensor"):
        ckpt.read("blocks.0.fc.weight")


def _rss_file_kb() -> int:
    """The file-backed resident memory of this process (kB), from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return int(fields["RssFile"].split()[0])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc/self/status (Linux)")
def test_scoring_keeps_no_block_resident_once_scored(tmp_path):
    """48 MB of blocks: scored one by one, the file-backed memory of the process does not grow with them."""
    rng = np.random.default_rng(0)
    state = {f"blocks.{i}.fc{j}.weight": torch.from_numpy(rng.standard_normal((512, 512), dtype=np.float32))
             for i in range(12) for j in range(4)}
    path = write_safetensors(state, tmp_path / "m.safetensors")
    gardener.score(path, ["l1"])  # imports and first-touch costs outside the measurement
    before, seen = _rss_file_kb(), []
    gardener.score(path, ["entropy", "l1"], progress=lambda done, blocks: seen.append(_rss_file_kb()))
    assert len(seen) == 12 and max(seen) - before < 4 * 1024  # one block is 4 MB; all twelve would be 48 MB


def test_truncated_safetensors(tmp_path):
    path = write_safetensors({"blocks.0.fc.weight": torch.ones(64, 64)}, tmp_path / "t.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(GardenerError, match=r"t\.safetensors: not a valid safetensors file: truncated"):
        open_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......",
                                     b"\xff" * 64])
def test_corrupted_safetensors(tmp_path, content):
    path = tmp_path / "c.safetensors"
    path.write_bytes(content)
    with pytest.raises(GardenerError, match="not a valid safetensors file"):
        open_checkpoint(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    torch.save({"model": {"blocks.0.w": torch.ones(2, 2)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(GardenerError, match=r"evil\.pth: refused to unpickle: not a plain state dict"):
        open_checkpoint(path)
    assert not os.path.exists(marker)


def test_plain_pickle_file_is_refused(tmp_path):
    path = tmp_path / "raw.bin"
    path.write_bytes(pickle.dumps(_RunsCode(str(tmp_path / "x"))))
    with pytest.raises(GardenerError, match=r"raw\.bin"):
        open_checkpoint(path)
    assert not (tmp_path / "x").exists()


def test_pickle_without_tensors(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "opt.pth")
    with pytest.raises(GardenerError, match="holds no tensors"):
        open_checkpoint(tmp_path / "opt.pth")


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(GardenerError, match="no such file or directory"):
        open_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GardenerError, match="no weights found; expected one of model.safetensors"):
        open_checkpoint(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(GardenerError, match="unknown checkpoint type"):
        open_checkpoint(tmp_path / "notes.txt")


def test_index_naming_a_missing_shard(tmp_path):
    path = save_hf(build_hf("bert"), tmp_path / "m", max_shard_size="20KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    os.remove(path / sorted(set(index["weight_map"].values()))[-1])
    with pytest.raises(GardenerError, match="lists shard .* which is missing"):
        open_checkpoint(path)


def test_an_index_naming_a_tensor_its_shard_lacks_stops_score_and_prune(tmp_path, capsys):
    path = save_hf(build_hf("bert"), tmp_path / "m", max_shard_size="20KB")
    index_file = path / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    shards = sorted(set(index["weight_map"].values()))
    moved = next(n for n in index["weight_map"] if ".layer.1." in n and n.endswith("dense.weight"))
    wrong = next(s for s in shards if s != index["weight_map"][moved])
    index["weight_map"][moved] = wrong
    index_file.write_text(json.dumps(index))
    for args in (["score", path], ["prune", path, "-o", tmp_path / "out", "--remove", "1"]):
        code, _, err = cli(args, capsys)
        line = one_line_error(err)
        assert code == 2 and moved in line and wrong in line and "does not hold it" in line
    assert not (tmp_path / "out").exists()


def test_a_refused_pickle_is_named_in_one_whole_sentence(tmp_path, capsys):
    import argparse

    torch.save({"model": {"blocks.0.w": torch.zeros(2, 2)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "a.pth")
    code, _, err = cli(["score", tmp_path / "a.pth"], capsys)
    line = one_line_error(err)
    assert code == 2 and "it refers to argparse.Namespace" in line
    assert line.endswith("never runs a checkpoint's code)") and "\x1b" not in line


def test_a_bare_vit_state_dict_is_not_taken_for_llama(tmp_path):
    vit = T.ViTModel(T.ViTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=16))
    llama = T.LlamaModel(T.LlamaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                       num_key_value_heads=1, intermediate_size=64, vocab_size=50))
    bare_vit = "hf-vit-bare" if int(T.__version__.split(".")[0]) >= 5 else "hf-encoder"  # 4: `encoder.layer.N.`
    for model, family in ((vit, bare_vit), (llama, "llama")):
        path = write_safetensors(model.state_dict(), tmp_path / f"{family}.safetensors")
        info = gardener.info.checkpoint_info(path)
        assert info["depth"] == 3 and info["stacks"][0]["family"] == family
