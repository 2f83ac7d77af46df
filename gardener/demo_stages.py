"""The demos' stages: numbered messages, each stage's wall time in timings.json, the progress callbacks, and the
demo folder's claim (reused only with the settings it was made with). Shared by the video demo (demo.py) and
the image and text ones (demo_tasks.py)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import GardenerError
from .fileio import check_writable, write_text


@dataclass(frozen=True)
class Hooks:
    """Who hears of the demo's progress: each job of a queue, each training step, each stage by its name."""
    job: Callable | None = None
    step: Callable | None = None
    stage: Callable[[str], None] | None = None


# what each stage's progress bar says it is doing
STAGE_LABELS = {"data": "writing videos", "pretrain": "masked pretraining", "source": "finetuning on the source task",
                "precision": "precision views", "experiments": "oracle and sweep",
                "healing": "finetuning on the target task", "report": "report"}


def claim(out: Path, marker: dict, force: bool) -> None:
    """Create the demo folder, or reuse one made with the same settings."""
    import shutil

    stamp = out / "demo.json"
    if out.exists():
        if force:
            shutil.rmtree(out)
        elif not stamp.is_file():
            raise GardenerError(f"{out}: exists and is not a gardener demo folder; pass --force or another folder")
        elif json.loads(stamp.read_text()) != json.loads(json.dumps(marker)):
            raise GardenerError(f"{out}: holds a demo made with other settings (--quick/--seed); pass --force "
                                f"to start over or choose another folder")
    check_writable(out, force=True)
    out.mkdir(parents=True, exist_ok=True)
    write_text(stamp, json.dumps(marker, indent=2) + "\n", force=True)


class Stages:
    """Numbered stage messages, each stage's wall time in timings.json (the time of the invocation that ran
    it, kept beside the other stages' times; out of the report, which stays the same from run to run)."""

    def __init__(self, out: Path, say: Callable[[str], None], count: int, hooks: Hooks = Hooks(),
                 labels: dict[str, str] | None = None):
        self.out, self.say, self.count, self.number, self.hooks = out, say, count, 0, hooks
        self.labels = labels or STAGE_LABELS

    def start(self, name: str, what: str | None) -> None:
        self.number += 1
        self.name, self.began, self.cached = name, time.perf_counter(), what is None
        self.say(f"{self.number}/{self.count} {what}" if what else f"{self.number}/{self.count} {name}: done before")
        self.relabel(self.labels[name])

    def relabel(self, label: str) -> None:
        """Tell the progress bars what the stage does now."""
        if self.hooks.stage is not None:
            self.hooks.stage(label)

    def end(self) -> None:
        if not self.cached:
            path = self.out / "timings.json"
            times = json.loads(path.read_text()) if path.is_file() else {}
            times[self.name] = round(time.perf_counter() - self.began, 1)
            write_text(path, json.dumps(times, indent=2) + "\n", force=True)
