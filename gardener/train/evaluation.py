"""`gardener evaluate`: a saved classifier on the test split of a dataset, multi-clip and multi-crop."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..data import ClipSpec, VideoSplit
from ..errors import GardenerError
from ..fileio import atomic_dir
from .evaluate import normalisation, write_eval_outputs
from .finetune import DataOptions, evaluate_split, videomae_config, clip_spec_for, load_splits
from .loop import make_accelerator
from .run import run_manifest


def evaluate_model(model_dir: str | Path, data: DataOptions, *, frames: int | None = None, size: int | None = None,
                   sampling_rate: int = 4, test_clips: int = 5, test_crops: int = 3, seed: int = 0,
                   out: str | Path | None = None, force: bool = False, arguments: dict | None = None,
                   figures: Callable[[Path], object] | None = None) -> dict:
    """Multi-clip multi-crop evaluation of a saved classifier on the test split of `data`.

    The data's class names must be among the model's `id2label`; labels follow the model's
    numbering. With `out`, the folder gets eval.json, predictions.csv, confusion.csv and
    confusion.png (drawn from those files by gardener.report, as a user of this function expects).
    """
    from ..fileio import check_output

    model_dir = Path(model_dir)
    if out is not None:
        check_output(Path(out), [("the model", model_dir), *data.inputs()], force)
    config = videomae_config(model_dir)
    spec = clip_spec_for(config, frames, size, sampling_rate=sampling_rate, test_clips=test_clips,
                         test_crops=test_crops)
    _, (test, infos) = load_splits(data, seed, need_train=False)
    test = _in_model_numbering(test, config, model_dir)
    accelerator = make_accelerator()
    model = accelerator.prepare(_saved_classifier(model_dir, config, spec.size))
    mean, std = normalisation(model_dir)
    result = evaluate_split(accelerator, model, test, infos, spec, mean, std, data.workers)
    info = _evaluation_manifest(model_dir, test, spec, seed, arguments)
    if out is not None and accelerator.is_main_process:
        _write_evaluation(Path(out), force, result, test, info, figures)
    result["manifest"] = info
    result["paths"] = [str(p) for p in test.paths]
    return result


def _in_model_numbering(test: VideoSplit, config, model_dir: Path) -> VideoSplit:
    """The split with the model's class names and label numbers; every class of the data must be the model's."""
    names = [config.id2label[i] for i in range(config.num_labels)]
    unknown = [c for c in test.classes if c not in names]
    if unknown:
        raise GardenerError(f"{model_dir}: the model's classes ({', '.join(names[:5])}{' ...' if len(names) > 5 else ''}) "
                            f"do not include {unknown[0]!r} of the data ({len(unknown)} unknown)")
    remap = [names.index(c) for c in test.classes]
    return VideoSplit(test.paths, [remap[label] for label in test.labels], names, test.source, test.skipped)


def _saved_classifier(model_dir: Path, config, size: int):
    """A saved VideoMAEForVideoClassification in float32 (a float16 checkpoint is evaluated in float32)."""
    from transformers import VideoMAEForVideoClassification

    from ..fixed_tables import fast_tables

    extra = {"image_size": size} if size != config.image_size else {}
    with fast_tables():
        model = VideoMAEForVideoClassification.from_pretrained(model_dir, attn_implementation="sdpa", **extra)
    return model.float()


def _evaluation_manifest(model_dir: Path, test: VideoSplit, spec: ClipSpec, seed: int, arguments: dict | None) -> dict:
    from ..checkpoint import open_checkpoint

    info = run_manifest("evaluate", open_checkpoint(model_dir).files, arguments)
    info.update({"model": str(model_dir.resolve()), "data": test.source, "clip": asdict(spec),
                 "skipped": test.skipped, "seed": seed})
    return info


def _write_evaluation(out: Path, force: bool, result: dict, test: VideoSplit, info: dict, figures) -> None:
    """The evaluation folder, whole or not at all: its data, then what `figures` (a report function,
    e.g. `gardener.report.figures.draw_eval_figures`) draws from it."""
    with atomic_dir(out, force) as tmp:
        write_eval_outputs(tmp, result, test.paths, {"manifest": info})
        if figures is not None:
            figures(tmp)
