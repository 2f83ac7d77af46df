"""The shared guards every command goes through, each tested once at its own level: outputs never touch
inputs, a final rename never replaces what appeared meanwhile, names the file system refuses, the run
lock, one error path for a full disk, the safetensors header validator and the job result validator."""
from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import job_result, on_small_disk

from gardener.errors import GardenerError
from gardener.fileio import atomic_dir, atomic_file, check_output, clean_stale, write_text
from gardener.locks import lock_path, run_lock
from gardener.oserrors import describe

# --- outputs against inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("where,how", [
    ("model", "is the input"), ("model/sub", "is inside the input"), (".", "holds the input"),
    ("link-to-model", "is the input"), ("link-to-root/out", "holds the input"),
    ("link-to-root/model/x", "is inside the input")])
def test_an_output_that_is_inside_or_holds_an_input_is_refused_even_with_force(tmp_path, where, how):
    root = tmp_path / "root"
    (root / "model").mkdir(parents=True)
    (root / "model" / "w.bin").write_bytes(b"weights")
    (tmp_path / "link-to-model").symlink_to(root / "model")
    (tmp_path / "link-to-root").symlink_to(root)
    out = tmp_path / where if where.startswith("link") else root / where
    if where == "link-to-root/out":  # a folder reached through a link that sits above the input
        out = tmp_path / "link-to-root"
    with pytest.raises(GardenerError, match=rf"-o .*: {how.replace('the input', 'the model')} .*never replaces or "
                                            rf"writes into an input"):
        check_output(out, [("the model", root / "model")], force=True)
    assert (root / "model" / "w.bin").read_bytes() == b"weights"


def test_an_output_beside_its_inputs_passes(tmp_path):
    (tmp_path / "model").mkdir()
    check_output(tmp_path / "model-small", [("the model", tmp_path / "model"), ("the data", None)], force=False)
    (tmp_path / "exists").mkdir()
    with pytest.raises(GardenerError, match="already exists; pass --force"):
        check_output(tmp_path / "exists", [("the model", tmp_path / "model")], force=False)


# --- putting an output in place --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_final_rename_never_replaces_what_appeared_meanwhile_unless_forced(tmp_path, kind):
    out = tmp_path / "out"
    writer = atomic_dir if kind == "folder" else atomic_file

    def another_run_finishes_first():
        if kind == "folder":
            out.mkdir()
            (out / "theirs").write_text("theirs")
        else:
            out.write_text("theirs")
    with pytest.raises(GardenerError, match="appeared while this command was writing it"):
        with writer(out) as tmp:
            (tmp / "mine").write_text("mine") if kind == "folder" else tmp.write_text("mine")
            another_run_finishes_first()
    assert ((out / "theirs") if kind == "folder" else out).read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left
    with writer(out, force=True) as tmp:  # forced: replaced, whole
        (tmp / "mine").write_text("mine") if kind == "folder" else tmp.write_text("mine")
    assert ((out / "mine") if kind == "folder" else out).read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_even_an_empty_folder_that_appeared_is_not_replaced(tmp_path):
    with pytest.raises(GardenerError, match="appeared"):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "mine").write_text("mine")
            (tmp_path / "out").mkdir()
    assert list((tmp_path / "out").iterdir()) == []


def test_a_long_output_name_gets_a_short_temporary_and_its_debris_is_still_recognised(tmp_path):
    name = "n" * 250  # allowed by the file system; NAME plus the temporary's suffix would not be
    assert write_text(tmp_path / name, "x").read_text() == "x"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from gardener.fileio import _HOST, short_name

    debris = tmp_path / f".{short_name(name)}.gardener-{_HOST}-{dead.pid}-abc.tmp"
    debris.write_text("left by a killed run")
    assert clean_stale(tmp_path / name) == [debris] and not debris.exists()


@pytest.mark.parametrize("path,message", [
    ("n" * 256, "is 256 bytes long; the file system allows 255"),
    ("d/" * 2100 + "x", "the path is .* bytes long; the system allows 4095")])
def test_a_name_or_path_too_long_is_one_line_before_anything_is_written(tmp_path, path, message):
    with pytest.raises(GardenerError, match=message):
        write_text(tmp_path / path, "x")
    assert list(tmp_path.iterdir()) == []


# --- the run lock ----------------------------------------------------------------------------------------

HOLD = """
import sys, time
from gardener.locks import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_run_folder_is_locked_by_the_run_that_owns_it_and_freed_when_it_dies(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(GardenerError, match=rf"another run is writing to it \(.* pid {holder.pid}, since "):
            with run_lock(folder):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed run leaves no lock behind
        holder.wait()
    with run_lock(folder):
        assert lock_path(folder).is_file()
    assert not lock_path(folder).exists()  # released: nothing left


def test_a_link_to_a_run_folder_takes_the_folders_own_lock(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "run")
    with run_lock(tmp_path / "run"):
        with pytest.raises(GardenerError, match="another run is writing to it"):
            with run_lock(tmp_path / "link"):
                pass


@pytest.mark.parametrize("env,rank", [({}, 0), ({"RANK": "3"}, 0), ({"RANK": "", "WORLD_SIZE": "4"}, 0),
                                      ({"RANK": "3", "WORLD_SIZE": "4"}, 3)])
def test_only_a_launch_of_several_processes_makes_a_process_another_ranks_helper(monkeypatch, env, rank):
    from gardener.train.run import launch_rank

    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launch_rank() == rank


def test_a_folder_that_is_not_a_gardener_run_is_never_started_again_in_its_place(tmp_path):
    from gardener.train.state import check_out

    foreign = tmp_path / "run"
    (foreign / "best").mkdir(parents=True)
    (foreign / "start.json").write_text('{"not": "gardener"}')
    (foreign / "best" / "weights.pt").write_bytes(b"someone's")
    with pytest.raises(GardenerError, match="already exists"):
        check_out(foreign, resume=False, force=False)
    assert (foreign / "best" / "weights.pt").read_bytes() == b"someone's"


def test_a_file_output_never_replaces_a_folder_even_with_force(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "paper.tex").write_text("the user's")
    with pytest.raises(GardenerError, match="is a folder; give a file name"):
        write_text(tmp_path / "results", "{}", force=True)
    assert (tmp_path / "results" / "paper.tex").read_text() == "the user's"


# --- one error path for what the system refuses ------------------------------------------------------------

def test_a_full_disk_is_one_line_naming_the_path_and_leaves_no_temporary(tmp_path):
    done = on_small_disk(tmp_path, """
        from gardener.fileio import write_text
        from gardener.oserrors import DiskFull
        try:
            write_text(DISK / "big.txt", "x" * 200_000)
            said = None
        except DiskFull as exc:
            said = str(exc)
        print(json.dumps({"said": said, "left": sorted(p.name for p in DISK.iterdir())}))
    """, kib=64)
    assert done["said"].startswith(f"{tmp_path / 'disk' / 'big.txt'}: no space left on the device (it needs about "
                                   f"195.3 KB, ")
    assert done["left"] == []


def test_other_os_errors_are_said_in_one_line_with_their_path():
    assert describe(OSError(errno.ENAMETOOLONG, "File name too long", "/x/" + "y" * 300)).endswith(
        "a name or path too long for the file system (303 bytes)")
    assert describe(OSError(errno.EACCES, "Permission denied", "/etc/shadow")) == "/etc/shadow: Permission denied"
    assert describe(OSError(errno.ENOSPC, "No space left on device", "/tmp/x")).startswith(
        "/tmp/x: no space left on the device (")


def test_a_library_error_while_the_disk_is_full_is_a_full_disk(tmp_path):
    """PyTorch and safetensors say a failed write in their own words: what `writing` turns into DiskFull."""
    done = on_small_disk(tmp_path, """
        import torch
        from gardener.oserrors import DiskFull, writing
        try:
            with writing(DISK / "big.pt"):
                torch.save(torch.zeros(100_000), DISK / "big.pt")
            said = None
        except DiskFull as exc:
            said = str(exc)
        print(json.dumps({"said": said}))
    """, kib=64)
    assert done["said"].startswith(f"{tmp_path / 'disk' / 'big.pt'}: no space left on the device (")


# --- the safetensors header validator, against the safetensors library ----------------------------------

def _write(path, header: str, data: bytes) -> None:
    blob = header.encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)


DATA = np.arange(4, dtype=np.float32).tobytes()


@pytest.mark.parametrize("header,data,message", [
    ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}',
     DATA, "the header names 'a' twice"),
    ('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
     DATA, r"tensor 'a' \(data bytes 0-16\) overlaps tensor 'b'"),
    ('{"a":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}}', DATA, "expected a list of whole numbers"),
    ('{"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}', DATA, "expected a list of whole numbers"),
    ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', DATA, "8 unused bytes lie before tensor 'a'"),
    ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', DATA, "8 bytes follow the last tensor"),
    ('{"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}', DATA, "truncated"),
    ('{"__metadata__":{"x":1},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', DATA, "__metadata__"),
])
def test_a_header_the_safetensors_library_refuses_is_refused_with_what_is_wrong(tmp_path, header, data, message):
    from safetensors import safe_open

    from gardener.checkpoint import open_checkpoint

    path = tmp_path / "x.safetensors"
    _write(path, header, data)
    with pytest.raises(Exception):  # noqa: B017 - the library's own error type varies by version
        with safe_open(str(path), "np") as handle:
            [handle.get_tensor(k) for k in handle.keys()]
    with pytest.raises(GardenerError, match=message):
        open_checkpoint(path)


@pytest.mark.parametrize("header", [
    '{"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}',
    '{"__metadata__":null,"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}',
    '{"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}',
    '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}',
])
def test_a_header_the_library_reads_is_read_alike(tmp_path, header):
    from safetensors.numpy import load_file

    from gardener.checkpoint import open_checkpoint

    path = tmp_path / "x.safetensors"
    _write(path, header, DATA)
    ckpt = open_checkpoint(path)
    assert {n: ckpt.read(n).tolist() for n in ckpt.names()} == {n: v.tolist() for n, v in load_file(path).items()}


# --- the job result validator ------------------------------------------------------------------------------

def _job(**changes):
    from gardener.experiments.runs import Settings

    return Settings("m", "a" * 64, {"data": "d"}, {"base_lr": 0.1}, {}, 0).job([2], **changes)


@pytest.mark.parametrize("change,message", [
    (lambda r, other: {}, "it holds no result"),
    (lambda r, other: {**r, "id": other.id}, "it is the result of job"),
    (lambda r, other: {**job_result(other), "id": r["id"]}, "are those of job"),
    (lambda r, other: {**r, "top1": 7.5}, "its top1 7.5 is not an accuracy between 0 and 1"),
    (lambda r, other: {**r, "uar": float("nan")}, "its uar nan is not an accuracy"),
    (lambda r, other: {**r, "videos": 4, "correct": "110"}, "3 per-video results for 4 test videos"),
    (lambda r, other: {**r, "videos": 4, "correct": "0000", "top1": 0.75}, "disagrees with its per-video results"),
    (lambda r, other: {**r, "params": -3}, "its params -3 is not a whole number"),
    (lambda r, other: {k: v for k, v in r.items() if k != "settings"}, "does not record its job"),
])
def test_a_result_that_is_not_its_jobs_own_is_refused_with_why(change, message):
    from gardener.experiments.validation import result_problem

    job, other = _job(), _job(seed=5)
    good = job_result(job, top1=0.75, videos=4, correct="1101", params=10, gflops=1.5, steps=3, seconds=2.0)
    assert result_problem(good, job.id, "a" * 64) is None
    assert message in result_problem(change(good, other), job.id, "a" * 64)


def test_a_result_of_another_checkpoints_run_is_refused(tmp_path):
    from gardener.experiments.validation import InvalidResult, read_result

    job = _job()
    (tmp_path / job.id).mkdir()
    (tmp_path / job.id / "result.json").write_text(json.dumps(job_result(job)))
    assert read_result(tmp_path / job.id, "a" * 64)["id"] == job.id
    with pytest.raises(InvalidResult, match="made from another checkpoint"):
        read_result(tmp_path / job.id, "b" * 64)
    (tmp_path / job.id / "result.json").write_text(json.dumps(job_result(job))[:40])
    with pytest.raises(InvalidResult, match="not readable JSON"):
        read_result(tmp_path / job.id)
