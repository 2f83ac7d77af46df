"""Pruning a checkpoint on disk: every input tensor kept bit-identical or listed as removed, nothing left behind."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import (CONFIGS, DEPTH, IN_MEMORY_STACK, build_hf, cli, model_inputs, one_line_error,
                      original_videomae_state, output_of, random_values, save_hf, skip_layers, write_safetensors)
from safetensors.torch import load_file

import gardener
from gardener.errors import GardenerError
from gardener.pruning import Cut, prune_checkpoint, renamer
from gardener.scoring import ScoreSettings


@pytest.mark.parametrize("name", sorted(IN_MEMORY_STACK))
def test_pruned_hf_directory_loads_and_matches_skipped_layers(tmp_path, name):
    model = build_hf(name)
    src = save_hf(model, tmp_path / "src")
    info = prune_checkpoint(src, tmp_path / "out", Cut(blocks=(2, 3)))
    cls = CONFIGS[name][0]
    pruned = cls.from_pretrained(tmp_path / "out").eval()
    assert pruned.config.num_hidden_layers == DEPTH - 2 and info["kept_blocks"] == [1, 4]
    assert pruned.config.gardener["removed_blocks"] == [2, 3]
    # every kept tensor is bit-identical to its source under its new name
    before, after = load_file(str(src / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    stack = info["stack"]
    for key, tensor in after.items():
        old = key.replace(f"{stack}.1.", f"{stack}.3.") if key.startswith(f"{stack}.1.") else key
        assert torch.equal(before[old], tensor), key
    reference = skip_layers(model, IN_MEMORY_STACK[name], [1, 4])
    with torch.no_grad():
        got, want = pruned(**model_inputs(name)), reference(**model_inputs(name))
    torch.testing.assert_close(output_of(got), output_of(want), rtol=0, atol=0)


def test_pruning_decoder_changes_decoder_depth_only(tmp_path):
    src = save_hf(build_hf("videomae_pretrain"), tmp_path / "src")
    prune_checkpoint(src, tmp_path / "out", Cut(remove=1), ScoreSettings(stack="decoder", primary="l2"))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["decoder_num_hidden_layers"] == 1 and config["num_hidden_layers"] == DEPTH


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_raw_state_dict_same_format_out(tmp_path, suffix):
    state = original_videomae_state(build_hf("videomae"))
    src = tmp_path / f"orig{suffix}"
    torch.save({"model": state}, src) if suffix == ".pth" else write_safetensors(state, src)
    # float32 weights: the entropy ranking is round-off, which a prune takes only when allowed to
    info = prune_checkpoint(src, tmp_path / "out", Cut(ratio=0.25, allow_round_off=True),
                            ScoreSettings(primary="entropy"))
    out_file = tmp_path / "out" / src.name
    result = gardener.score(out_file, ["l1"])
    assert result.depth == DEPTH - 1 and info["removed_blocks"] == [info["removed_blocks"][0]]
    if suffix == ".pth":
        assert list(torch.load(out_file, weights_only=True)) == ["model"]
    manifest = json.loads((tmp_path / "out" / "gardener.json").read_text())
    assert manifest["inputs"][0]["sha256"] and manifest["params_after"] < manifest["params_before"]


def test_ranking_file_and_protect(tmp_path):
    src = save_hf(build_hf("vit"), tmp_path / "src")
    scores = gardener.score(src, ["l2"], primary="l2")
    (tmp_path / "s.json").write_text(json.dumps(scores.to_dict()))
    order = scores.removal_order("l2")
    info = prune_checkpoint(src, tmp_path / "out", Cut(remove=1, ranking=tmp_path / "s.json", protect=(order[0],)))
    assert info["removed_blocks"] == [order[1]] and info["criterion"] == "l2"


def test_existing_output_and_crash_leave_nothing_behind(tmp_path, monkeypatch):
    src = save_hf(build_hf("bert"), tmp_path / "src")
    with pytest.raises(GardenerError, match="is inside the checkpoint"):
        prune_checkpoint(src, src / "pruned", Cut(remove=1))
    (tmp_path / "exists").mkdir()
    with pytest.raises(GardenerError, match="already exists; pass --force"):
        prune_checkpoint(src, tmp_path / "exists", Cut(remove=1))

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr("gardener.pruning.disk.write_hf_weights", boom)
    with pytest.raises(OSError):
        prune_checkpoint(src, tmp_path / "crash", Cut(remove=1), ScoreSettings(primary="l2"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "src"]


def _pth_with_metadata(path):
    state = {f"module.{k}": v for k, v in build_hf("vit").state_dict().items()}
    optimizer = {"state": {0: {"exp_avg": torch.ones(3), "step": torch.tensor(7.0)}}, "param_groups": [{"lr": 0.1}]}
    torch.save({"model": state, "epoch": 3, "args": {"lr": 0.1, "sizes": [224, 16], "nested": {"name": "vit"}},
                "optimizer": optimizer}, path)
    return state


def test_pruning_a_pth_keeps_its_metadata_and_lists_what_it_drops(tmp_path, capsys):
    state = _pth_with_metadata(tmp_path / "vit.pth")
    code, _, err = cli(["prune", tmp_path / "vit.pth", "-o", tmp_path / "small.pth", "--blocks", "2"], capsys)
    assert code == 0 and "dropped 'optimizer' (2 tensors)" in err
    out = torch.load(tmp_path / "small.pth", weights_only=True)
    assert out["epoch"] == 3 and out["args"] == {"lr": 0.1, "sizes": [224, 16], "nested": {"name": "vit"}}
    assert "optimizer" not in out
    assert all(k.startswith("module.") for k in out["model"])  # stored as it came
    second = [k for k in state if re.search(r"\.layers?\.1\.", k)]  # block 2 (`vit.layers` in transformers 5)
    assert second and len(out["model"]) == len(state) - len(second)
    manifest = json.loads((tmp_path / "small.pth.gardener.json").read_text())
    assert manifest["dropped_entries"] == [{"entry": "optimizer", "tensors": 2}]
    assert sorted(manifest["removed_tensors"]) == sorted(second)


def test_a_file_in_gives_a_file_out_and_the_input_is_never_replaced(tmp_path, capsys):
    source = tmp_path / "x.safetensors"
    write_safetensors(build_hf("vit").state_dict(), source)
    original = source.read_bytes()
    assert cli(["prune", source, "-o", tmp_path / "y.safetensors", "--remove", "1", "--criterion", "l2"],
               capsys)[0] == 0
    assert (tmp_path / "y.safetensors").is_file() and (tmp_path / "y.safetensors.gardener.json").is_file()
    code, out, _ = cli(["info", tmp_path / "y.safetensors"], capsys)
    assert code == 0 and gardener.info.checkpoint_info(tmp_path / "y.safetensors")["depth"] == 3
    for target in (source, tmp_path):
        code, _, err = cli(["prune", source, "-o", target, "--remove", "1", "--force"], capsys)
        assert code == 2 and "never replaces or writes into an input" in one_line_error(err)
    code, _, err = cli(["prune", source, "-o", tmp_path / "y.pth", "--remove", "1"], capsys)
    assert code == 2 and "name the output .safetensors" in one_line_error(err)
    assert source.read_bytes() == original


def _tied_checkpoint(path):
    """Blocks 2 and 3 hold the same few values (equal, lowest entropy); blocks 1 and 4 many."""
    rng = np.random.default_rng(0)
    few = rng.choice(np.float32([-0.5, -0.25, 0.25, 0.5]), size=(16, 16)).astype(np.float32)
    state = {f"blocks.{i}.mlp.fc1.weight": torch.from_numpy(few.copy() if i in (1, 2) else
                                                            random_values(256, seed=i).reshape(16, 16))
             for i in range(4)}
    return write_safetensors(state, path)


def test_prune_warns_like_score_when_ties_or_round_off_decide(tmp_path, capsys):
    source = _tied_checkpoint(tmp_path / "tied.safetensors")
    code, _, err = cli(["prune", source, "-o", tmp_path / "out", "--remove", "1"], capsys)
    tie = "blocks 2, 3 score exactly the same by entropy: block index chose which 1 of them is removed"
    assert code == 0 and tie in err
    manifest = json.loads((tmp_path / "out" / "gardener.json").read_text())
    assert manifest["removed_blocks"] == [3] and manifest["warnings"] == [tie]
    assert cli(["prune", source, "-o", tmp_path / "two", "--remove", "2"], capsys)[0] == 0  # the tie goes whole
    assert json.loads((tmp_path / "two" / "gardener.json").read_text())["warnings"] == []
    # float32 weights that are all distinct: entropy is about ln N, its order is round-off; score says so too,
    # and prune takes it only with --allow-round-off (tests/pruning/test_round_off.py: the refusal)
    dense = tmp_path / "dense.safetensors"
    write_safetensors({f"blocks.{i}.fc.weight": torch.randn(32, 32, generator=torch.Generator().manual_seed(i))
                       for i in range(4)}, dense)
    _, _, scored = cli(["score", dense, "--criteria", "entropy"], capsys)
    code, _, pruned = cli(["prune", dense, "-o", tmp_path / "dense", "--remove", "1", "--allow-round-off"], capsys)
    warnings = json.loads((tmp_path / "dense" / "gardener.json").read_text())["warnings"]
    round_off = [w for w in warnings if "decided by round-off" in w]
    assert code == 0 and len(round_off) == 1
    assert round_off[0][:60] in " ".join(scored.split()) and round_off[0][:60] in " ".join(pruned.split())


def _debris(folder, name):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}"))


# The real command, with its weights writer slowed down (it writes part of the file, then waits):
# SIGTERM then always lands mid-write, however fast the disk.
SLOW_WRITER = """
import sys, time
import gardener.pruning.disk as w
def slow(path, tensors):
    open(path, "wb").write(b"partial")
    time.sleep(60)
w.write_safetensors = slow
from gardener.cli import main
main(sys.argv[1:])
"""


def test_sigterm_mid_write_leaves_nothing_and_stale_temporaries_are_cleaned(tmp_path):
    source = write_safetensors({f"blocks.{i}.fc.weight": torch.zeros(4, 4) for i in range(3)},
                               tmp_path / "small.safetensors")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, "prune", str(source), "-o", str(out), "--blocks", "2"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any((tmp_path / d / source.name).exists() for d in _debris(tmp_path, "out")) \
            and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None and _debris(tmp_path, "out"), "the writer never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err, err
    assert _debris(tmp_path, "out") == [] and not out.exists()
    # a run killed outright (SIGKILL) leaves its temporary; the next run of the same output removes it
    dead = subprocess.Popen(["true"])
    dead.wait()
    from gardener.fileio import _HOST
    stale = tmp_path / f".out.gardener-{_HOST}-{dead.pid}-abc123.tmp"
    stale.mkdir()
    (stale / "small.safetensors").write_bytes(b"x" * 1000)
    other = tmp_path / f".other.gardener-{_HOST}-{dead.pid}-abc123.tmp"  # another output's: left alone
    other.mkdir()
    subprocess.run([sys.executable, "-c", "from gardener.cli import main; main()", "prune", str(source), "-o",
                    str(out), "--blocks", "2"], check=True, capture_output=True)
    assert _debris(tmp_path, "out") == [] and out.is_dir() and other.is_dir()


def _numpy(value: torch.Tensor) -> np.ndarray:
    return value.view(torch.int16).numpy() if value.dtype == torch.bfloat16 else value.numpy()


def _tensors(path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint as numpy, read with the libraries' own loaders (not gardener's)."""
    if path.is_dir() or path.suffix == ".safetensors":
        out = {}
        for shard in sorted(path.glob("*.safetensors")) if path.is_dir() else [path]:
            out.update({k: _numpy(v) for k, v in load_file(str(shard)).items()})
        return out
    obj = torch.load(path, weights_only=True)

    def walk(value, where):
        if isinstance(value, torch.Tensor):
            yield where, _numpy(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from walk(v, f"{where}.{k}" if where else str(k))
    return dict(walk(obj, ""))


def _layouts(tmp_path):
    for name in ("videomae", "videomae_pretrain", "vitmae", "vit", "dinov2", "bert", "llama"):
        yield name, save_hf(build_hf(name), tmp_path / name)
    yield "sharded-bf16", save_hf(build_hf("bert"), tmp_path / "sharded", dtype=torch.bfloat16,
                                  max_shard_size="20KB")
    yield "safetensors", write_safetensors(build_hf("vit").state_dict(), tmp_path / "vit.safetensors")
    yield "safetensors-file", write_safetensors(build_hf("dinov2").state_dict(), tmp_path / "dino.safetensors")
    _pth_with_metadata(tmp_path / "nested.pth")
    yield "pth", tmp_path / "nested.pth"
    torch.save(build_hf("llama").state_dict(), tmp_path / "plain.bin")
    yield "bin", tmp_path / "plain.bin"


def test_every_input_tensor_is_kept_bit_identical_or_listed_as_removed(tmp_path, capsys):
    for layout, source in _layouts(tmp_path):
        out = tmp_path / f"out-{layout}"
        if layout.endswith("-file"):  # a file in, a file out, its manifest beside it
            out = out.with_suffix(source.suffix)
        code, _, err = cli(["prune", source, "-o", out, "--blocks", "2,3"], capsys)
        assert code == 0, (layout, err)
        written = out if source.is_dir() or out.is_file() else out / source.name
        manifest_path = out.with_name(f"{out.name}.gardener.json") if out.is_file() else out / "gardener.json"
        manifest = json.loads(manifest_path.read_text())
        before, after = _tensors(source), _tensors(written)
        dropped = [e["entry"] for e in manifest.get("dropped_entries", [])]
        removed = set(manifest["removed_tensors"])
        prefix = "model." if layout == "pth" else ""  # the nesting key, as _tensors names it
        rename = renamer(manifest["stack"], manifest["kept_blocks"])
        expected = {}
        for name, value in before.items():
            if any(name == d or name.startswith(f"{d}.") for d in dropped):
                continue
            bare = name[len(prefix):]
            stored = bare.removeprefix("module.")
            if bare in removed:
                assert rename(stored) is None, (layout, name)
                continue
            new = rename(stored)
            assert new is not None, (layout, name, "neither kept nor listed as removed")
            expected[prefix + bare.replace(stored, new)] = value
        assert set(after) == set(expected), layout
        for name, value in expected.items():
            assert after[name].dtype == value.dtype and after[name].tobytes() == value.tobytes(), (layout, name)
