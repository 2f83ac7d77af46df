"""Progress that tells the truth: each bar carries the name of the work it measures, a total once one is
known, an elapsed time that restarts with each run and an ETA from the times measured so far. On a terminal
these are Rich bars; elsewhere (a log file, a batch job) one plain line per event: a job done, a tenth of a
training run done."""
from __future__ import annotations

import time
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..report.console import duration


class Rate:
    """An ETA from measured progress: the time per unit since the first unit done here (work found done
    before, e.g. cached jobs, is not timed), times the units left."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock, self.start = clock, None

    def eta(self, done: int, total: int | None) -> float | None:
        now = self.clock()
        if self.start is None or done < self.start[0]:
            self.start = (done, now)
        first, began = self.start
        if total is None or done <= first:
            return None
        return (now - began) / (done - first) * max(0, total - done)


def eta_text(seconds: float | None, done: int, total: int | None) -> str:
    """'ETA 3 min 12 s', or why there is none yet."""
    if total is not None and done >= total:
        return ""
    return "ETA: after the first measured unit" if seconds is None else f"ETA {duration(seconds)}"


class Live:
    """The bars of a command: a stage's training steps, or an experiment's jobs with the steps of the job
    running now. `step` and `job` are the callbacks the library takes (`progress=`, `job_progress=`);
    `stage` names the next stage (a new bar, its own clock)."""

    def __init__(self, console: Console, label: str, show: bool = True,
                 clock: Callable[[], float] = time.monotonic, unit: str = "step", quiet_for: float = 0.0):
        self.console, self.label, self.show, self.clock, self.unit = console, label, show, clock, unit
        self.quiet_for, self.began = quiet_for, clock()  # no line before quiet_for seconds: short work says nothing
        self.terminal = console.is_terminal
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                            console=console, disable=not (self.terminal and show))
        self.jobs = self.steps = None
        self.job_rate, self.step_rate = Rate(clock), Rate(clock)
        self.running: tuple | None = None  # (job, since) of the job running here now
        self.done_seen: int | None = None  # jobs done at the last event
        self.last_step: int | None = None  # None: the next step event starts a new run
        self.lines_said = 0

    def __enter__(self) -> "Live":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def _say(self, line: str) -> None:
        if self.show and not self.terminal:
            self.console.print(line, highlight=False, markup=False)

    def stage(self, label: str) -> None:
        """A new stage: its bars start again under its own name, with their own clocks."""
        for task in (self.jobs, self.steps):
            if task is not None:
                self.bar.remove_task(task)
        self.label, self.jobs, self.steps, self.running, self.done_seen = label, None, None, None, None
        self.job_rate, self.last_step = Rate(self.clock), None

    def job(self, done: int, total: int | None, job=None) -> None:
        """`done` of `total` jobs have results; `job` is the one starting here now (None: none, or the
        queue is drained by other workers)."""
        eta = eta_text(self.job_rate.eta(done, total), done, total)
        if self.jobs is None:
            self.jobs = self.bar.add_task(f"{self.label}: jobs", total=total, stats="", eta="")
        self.bar.update(self.jobs, completed=done, total=total, eta=eta,
                        stats=f"removing {list(job.removed) or 'nothing'}" if job is not None else "")
        if self.done_seen is not None and done > self.done_seen:
            what = "by the workers"
            if self.running is not None:
                finished, since = self.running
                what = f"removing {list(finished.removed) or 'nothing'} ({duration(self.clock() - since)})"
            self._say(f"  job {done}/{total} done: {what}{', ' + eta if eta else ''}")
        self.done_seen = done
        if job is None:
            self.running = None
        elif self.running is None or self.running[0] is not job:
            self.running, self.last_step = (job, self.clock()), None

    def step(self, done: int, total: int | None, loss: float | None = None, lr: float | None = None,
             clips_per_s: float | None = None) -> None:
        """`done` of `total` units (optimizer steps, or scored blocks) of the run going on now (a new run gets a new
        bar and clock)."""
        if self.last_step is None or done < self.last_step or self.steps is None:
            if self.steps is not None:
                self.bar.remove_task(self.steps)
            name = (f"  job: removing {list(self.running[0].removed) or 'nothing'}" if self.running is not None
                    else self.label)
            self.steps = self.bar.add_task(name, total=total, stats="", eta="")
            self.step_rate, self.lines_said, self.began = Rate(self.clock), 0, self.clock()
        self.last_step = done
        eta = eta_text(self.step_rate.eta(done, total), done, total)
        stats = " · ".join(s for s in (f"loss {loss:.4f}" if loss is not None else "",
                                       f"lr {lr:.2e}" if lr is not None else "",
                                       f"{clips_per_s:.1f} clips/s" if clips_per_s is not None else "") if s)
        self.bar.update(self.steps, completed=done, total=total, stats=stats, eta=eta)
        if self.running is None and total and done * 10 >= (self.lines_said + 1) * total:
            self.lines_said = done * 10 // total  # one line per tenth of the run, without a terminal
            if self.clock() - self.began >= self.quiet_for:
                    self._say(f"  {self.label}: {self.unit} {done}/{total}{' · ' + stats if stats else ''}"
                          f"{', ' + eta if eta else ''}")
