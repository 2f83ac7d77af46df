"""Experiment tracking (`--report-to`): a run's log.jsonl mirrored to TensorBoard or W&B through
Accelerate's trackers.

log.jsonl stays the run's own record, written exactly as without a tracker; a tracker receives the
same numbers at the same optimizer steps (`train/loss`, `train/lr`, ... per step, `eval/top1`,
`eval/top5`, `eval/uar` at each evaluation). TensorBoard writes OUT/tensorboard/. A resumed run
writes there too, with TensorBoard's purge step at the checkpoint's step + 1, so that the steps the
interrupted run logged after its checkpoint are hidden, as log.jsonl drops them. Which tracker a
run reports to never changes its trajectory, so it is a run option, not part of the recipe.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import GardenerError

# --report-to choice -> the package it needs (the pip extra has the choice's name)
REPORT_TO = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb"}
TENSORBOARD_DIR = "tensorboard"  # OUT/tensorboard/: Accelerate logs to <project_dir>/<project name>


def installed(package: str) -> bool:
    """Whether `package` can be imported (without importing it)."""
    return importlib.util.find_spec(package) is not None


def check_report_to(report_to: str) -> None:
    """Refuse an unknown tracker, or one whose package is missing, naming the pip extra to install."""
    if report_to not in REPORT_TO:
        raise GardenerError(f"--report-to {report_to!r}: expected one of {', '.join(REPORT_TO)}")
    package = REPORT_TO[report_to]
    if package is not None and not installed(package):
        raise GardenerError(f"--report-to {report_to}: {package} is not installed; "
                            f"pip install \"vit-gardener[{report_to}]\"")


def accelerator_options(report_to: str, out: Path | None) -> dict:
    """Accelerator arguments for the tracker (none for "none")."""
    if report_to == "none" or out is None:
        return {}
    return {"log_with": report_to, "project_dir": str(out)}


def start_tracking(accelerator, report_to: str, out: Path, config: dict, resume_step: int | None) -> None:
    """Start the run's tracker (main process only, as Accelerate does) with `config` flattened to scalars."""
    if report_to == "none":
        return
    if report_to == "tensorboard":
        project = TENSORBOARD_DIR
        init = {"tensorboard": {"purge_step": resume_step + 1}} if resume_step is not None else {}
    else:
        project = os.environ.get("WANDB_PROJECT", "gardener")
        init = {"wandb": {"name": out.name, "dir": os.environ.get("WANDB_DIR", str(out))}}
    accelerator.init_trackers(project, config=flat_config(config), init_kwargs=init)


def track(accelerator, record: dict) -> None:
    """Log a log.jsonl record (its step, its scalars) to the trackers; nothing where there are none."""
    values = scalars(record)
    if values:
        accelerator.log(values, step=record["step"])


def end_tracking(accelerator) -> None:
    """Finish the trackers (flush and close). Not `accelerator.end_training()`: it also destroys the
    process group, which the next run in this process (a sweep, an evaluation under torchrun) still needs."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()


def scalars(record: dict) -> dict[str, float]:
    """A record's numbers by tracker name: top-level ones under train/, a nested dict's under its key."""
    values = {}
    for key, value in record.items():
        if key == "step":
            continue
        items, prefix = (value.items(), f"{key}/") if isinstance(value, dict) else ([(key, value)], "train/")
        values.update({prefix + name: v for name, v in items if _number(v)})
    return values


def flat_config(config: dict, prefix: str = "") -> dict:
    """Nested dicts, lists and tuples as {"a.b.0": value}: the ints, floats, bools and strings trackers
    take (None, an unset field, is left out)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat.update(flat_config(dict(enumerate(value)), f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
