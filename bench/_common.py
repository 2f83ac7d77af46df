"""Helpers shared by the benchmarks: best-of timing and a child process's peak RSS."""
from __future__ import annotations

import subprocess
import sys
import time


def best_of(fn, repeat: int) -> tuple[float, object]:
    """The fastest of `repeat` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def child_peak_rss_mb(gardener_args: list[str]) -> float:
    """Peak RSS (MB) of a separate `python -m gardener ARGS` process, read by a wrapper's rusage."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    cmd = [sys.executable, "-c", code, sys.executable, "-m", "gardener", *gardener_args]
    return int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout) / 1024


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    """A Markdown table, ready to paste into BENCHMARKS.md."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def per_dtype_main(doc: str, name: str, bench, repeat: int) -> tuple[object, list[dict]]:
    """The shared command line of the checkpoint benchmarks: --workdir, --repeat, --json; runs
    `bench(dtype, workdir, repeat)` for float16 then float32 and prints the header line."""
    import argparse
    import platform
    from datetime import date
    from pathlib import Path

    import numpy as np

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work")
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = [bench(d, args.workdir, args.repeat) for d in ("float16", "float32")]
    print(f"# {name} {date.today()} on {platform.machine()} {platform.processor() or ''}, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    if args.json:
        import json

        args.json.write_text(json.dumps(rows, indent=2))
    return args, rows
