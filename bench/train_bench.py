"""Benchmark: finetuning and evaluation throughput (clips/s), model alone and with real decoding.

For a tiny VideoMAE (the demo's: 12 blocks, hidden 64, 8 frames of 64 px) and VideoMAE-B
(16 frames of 224 px), in one run:
  (a) model only: training steps (forward, backward, AdamW) on random uint8 clips already in memory;
  (b) data only: clips/s the DataLoader (PyAV decoding, random-resized crop, flip) delivers at
      --workers N from generated .mp4 files, with no model;
  (c) both: training steps fed by that DataLoader, as `gardener finetune` runs;
  (d) evaluation (5 clips x 3 crops per video, inference mode), model only.
On a GPU, VideoMAE-B runs with bf16 autocast and the model FLOPs utilisation is reported
against --peak-tflops (bf16 dense peak of the GPU; 989 for an H100 SXM). "bound by" says which
side limits training: the data pipeline (it delivers fewer clips/s than the model takes) or the
model. For the data pipeline in steady state from UCF101-like files, see bench/data_bench.py.

    python bench/train_bench.py [--workdir bench/_work] [--workers 2] [--skip-base] [--peak-tflops 989]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch
from _common import print_table
from transformers import VideoMAEConfig, VideoMAEForVideoClassification
from transformers.utils import logging as hf_logging

from gardener.cost import InputSpec, gflops
from gardener.data import ClipSpec, EpochSampler, TrainClips, probe_all, read_split
from gardener.data.synthetic import write_dataset
from gardener.fixed_tables import fast_tables
from gardener.train.evaluate import to_model_input

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def tiny_videomae_config(depth: int = 12, hidden: int = 64):
    """A small VideoMAE: 12 blocks so the paper's pruning ratios map one block to one ratio."""
    return VideoMAEConfig(image_size=64, patch_size=16, num_frames=8, tubelet_size=2, hidden_size=hidden,
                          num_hidden_layers=depth, num_attention_heads=4, intermediate_size=4 * hidden,
                          num_labels=5)


def configs() -> dict:
    tiny = tiny_videomae_config()
    return {"tiny": (tiny, dict(batch=8, steps=20, clips=20)),
            "videomae-b": (VideoMAEConfig(num_labels=101), dict(batch=1, steps=3, clips=2))}


def model_for(config, device):
    with fast_tables():
        model = VideoMAEForVideoClassification._from_config(config, attn_implementation="sdpa")
    return model.to(device).train()


def train_steps(model, batches, device, amp: bool) -> tuple[float, int]:
    """Seconds and clips of AdamW steps over an iterable of (uint8 clips, labels)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clips, start = 0, None
    for k, (pixels, labels) in enumerate(batches):
        if k == 1:  # the first step warms up kernels and the allocator
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(pixel_values=to_model_input(pixels.to(device), MEAN, STD)).logits.float()
        loss = torch.nn.functional.cross_entropy(logits, labels.to(device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clips += len(labels) if k >= 1 else 0
    _sync(device)
    return time.perf_counter() - start, clips


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_batches(config, batch: int, steps: int):
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch, config.num_frames, 3, config.image_size, config.image_size),
                           dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, config.num_labels, (batch,), generator=gen)
    return [(pixels, labels)] * (steps + 1)


def loader_batches(data_root: Path, config, batch: int, steps: int, workers: int):
    from torch.utils.data import DataLoader

    split, infos = probe_all(read_split(data_root, "train", val_fraction=0.1))
    spec = ClipSpec(frames=config.num_frames, sampling_rate=2, size=config.image_size)
    loader = DataLoader(TrainClips(split, infos, spec), batch_sampler=EpochSampler(len(split), batch, 0),
                        num_workers=workers, collate_fn=lambda items: (
                            torch.stack([i["pixel_values"] for i in items]),
                            torch.tensor([i["labels"] for i in items])), prefetch_factor=4 if workers else None)
    iterator = iter(loader)
    for _ in range(steps + 1):
        yield next(iterator)


def data_only(data_root: Path, config, batch: int, steps: int, workers: int) -> float:
    clips, start = 0, None
    for k, (pixels, _) in enumerate(loader_batches(data_root, config, batch, steps, workers)):
        if k == 1:
            start = time.perf_counter()
        clips += len(pixels) if k >= 1 else 0
    return clips / (time.perf_counter() - start)


def eval_rate(model, config, device, clips: int, amp: bool) -> float:
    views = torch.randint(0, 256, (15, config.num_frames, 3, config.image_size, config.image_size), dtype=torch.uint8)
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        model(pixel_values=to_model_input(views[:1].to(device), MEAN, STD))
        _sync(device)
        start = time.perf_counter()
        for _ in range(clips):
            model(pixel_values=to_model_input(views.to(device), MEAN, STD))
        _sync(device)
    model.train()
    return clips * 15 / (time.perf_counter() - start)


def bench(name: str, config, sizes: dict, workdir: Path, workers: int, device, peak_tflops: float | None) -> dict:
    amp = device.type == "cuda"
    data_root = workdir / f"videos_{config.image_size}"
    if not data_root.exists():
        write_dataset(data_root, per_class=10, frames=4 * config.num_frames, size=max(64, config.image_size),
                      seed=0)
    model = model_for(config, device)
    seconds, clips = train_steps(model, random_batches(config, sizes["batch"], sizes["steps"]), device, amp)
    model_only = clips / seconds
    decode = data_only(data_root, config, sizes["batch"], sizes["steps"], workers)
    seconds, clips = train_steps(model, loader_batches(data_root, config, sizes["batch"], sizes["steps"], workers),
                                 device, amp)
    row = {"model": name, "device": str(device), "batch": sizes["batch"], "frames": config.num_frames,
           "size": config.image_size, "train_model_only": model_only, "data_only": decode,
           "train_with_data": clips / seconds, "eval_model_only": eval_rate(model, config, device, sizes["clips"], amp),
           "workers": workers, "bf16": amp}
    if peak_tflops:
        flops = 3 * 2 * gflops(config.to_dict(), InputSpec(config.num_frames, config.image_size)) * 1e9  # fwd+bwd
        row["mfu"] = model_only * flops / (peak_tflops * 1e12)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-base", action="store_true", help="only the tiny model")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU bf16 peak, for the MFU column")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    args.workdir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [bench(name, config, sizes, args.workdir, args.workers, device, args.peak_tflops)
            for name, (config, sizes) in configs().items() if not (args.skip_base and name != "tiny")]
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "no GPU"
    print(f"# train_bench {date.today()} on {platform.machine()}, {gpu}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, --workers {args.workers}")
    print_table(["model", "input", "batch", "train, model only (clips/s)", "data only (clips/s)",
                 "train with data (clips/s)", "data / model", "bound by", "eval, model only (views/s)", "MFU"],
                [[r["model"], f"{r['frames']}x{r['size']}x{r['size']}", str(r["batch"]), f"{r['train_model_only']:.2f}",
                  f"{r['data_only']:.1f}", f"{r['train_with_data']:.2f}",
                  f"{r['data_only'] / r['train_model_only']:.1f}",
                  "data" if r["data_only"] < r["train_model_only"] else "model",
                  f"{r['eval_model_only']:.2f}",
                  f"{r['mfu']:.1%}" if "mfu" in r else "-"] for r in rows])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
