"""Library functions behind the commands that write files: score outputs and the demo."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .fileio import atomic_dir, check_writable, write_text
from .manifest import manifest
from .scoring import ScoreResult, score


def check_outputs(outputs: dict[str, Path | None], force: bool) -> None:
    """Fail before any work if an output exists (without force) or cannot be written."""
    for path in outputs.values():
        if path is not None:
            check_writable(Path(path), force)


def _jsonable(arguments: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in arguments.items()}


def write_score_outputs(result: ScoreResult, outputs: dict[str, Path | None], force: bool,
                        arguments: dict[str, Any] | None = None, inputs: list | None = None) -> list[Path]:
    """Write the JSON / CSV / PNG outputs that were asked for; returns the paths written.

    `inputs` (files or (file, label) pairs to hash) defaults to the scored checkpoint's files.
    """
    from .report.figures import weight_histograms
    from .report.tables import to_csv, to_json

    if not any(outputs.values()):
        return []
    inputs = inputs if inputs is not None else _source_files(result.source)
    meta = manifest("scores", inputs, _jsonable(arguments or {}))
    written = []
    if outputs.get("json"):
        written.append(write_text(outputs["json"], to_json(result, meta), force))
    if outputs.get("csv"):
        written.append(write_text(outputs["csv"], to_csv(result, meta), force))
    if outputs.get("plot"):
        written.append(weight_histograms(json.loads(to_json(result, meta)), outputs["plot"], force=force))
    return written


def _source_files(source: str) -> list[Path]:
    from .checkpoint import open_checkpoint

    return open_checkpoint(source).files


def tiny_videomae_config(depth: int = 12, hidden: int = 64):
    """A small VideoMAE: 12 blocks so the paper's pruning ratios map one block to one ratio."""
    from transformers import VideoMAEConfig

    return VideoMAEConfig(image_size=64, patch_size=16, num_frames=8, tubelet_size=2, hidden_size=hidden,
                          num_hidden_layers=depth, num_attention_heads=4, intermediate_size=4 * hidden,
                          num_labels=5)


def run_demo(out_dir: str | Path, seed: int = 0, force: bool = False) -> tuple[ScoreResult, Path]:
    """Write a small float16 VideoMAE checkpoint, score it with every criterion, save the results.

    The model is randomly initialised (seeded), not pretrained: the demo shows the scoring
    pipeline end to end on real files, not the paper's findings.
    """
    import torch
    from transformers import VideoMAEForVideoClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, force) as tmp:
        torch.manual_seed(seed)
        model = VideoMAEForVideoClassification(tiny_videomae_config()).half()
        model.save_pretrained(tmp / "model")
        result = score(tmp / "model", "all", seed=seed, histograms=True)
        result.source = str(out_dir / "model")
        arguments = {"out_dir": str(out_dir), "seed": seed}
        weights = [(tmp / "model" / "model.safetensors", "model/model.safetensors")]
        outputs = {"json": tmp / "scores.json", "csv": tmp / "scores.csv", "plot": tmp / "histograms.png"}
        write_score_outputs(result, outputs, force=True, arguments=arguments, inputs=weights)
        info = manifest("demo", weights, arguments)
        info["outputs"] = ["model/", "scores.json", "scores.csv", "histograms.png"]
        info["note"] = ("randomly initialised tiny VideoMAE (12 blocks, hidden 64) saved in float16; "
                        "scores show the pipeline, not the paper's VideoMAE-B results")
        write_text(tmp / "gardener.json", json.dumps(info, indent=2) + "\n", force=True)
    return result, out_dir
