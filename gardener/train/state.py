"""What a training run keeps on disk: its folder, checkpoints (Accelerate's state plus the step),
and log.jsonl; shared by finetuning and pretraining so both resume the same way."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ..errors import GardenerError

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
    if not out.parent.is_dir():
        raise GardenerError(f"{out}: parent folder {out.parent} does not exist")
    return None


def start_fresh(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir()


def collate(items: list[dict]) -> dict:
    import torch

    return {"pixel_values": torch.stack([i["pixel_values"] for i in items]),
            "labels": torch.tensor([i["labels"] for i in items])}


class Log:
    """log.jsonl: one line per optimizer step or evaluation; a resumed run drops what came after its step."""

    def __init__(self, path: Path, main: bool, resume_step: int | None):
        self.path, self.main = path, main
        if main and resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(f"{line}\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.main:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

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
