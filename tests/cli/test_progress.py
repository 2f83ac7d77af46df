"""Progress that tells the truth: the stage's own name, known totals, a clock that restarts with each run,
an ETA from measured times, and one line per event where there is no terminal."""
from __future__ import annotations

import io
import types

import pytest
from rich.console import Console

from gardener.cli.progress import Live, Rate


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def job(*removed: int):
    return types.SimpleNamespace(removed=removed)


def live(terminal: bool, label: str = "masked pretraining"):
    text = io.StringIO()
    console = Console(file=text, force_terminal=terminal, width=200)
    clock = Clock()
    return Live(console, label, clock=clock), clock, text


def lines_of(text: io.StringIO) -> list[str]:
    return [line.strip() for line in text.getvalue().splitlines() if line.strip()]


def test_rate_times_only_the_units_done_here_and_multiplies_by_what_is_left():
    clock = Clock()
    rate = Rate(clock)
    assert rate.eta(4, 10) is None  # 4 were done before: nothing measured yet
    clock.now += 30
    assert rate.eta(5, 10) == pytest.approx(30 * 5)
    clock.now += 10
    assert rate.eta(7, 10) == pytest.approx(40 / 3 * 3)


def test_without_a_terminal_a_training_run_says_its_stage_name_ten_times_with_an_eta():
    bar, clock, text = live(terminal=False)
    with bar:
        for step in range(1, 21):
            clock.now += 2
            bar.step(step, 20, loss=0.5, lr=1e-3, clips_per_s=4.0)
    lines = lines_of(text)
    assert len(lines) == 10 and all(line.startswith("masked pretraining: step ") for line in lines)
    assert lines[0] == "masked pretraining: step 2/20 · loss 0.5000 · lr 1.00e-03 · 4.0 clips/s, ETA 36 s"
    assert "ETA" not in lines[-1] and lines[-1].startswith("masked pretraining: step 20/20")


def test_without_a_terminal_each_finished_job_gets_a_line_with_its_time_and_the_eta_from_jobs_run_here():
    bar, clock, text = live(terminal=False, label="sweep")
    with bar:
        bar.job(2, 6, job())            # two results found before: not timed
        clock.now += 40
        bar.job(3, 6, job(3, 7))
        clock.now += 20
        bar.job(4, 6, job(5))
        clock.now += 30
        bar.job(6, 6, None)             # the last one and one from elsewhere
    assert lines_of(text) == ["job 3/6 done: removing nothing (40 s), ETA 2 min 0 s",
                              "job 4/6 done: removing [3, 7] (20 s), ETA 60 s",
                              "job 6/6 done: removing [5] (30 s)"]


def test_jobs_run_by_other_workers_are_counted_as_their_results_appear():
    bar, clock, text = live(terminal=False, label="oracle")
    with bar:
        for done in (0, 0, 1, 1, 3):
            clock.now += 10
            bar.job(done, 4, None)
    assert lines_of(text) == ["job 1/4 done: by the workers, ETA 60 s",
                              "job 3/4 done: by the workers, ETA 13 s"]


def test_job_training_steps_print_no_lines_of_their_own():
    bar, clock, text = live(terminal=False, label="sweep")
    with bar:
        bar.job(0, 1, job(2))
        for step in range(1, 11):
            bar.step(step, 10, loss=1.0)
        bar.job(1, 1, None)
    assert [line.split(" (")[0] for line in lines_of(text)] == ["job 1/1 done: removing [2]"]


def descriptions(bar: Live) -> list[str]:
    return [task.description for task in bar.bar.tasks]


def test_on_a_terminal_no_job_bar_shows_before_the_first_job_and_each_stage_names_its_bar():
    bar, clock, _ = live(terminal=True, label="masked pretraining")
    with bar:
        bar.step(1, 200, loss=0.9)
        assert descriptions(bar) == ["masked pretraining"]
        bar.stage("finetuning on the source task")
        bar.step(1, 600, loss=0.9)
        assert descriptions(bar) == ["finetuning on the source task"]
        bar.stage("oracle and sweep")
        bar.job(0, 40, job(4))
        bar.step(1, 30)
        assert descriptions(bar) == ["oracle and sweep: jobs", "  job: removing [4]"]
        assert bar.bar.tasks[0].total == 40


def test_on_a_terminal_each_job_starts_a_new_step_bar_whose_clock_moves():
    bar, clock, _ = live(terminal=True, label="sweep")
    with bar:
        bar.job(0, 2, job(1))
        for step in range(1, 31):
            bar.step(step, 30)
        first = bar.bar.tasks[-1]
        assert first.finished  # Rich stops a finished bar's clock ...
        bar.job(1, 2, job(2))
        bar.step(1, 30)
        second = bar.bar.tasks[-1]
        assert second is not first and not second.finished  # ... so the next job gets a new one
        assert second.description == "  job: removing [2]" and second.completed == 1
        assert bar.bar.tasks[0].fields["eta"].startswith("ETA")


def test_scoring_says_which_block_it_reached_and_when_it_will_end_once_it_takes_a_while():
    """Without a terminal: a line per tenth of the blocks once 3 s have passed, each with an ETA but the last."""
    text = io.StringIO()
    clock = Clock()
    bar = Live(Console(file=text, force_terminal=False, width=200), "scoring blocks", clock=clock, unit="block",
               quiet_for=3.0)
    with bar:
        for block in range(1, 21):
            clock.now += 1
            bar.step(block, 20)
    lines = lines_of(text)
    assert [line.split(",")[0] for line in lines] == [f"scoring blocks: block {b}/20" for b in range(4, 21, 2)]
    assert lines[0] == "scoring blocks: block 4/20, ETA 16 s" and lines[-1] == "scoring blocks: block 20/20"


def test_a_scoring_run_of_a_moment_prints_no_progress_line(tmp_path, capsys):
    import numpy as np
    import torch
    from conftest import cli, write_safetensors

    state = {f"blocks.{i}.fc.weight": torch.from_numpy(np.eye(16, dtype=np.float32) * (i + 1)) for i in range(20)}
    code, _, err = cli(["score", write_safetensors(state, tmp_path / "m.safetensors"), "--criteria", "l2"], capsys)
    assert code == 0 and "scoring blocks" not in err


def test_a_prune_that_ranks_its_blocks_reports_them_where_its_caller_asked(tmp_path):
    """`scoring.reporting`: the scoring inside a prune reports its blocks (the CLI's bar) with no callback passed."""
    import numpy as np
    import torch
    from conftest import write_safetensors

    import gardener
    from gardener.scoring import ScoreSettings, reporting

    state = {f"blocks.{i}.fc.weight": torch.from_numpy(np.eye(16, dtype=np.float32) * (i + 1)) for i in range(20)}
    path, seen = write_safetensors(state, tmp_path / "m.safetensors"), []
    with reporting(lambda done, blocks: seen.append((done, blocks))):
        gardener.prune_checkpoint(path, tmp_path / "out.safetensors", gardener.Cut(ratio=0.5),
                                  ScoreSettings(primary="l2"))
    assert seen == [(k, 20) for k in range(1, 21)]
    gardener.score(path, ["l2"])
    assert len(seen) == 20  # outside it, nothing is reported
