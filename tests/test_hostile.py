"""What a careless or hostile user tries, replayed command by command (issue 25's 33 items, in its order).

Every test runs real `gardener` commands on a tiny VideoMAE checkpoint M and a `make-data` dataset D and
checks, besides what the item is about, that no command ended in a traceback and that no input changed
(sha256 of every input file before and after). The last test says it for the whole list: 0 tracebacks,
0 inputs changed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_hf, on_small_disk, save_hf, tiny_videomae, write_safetensors

from gardener.cli import main

ITEMS = range(1, 34)
REPLAY: dict[int, dict] = {}  # item -> {"commands", "tracebacks", "changed"}
FT = ["--data", "{D}/videos", "--split-dir", "{D}/splits", "--max-steps", "2", "--batch-size", "2",
      "--warmup-steps", "0", "--sampling-rate", "1", "--test-clips", "1", "--test-crops", "1", "--workers", "0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """M: a 4-block VideoMAE classifier; D: make-data's videos (2 actions, 4 per class, 8 frames of 32 px)."""
    root = tmp_path_factory.mktemp("hostile")
    tiny_videomae(root / "M", depth=4)
    with pytest.raises(SystemExit) as done:
        main(["make-data", str(root / "D"), "--per-class", "4", "--frames", "8", "--size", "32",
              "--classes", "move_up,move_down"])
    assert done.value.code == 0
    return root


def digests(*paths: Path) -> dict[str, str]:
    """sha256 of every file under the given paths (files or folders), by path."""
    out = {}
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


class Replay:
    """Runs `gardener` commands in this process for one item: exit code, stdout, stderr; a command that
    raises instead of exiting is a traceback (counted, then re-raised)."""

    def __init__(self, item: int, capsys, world: Path):
        self.item, self.capsys, self.world = item, capsys, world
        self.record = REPLAY.setdefault(item, {"commands": 0, "tracebacks": 0, "changed": []})

    def __call__(self, *args) -> tuple[int, str, str]:
        args = [str(a).replace("{D}", str(self.world / "D")) for a in args]
        self.capsys.readouterr()
        self.record["commands"] += 1
        try:
            main(args)
        except SystemExit as stop:
            captured = self.capsys.readouterr()
            return stop.code, captured.out, captured.err
        except BaseException:
            self.record["tracebacks"] += 1
            raise
        raise AssertionError("main() returned without exiting")

    def fails(self, *args, says: str = "", code: int = 2) -> str:
        """Run a command that must fail with one line (`error: ...`) holding `says`, its last; that line. (A
        worker may say what it did before it stopped: a line per job, the jobs' progress bars.)"""
        got, _, err = self(*args)
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        assert got == code and errors == lines[-1:] and "Traceback" not in err, (got, err)
        assert says in errors[0], errors[0]
        return errors[0]

    def works(self, *args) -> tuple[str, str]:
        got, out, err = self(*args)
        assert got == 0, err
        return out, err


@contextlib.contextmanager
def replay(item: int, capsys, world: Path, *inputs: Path):
    """One item's replay; the inputs (M and D unless given) must come out byte for byte as they went in."""
    watched = list(inputs) or [world / "M", world / "D"]
    before = digests(*watched)
    run = Replay(item, capsys, world)
    try:
        yield run
    finally:
        after = digests(*[p for p in watched if p.exists()])
        run.record["changed"] = sorted(k for k in before if after.get(k) != before[k])
    assert run.record["changed"] == [], f"inputs changed: {run.record['changed']}"


def copy_model(world: Path, name: str) -> Path:
    target = world / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(world / "M", target)
    return target


def interrupted_finetune(world: Path, folder: Path, crash_at: int, save_every: int) -> None:
    """A finetuning run of M on D killed at step `crash_at` (checkpoints every `save_every` steps)."""
    from gardener.train import DataOptions, Recipe, finetune

    def crash(step, loss):
        if step == crash_at:
            raise RuntimeError("killed")
    recipe = Recipe(batch_size=2, max_steps=6, warmup_steps=0, save_every=save_every)
    with pytest.raises(RuntimeError, match="killed"):
        finetune(world / "M", folder, DataOptions(world / "D" / "videos", split_dir=world / "D" / "splits", workers=0),
                 recipe, seed=0, callbacks=[crash], sampling_rate=1, test_clips=1, test_crops=1)


RESUME = ["--data", "{D}/videos", "--split-dir", "{D}/splits", "--max-steps", "6", "--batch-size", "2",
          "--warmup-steps", "0", "--save-every", "2", "--sampling-rate", "1", "--test-clips", "1", "--test-crops",
          "1", "--workers", "0", "--resume"]


# --- data loss or silently wrong results ----------------------------------------------------------------

def test_01_finetune_and_evaluate_never_write_onto_their_inputs_even_with_force(world, capsys):
    (world / "unrelated.txt").write_text("the user's")
    with replay(1, capsys, world, world / "M", world / "D", world / "unrelated.txt") as run:
        run.fails("finetune", world / "M", *FT, "-o", world / "M", "--force", says="is the model")
        run.fails("finetune", world / "M", *FT, "-o", world, "--force", says="holds the model")
        run.fails("finetune", world / "M", *FT, "-o", world / "D", "--force", says="holds the data")
        run.fails("finetune", world / "M", *FT, "-o", world / "D" / "videos" / "sub", "--force",
                  says="is inside the data")
        run.fails("evaluate", world / "M", "--data", "{D}/videos", "--split-dir", "{D}/splits", "-o", world / "M",
                  "--force", says="is the model")
        (world / "link").symlink_to(world / "M")
        run.fails("finetune", world / "M", *FT, "-o", world / "link", "--force", says="is the model")
        run.fails("pretrain", "--data", "{D}/videos", "--split-dir", "{D}/splits", "-o", world / "D", "--force",
                  says="holds the data")
    assert (world / "unrelated.txt").read_text() == "the user's"


def test_02_score_and_agree_outputs_never_replace_their_inputs(world, capsys, run_folder):
    x = world / "x.safetensors"
    write_safetensors(build_hf("vit").state_dict(), x)
    scores, oracle = world / "s2.json", _copy_run(run_folder, "run2") / "oracle.json"
    with replay(2, capsys, world, x, world / "M2", oracle) as run:
        for flag in ("--json", "--csv", "--plot"):
            run.fails("score", x, flag, x, "--force", says=f"{flag} {x}: is a file of the checkpoint")
        run.fails("score", world / "M", "--json", world / "M" / "model.safetensors", "--force",
                  says="is a file of the checkpoint")
        run.works("score", world / "M2", "--criteria", "l1", "--criterion", "l1", "--json", scores)
        run.fails("agree", scores, oracle, "--json", oracle, "--force", says=f"--json {oracle}: is the oracle")


def test_03_a_second_finetune_on_a_run_folder_in_use_is_refused(world, capsys):
    out = world / "run3"
    long_run = [a.replace("{D}", str(world / "D")) for a in FT] + ["--max-steps", "100000"]  # the last one counts
    first = subprocess.Popen([sys.executable, "-m", "gardener", "finetune", world / "M", *long_run, "-o", out],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "start.json").is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, first.stderr.read()
        started = (out / "start.json").read_bytes()
        with replay(3, capsys, world) as run:
            for extra in ([], ["--force"], ["--resume"]):
                run.fails("finetune", world / "M", *FT, "-o", out, *extra,
                          says="another gardener finetune run is writing to it (")
        assert (out / "start.json").read_bytes() == started  # the run that owns the folder is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)


def test_04_a_prune_never_replaces_an_output_that_appeared_while_it_wrote(world, capsys, monkeypatch):
    import gardener.pruning.disk as workflows

    out = world / "pruned4"
    real = workflows.write_hf_weights

    def another_prune_finishes_first(*args, **kwargs):
        written = real(*args, **kwargs)
        out.mkdir()
        (out / "theirs.txt").write_text("the other run's output")
        return written
    monkeypatch.setattr(workflows, "write_hf_weights", another_prune_finishes_first)
    with replay(4, capsys, world) as run:
        run.fails("prune", world / "M", "-o", out, "--remove", "1", "--criterion", "l2",
                  says="appeared while this command was writing it")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert not [p for p in world.iterdir() if p.name.startswith(".pruned4")]  # no temporary left


def test_05_a_tensor_the_index_leaves_out_is_kept_as_transformers_loads_it(world, capsys):
    import transformers

    model = save_hf(build_hf("bert"), world / "bert5", max_shard_size="20KB")
    index = json.loads((model / "model.safetensors.index.json").read_text())
    left_out = next(n for n in index["weight_map"] if n.startswith("embeddings."))
    del index["weight_map"][left_out]
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with replay(5, capsys, world, model) as run:
        _, err = run.works("prune", model, "-o", world / "bert5-small", "--remove", "1", "--criterion", "l2")
    _, loading = transformers.BertModel.from_pretrained(world / "bert5-small", output_loading_info=True)
    assert not loading["missing_keys"]  # nothing initialised at random
    assert f"does not list 1 tensor(s) its shards hold (e.g. {left_out!r}" in err.replace("\n", " ")


def test_06_a_folder_with_both_layouts_is_read_as_transformers_reads_it(world, capsys):
    from gardener.scoring import score

    both = save_hf(build_hf("bert", seed=1), world / "bert6", max_shard_size="20KB")
    single = save_hf(build_hf("bert", seed=2), world / "bert6-single")
    shutil.copy(single / "model.safetensors", both / "model.safetensors")
    with replay(6, capsys, world, both) as run:
        _, err = run.works("score", both, "--criteria", "l1", "--criterion", "l1")
    assert score(both, ["l1"], primary="l1").scores == score(single, ["l1"], primary="l1").scores
    assert "like transformers, gardener reads model.safetensors and ignores the rest" in err.replace("\n", " ")


def test_07_a_config_that_counts_other_blocks_than_the_weights_is_said_and_not_pruned(world, capsys):
    model = copy_model(world, "M7")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 12}))
    said = "config.json says num_hidden_layers = 12, but the weights hold 4 blocks"
    with replay(7, capsys, world, model) as run:
        out, err = run.works("info", model)
        assert said in err and "GFLOPs n/a (config.json disagrees with the weights" in " ".join(out.split())
        assert said in run.works("score", model, "--criteria", "l1", "--criterion", "l1")[1]
        run.fails("prune", model, "-o", world / "M7-small", "--remove", "1", "--criterion", "l2", says=said)
    assert not (world / "M7-small").exists()
    fewer = copy_model(world, "M7-fewer")  # fewer in the config than in the weights (DeepSeek-V3's extra MTP
    (fewer / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))  # layer): said, pruned
    with replay(7, capsys, world, fewer) as run:
        _, err = run.works("prune", fewer, "-o", world / "M7-small", "--remove", "1", "--criterion", "l2")
    assert "transformers builds 3 blocks and ignores the other 1" in " ".join(err.split())


def _safetensors(path: Path, header: str, data: bytes) -> Path:
    blob = header.encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)
    return path


def test_08_duplicate_names_overlapping_data_and_odd_shapes_in_a_header_are_refused(world, capsys):
    data = np.arange(8, dtype=np.float32).tobytes()
    cases = {
        "dup": ('{"blocks.0.w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
                '"blocks.0.w":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]}}', "names 'blocks.0.w' twice"),
        "overlap": ('{"blocks.0.w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
                    '"blocks.1.w":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}}', "overlaps tensor"),
        "shape": ('{"blocks.0.w":{"dtype":"F32","shape":[2.5,2],"data_offsets":[0,32]}}', "has shape [2.5, 2]"),
    }
    files = {name: _safetensors(world / f"h8-{name}.safetensors", header, data) for name, (header, _) in cases.items()}
    with replay(8, capsys, world, *files.values()) as run:
        for name, (_, says) in cases.items():
            run.fails("score", files[name], says=says)
            run.fails("prune", files[name], "-o", world / f"h8-{name}-out.safetensors", "--remove", "1", says=says)


@pytest.fixture(scope="module")
def run_folder(world):
    """A finished oracle of a 2-block model (3 jobs), kept pristine: tests work on copies."""
    tiny_videomae(world / "M2", depth=2, seed=3)
    folder = world / "oracle-run"
    with pytest.raises(SystemExit) as done:
        main(["sensitivity", str(world / "M2"), "-o", str(folder),
              *[a.replace("{D}", str(world / "D")) for a in FT]])
    assert done.value.code == 0
    return folder


def _copy_run(run_folder: Path, name: str) -> Path:
    target = run_folder.parent / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run_folder, target)
    return target


def _job_folders(run: Path) -> list[Path]:
    plan = json.loads((run / "sensitivity.plan.json").read_text())
    return [run / "jobs" / job["id"] for job in plan["jobs"]]


def test_09_collect_and_report_check_each_result_against_its_job_and_its_ranges(world, capsys, run_folder):
    run = _copy_run(run_folder, "run9")
    first, second, _ = _job_folders(run)
    with replay(9, capsys, world, world / "M2") as replayed:
        shutil.copy(first / "result.json", second / "result.json")  # another job's result copied in
        replayed.fails("collect", run, says=f"{second / 'result.json'}: it is the result of job '{first.name}'")
        replayed.fails("report", run, says=f"{second / 'result.json'}: it is the result of job '{first.name}'")
        shutil.copy(run_folder / "jobs" / second.name / "result.json", second / "result.json")
        forged = json.loads((first / "result.json").read_text())
        (first / "result.json").write_text(json.dumps({**forged, "top1": 7.5}))
        replayed.fails("collect", run, says="its top1 7.5 is not an accuracy between 0 and 1")
        replayed.fails("report", run, says="its top1 7.5 is not an accuracy between 0 and 1")
        other = _copy_run(run_folder, "run9-other")  # a shard whose result is forged is not merged
        (first / "result.json").unlink()
        (other / "jobs" / first.name / "result.json").write_text(json.dumps({**forged, "top1": 7.5}))
        code, _, err = replayed("collect", run, other)
        assert code == 2 and "not merged:" in err and "1 job(s) of its plans have no result yet" in err
        assert not (first / "result.json").exists()
        (first / "result.json").write_text("{}")  # an invalid result of its own, and a valid one in the shard
        shutil.copy(run_folder / "jobs" / first.name / "result.json", other / "jobs" / first.name / "result.json")
        replayed.works("collect", run, other)
        assert [json.loads(p.read_text()) for p in first.glob("result-invalid-*.json")] == [{}]  # kept, not lost


def test_10_resume_refuses_a_checkpoint_whose_random_states_are_empty_or_refused(world, capsys):
    base = world / "run10"
    interrupted_finetune(world, base, crash_at=3, save_every=2)
    rng = base / "checkpoints" / "step-000002" / "random_states_0.pkl"
    size = rng.stat().st_size
    evil = pickle.dumps(type("Evil", (), {"__reduce__": lambda self: (os.system, ("echo pwned",))})(), protocol=2)
    with replay(10, capsys, world) as run:
        rng.write_bytes(b"")
        run.fails("finetune", world / "M", *RESUME, "-o", base, says="random_states_0.pkl has 0 bytes")
        rng.write_bytes(evil + b"\0" * (size - len(evil)))  # the size it had, and a pickle that runs code
        run.fails("finetune", world / "M", *RESUME, "-o", base, says="random_states_0.pkl: cannot be loaded")
    assert not (base / "gardener.json").exists()


def test_11_blocks_that_name_no_block_are_refused(world, capsys):
    with replay(11, capsys, world) as run:
        run.fails("prune", world / "M", "-o", world / "out11", "--blocks", ",,", says="--blocks ',,': names no block")
    assert not (world / "out11").exists()


def test_12_a_link_inside_the_model_folder_to_a_file_elsewhere_is_not_copied(world, capsys):
    secret = world / "id_rsa"
    secret.write_text("PRIVATE KEY")
    model = copy_model(world, "M12")
    (model / "tokenizer.json").symlink_to(secret)
    (model / "vocab.txt").write_text("a b c")
    (model / "inside.txt").symlink_to(model / "vocab.txt")  # a link inside the folder is fine
    with replay(12, capsys, world, model, secret) as run:
        _, err = run.works("prune", model, "-o", world / "M12-small", "--remove", "1", "--criterion", "l2")
    assert f"not copied: tokenizer.json (a symbolic link to {secret}, outside the model folder)" in " ".join(
        err.split())
    out = world / "M12-small"
    assert not (out / "tokenizer.json").exists() and (out / "vocab.txt").read_text() == "a b c"
    assert (out / "inside.txt").read_text() == "a b c"
    assert all("PRIVATE KEY" not in p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())
    manifest = json.loads((out / "gardener.json").read_text())
    assert manifest["skipped_files"] == [f"tokenizer.json (a symbolic link to {secret}, outside the model folder)"]


def test_12_a_hugging_face_cache_snapshot_still_copies_its_linked_side_files(world, capsys):
    repo = world / "hub" / "models--org--tiny"
    snapshot, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for item in (world / "M").iterdir():
        shutil.copy(item, blobs / f"blob-{item.name}")
        (snapshot / item.name).symlink_to(Path("../../blobs") / f"blob-{item.name}")
    (blobs / "blob-tok").write_text("tokens")
    (snapshot / "tokenizer.json").symlink_to("../../blobs/blob-tok")
    with replay(12, capsys, world, blobs) as run:
        run.works("prune", snapshot, "-o", world / "hub-small", "--remove", "1", "--criterion", "l2")
    assert (world / "hub-small" / "tokenizer.json").read_text() == "tokens"


def test_13_the_oracle_run_again_with_another_recipe_is_refused_and_changes_nothing(world, capsys, run_folder):
    run = _copy_run(run_folder, "run13")
    plan = (run / "sensitivity.plan.json").read_bytes()
    with replay(13, capsys, world, world / "M2") as replayed:
        status = json.loads(replayed.works("status", run, "--json")[0])
        replayed.fails("sensitivity", world / "M2", "-o", run, *FT, "--lr", "0.002",
                       says="its sensitivity was run with other settings (settings.recipe.base_lr: 0.0005 -> 0.002)")
        assert json.loads(replayed.works("status", run, "--json")[0])["counts"] == status["counts"]
    assert (run / "sensitivity.plan.json").read_bytes() == plan and status["counts"]["done"] == 3


DISK_FULL = """
import contextlib, io, shutil
from gardener.cli import main
world = Path({world!r})
def clear(keep=None):
    # an empty disk; or, with `keep`, one filled up but for `keep` bytes
    for p in DISK.iterdir():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    if keep is not None:
        filler = DISK / ".filler"
        try:
            with open(filler, "wb") as f:
                while True:
                    f.write(bytes(4096))
        except OSError:
            pass
        with open(filler, "r+b") as f:
            f.truncate(max(0, filler.stat().st_size - keep))
def run(*args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as stop:
            code = stop.code
        except BaseException as exc:
            code = "traceback: " + repr(exc)
    left = sorted(str(p.relative_to(DISK)) for p in DISK.rglob("*") if p.name != ".filler")
    return {{"code": code, "err": [l for l in err.getvalue().splitlines() if l.strip()], "left": left}}
FT = {ft!r}
results = {{}}
clear(keep=None)
results["prune folder"] = run("prune", world / "M", "-o", DISK / "p", "--remove", "1", "--criterion", "l2")
clear(keep=None)
results["prune file"] = run("prune", world / "x14.safetensors", "-o", DISK / "p.safetensors", "--remove", "1",
                            "--criterion", "l2")
clear(keep=None)
results["prune pth"] = run("prune", world / "x14.pth", "-o", DISK / "p.pth", "--remove", "1", "--criterion", "l2")
clear(keep=None)
results["prune sharded"] = run("prune", world / "bert14", "-o", DISK / "p", "--remove", "1", "--criterion", "l2")
clear(keep=16384)
results["finetune checkpoint"] = run("finetune", world / "M", *FT, "-o", DISK / "run", "--save-every", "1")
clear(keep=0)
results["score json"] = run("score", world / "M", "--json", DISK / "s.json", "--criteria", "l1", "--criterion", "l1")
clear(keep=16384)
results["make-data"] = run("make-data", DISK / "d", "--per-class", "4", "--frames", "8", "--size", "32")
clear(keep=None)
from gardener.scoring import CalibOptions
from gardener.data.clips import ClipOptions
from gardener.experiments.protocol import prepare, queue_jobs
from gardener.train import DataOptions, Recipe
from dataclasses import asdict
exp = prepare(world / "M", DISK / "queue", DataOptions(world / "D" / "videos", split_dir=world / "D" / "splits",
              workers=0), Recipe(max_steps=2, batch_size=2, warmup_steps=0),
              {{"sampling_rate": 1, "test_clips": 1, "test_crops": 1, "min_crop_scale": 0.08}})
queue_jobs(exp, [exp.job([1])])
results["worker"] = run("worker", DISK / "queue")
results["worker"]["claims"] = sorted(str(p) for p in DISK.rglob("claim.json"))
results["worker"]["failures"] = sorted(str(p) for p in DISK.rglob("failure.json"))
print(json.dumps(results))
"""


def test_14_a_full_disk_is_one_line_leaves_no_temporary_and_gives_claims_back(world, capsys):
    write_safetensors(build_hf("vit").state_dict(), world / "x14.safetensors")
    torch.save({"model": build_hf("vit").state_dict(), "epoch": 1}, world / "x14.pth")
    save_hf(build_hf("bert"), world / "bert14", max_shard_size="20KB")
    ft = [a.replace("{D}", str(world / "D")) for a in FT]
    before = digests(world / "M", world / "D", world / "x14.safetensors", world / "x14.pth", world / "bert14")
    results = on_small_disk(world, DISK_FULL.format(world=str(world), ft=ft), kib=96)
    record = REPLAY.setdefault(14, {"commands": 0, "tracebacks": 0, "changed": []})
    record["commands"] += len(results)
    record["tracebacks"] += sum(1 for r in results.values() if str(r["code"]).startswith("traceback"))
    after = digests(world / "M", world / "D", world / "x14.safetensors", world / "x14.pth", world / "bert14")
    record["changed"] = sorted(k for k in before if after.get(k) != before[k])
    for name, result in results.items():
        errors = [line for line in result["err"] if line.startswith("error: ")]
        assert result["code"] == 2 and len(errors) == 1, (name, result)
        assert "no space left on the device" in errors[0] or " is free there" in errors[0], (name, errors)
    for name in ("prune folder", "prune file", "prune pth", "prune sharded", "score json", "make-data"):
        assert results[name]["left"] == [], (name, results[name]["left"])  # nothing half-written is left
    # the run that never reached its first checkpoint: what a rerun starts again from, no .step-N.tmp
    assert set(results["finetune checkpoint"]["left"]) <= {"run", "run/start.json", "run/log.jsonl", "run/checkpoints"}
    assert results["worker"]["claims"] == [] and results["worker"]["failures"] == []  # given back, not held against it
    assert record["tracebacks"] == 0 and record["changed"] == []


def test_15_names_too_long_for_the_file_system_are_one_line(world, capsys):
    with replay(15, capsys, world) as run:
        run.works("prune", world / "M", "-o", world / ("n" * 250), "--remove", "1", "--criterion", "l2")
        run.fails("prune", world / "M", "-o", world / ("n" * 256), "--remove", "1", "--criterion", "l2",
                  says="is 256 bytes long")
        deep = world / ("d/" * 2100 + "x")
        run.fails("prune", world / "M", "-o", deep, "--remove", "1", "--criterion", "l2", says="the system allows 4095")
        run.fails("score", world / "M", "--json", world / ("j" * 300 + ".json"), says="the file system allows 255")
        run.fails("score", str(world / "M") + "/" + "x" * 5000, code=1, says="a name or path too long")


def test_16_a_negative_shape_or_a_weight_map_of_non_strings_is_one_line(world, capsys):
    negative = _safetensors(world / "neg16.safetensors",
                            '{"blocks.0.w":{"dtype":"F32","shape":[-2,2],"data_offsets":[0,16]}}', bytes(16))
    model = save_hf(build_hf("bert"), world / "bert16", max_shard_size="20KB")
    index = json.loads((model / "model.safetensors.index.json").read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = 5
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with replay(16, capsys, world, negative, model) as run:
        run.fails("score", negative, says="has shape [-2, 2]; expected a list of whole numbers")
        run.fails("info", model, says="to 5; expected the name of a shard file")


def test_17_corrupt_run_files_are_one_line_or_run_again(world, capsys, run_folder):
    run = _copy_run(run_folder, "run17")
    first, second, _ = _job_folders(run)
    with replay(17, capsys, world, world / "M2") as replayed:
        (first / "result.json").write_text('{"id": "')  # a truncated write
        state = json.loads(replayed.works("status", run, "--json")[0])
        assert state["jobs"][first.name]["state"] == "pending" and "not readable JSON" in \
            state["jobs"][first.name]["invalid_result"]
        replayed.works("status", run)
        replayed.fails("collect", run, says=f"{first / 'result.json'}: not readable JSON")
        (second / "result.json").write_text("{}")
        assert json.loads(replayed.works("status", run, "--json")[0])["counts"]["done"] == 1
        replayed.works("worker", run)  # the two jobs run again; what was there is kept aside
        assert json.loads(replayed.works("status", run, "--json")[0])["counts"]["done"] == 3
        assert len(list(first.glob("result-invalid-*.json"))) == 1 and len(list(second.glob("result-invalid-*"))) == 1
        replayed.works("collect", run)

        base = world / "run17-resume"
        interrupted_finetune(world, base, crash_at=3, save_every=2)
        step = base / "checkpoints" / "step-000002"
        for name, damage in (("model.safetensors", "truncate"), ("optimizer.bin", "empty"), ("state.json", "truncate"),
                             ("start.json", "truncate")):
            target = base / name if name == "start.json" else step / name
            original = target.read_bytes()
            target.write_bytes(b"" if damage == "empty" else original[: len(original) // 2])
            says = "is not readable" if name == "start.json" else (
                "its state.json is unreadable" if name == "state.json" else f"{name} has ")
            replayed.fails("finetune", world / "M", *RESUME, "-o", base, says=says)
            target.write_bytes(original)
        replayed.works("finetune", world / "M", *RESUME, "-o", base)  # whole again: it resumes


def test_18_finetune_arguments_no_run_can_use_are_one_line_and_write_nothing(world, capsys):
    model = copy_model(world, "M18")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "nosuchmodel"}))
    with replay(18, capsys, world, world / "M", world / "D", model) as run:
        for flag, value, says in (("--lr", "-1", "--lr -1.0: expected 0 or more"),
                                  ("--lr", "nan", "--lr nan: expected 0 or more"),
                                  ("--batch-size", "0", "--batch-size 0: expected 1 or more"),
                                  ("--workers", "-2", "--workers -2: expected 0 or more")):
            run.fails("finetune", world / "M", *FT, flag, value, "-o", world / "out18", says=says)
        run.fails("finetune", model, *FT, "-o", world / "out18", says="config.json: transformers cannot read it")
    assert not (world / "out18").exists()


def test_19_a_negative_seed_or_worker_count_is_one_line(world, capsys):
    with replay(19, capsys, world) as run:
        run.fails("score", world / "M", "--criteria", "random", "--criterion", "random", "--seed", "-1",
                  says="--seed -1: expected 0 or more")
        run.fails("score", world / "M", "--workers", "-1", says="--workers -1: expected 1 or more")
        run.fails("prune", world / "M", "-o", world / "out19", "--criterion", "random", "--seed", "-1", "--remove",
                  "1", says="--seed -1")


def test_20_links_that_lead_nowhere_pipes_and_loops_in_the_model_folder_are_skipped(world, capsys):
    model = copy_model(world, "M20")
    (model / "dangling.json").symlink_to(world / "nothing-here")
    os.mkfifo(model / "pipe")
    (model / "loop").symlink_to(model / "loop")
    with replay(20, capsys, world, world / "M") as run:
        _, err = run.works("prune", model, "-o", world / "M20-small", "--remove", "1", "--criterion", "l2")
    said = " ".join(err.split())
    for name, why in (("dangling.json", "a broken symbolic link"), ("pipe", "not a regular file"),
                      ("loop", "a symbolic link loop")):
        assert f"not copied: {name} ({why}" in said
    assert sorted(p.name for p in (world / "M20-small").iterdir()) == ["config.json", "gardener.json",
                                                                       "model.safetensors"]


def test_21_videos_too_large_for_memory_are_refused_before_any_work(world, capsys):
    with replay(21, capsys, world) as run:
        run.fails("make-data", world / "d21", "--size", "100000", says="--size must be even and between 16 and 4096")
        run.fails("make-data", world / "d21", "--frames", "100000000", says="one video takes")
    assert not (world / "d21").exists()


def test_22_paths_with_brackets_are_printed_as_they_are(world, capsys):
    with replay(22, capsys, world) as run:
        _, err = run.works("score", world / "M", "--criteria", "l1", "--criterion", "l1", "--json",
                           world / "s [a].json")
    assert f"wrote {world / 's [a].json'}" in err and (world / "s [a].json").is_file()


def test_23_a_run_killed_before_its_first_checkpoint_simply_starts_again(world, capsys):
    with replay(23, capsys, world) as run:
        for extra in ([], ["--resume"]):
            base = world / f"run23{'-resume' if extra else ''}"
            interrupted_finetune(world, base, crash_at=1, save_every=100)
            assert (base / "start.json").is_file() and not (base / "checkpoints").exists()
            run.works("finetune", world / "M", *FT, "-o", base, *extra)
            assert json.loads((base / "gardener.json").read_text())["steps"] == 2
        (world / "run23-user").mkdir()
        (world / "run23-user" / "start.json").write_text("{}")
        (world / "run23-user" / "notes.txt").write_text("the user's")  # not a run's own files: left alone
        run.fails("finetune", world / "M", *FT, "-o", world / "run23-user", says="already exists")


def test_24_float8_weights_are_named_with_their_block_and_dtype(world, capsys):
    state = {k: v.to(torch.float8_e4m3fn) if v.dtype == torch.float32 else v for k, v in
             build_hf("vit").state_dict().items()}
    path = write_safetensors(state, world / "f8.safetensors")
    with replay(24, capsys, world, path) as run:
        run.fails("score", path, says="block 1: no tensor gardener can score: its tensors are F8_E4M3")


def test_25_info_says_why_there_are_no_gflops(world, capsys):
    model = copy_model(world, "M25")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "nosuchmodel"}))
    with replay(25, capsys, world, model) as run:
        out, _ = run.works("info", model)
    said = " ".join(out.split())
    assert "GFLOPs n/a (cannot build a model from this config.json (Unrecognized model identifier: nosuchmodel))" \
        in said and "no config.json" not in said


def test_26_a_link_loop_or_a_broken_link_as_input_is_named_so(world, capsys):
    (world / "loop26").symlink_to(world / "loop26")
    (world / "broken26").symlink_to(world / "nothing26")
    with replay(26, capsys, world) as run:
        run.fails("score", world / "loop26", says="a symbolic link loop")
        run.fails("info", world / "broken26", says=f"a broken symbolic link (to {world / 'nothing26'}")


def test_27_prune_help_and_the_contiguous_error_say_what_prune_takes(world, capsys):
    with replay(27, capsys, world) as run:
        out, _ = run.works("prune", "--help")
        assert "Comma list or 'all'" not in out
        line = run.fails("prune", world / "M", "-o", world / "out27", "--contiguous", "--remove", "1",
                         says="--criterion angular_distance")
        assert "--ratio or --remove" not in line
        line = run.fails("prune", world / "M", "-o", world / "out27", "--contiguous", "--blocks", "1",
                         "--criterion", "angular_distance", says="leave out --blocks")


def test_28_a_refused_pickle_names_what_it_refers_to_in_one_line(world, capsys):
    class Evil:
        def __reduce__(self):
            return os.system, ("echo pwned",)
    (world / "evil28.pth").write_bytes(pickle.dumps({"model": Evil()}))
    (world / "raw28.pth").write_bytes(pickle.dumps({"blocks.0.w": [1.0, 2.0]}, protocol=4))
    with replay(28, capsys, world, world / "evil28.pth", world / "raw28.pth") as run:
        run.fails("score", world / "evil28.pth", says="it refers to posix.system")
        run.fails("score", world / "raw28.pth", says="pickle opcode FRAME (protocol 4)")  # and no torch warning


def test_29_an_unreadable_job_file_is_named_not_skipped(world, capsys, run_folder):
    run = _copy_run(run_folder, "run29")
    first, second, _ = _job_folders(run)
    for folder in (first, second):
        (folder / "result.json").unlink()
    (first / "job.json").write_text('{"id": ')
    with replay(29, capsys, world, world / "M2") as replayed:
        replayed.fails("worker", run, says=f"{first / 'job.json'}: it is not readable JSON; run the command that "
                                           f"queued it again")
        assert (second / "result.json").is_file()  # the readable jobs ran
        out, _ = replayed.works("status", run)
        assert f"cannot be run: {first / 'job.json'}: it is not readable JSON" in " ".join(out.split())
        replayed.works("sensitivity", world / "M2", "-o", run, *FT)  # queued anew: its job runs again
    assert json.loads((first / "job.json").read_text())["id"] == first.name and (first / "result.json").is_file()


def test_30_nonsense_values_are_refused_with_the_flag_that_holds_them(world, capsys, run_folder):
    with replay(30, capsys, world, world / "M", world / "D", run_folder) as run:
        run.fails("worker", run_folder, "--stale-after", "nan", says="--stale-after nan: expected a number above 0")
        run.fails("status", run_folder, "--stale-after", "nan", says="--stale-after nan")
        for size in ("0", "-5MB"):
            run.fails("prune", world / "M", "-o", world / "out30", "--remove", "1", "--max-shard-size", size,
                      says=f"--max-shard-size {size!r}: expected a size above 0")
        run.fails("info", world / "M", "--frames", "0", says="--frames 0: expected a whole number of 1 or more")
        run.fails("info", world / "M", "--size", "-3", says="--size -3: expected a whole number of 1 or more")
        run.fails("score", world / "M", "--criteria", "angular_distance", "--criterion", "angular_distance",
                  "--calib-data", "{D}/videos", "--span", "100", says="--span 100: videomae.encoder.layer has 4 blocks")
        run.fails("make-data", world / "d30", "--classes", "grow,grow", says="'grow' is given twice")
    assert not (world / "out30").exists() and not (world / "d30").exists()


def test_31_a_ranking_made_on_another_checkpoint_is_said(world, capsys, run_folder):
    other = tiny_videomae(world / "M2-other", depth=2, seed=9)
    with replay(31, capsys, world, world / "M2", other) as run:
        run.works("score", world / "M2", "--criteria", "l1", "--criterion", "l1", "--json", world / "s31.json")
        _, err = run.works("prune", other, "-o", world / "p31", "--remove", "1", "--ranking", world / "s31.json")
        assert "was computed on another checkpoint" in " ".join(err.split())
        _, err = run.works("prune", other, "-o", world / "p31b", "--remove", "1", "--ranking",
                           run_folder / "oracle.json")
        assert "was computed on another checkpoint" in " ".join(err.split())
        _, err = run.works("prune", world / "M2", "-o", world / "p31c", "--remove", "1", "--ranking",
                           run_folder / "oracle.json")
        assert "another checkpoint" not in err


STALL = ["--stale-after", "4", "--max-jobs", "1"]


def test_32_a_stalled_worker_that_lost_its_claim_stops_writing(world, capsys):
    from gardener.experiments.protocol import prepare, queue_jobs
    from gardener.train import DataOptions, Recipe

    run = world / "run32"
    exp = prepare(world / "M", run, DataOptions(world / "D" / "videos", split_dir=world / "D" / "splits", workers=0),
                  Recipe(max_steps=80, batch_size=2, warmup_steps=0, save_every=5),
                  {"sampling_rate": 1, "test_clips": 1, "test_crops": 1, "min_crop_scale": 0.08})
    job = exp.job([1])
    queue_jobs(exp, [job])
    log = run / "jobs" / job.id / "train" / "log.jsonl"
    stalled = subprocess.Popen([sys.executable, "-m", "gardener", "worker", run, *STALL], stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and stalled.poll() is None and not (
                log.is_file() and log.read_text().count('"loss"') >= 6):
            time.sleep(0.05)
        assert stalled.poll() is None, stalled.stderr.read()
        stalled.send_signal(signal.SIGSTOP)  # its heartbeat stops too: the claim goes stale
        with replay(32, capsys, world) as replayed:
            _, err = replayed.works("worker", run, *STALL)
        assert "took over the stale claim" in err
        stalled.send_signal(signal.SIGCONT)
        assert stalled.wait(timeout=120) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            stalled.send_signal(signal.SIGCONT)
            stalled.kill()
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if '"loss"' in line]
    assert steps == list(range(1, 81))  # every step once: the stalled worker wrote nothing after it lost the claim
    assert "it stopped, and the new holder finishes it" in stalled.stderr.read()
    log_lines = [json.loads(line) for line in (run / "jobs.log").read_text().splitlines()]
    assert len(log_lines) == 1 and log_lines[0]["took_over"] is True


DEAD_CLAIM = """
import sys, time
from pathlib import Path
from gardener.experiments.claims import try_claim
try_claim(Path(sys.argv[1]), stale_after=300)
print("claimed", flush=True)
time.sleep(600)
"""


def test_33_status_says_when_no_worker_runs_and_names_a_killed_one(world, capsys, run_folder):
    run = _copy_run(run_folder, "run33")
    first, second, _ = _job_folders(run)
    (first / "result.json").unlink()
    (second / "result.json").unlink()
    killed = subprocess.Popen([sys.executable, "-c", DEAD_CLAIM, first], stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "claimed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    os.utime(first / "claim.json", (time.time() - 100, time.time() - 100))  # its heartbeat stopped a while ago
    with replay(33, capsys, world, world / "M2") as replayed:
        state = json.loads(replayed.works("status", run, "--json")[0])
        out, _ = replayed.works("status", run)
    assert state["jobs"][first.name]["state"] == "stale" and state["jobs"][first.name]["dead"] is True
    said = " ".join(out.split())
    assert f"pid {killed.pid}" in said and "its worker is no longer running" in said
    assert "no worker is running now" in said and "over the 1 worker(s) running now" not in said


def test_the_whole_list_replays_with_no_traceback_and_no_input_changed():
    """The acceptance line: every item replayed, 0 tracebacks, 0 inputs changed (sha256 before and after)."""
    if set(REPLAY) != set(ITEMS):
        pytest.skip(f"run the whole module to replay the whole list (replayed here: {sorted(REPLAY)})")
    assert sum(r["tracebacks"] for r in REPLAY.values()) == 0
    assert [item for item, r in REPLAY.items() if r["changed"]] == []
    assert all(r["commands"] >= 1 for r in REPLAY.values())
