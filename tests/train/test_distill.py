"""Healing video by distillation from the unpruned classifier: the same steps bring the pruned student closer to
its teacher's predictions than plain finetuning does; the teacher is recorded and a resume must keep it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_videomae

from gardener.errors import GardenerError
from gardener.pruning import Cut, prune_checkpoint
from gardener.train import DataOptions, Recipe, evaluate_model, finetune
from gardener.train.distill import Distill

CLIPS = dict(sampling_rate=2, test_clips=2, test_crops=1, min_crop_scale=0.3)


def _recipe(**overrides) -> Recipe:
    base = dict(batch_size=8, max_steps=40, warmup_steps=3, base_lr=2e-3 * 256 / 8, drop_path=0.0,
                classifier_dropout=0.0, layer_decay=1.0, save_every=1000)
    return Recipe(**{**base, **overrides})


def kl_to(teacher: dict, student: dict) -> float:
    """Mean over test videos of KL(teacher's predicted distribution || student's)."""
    p, q = np.clip(teacher["probs"], 1e-9, 1), np.clip(student["probs"], 1e-9, 1)
    return float(np.mean(np.sum(p * np.log(p / q), axis=1)))


def test_distillation_brings_a_pruned_student_closer_to_its_teacher_than_plain_finetuning(tmp_path, video_root):
    data = DataOptions(video_root, val_fraction=0.3, workers=0)
    finetune(tiny_videomae(tmp_path / "init", depth=4), tmp_path / "teacher", data, _recipe(), seed=0, **CLIPS)
    teacher = tmp_path / "teacher" / "model"
    prune_checkpoint(teacher, tmp_path / "student", Cut(blocks=[2, 3]))
    heal = _recipe(max_steps=10, warmup_steps=0, base_lr=5e-4 * 256 / 8)
    plain = finetune(tmp_path / "student", tmp_path / "plain", data, heal, seed=1, keep_head=True, **CLIPS)
    taught = finetune(tmp_path / "student", tmp_path / "taught", data, heal, seed=1, keep_head=True,
                      distill=Distill(teacher, temperature=2.0), **CLIPS)
    reference = evaluate_model(teacher, data, **{k: v for k, v in CLIPS.items() if k != "min_crop_scale"})
    kl = {name: kl_to(reference, evaluate_model(tmp_path / name / "model", data,
                                                **{k: v for k, v in CLIPS.items() if k != "min_crop_scale"}))
          for name in ("plain", "taught")}
    assert kl["taught"] < kl["plain"], kl
    assert taught["distill"]["teacher"] == str(teacher.resolve()) and plain["distill"] is None
    logged = [json.loads(line) for line in (tmp_path / "taught" / "log.jsonl").read_text().splitlines()]
    assert all(line["kl"] >= 0 for line in logged if "loss" in line)


def test_a_resume_keeps_its_teacher_and_bad_distillation_settings_are_refused(tmp_path, video_root, tiny_model_dir):
    data = DataOptions(video_root, workers=0)
    recipe = _recipe(max_steps=4, save_every=2)
    teachers = []
    for seed in (0, 1):  # two classifiers of the data's classes
        finetune(tiny_model_dir, tmp_path / f"t{seed}", data, _recipe(max_steps=2), seed=seed, **CLIPS)
        teachers.append(tmp_path / f"t{seed}" / "model")

    def crash(step, loss):
        if step == 3:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError, match="killed"):
        finetune(tiny_model_dir, tmp_path / "run", data, recipe, seed=0, callbacks=[crash],
                 distill=Distill(teachers[0]), **CLIPS)
    with pytest.raises(GardenerError, match=r"--resume: .* was started as another run \(.*distill"):
        finetune(tiny_model_dir, tmp_path / "run", data, recipe, seed=0, resume=True, distill=Distill(teachers[1]),
                 **CLIPS)
    info = finetune(tiny_model_dir, tmp_path / "run", data, recipe, seed=0, resume=True, distill=Distill(teachers[0]),
                    **CLIPS)
    assert info["steps"] == 4 and info["resumes"][0]["step"] == 2
    for bad, message in ((Distill(teachers[0], temperature=0), "--distill-temperature"),
                         (Distill(teachers[0], weight=1.5), "--distill-weight"),
                         (Distill(tmp_path / "nowhere"), "--distill-from .*: not a transformers model folder"),
                         (Distill(tiny_model_dir), "its head classifies 2 classes .* give a classifier finetuned")):
        with pytest.raises(GardenerError, match=message):
            finetune(tiny_model_dir, tmp_path / "bad", data, recipe, seed=0, distill=bad, **CLIPS)
    assert not (tmp_path / "bad").exists()
    before = (teachers[0] / "model.safetensors").read_bytes()
    with pytest.raises(GardenerError, match="the teacher"):  # an output over the teacher, even with --force
        finetune(tiny_model_dir, teachers[0], data, recipe, seed=0, force=True, distill=Distill(teachers[0]), **CLIPS)
    assert (teachers[0] / "model.safetensors").read_bytes() == before
