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


# What a run writes before its first checkpoint: a folder holding nothing else never got going (it failed
# at start-up or was killed early) and is simply started again.
EARLY_FILES = {"start.json", ".start.json.tmp", "log.jsonl", "checkpoints", "best", "tensorboard", "wandb"}


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT.match(p.name))
             and (p / "state.json").is_file()]
    return sorted(found)


def never_started(out: Path) -> bool:
    """A run folder that a gardener run began (its start.json says what the run is) but that has no
    checkpoint, did not finish, and holds nothing but what a run writes before its first checkpoint."""
    if not (out.is_dir() and (out / START).is_file()) or (out / "gardener.json").exists() or checkpoints(out):
        return False
    if not all(p.name in EARLY_FILES for p in out.iterdir()):
        return False
    try:
        read_start(out / START)
    except GardenerError:
        return False
    return True


def check_out(out: Path, resume: bool, force: bool) -> int | None:
    """The step to resume from (None for a fresh run); refuses to clobber a previous run, and to resume
    from a checkpoint that is not whole. A run that never reached its first checkpoint starts again."""
    if never_started(out):
        log.warning("%s: the run begun there never reached a checkpoint; starting it again (replacing %s)", out,
                    ", ".join(sorted(p.name for p in out.iterdir())))
        return None
    if resume:
        found = checkpoints(out)
        if not found:
            raise GardenerError(f"--resume: {out} holds no checkpoint to resume from")
        step, folder = found[-1]
        why = damaged(folder)
        if why:
            earlier = f"delete it to resume from {found[-2][1].name}, or " if len(found) > 1 else ""
            raise GardenerError(f"--resume: checkpoint {folder} is damaged ({why}); {earlier}pass --force to start "
                                f"the run again")
        return step
    if out.exists() and not force:
        raise GardenerError(f"{out}: already exists; pass --resume to continue that run or --force to replace it")
    check_writable(out, force=True)  # missing parent folders are made when the run starts
    return None


def read_state(folder: Path) -> dict:
    """A checkpoint's state.json (its step, best metric and files), checked."""
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GardenerError(f"{folder / 'state.json'}: not readable ({exc.__class__.__name__})") from None
    match = CHECKPOINT.match(folder.name)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or (match and int(match.group(1))
                                                                                 != state["step"]):
        raise GardenerError(f"{folder / 'state.json'}: does not record this checkpoint's step")
    return state


def damaged(folder: Path) -> str | None:
    """What is wrong with a checkpoint, or None when it is whole: state.json readable, every file it
    lists present at its recorded size, and the random states loadable (Accelerate would skip them
    with a log line, and the resumed run would leave its trajectory)."""
    try:
        state = read_state(folder)
    except GardenerError:
        return "its state.json is unreadable or does not record its step"
    for name, size in (state.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    rng = sorted(folder.glob("random_states_*.pkl"))
    if not rng:
        return "it holds no random states (random_states_0.pkl)"
    for path in rng:
        why = _unreadable_rng(path)
        if why:
            return f"{path.name}: {why}"
    return None


def _unreadable_rng(path: Path) -> str | None:
    """Why Accelerate's random states could not be restored from this file, or None."""
    import torch
    from accelerate.utils.other import load  # Accelerate's own loader: weights_only, with its numpy allowances

    try:
        states = load(path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any refusal (an empty file, a pickle with code) means the same
        return f"cannot be loaded ({exc.__class__.__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})"
    wanted = ("random_state", "numpy_random_seed", "torch_manual_seed")
    if not isinstance(states, dict) or any(k not in states for k in wanted) \
            or not isinstance(states["torch_manual_seed"], torch.Tensor):
        return "does not hold the random states"
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


def changes_said(before: dict, now: dict) -> str | None:
    """What differs between two records, said in a few words ("recipe.base_lr: 0.1 -> 0.2"), or None."""
    changed = _changes(before, now)
    return _said(changed) if changed else None


def _said(changed: dict[str, list], limit: int = 3) -> str:
    shown = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in list(changed.items())[:limit])
    return shown + (" ..." if len(changed) > limit else "")


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_start(path: Path) -> dict:
    """start.json, checked: what a run recorded it is when it started."""
    try:
        started = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GardenerError(f"--resume: {path} is not readable ({exc.__class__.__name__}), so the resumed run "
                            f"cannot be checked against it; pass --force to start the run again") from None
    if not isinstance(started, dict) or not isinstance(started.get("identity"), dict):
        raise GardenerError(f"--resume: {path} does not record what the run is; pass --force to start it again")
    return started


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
    started = read_start(path)
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
    resumes = list(started.get("resumes") or []) + [{"step": step, "changed": changed}]
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
                 mirror: Callable[[dict], None] | None = None, guard: Callable[[], None] | None = None):
        self.path, self.main, self.mirror, self.guard = path, main, mirror, guard
        if main and resume_step is not None and path.exists():
            kept = [line for line in path.read_text(errors="replace").splitlines()
                    if (record := _record_of(line)) is not None and record["step"] <= resume_step]
            path.write_text("".join(f"{line}\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.guard is not None:  # a run that must stop writing (its job's claim is lost) stops here
            self.guard()
        if self.main:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.mirror is not None:
                self.mirror(record)

    def records(self) -> list[dict]:
        lines = self.path.read_text(errors="replace").splitlines() if self.path.exists() else []
        return [record for line in lines if (record := _record_of(line)) is not None]

    def losses(self) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in self.records() if "loss" in r}


def _record_of(line: str) -> dict | None:
    """One log.jsonl record, or None for a line a killed run left half-written."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


def save_checkpoint(accelerator, out: Path, step: int, best: dict | None, keep_last: int,
                    guard: Callable[[], None] | None = None) -> None:
    """Accelerate's state (model, optimizer, RNG) and the step, in a folder renamed into place. state.json,
    written last, lists every file with its size, so that a resume can tell a whole checkpoint from a
    damaged one. A save that fails (a full disk) leaves no temporary behind; `guard()`, called before the
    checkpoint replaces or removes anything, stops a run that must no longer write (by raising)."""
    from ..oserrors import writing

    folder = out / "checkpoints"
    final = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.tmp"
    if accelerator.is_main_process:
        folder.mkdir(exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        with writing(tmp):
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()  # every rank's random states are written before they are listed
            if accelerator.is_main_process:
                files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
                (tmp / "state.json").write_text(json.dumps({"step": step, "best": best, "files": files}) + "\n")
        if guard is not None:
            guard()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for _, old in checkpoints(out)[:-max(1, keep_last)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def read_losses(out: str | Path) -> dict[int, float]:
    """Loss per optimizer step of a run, from its log.jsonl."""
    return Log(Path(out) / "log.jsonl", False, None).losses()
