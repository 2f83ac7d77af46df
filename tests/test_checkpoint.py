"""Lazy readers: tensors come back bit-exact, and bad files are refused with a clear message."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import build_hf, random_values, save_hf, write_safetensors

from gardener.checkpoint import open_checkpoint
from gardener.errors import GardenerError
from gardener.values import bf16_bits, in_view


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


def test_safetensors_are_memory_mapped(tmp_path):
    path = write_safetensors({"blocks.0.fc.weight": torch.ones(64, 64)}, tmp_path / "m.safetensors")
    arr = open_checkpoint(path).read("blocks.0.fc.weight")
    assert isinstance(arr.base, np.memmap) or isinstance(getattr(arr.base, "base", None), np.memmap)


def test_views_round_like_torch():
    x = torch.from_numpy(random_values(4096, seed=5) * 37)
    assert np.array_equal(bf16_bits(x.numpy()), x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
    half, tag = in_view(x.numpy(), "F32", "float16")
    assert tag == "F16" and np.array_equal(half, x.half().numpy())
    back, tag = in_view(x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16), "BF16", "float32")
    assert tag == "F32" and np.array_equal(back, x.to(torch.bfloat16).float().numpy())


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
