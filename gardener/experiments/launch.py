"""Where an experiment's jobs run: the command line's launch settings, and their record in the run folder.

`Launch` holds the "Cluster" options as given (`--launcher none|local|slurm`, the local workers, the
SLURM array's settings); `launchers.launcher_for` turns it into the launcher that runs the jobs (the one
place that reads the launcher's name). `write_launch` records a run folder's latest launch, with its
queue options, in RUN/launch.json, so that how its jobs were launched can be read beside their results.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from ..errors import GardenerError
from ..fileio import write_text
from .queue import QueueOptions
from .runs import RunDir

CLUSTERS = ("slurm", "local", "debug")
LAUNCH_FILE = "launch.json"


@dataclass(frozen=True)
class Launch:
    """Where an experiment's jobs run (the command line's "Cluster" options)."""

    launcher: str = "none"
    local_workers: int = 1
    gpus_per_job: int = 1
    timeout_min: int = 240
    partition: Optional[str] = None
    array_parallelism: int = 16
    sbatch: Optional[list[str]] = None
    submitit_cluster: str = "slurm"

    def check(self) -> Launch:
        """One-line errors for values no launcher can use (before anything is written); the launcher's
        name is checked where it becomes a launcher (`launchers.launcher_for`)."""
        if self.submitit_cluster not in CLUSTERS:
            raise GardenerError(f"--submitit-cluster {self.submitit_cluster!r}: expected one of {', '.join(CLUSTERS)}")
        for name in ("local_workers", "gpus_per_job", "timeout_min", "array_parallelism"):
            if getattr(self, name) < (0 if name == "gpus_per_job" else 1):
                raise GardenerError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected a positive number")
        self.extra()
        return self

    def extra(self) -> dict[str, str]:
        """`--sbatch key=value` pairs as sbatch parameters."""
        out = {}
        for item in self.sbatch or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise GardenerError(f"--sbatch {item!r}: expected KEY=VALUE, e.g. --sbatch account=myproject")
            out[key.strip().lstrip("-")] = value
        return out


def write_launch(run: RunDir, launch: Launch, queue: QueueOptions) -> Path:
    """RUN/launch.json: the settings of the run folder's latest launch and its queue options, written whole
    (a rerun replaces it: it records how the latest command launched the jobs, not every launch)."""
    record = {"launch": asdict(launch), "queue": asdict(queue), "written": time.time()}
    return write_text(run.path / LAUNCH_FILE, json.dumps(record, indent=2) + "\n", force=True)
