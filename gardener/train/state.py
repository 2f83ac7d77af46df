"""What a training run keeps on disk: its folder, checkpoints (Accelerate's state plus the step),
and log.jsonl; shared by finetuning and pretraining so both resume the same way."""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from ..errors import GardenerError
from ..fileio import check_writable

log = logging.getLogger("gardener.train")
CHECKPOINT = re.compile(r"^step-(\d+)$")


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT.match(p.name))
             and (p / "state.json").is_file()]
    return sorted(found)


def check_out(out: Path, resume: bool, force: bool) -> int | None:
    """The step to resume from (None for a fresh run); refuses to clobber a previous run."""
    if resume:
        found = checkpoints(out)
        if not found:
            raise GardenerError(f"--resume: {out} holds no checkpoint to resume from")
        return found[-1][0]
    if out.exists() and not force:
        raise GardenerError(f"{out}: already exists; pass --resume to continue that run or --force to replace it")
    check_writable(out, force=True)  # missing parent folders are made when the run starts
    return None


def start_fresh(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True)


# What a run is, recorded when it starts: a resumed run must be the same run. Changing one of
# these fields only changes how the run is kept or watched, never its trajectory.
LOGISTICS = ("save_every", "keep_last", "eval_every", "compile")
# Changing these lengthens or shortens the run: allowed on resume, and recorded as a resume.
LENGTH = ("max_steps", "epochs")
START = "start.json"


def split_digest(split) -> dict:
    """What a data split is: where it came from, its size and a digest of its (path, label) list."""
    if split is None:
        return {}
    listing = json.dumps([[str(p), int(label)] for p, label in zip(split.paths, split.labels)])
    return {"source": split.source, "videos": len(split), "classes": list(split.classes),
            "sha256": hashlib.sha256(listing.encode()).hexdigest()}


def _flat(record: object, prefix: str = "") -> dict:
    """Nested dicts and lists as {"a.b.0.c": value}, so that a change is named where it is."""
    items = record.items() if isinstance(record, dict) else enumerate(record) if isinstance(record, list) else None
    if items is None or not record:
        return {prefix.rstrip("."): record}
    out = {}
    for key, value in items:
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def _changes(before: dict, now: dict) -> dict[str, list]:
    old, new = _flat(json.loads(json.dumps(before))), _flat(json.loads(json.dumps(now)))
    return {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _said(changed: dict[str, list], limit: int = 3) -> str:
    shown = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in list(changed.items())[:limit])
    return shown + (" ..." if len(changed) > limit else "")


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def record_start(out: Path, identity: dict) -> None:
    """Write OUT/start.json: what this run is (model, data, recipe, clips, seed, processes)."""
    tmp = out / f".{START}.tmp"
    tmp.write_text(json.dumps({"identity": identity, "resumes": []}, indent=2) + "\n")
    tmp.replace(out / START)


def check_resume(out: Path, identity: dict, step: int, total: int, main: bool = True) -> list[dict]:
    """Refuse to resume a run as another one; returns the run's resumes (this one recorded last).

    Any change of model, data, recipe, clips, seed or process count is an error naming what
    changed; a change of length (--max-steps/--epochs) that still reaches past the checkpoint's
    step, or of checkpointing/evaluation cadence, is allowed and recorded with the step it took
    effect at. Only the main process records (the others return nothing).
    """
    path = out / START
    if not path.is_file():
        log.warning("%s was started before gardener kept start.json: cannot check that the resumed run is the "
                    "same; recording what it is from now on", out)
        if main:
            record_start(out, identity)
        return []
    started = json.loads(path.read_text())
    changed = _changes(started["identity"], identity)
    refused = {k: v for k, v in changed.items() if k.rsplit(".", 1)[-1] not in LOGISTICS + LENGTH}
    if refused:
        what = sorted({".".join(k.split(".")[:2]) for k in refused})
        raise GardenerError(f"--resume: {out} was started as another run ({', '.join(what)} changed; "
                            f"{_said(refused)}). Resume with the options it was started with (see {path}), or "
                            f"start a new run in another folder")
    if total < step:
        raise GardenerError(f"--resume: {out} is at step {step}, but --max-steps/--epochs now give {total} steps; "
                            f"a run cannot be shortened below its checkpoint")
    if not main:
        return []
    resumes = started.get("resumes", []) + [{"step": step, "changed": changed}]
    started.update(identity=identity, resumes=resumes)
    tmp = path.with_name(f".{START}.tmp")
    tmp.write_text(json.dumps(started, indent=2) + "\n")
    tmp.replace(path)
    return resumes


def begin(out: Path, identity: dict, start: int | None, total: int, main: bool) -> list[dict]:
    """Start the run folder afresh (recording what the run is) or check a resumed run against it;
    returns the run's resumes."""
    if start is not None:
        return check_resume(out, identity, start, total, main)
    if main:
        start_fresh(out)
        record_start(out, identity)
    return []


def finished(out: Path, kind: str, options: dict) -> dict | None:
    """The manifest of a finished `kind` run in OUT (its gardener.json), or None while it is not.

    A finished run is never changed: resuming it with other options (`recipe`, `seed`) is an error
    naming them, and a gardener.json that another command wrote is not taken for a finished run.
    """
    path = out / "gardener.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GardenerError(f"{path}: not readable JSON ({exc.__class__.__name__}); cannot tell whether {out} "
                            f"finished") from None
    if not isinstance(info, dict) or info.get("kind") != kind or "steps" not in info:
        raise GardenerError(f"--resume: {out} is not a `gardener {kind}` run folder (its gardener.json was written "
                            f"by {info.get('kind') if isinstance(info, dict) else 'something else'!r})")
    changed = {k: v for k, v in _changes({k: info.get(k) for k in options}, options).items()
               if k.rsplit(".", 1)[-1] not in LOGISTICS}
    if changed:
        raise GardenerError(f"--resume: {out} finished ({info['steps']} steps) with other options ({_said(changed)}); "
                            f"it was left as it is: start a new run in another folder to train with these")
    return info


def collate(items: list[dict]) -> dict:
    """A batch of clips; items that hold several samples of one video (repeated augmentation)
    contribute each of them."""
    import torch

    if items[0]["pixel_values"].ndim == 5:  # (num_sample, T, C, H, W) per video
        return {"pixel_values": torch.cat([i["pixel_values"] for i in items]),
                "labels": torch.tensor([label for i in items for label in i["labels"]])}
    return {"pixel_values": torch.stack([i["pixel_values"] for i in items]),
            "labels": torch.tensor([i["labels"] for i in items])}


class Log:
    """log.jsonl: one line per optimizer step or evaluation; a resumed run drops what came after its step.
    Each record written is also passed to `mirror` (the run's experiment trackers), if any."""

    def __init__(self, path: Path, main: bool, resume_step: int | None,
                 mirror: Callable[[dict], None] | None = None):
        self.path, self.main, self.mirror = path, main, mirror
        if main and resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(f"{line}\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.main:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.mirror is not None:
                self.mirror(record)

    def records(self) -> list[dict]:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return [json.loads(line) for line in lines if line]

    def losses(self) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in self.records() if "loss" in r}


def save_checkpoint(accelerator, out: Path, step: int, best: dict | None, keep_last: int) -> None:
    """Accelerate's state (model, optimizer, RNG) and the step, in a folder renamed into place."""
    folder = out / "checkpoints"
    final = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.tmp"
    if accelerator.is_main_process:
        folder.mkdir(exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "state.json").write_text(json.dumps({"step": step, "best": best}) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for _, old in checkpoints(out)[:-max(1, keep_last)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def read_losses(out: str | Path) -> dict[int, float]:
    """Loss per optimizer step of a run, from its log.jsonl."""
    return Log(Path(out) / "log.jsonl", False, None).losses()
