"""`gardener score`'s files: check where they go before any work, score, and write JSON / CSV / PNG."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import open_checkpoint
from ..fileio import check_output, write_text
from ..manifest import manifest
from .result import ScoreResult
from .run import score
from .settings import ScoreSettings


@dataclass(frozen=True)
class ScoreOutputs:
    """Which files a scoring run writes (None: not that one), and whether existing ones are replaced."""

    json: Path | None = None
    csv: Path | None = None
    plot: Path | None = None
    force: bool = False

    def paths(self) -> dict[str, Path]:
        """Each asked-for output by its kind (json, csv, plot), with the CSV's metadata beside it."""
        named = {"json": self.json, "csv": self.csv, "plot": self.plot}
        out = {key: Path(path) for key, path in named.items() if path is not None}
        if self.csv is not None:
            out["csv_meta"] = csv_sidecar(self.csv)
        return out


def csv_sidecar(path: Path) -> Path:
    """Where a scores CSV's metadata goes: NAME.meta.json beside NAME.csv."""
    return Path(path).with_name(f"{Path(path).stem}.meta.json")


def check_outputs(outputs: ScoreOutputs, inputs: list | None = None) -> None:
    """Fail before any work if an output touches an input, exists (without force) or cannot be written."""
    for key, path in outputs.paths().items():
        check_output(path, inputs or [], outputs.force, key.removesuffix("_meta"))


def _jsonable(arguments: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in arguments.items()}


def write_score_outputs(result: ScoreResult, outputs: ScoreOutputs, arguments: dict[str, Any] | None = None,
                        inputs: list | None = None) -> list[Path]:
    """Write the JSON / CSV / PNG outputs that were asked for; returns the paths written.

    `inputs` (files or (file, label) pairs to hash) defaults to the scored checkpoint's files.
    """
    from ..report.tables import csv_metadata, to_csv, to_json

    if not outputs.paths():
        return []
    meta = manifest("scores", inputs if inputs is not None else result.files, _jsonable(arguments or {}))
    written, force = [], outputs.force
    if outputs.json:
        written.append(write_text(outputs.json, to_json(result, meta), force))
    if outputs.csv:
        written.append(write_text(outputs.csv, to_csv(result), force))
        written.append(write_text(csv_sidecar(outputs.csv), csv_metadata(result, meta), force))
    if outputs.plot:  # matplotlib is imported only here: scoring without a figure does not pay for it
        from ..report.figures import weight_histograms

        written.append(weight_histograms(result.to_dict(), outputs.plot, force=force))
    return written


def score_checkpoint(path: str | Path, settings: ScoreSettings, outputs: ScoreOutputs = ScoreOutputs(), *,
                     precision: bool = False, arguments: dict | None = None,
                     progress: Callable[[int, int], None] | None = None) -> tuple[ScoreResult, list[Path]]:
    """`gardener score`: check the outputs can be written, score every block, add the precision report
    when asked (in `result.meta["precision"]`), and write the outputs; returns the result and the paths."""
    from .precision import precision_report

    settings = settings.check()
    ckpt = open_checkpoint(path)
    check_outputs(outputs, ckpt.as_inputs(path) + (settings.calib.inputs() if settings.calib else []))
    result = score(ckpt, settings=settings, histograms=outputs.plot is not None or outputs.json is not None,
                   progress=progress)
    if precision:
        result.meta["precision"] = precision_report(path, stack=settings.stack, block_pattern=settings.block_pattern,
                                                    params=settings.params, workers=settings.workers)
    return result, write_score_outputs(result, outputs, arguments=arguments)
