"""Benchmark: finetuning throughput per task (samples/s), end to end through each task's `gardener finetune` path.

One transformer size for every task (ViT-Tiny's: 12 blocks, hidden 192, 3 heads, MLP 768), randomly initialised,
finetuned for --steps optimizer steps of --batch samples on data written on the spot:
  video: VideoMAE, 16 frames of 112 px (tubelet 2, patch 16: 392 tokens), synthetic .mp4 files decoded by PyAV
         in --workers DataLoader processes;
  image: ViT, 224 px (patch 16: 196 tokens), synthetic PNG textures decoded by PIL;
  text:  LLaMA-style decoder, sequences of 256 tokens of the synthetic formal language.
Each step's samples/s comes from the run's log.jsonl; the table gives the median over the steps after the first
two (warm-up), so it includes data loading as a user's run does. Weights are random: the rates, not the
accuracies, are the point.

    python bench/task_bench.py [--workdir bench/_work/tasks] [--steps 12] [--batch 8] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from datetime import date
from pathlib import Path

import torch
import transformers as T
from _common import print_table

from gardener.data.synthetic import make_dataset
from gardener.data.synthetic_images import write_images
from gardener.data.synthetic_text import VOCABULARY, write_text_corpus
from gardener.train import DataOptions, Recipe, finetune
from gardener.train.image import ImageRecipe, finetune_images
from gardener.train.lm import LMRecipe, finetune_lm

TINY = dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768)


def rates(run: Path) -> float:
    """Median samples/s of the logged steps after the first two."""
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return statistics.median(s["clips_per_s"] for s in steps if "clips_per_s" in s and s["step"] > 2)


def video(work: Path, steps: int, batch: int, workers: int) -> tuple[str, float]:
    data = make_dataset(work / "videos", classes=("move_up", "move_down", "grow", "shrink"), per_class=batch,
                        frames=16, size=112, seed=0)
    model = work / "videomae"
    T.VideoMAEForVideoClassification(T.VideoMAEConfig(image_size=112, patch_size=16, num_frames=16, tubelet_size=2,
                                                      num_labels=4, **TINY)).save_pretrained(model)
    recipe = Recipe(batch_size=batch, max_steps=steps, warmup_steps=1, save_every=10_000, bf16=False)
    finetune(model, work / "video-run", DataOptions(Path(data["videos"]), split_dir=Path(data["splits"]),
                                                    workers=workers), recipe, sampling_rate=1, test_clips=1,
             test_crops=1)
    return "VideoMAE, 16x112x112 (392 tokens)", rates(work / "video-run")


def image(work: Path, steps: int, batch: int, workers: int) -> tuple[str, float]:
    write_images(work / "images", classes=("horizontal", "vertical", "dots", "rings"), per_class=batch,
                 test_per_class=2, size=256, seed=0)
    model = work / "vit"
    T.ViTModel(T.ViTConfig(image_size=224, patch_size=16, **TINY)).save_pretrained(model)
    recipe = ImageRecipe(batch_size=batch, max_steps=steps, warmup_steps=1, save_every=10_000, bf16=False)
    finetune_images(model, work / "image-run", work / "images", recipe, workers=workers)
    return "ViT, 224x224 (196 tokens)", rates(work / "image-run")


def text(work: Path, steps: int, batch: int, workers: int) -> tuple[str, float]:
    write_text_corpus(work / "text", documents=400, test_documents=20, seed=0)
    model = work / "llama"
    T.LlamaForCausalLM(T.LlamaConfig(vocab_size=len(VOCABULARY), num_key_value_heads=3, max_position_embeddings=512,
                                     **TINY)).save_pretrained(model)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(work / "text" / "tokenizer" / name, model / name)
    recipe = LMRecipe(batch_size=batch, max_steps=steps, warmup_steps=1, save_every=10_000, bf16=False)
    finetune_lm(model, work / "text-run", work / "text" / "train.jsonl", recipe,
                eval_data=work / "text" / "test.jsonl", seq_len=256)
    return "LLaMA-style, 256 tokens", rates(work / "text-run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work" / "tasks")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{date.today()} · {platform.processor() or platform.machine()} · {device} · torch {torch.__version__} · "
          f"transformers {T.__version__} · {args.steps} steps of {args.batch} · workers {args.workers}")
    rows = []
    for name, run in (("video-classification", video), ("image-classification", image), ("causal-lm", text)):
        start = time.perf_counter()
        what, rate = run(args.workdir, args.steps, args.batch, args.workers)
        rows.append([name, what, str(args.batch), f"{rate:.2f}", f"{time.perf_counter() - start:.0f}"])
    print_table(["task", "model (12 blocks, hidden 192) and input", "batch", "finetuning samples/s (median)",
                 "wall s (data, model, run)"], rows)


if __name__ == "__main__":
    main()
