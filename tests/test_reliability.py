"""Nothing lost, nothing silently changed: what a new user hit in prune, finetune, resume and outputs."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as T
from conftest import build_hf, random_values, save_hf, tiny_videomae, write_safetensors
from safetensors.torch import load_file

import gardener
from gardener.cli import main
from gardener.errors import GardenerError
from gardener.pruning import renamer
from gardener.train import DataOptions, Recipe, finetune

CLIPS = dict(sampling_rate=2, test_clips=1, test_crops=1, min_crop_scale=0.3)


def cli(args: list, capsys) -> tuple[int, str, str]:
    capsys.readouterr()  # only this command's output
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def snapshot(folder) -> dict:
    """Every file under a folder with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# 1 --------------------------------------------------------------------------------------------------

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


# 2, 3 -----------------------------------------------------------------------------------------------

def _recipe(**overrides) -> Recipe:
    base = dict(batch_size=4, max_steps=4, warmup_steps=1, base_lr=0.1, layer_decay=1.0, drop_path=0.0,
                classifier_dropout=0.0, save_every=2)
    return Recipe(**{**base, **overrides})


def _interrupted_run(folder, video_root, model) -> DataOptions:
    options = DataOptions(video_root, workers=0)

    def crash(step, loss):
        if step == 3:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError, match="killed"):
        finetune(model, folder, options, _recipe(), seed=1, callbacks=[crash], **CLIPS)
    return options


def test_resume_refuses_another_recipe_data_or_model_and_records_a_longer_run(tmp_path, video_root, tiny_model_dir):
    run = tmp_path / "run"
    options = _interrupted_run(run, video_root, tiny_model_dir)
    before = snapshot(run)
    for changed, kwargs in (("batch_size", {"recipe": _recipe(batch_size=8)}),
                            ("base_lr", {"recipe": _recipe(base_lr=0.2)}),
                            ("seed", {"seed": 2}),
                            ("data.test", {"options": DataOptions(video_root, workers=0, val_fraction=0.4)}),
                            ("model.files", {"model": tiny_videomae(tmp_path / "other", seed=5)})):
        args = {"model": tiny_model_dir, "options": options, "recipe": _recipe(), "seed": 1, **kwargs}
        with pytest.raises(GardenerError, match=rf"--resume: .* was started as another run \(.*{changed}"):
            finetune(args["model"], run, args["options"], args["recipe"], seed=args["seed"], resume=True, **CLIPS)
    assert snapshot(run) == before  # a refused resume touches nothing
    with pytest.raises(GardenerError, match="is at step 2, but --max-steps/--epochs now give 1 steps"):
        finetune(tiny_model_dir, run, options, _recipe(max_steps=1), seed=1, resume=True, **CLIPS)
    assert snapshot(run) == before
    info = finetune(tiny_model_dir, run, options, _recipe(max_steps=6, save_every=3), seed=1, resume=True, **CLIPS)
    assert info["steps"] == 6 and info["recipe"]["max_steps"] == 6
    assert info["resumes"] == [{"step": 2, "changed": {"recipe.max_steps": [4, 6], "recipe.save_every": [2, 3]}}]
    assert json.loads((run / "gardener.json").read_text())["resumes"] == info["resumes"]
    # a finished run is not extended or changed either: it says what differs
    finished = snapshot(run)
    with pytest.raises(GardenerError, match=r"finished \(6 steps\) with other options \(recipe.max_steps: 6 -> 8"):
        finetune(tiny_model_dir, run, options, _recipe(max_steps=8, save_every=3), seed=1, resume=True, **CLIPS)
    assert snapshot(run) == finished


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, video_root, tiny_model_dir, capsys):
    run = tmp_path / "run"
    args = ["finetune", tiny_model_dir, "--data", video_root, "-o", run, "--max-steps", 2, "--batch-size", 4,
            "--warmup-steps", 1, "--sampling-rate", 2, "--test-clips", 1, "--test-crops", 1, "--workers", 0]
    assert cli(args, capsys)[0] == 0
    before = snapshot(run)
    code, out, err = cli(args + ["--resume"], capsys)
    assert code == 0 and "this run finished (2 steps); nothing was changed" in err and "top-1" in out
    assert snapshot(run) == before
    # a folder another command wrote is not a finished run
    source = write_safetensors(build_hf("vit").state_dict(), tmp_path / "vit.safetensors")
    assert cli(["prune", source, "-o", tmp_path / "pruned", "--remove", "1"], capsys)[0] == 0
    code, _, err = cli(args[:5] + [tmp_path / "pruned", "--resume"] + args[6:], capsys)
    assert code == 2 and "is not a `gardener finetune` run folder" in one_line_error(err)


# 4, 5 -----------------------------------------------------------------------------------------------

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
    assert cli(["prune", source, "-o", tmp_path / "y.safetensors", "--remove", "1"], capsys)[0] == 0
    assert (tmp_path / "y.safetensors").is_file() and (tmp_path / "y.safetensors.gardener.json").is_file()
    code, out, _ = cli(["info", tmp_path / "y.safetensors"], capsys)
    assert code == 0 and gardener.info.checkpoint_info(tmp_path / "y.safetensors")["depth"] == 3
    for target in (source, tmp_path):
        code, _, err = cli(["prune", source, "-o", target, "--remove", "1", "--force"], capsys)
        assert code == 2 and "never replaces or writes into an input" in one_line_error(err)
    code, _, err = cli(["prune", source, "-o", tmp_path / "y.pth", "--remove", "1"], capsys)
    assert code == 2 and "name the output .safetensors" in one_line_error(err)
    assert source.read_bytes() == original


# 6 --------------------------------------------------------------------------------------------------

def _link_class(src, dst):
    dst.mkdir(parents=True)
    for video in sorted(src.glob("*.mp4")):
        if video.name != "broken.mp4":
            os.symlink(video, dst / video.name)


def test_finetuning_needs_two_classes_each_with_a_training_video(tmp_path, video_root, tiny_model_dir):
    single = tmp_path / "single"
    _link_class(video_root / "red_to_blue", single / "red_to_blue")
    with pytest.raises(GardenerError, match="one class \\(red_to_blue\\); finetuning a classifier needs at least two"):
        finetune(tiny_model_dir, tmp_path / "run", DataOptions(single, workers=0), _recipe(), **CLIPS)
    unreadable = tmp_path / "unreadable"
    _link_class(video_root / "red_to_blue", unreadable / "red_to_blue")
    (unreadable / "silent").mkdir()
    for k in range(2):  # one goes to the test split, the other (unreadable) leaves no training video
        shutil.copy(video_root / "blue_to_red" / "broken.mp4", unreadable / "silent" / f"broken{k}.mp4")
    with pytest.raises(GardenerError, match="class 'silent' has no training video"):
        finetune(tiny_model_dir, tmp_path / "run", DataOptions(unreadable, workers=0), _recipe(), **CLIPS)
    assert not (tmp_path / "run").exists()


# 7 --------------------------------------------------------------------------------------------------

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
    # float32 weights that are all distinct: entropy is about ln N, its order is round-off; score says so too
    dense = tmp_path / "dense.safetensors"
    write_safetensors({f"blocks.{i}.fc.weight": torch.randn(32, 32, generator=torch.Generator().manual_seed(i))
                       for i in range(4)}, dense)
    _, _, scored = cli(["score", dense, "--criteria", "entropy"], capsys)
    code, _, pruned = cli(["prune", dense, "-o", tmp_path / "dense", "--remove", "1"], capsys)
    warnings = json.loads((tmp_path / "dense" / "gardener.json").read_text())["warnings"]
    round_off = [w for w in warnings if "decided by round-off" in w]
    assert code == 0 and len(round_off) == 1
    assert round_off[0][:60] in " ".join(scored.split()) and round_off[0][:60] in " ".join(pruned.split())


# 8 --------------------------------------------------------------------------------------------------

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


# 9 --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_honour_the_umask(tmp_path, capsys, umask, file_mode, dir_mode):
    source = write_safetensors(build_hf("vit").state_dict(), tmp_path / "vit.safetensors")
    previous = os.umask(umask)
    try:
        assert cli(["prune", source, "-o", tmp_path / "out", "--remove", "1"], capsys)[0] == 0
        assert cli(["score", source, "--json", tmp_path / "s.json", "--csv", tmp_path / "s.csv"], capsys)[0] == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == dir_mode
    for path in (tmp_path / "out" / "gardener.json", tmp_path / "out" / "vit.safetensors", tmp_path / "s.json",
                 tmp_path / "s.csv", tmp_path / "s.meta.json"):
        assert path.stat().st_mode & 0o777 == file_mode, path


# 10 -------------------------------------------------------------------------------------------------

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


def test_bad_sweep_ratios_leave_no_run_folder_and_are_named_as_given(tmp_path, video_root, tiny_model_dir, capsys):
    for ratios, said in (("150", "--ratios 150: 150 is not a pruning ratio"),
                         ("1", "--ratios 1: 1 is not a pruning ratio"),
                         ("0.01", "--ratios 0.01: 0.01 removes 0 of 2 blocks")):
        code, _, err = cli(["sweep", tiny_model_dir, "--data", video_root, "-o", tmp_path / "run", "--ratios", ratios,
                            "--max-steps", 1], capsys)
        assert code == 2 and said in one_line_error(err) and "--ratio " not in err
        assert not (tmp_path / "run").exists()


def test_outputs_in_folders_that_do_not_exist_yet(tmp_path, video_root, tiny_model_dir, capsys):
    source = write_safetensors(build_hf("vit").state_dict(), tmp_path / "vit.safetensors")
    assert cli(["prune", source, "-o", tmp_path / "runs" / "a" / "small", "--remove", "1"], capsys)[0] == 0
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


def test_without_a_terminal_each_finished_job_gets_a_line(capsys):
    from gardener.cli._app import experiment_progress

    bar, on_job, _ = experiment_progress()
    with bar:
        on_job(0, 2, types.SimpleNamespace(removed=()))
        on_job(1, 2, types.SimpleNamespace(removed=(3, 7)))
        on_job(2, 2, None)
    lines = [line.strip() for line in capsys.readouterr().err.splitlines() if "done" in line]
    assert [line.split(" (")[0] for line in lines] == ["job 1/2 done: removing nothing",
                                                      "job 2/2 done: removing [3, 7]"]


# every layout ---------------------------------------------------------------------------------------

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
