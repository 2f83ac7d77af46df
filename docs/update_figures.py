"""Copy README's figures from one recorded demo run into docs/ and record where each came from.

README shows figures of one run only: `gardener demo OUT --replicates N` (the pooled figure from OUT/figures,
one model's from OUT/run/figures). This copies them and writes docs/figures.json: the run (its seed, number
of models, the versions the pooled report names, where BENCHMARKS.md describes it) and, per figure, the file
of the run it is and its sha256, so that tests/test_readme.py can check that every figure in README is one
of that run's files, unchanged.

    python docs/update_figures.py RUN [--section ANCHOR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# docs/ name -> the file of the demo run it is
FIGURES = {
    "demo_pooled_agreement.png": "figures/pooled_agreement.png",
    "demo_single_block_removal.png": "run/figures/single_block_removal.png",
    "demo_accuracy_vs_ratio.png": "run/figures/accuracy_vs_ratio.png",
}
SECTION = "BENCHMARKS.md#verdicts-over-five-trained-models-gardener-demo---replicates-5-2026-12-06"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def update(run: Path, docs: Path = DOCS, section: str = SECTION) -> dict:
    """Copy the figures of `run` into `docs` and write docs/figures.json; returns what it wrote."""
    missing = [source for source in ("demo.json", "pooled.json", *FIGURES.values()) if not (run / source).is_file()]
    if missing:
        raise SystemExit(f"{run}: not a finished `gardener demo --replicates N` folder (missing {', '.join(missing)})")
    demo = json.loads((run / "demo.json").read_text())
    pooled = json.loads((run / "pooled.json").read_text())
    record = {
        "run": {"command": f"gardener demo OUT --replicates {pooled['models']} --seed {demo['seed']}"
                           + (" --quick" if demo["quick"] else ""),
                "pooled_report_written": pooled["meta"]["created"], "versions": pooled["meta"]["versions"],
                "described_in": section},
        "figures": {},
    }
    for name, source in FIGURES.items():
        shutil.copyfile(run / source, docs / name)
        record["figures"][name] = {"from": source, "sha256": sha256(docs / name)}
    (docs / "figures.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the folder of `gardener demo OUT --replicates N`")
    parser.add_argument("--section", default=SECTION, help="where BENCHMARKS.md describes the run")
    args = parser.parse_args()
    record = update(args.run, section=args.section)
    print(f"copied {len(record['figures'])} figures of {record['run']['command']} into {DOCS}")


if __name__ == "__main__":
    main()
