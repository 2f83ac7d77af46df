"""Run a pytest selection N times in a row while busy processes load every core: a flakiness check.

    python bench/repeat_under_load.py tests/data/test_synthetic.py -k deterministic --runs 20

Prints one line per run and the number that failed; exits non-zero if any did.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

BUSY = "import numpy as np\na = np.random.rand(600, 600)\nwhile True:\n    a @ a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="busy processes (default: one a core)")
    known, pytest_args = parser.parse_known_args()
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(known.busy)]
    failed = 0
    try:
        for run in range(1, known.runs + 1):
            start = time.monotonic()
            code = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
                                  capture_output=True, text=True).returncode
            failed += code != 0
            print(f"run {run}: {'passed' if code == 0 else f'FAILED (exit {code})'} ({time.monotonic() - start:.1f} s)")
    finally:
        for process in busy:
            process.kill()
    print(f"{known.runs} runs with {known.busy} busy processes: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
