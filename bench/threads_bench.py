"""Benchmark: N gardener processes side by side, each with every core's worth of threads or with the cores shared.

What `--launcher local --local-workers N` (and any N jobs on one machine) does: N processes run at once. Each
process here is `gardener --threads T finetune` of a small LLaMA (8 blocks, hidden 128) on the synthetic formal
language for --steps steps, written on the spot. T is every usable core (what torch takes when nothing limits it,
and what gardener gave each process before issue 31) or the usable cores divided by N (what gardener gives each
local worker now). The table gives the wall time until all N are done, best of --repeat, and the ratio.

    python bench/threads_bench.py [--workdir bench/_work/threads] [--processes 1,2,4] [--steps 40] [--repeat 2]
"""
from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch
import transformers as T
from _common import print_table

from gardener.data.synthetic_text import VOCABULARY, write_text_corpus
from gardener.threads import usable_cores


def _model(workdir: Path) -> tuple[Path, Path]:
    """A random LLaMA over the formal language's words, with its tokenizer, and the language's text."""
    corpus, model = workdir / "text", workdir / "llama"
    if not (model / "config.json").is_file():
        shutil.rmtree(workdir, ignore_errors=True)
        write_text_corpus(corpus, documents=200, test_documents=20, seed=0, force=True)
        torch.manual_seed(0)
        config = T.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=8, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=len(VOCABULARY), max_position_embeddings=256)
        T.LlamaForCausalLM(config).save_pretrained(model)
        for name in (corpus / "tokenizer").iterdir():
            shutil.copy2(name, model / name.name)
    return model, corpus


def _together(model: Path, corpus: Path, workdir: Path, processes: int, threads: int, steps: int) -> float:
    """Seconds until `processes` finetuning runs started at once with `threads` threads each are all done."""
    runs = []
    start = time.perf_counter()
    for k in range(processes):
        out = workdir / f"run-{processes}-{threads}-{k}"
        shutil.rmtree(out, ignore_errors=True)
        runs.append(subprocess.Popen(
            [sys.executable, "-m", "gardener", "--threads", str(threads), "finetune", str(model), "--data",
             str(corpus / "train.jsonl"), "--eval-data", str(corpus / "test.jsonl"), "--max-steps", str(steps),
             "--batch-size", "16", "--seq-len", "64", "--seed", str(k), "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    codes = [p.wait() for p in runs]
    if any(codes):
        raise SystemExit(f"a finetuning run failed (exit codes {codes})")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench/_work/threads"))
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    cores = usable_cores()
    model, corpus = _model(args.workdir)
    print(f"# {platform.node()}: {cores} usable cores, torch {torch.__version__}, transformers {T.__version__}, "
          f"{date.today()}; {args.steps} steps per run, best of {args.repeat}")
    rows = []
    for n in (int(x) for x in args.processes.split(",")):
        shared = max(1, cores // n)
        every = min(_together(model, corpus, args.workdir, n, cores, args.steps) for _ in range(args.repeat))
        split = min(_together(model, corpus, args.workdir, n, shared, args.steps) for _ in range(args.repeat))
        rows.append([str(n), f"{cores} each: {every:.1f} s", f"{shared} each: {split:.1f} s", f"{every / split:.2f}x"])
    print_table(["processes at once", "threads = every core", "threads = cores shared", "speed-up"], rows)


if __name__ == "__main__":
    main()
