"""The causal-lm task's evaluation: perplexity and next-token accuracy of a causal language model on text as
users hold it, each with a 95 % bootstrap interval over sequences.

The text is read as `gardener.data.text` reads it (a `.txt`, a `.jsonl` of `{"text"}` or `{"input_ids"}`
lines), tokenised with the checkpoint's own tokenizer and packed into whole sequences of `seq_len` tokens
(transformers' run_clm packing: the documents' tokens joined, the remainder dropped); given ids are taken
as they are, padding never predicted nor predicted from. Perplexity is exp of the mean loss per predicted
token, the mean that the model's own `loss` takes over one sequence; lower is better.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..data.text import Sequence, read_sequences
from ..errors import GardenerError
from ..stats import ratio_interval


def sequences_for(model_dir: str | Path, data: str | Path, seq_len: int, config=None) -> list[Sequence]:
    """The packed evaluation sequences of `data` for this checkpoint (one-line errors name --data)."""
    if seq_len < 2:
        raise GardenerError(f"--seq-len {seq_len}: a sequence needs at least 2 tokens (one to predict from)")
    rows = read_sequences(Path(data), Path(model_dir), seq_len, getattr(config, "vocab_size", None), flag="--data",
                          pack=True)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    longest = max(len(r.ids) for r in rows)
    if isinstance(limit, int) and longest > limit:
        raise GardenerError(f"--data {data}: a sequence of {longest} tokens is longer than the model's {limit} "
                            f"positions; choose a shorter --seq-len")
    return rows


def evaluate_causal_lm(model_dir: str | Path, data: str | Path, *, seq_len: int = 128, batch_size: int = 8,
                       seed: int = 0) -> dict:
    """Perplexity and next-token accuracy over every sequence of `data`, with their bootstrap intervals."""
    from ..scoring.calibration_data import load_model

    model = load_model(Path(model_dir))
    return {**measure(model, sequences_for(model_dir, data, seq_len, model.config), batch_size, seed),
            "seq_len": seq_len}


def measure(model, rows: list[Sequence], batch_size: int = 8, seed: int = 0, dtype=None) -> dict:
    """The causal-lm metrics of `model` (in eval mode, under `dtype` autocast if given) on `rows`."""
    import torch

    loss, tokens, correct = np.zeros(len(rows)), np.zeros(len(rows)), np.zeros(len(rows))
    device = next(model.parameters()).device
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for index, batch in _batches(rows, batch_size):
            inputs = {k: v.to(device) for k, v in batch.items()}
            logits = model(**inputs, use_cache=False).logits.float()[:, :-1]
            target, mask = inputs["input_ids"][:, 1:], inputs["attention_mask"]
            predicted = (mask[:, 1:] * mask[:, :-1]).bool()  # no pad is predicted, nor predicted from
            lost = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            loss[index] = (lost * predicted).sum(1).double().cpu().numpy()
            tokens[index] = predicted.sum(1).cpu().numpy()
            correct[index] = ((logits.argmax(-1) == target) & predicted).sum(1).cpu().numpy()
    mean = float(loss.sum() / tokens.sum())
    low, high = ratio_interval(loss, tokens, seed=seed)
    return {"task": "causal-lm", "metric": "perplexity", "perplexity": math.exp(mean),
            "perplexity_interval": [math.exp(low), math.exp(high)], "loss": mean,
            "next_token_accuracy": float(correct.sum() / tokens.sum()),
            "next_token_accuracy_interval": ratio_interval(correct, tokens, seed=seed),
            "sequences": len(rows), "tokens_predicted": int(tokens.sum()),
            "per_sequence": {"loss_sum": loss.tolist(), "tokens": tokens.astype(int).tolist(),
                             "correct": correct.astype(int).tolist()}}


def mean_kl(student, teacher, rows: list[Sequence], batch_size: int = 8) -> float:
    """The student's mean KL divergence from the teacher's next-token distribution (T = 1), per predicted token."""
    import torch

    from ..train.distill import kl_divergence

    total, count = 0.0, 0
    device = next(student.parameters()).device
    teacher = teacher.to(device).eval()
    with torch.no_grad():
        for _, batch in _batches(rows, batch_size):
            inputs = {k: v.to(device) for k, v in batch.items()}
            mask = inputs["attention_mask"]
            predicted = (mask[:, 1:] * mask[:, :-1]).float()
            kl = kl_divergence(student(**inputs, use_cache=False).logits[:, :-1],
                               teacher(**inputs, use_cache=False).logits[:, :-1], 1.0, predicted)
            total, count = total + float(kl) * float(predicted.sum()), count + int(predicted.sum())
    return total / count


def _batches(rows: list[Sequence], size: int):
    """(row indices, inputs) in batches of equal length, so that no padding is added; left-padded given ids
    keep the positions their real tokens hold unpadded."""
    import torch

    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_length.setdefault(len(row.ids), []).append(i)
    for _, group in sorted(by_length.items()):
        for start in range(0, len(group), size):
            index = group[start:start + size]
            mask = torch.tensor([rows[i].mask for i in index])
            inputs = {"input_ids": torch.tensor([rows[i].ids for i in index]), "attention_mask": mask}
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            if bool(((positions != torch.arange(mask.shape[1])) & (mask == 1)).any()):
                inputs["position_ids"] = positions
            yield index, inputs


def evaluate_into(model_dir: str | Path, data: str | Path, out: str | Path | None, *, seq_len: int = 128,
                  batch_size: int = 8, seed: int = 0, force: bool = False, arguments: dict | None = None) -> dict:
    """`evaluate_causal_lm`, and with `out` a folder holding eval.json (the result and its manifest), checked
    before any work and written whole or not at all."""
    import json

    from ..checkpoint import open_checkpoint
    from ..fileio import atomic_dir, check_output
    from ..manifest import manifest

    model_dir, data = Path(model_dir), Path(data)
    if out is not None:
        check_output(Path(out), [("the model", model_dir), ("the data", data)], force)
    result = evaluate_causal_lm(model_dir, data, seq_len=seq_len, batch_size=batch_size, seed=seed)
    plain = {k: (str(v) if isinstance(v, Path) else v) for k, v in (arguments or {}).items()}
    result["manifest"] = {**manifest("evaluate", [*open_checkpoint(model_dir).files, data], plain),
                          "model": str(model_dir.resolve()), "data": str(data.resolve()), "seed": seed}
    if out is not None:
        with atomic_dir(Path(out), force) as tmp:
            (tmp / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
