"""Healing a causal language model by finetuning it on text: the causal-lm task's training run.

The same run skeleton as video finetuning (`run.train_run`: checkpoints, exact `--resume`, the lock, the log),
with text as users hold it (`gardener.data.text`, packed into whole sequences of `seq_len` tokens), the model's
own next-token loss (padding never predicted nor predicted from), and at the end the perplexity of held-out
text with its interval over sequences. The healed model is saved with its tokenizer, so stock `from_pretrained`
loads both.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..data.text import TOKENIZER_FILES, Sequence
from ..errors import GardenerError
from ..fileio import atomic_dir, write_text
from .distill import Distill, Teacher
from .lora import Lora
from .loop import Run
from .recipe import RecipeBase
from .run import RunOptions, TrainingJob, conclude, run_facts, run_manifest, train_run


@dataclass
class LMRecipe(RecipeBase):
    """Finetuning settings for a causal LM (learning rates per 256 sequences, scaled by the total batch)."""

    batch_size: int = 8  # sequences per process per micro-batch
    grad_accum: int = 1
    epochs: float | None = None
    max_steps: int | None = None
    base_lr: float = 3e-4
    min_lr: float = 1e-5
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    layer_decay: float = 1.0  # the same lr for every block
    clip_grad: float | None = 1.0
    bf16: bool = True  # on GPU only
    compile: bool = False
    save_every: int = 500
    keep_last: int = 2


@dataclass(frozen=True)
class TextSpec:
    """What one training item is: a sequence of `seq_len` tokens."""

    seq_len: int


class TextSequences:
    """Training items: sequence `key % len` of an epoch (the sampler's keys count epochs on)."""

    def __init__(self, rows: list[Sequence]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int) -> dict:
        row = self.rows[key % len(self.rows)]
        return {"input_ids": row.ids, "attention_mask": row.mask}


def collate_text(items: list[dict]) -> dict:
    """Sequences padded on the right to the longest (mask 0), with the positions their real tokens hold."""
    import torch

    longest = max(len(i["input_ids"]) for i in items)
    ids = torch.tensor([list(i["input_ids"]) + [0] * (longest - len(i["input_ids"])) for i in items])
    mask = torch.tensor([list(i["attention_mask"]) + [0] * (longest - len(i["attention_mask"])) for i in items])
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


@dataclass
class LMFinetuneJob(TrainingJob):
    """Finetuning a causal LM on `data` (packed text), evaluated on `eval_data` (or a held-out share of it)."""

    kind: ClassVar[str] = "finetune"
    collate_fn: ClassVar = staticmethod(collate_text)
    model_dir: Path
    data: Path
    eval_data: Path | None
    recipe: LMRecipe
    seed: int
    seq_len: int = 128
    val_fraction: float = 0.2
    arguments: dict | None = None
    distill: Distill | None = None  # heal by distillation from this teacher (train/distill.py)
    lora: Lora | None = None  # train LoRA adapters only, merged back at the end (train/lora.py)
    split_seed: int | None = None  # the held-out share's seed (None: `seed`); an experiment's jobs share one

    def load(self) -> TextSequences:
        from ..tasks import infer

        infer(self.model_dir, "causal-lm")
        if self.lora is not None:
            self.lora.check()
        config = _config(self.model_dir)
        if self.distill is not None:
            self.distill.check()
            infer(self.distill.teacher, "causal-lm")
            if _config(self.distill.teacher).vocab_size != config.vocab_size:
                raise GardenerError(f"--distill-from {self.distill.teacher}: its vocabulary "
                                    f"({_config(self.distill.teacher).vocab_size}) is not the student's "
                                    f"({config.vocab_size}); the teacher must read the same tokens")
        self.train, self.test = text_splits(self.model_dir, self.data, self.eval_data, self.seq_len, self.val_fraction,
                                            self.seed if self.split_seed is None else self.split_seed, config)
        self.spec = TextSpec(self.seq_len)
        return TextSequences(self.train)

    def inputs(self) -> list[tuple[str, Path | None]]:
        return [("the model", self.model_dir), ("the data", self.data), ("the test data", self.eval_data),
                ("the teacher", self.distill.teacher if self.distill else None)]

    def identity(self) -> dict:
        from .finetune import model_identity

        return {"model": model_identity(self.model_dir),
                "data": {"train": _digest(self.train), "test": _digest(self.test)},
                **self.healing_identity(model_identity)}

    def build_model(self):
        from ..scoring.calibration_data import load_model

        from .lora import trainable, with_adapters

        if self.distill is not None:
            self.teacher = Teacher(load_model(Path(self.distill.teacher)))
        model = load_model(self.model_dir)
        if self.lora is not None:
            model = with_adapters(model, self.lora)
        self.parameters = trainable(model)
        return model.train()

    def loss(self, run: Run, batch: dict, step: int, micro: int) -> tuple:
        """The mean next-token loss over the batch's predicted tokens (no pad predicted nor predicted from), or
        its mix with the KL to the teacher's predictions of the same tokens."""
        inputs = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
        mask = inputs["attention_mask"]
        labels = inputs["input_ids"].masked_fill(mask == 0, -100)
        labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1] == 0, -100)
        output = run.model(**inputs, labels=labels, use_cache=False)
        if self.distill is None:
            return output.loss, len(labels)
        teacher = self.teacher.logits(run.device, **inputs, use_cache=False)
        predicted = (labels[:, 1:] != -100).float()
        loss, kl = self.distill.loss(output.loss, output.logits[:, :-1], teacher[:, :-1], predicted)
        return loss, len(labels), {"kl": kl}

    def exports(self, run: Run, best: dict | None) -> dict:
        """The perplexity of the held-out text, OUT/model (with the tokenizer), eval.json, gardener.json."""
        from ..tasks.causal_lm import mean_kl, measure
        from .lora import merged, unused_adapters

        if self.lora is not None:
            self.parameters["unused_adapters"] = unused_adapters(run.accelerator.unwrap_model(run.model))
        model = merged(run.accelerator.unwrap_model(run.model)).eval()  # LoRA's adapters added into the weights
        result = {**measure(model, self.test, self.recipe.batch_size, self.seed, run.autocast),
                  "seq_len": self.seq_len}
        if self.distill is not None:
            result["kl_to_teacher"] = mean_kl(model, self.teacher.model, self.test, self.recipe.batch_size)
        _save(run, model, self.model_dir)
        info = run_manifest("finetune", _files(self.model_dir), self.arguments)
        info.update({"task": "causal-lm", "model": str(self.model_dir.resolve()), "recipe": self.recipe.to_dict(),
                     "text": asdict(self.spec), **run_facts(run, self.seed),
                     "data": {"train": str(self.data), "test": str(self.eval_data or self.data),
                              "train_sequences": len(self.train), "test_sequences": len(self.test),
                              "held_out": self.eval_data is None},
                     "total_batch": self.recipe.total_batch(run.world), "peak_lr": run.schedule.peak,
                     "final": {k: v for k, v in result.items() if k != "per_sequence"}, "resumes": run.resumes,
                     **self.healing_record(),
                     "parameters": self.parameters})
        return conclude(run, info, lambda: write_text(run.out / "eval.json", json.dumps(result, indent=2) + "\n",
                                                      force=True))


def _config(model_dir: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir, local_files_only=True)


def text_splits(model_dir: Path, data: Path, eval_data: Path | None, seq_len: int, val_fraction: float, seed: int,
                config=None) -> tuple[list[Sequence], list[Sequence]]:
    """The training and test sequences: `data` and `eval_data`, or a seeded held-out share of `data`."""
    from ..tasks.causal_lm import sequences_for

    rows = sequences_for(model_dir, data, seq_len, config)
    if eval_data is not None:
        return rows, sequences_for(model_dir, eval_data, seq_len, config)
    return _held_out(rows, val_fraction, seed, data)


def held_out_perplexity(model_dir: Path, data, seq_len: int, seed: int) -> dict:
    """A model's causal-lm metrics on the test sequences a finetuning with `data` (DataOptions) and split seed
    `seed` would hold out: the measure of a model that is not trained (`sensitivity --heal-steps 0`)."""
    from ..scoring.calibration_data import load_model
    from ..tasks.causal_lm import measure

    model = load_model(Path(model_dir)).eval()
    _, test = text_splits(Path(model_dir), Path(data.data), data.eval_data, seq_len, data.val_fraction, seed,
                          model.config)
    return measure(model, test, seed=seed)


def _held_out(rows: list[Sequence], fraction: float, seed: int, data: Path) -> tuple[list, list]:
    """A seeded share of the sequences for testing (at least one), the rest for training (at least one)."""
    if not 0 < fraction < 1:
        raise GardenerError(f"--val-fraction {fraction}: expected a share between 0 and 1")
    order = np.random.default_rng([seed, 13]).permutation(len(rows))
    held = max(1, round(fraction * len(rows)))
    if len(rows) - held < 1:
        raise GardenerError(f"--data {data}: {len(rows)} sequence(s), too few to hold {held} out for testing and "
                            f"train on the rest; give more text, a shorter --seq-len or --eval-data")
    test = set(order[:held].tolist())
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]


def _digest(rows: list[Sequence]) -> dict:
    import hashlib

    digest = hashlib.sha256(json.dumps([[r.ids, r.mask] for r in rows]).encode()).hexdigest()
    return {"sequences": len(rows), "sha256": digest}


def _files(model_dir: Path) -> list[Path]:
    from ..checkpoint import open_checkpoint

    return open_checkpoint(model_dir).files


def _save(run: Run, model, model_dir: Path) -> None:
    """OUT/model: save_pretrained, and the tokenizer files beside the input's config.json, written whole."""
    run.accelerator.wait_for_everyone()
    if run.main:
        with atomic_dir(run.out / "model", force=True) as tmp:
            model.save_pretrained(tmp)
            for name in (*TOKENIZER_FILES, "special_tokens_map.json", "added_tokens.json", "merges.txt"):
                if (model_dir / name).is_file():
                    shutil.copy2(model_dir / name, tmp / name)
    run.accelerator.wait_for_everyone()


def finetune_lm(model_dir: str | Path, out: str | Path, data: str | Path, recipe: LMRecipe | None = None, *,
                eval_data: str | Path | None = None, seq_len: int = 128, val_fraction: float = 0.2, seed: int = 0,
                resume: bool = False, force: bool = False, callbacks: list | None = None, progress=None,
                arguments: dict | None = None, report_to: str = "none", lock: bool = True, guard=None,
                distill: Distill | None = None, lora: Lora | None = None, split_seed: int | None = None) -> dict:
    """Finetune (heal) a causal LM on `data`, evaluate its perplexity on `eval_data` (or on a held-out share of
    `data`), save it with its tokenizer; returns the run's manifest. With `distill`, the loss is (or mixes in)
    the KL to the teacher's predictions, and eval.json adds the student's mean KL to the teacher."""
    job = LMFinetuneJob(Path(model_dir), Path(data), Path(eval_data) if eval_data else None, recipe or LMRecipe(),
                        seed, seq_len, val_fraction, arguments, distill, lora, split_seed)
    return train_run(job, Path(out), RunOptions(resume, force, 0, callbacks or [], progress, report_to=report_to,
                                                lock=lock, guard=guard))
