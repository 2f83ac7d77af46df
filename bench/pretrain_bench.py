"""Benchmark: does the masked pretraining help? Finetune the pretrained tiny encoder and the same
architecture from random initialisation with the same budget, on the synthetic action task.

    python bench/pretrain_bench.py [--workdir bench/_work] [--pretrain-steps 500] [--finetune-steps 60]
                                   [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from _common import print_table
from transformers import VideoMAEConfig, VideoMAEModel
from transformers.utils import logging as hf_logging

from gardener.data.synthetic import make_dataset
from gardener.train import DataOptions, Recipe, finetune
from gardener.train.pretrain import PretrainRecipe, pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work" / "pretrain_bench")
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    work = args.workdir
    if not (work / "data" / "splits").is_dir():
        make_dataset(work / "data", seed=0)
    options = DataOptions(work / "data" / "videos", split_dir=work / "data" / "splits", workers=0)
    start = time.perf_counter()
    pretrain(options, work / "pre", recipe=PretrainRecipe(batch_size=8, max_steps=args.pretrain_steps,
                                                          warmup_steps=args.pretrain_steps // 10,
                                                          base_lr=1.5e-3 * 256 / 8, save_every=10**6),
             sampling_rate=1, force=True)
    pretrain_s = time.perf_counter() - start
    encoder = work / "pre" / "encoder"
    random_dir = work / "random"
    shutil.rmtree(random_dir, ignore_errors=True)
    torch.manual_seed(0)
    VideoMAEModel(VideoMAEConfig.from_pretrained(encoder)).save_pretrained(random_dir)
    shutil.copy(encoder / "preprocessor_config.json", random_dir)
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[float]] = {"pretrained": [], "random init": []}
    for name, model in (("pretrained", encoder), ("random init", random_dir)):
        for seed in seeds:
            recipe = Recipe(batch_size=8, max_steps=args.finetune_steps, warmup_steps=3, base_lr=1e-3 * 256 / 8,
                            layer_decay=0.75, drop_path=0.1, classifier_dropout=0.0, save_every=10**6)
            info = finetune(model, work / "ft", options, recipe, sampling_rate=1, test_clips=1, test_crops=1,
                            min_crop_scale=0.5, seed=seed, force=True)
            results[name].append(info["final"]["top1"])
    print(f"# pretrain_bench {date.today()} on {platform.machine()}, torch {torch.__version__}, "
          f"pretraining {args.pretrain_steps} steps ({pretrain_s:.0f} s), finetuning {args.finetune_steps} steps, "
          f"seeds {seeds}, {info['data']['test_videos']} test videos, {len(info['data']['classes'])} classes")
    print_table(["encoder", "top-1 per seed (%)", "mean (%)"],
                [[name, ", ".join(f"{100 * v:.1f}" for v in values), f"{100 * np.mean(values):.1f}"]
                 for name, values in results.items()])
    if args.json:
        args.json.write_text(json.dumps({"results": results, "pretrain_s": pretrain_s}, indent=2))


if __name__ == "__main__":
    main()
