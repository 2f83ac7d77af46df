"""Healing by distillation from the unpruned model (`--distill-from TEACHER`), for every task.

The loss is Hinton et al.'s: the KL divergence from the teacher's temperature-softened distribution to the
student's, times T^2 (so that its gradients keep their size as T changes), over every prediction the task
makes (each clip, or each predicted token); `weight` of it mixed with (1 - weight) of the task's own loss.
Weight 1 (the default) heals with the KL alone, as Minitron and Shortened LLaMA's distillation do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import GardenerError
from ..settings import check_number


@dataclass(frozen=True)
class Distill:
    """Who teaches and how: the teacher's folder, the temperature, and the share of the loss that is the KL."""

    teacher: Path
    temperature: float = 2.0
    weight: float = 1.0

    def check(self) -> "Distill":
        check_number("--distill-temperature", self.temperature, 0, above=True)
        check_number("--distill-weight", self.weight, 0, 1)
        if not (Path(self.teacher) / "config.json").is_file():
            raise GardenerError(f"--distill-from {self.teacher}: not a transformers model folder (no config.json)")
        return self

    def identity(self, identity_of) -> dict:
        """What a run records of its teacher (start.json: a resumed run must keep it); `identity_of(folder)` is
        how the run names a model (its weights' hashes)."""
        return {"teacher": identity_of(Path(self.teacher)), "temperature": self.temperature, "weight": self.weight}

    def record(self) -> dict:
        """What the run's manifest says of its teacher."""
        return {"teacher": str(Path(self.teacher).resolve()), "temperature": self.temperature, "weight": self.weight}

    def loss(self, task_loss, student_logits, teacher_logits, mask=None) -> tuple:
        """(the mixed loss, the KL term) for logits (..., classes); `mask` (...) picks the predictions that count."""
        kl = kl_divergence(student_logits, teacher_logits, self.temperature, mask)
        return self.weight * kl + (1 - self.weight) * task_loss, kl.detach()


def kl_divergence(student_logits, teacher_logits, temperature: float = 1.0, mask=None):
    """Mean over predictions of KL(softmax(teacher / T) || softmax(student / T)) x T^2."""
    import torch

    log_student = torch.log_softmax(student_logits.float() / temperature, -1)
    log_teacher = torch.log_softmax(teacher_logits.float() / temperature, -1)
    per = (log_teacher.exp() * (log_teacher - log_student)).sum(-1) * temperature ** 2
    if mask is None:
        return per.mean()
    return (per * mask).sum() / mask.sum().clamp(min=1)


class Teacher:
    """The teacher model, moved to the student's device on first use and run without gradients."""

    def __init__(self, model):
        self.model, self.device = model.eval(), None

    def logits(self, device, **inputs):
        import torch

        if self.device != device:
            self.model, self.device = self.model.to(device), device
        with torch.no_grad():
            return self.model(**inputs).logits.float()
