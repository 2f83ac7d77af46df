"""Each process takes the cores it may use, local workers share them, and the user's choice wins (issue 31)."""
from __future__ import annotations

import os

import pytest
import torch
from conftest import one_line_error, run_cli

from gardener import threads
from gardener.errors import GardenerError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No thread variable set, and torch's thread count as it was once the test is over."""
    for name in (threads.ENV, *threads.LIBRARIES):
        monkeypatch.setenv(name, "1")  # recorded as it was (set or not), so that what the test sets is undone
        monkeypatch.delenv(name)
    monkeypatch.setattr(threads, "_ours", {})
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_process_takes_the_cores_it_may_use_bounded_by_its_cpu_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")  # no quota
    assert threads.usable_cores(quota) == affinity
    quota.write_text("150000 100000\n")  # 1.5 CPUs: 2 threads
    assert threads.usable_cores(quota) == min(affinity, 2)
    assert threads.usable_cores(tmp_path / "absent") == affinity


def test_by_default_torch_and_the_libraries_get_the_usable_cores():
    cores = threads.usable_cores()
    assert threads.set_threads() == cores == threads.current()
    assert torch.get_num_threads() == cores
    assert all(os.environ[name] == str(cores) for name in threads.LIBRARIES)
    assert threads.chosen() is None  # what gardener set itself is not taken for the user's choice


def test_the_users_choice_wins_and_a_bad_one_is_one_line(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's
    assert threads.set_threads() == 1 and torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.set_threads() == 3 and torch.get_num_threads() == 3
    assert threads.set_threads(2) == 2 and os.environ[threads.ENV] == "2"  # --threads, passed on to children
    monkeypatch.setenv(threads.ENV, "two")
    with pytest.raises(GardenerError, match="^GARDENER_THREADS='two': expected a whole number of threads, 1 or more$"):
        threads.set_threads()


def test_local_workers_share_the_cores():
    cores = threads.usable_cores()
    assert threads.per_worker(1) == cores and threads.per_worker(2) == max(1, cores // 2)
    assert threads.per_worker(10 * cores) == 1


def test_gardener_threads_sets_them_for_the_command(tmp_path, capsys):
    from conftest import tiny_videomae

    model = tiny_videomae(tmp_path / "model")
    assert run_cli("--threads", "1", "info", model) == 0
    assert torch.get_num_threads() == 1 and os.environ[threads.ENV] == "1"
    capsys.readouterr()
    assert run_cli("--threads", "0", "info", model) == 2
    assert "--threads" in one_line_error(capsys.readouterr().err)
