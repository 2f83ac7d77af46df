"""What a scoring run is asked to do, as settings objects built once (by the CLI or a caller) and passed whole."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SettingError
from ..values import VIEWS

TOKENS = ("last", "mean", "cls")  # which tokens a sequence's hidden state is read at
LAST_OUTPUTS = ("hidden_states", "block")  # what counts as the last block's output
PARAMS = ("2d", "all")
CALIB_DTYPES = ("float32", "bfloat16")  # what a calibration pass runs in
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # Accelerate's big-model placements


@dataclass(frozen=True)
class CalibOptions:
    """Where the calibration data is, how much of it a calibration pass reads, and the conventions it follows."""

    calib_data: Path | None = None  # any dataset `finetune` accepts; text models: .txt or .jsonl (text or input_ids)
    calib_clips: int = 64  # clips (or sequences) in the pass
    span: int = 1  # blocks per span for angular_distance (Gromov et al. remove n contiguous blocks)
    calib_batch: int = 8
    calib_seq_len: int = 128  # tokens per sequence cut from raw text
    tokens: str | None = None  # angular_distance reads: last, mean or cls; None: the model family's choice
    last_output: str = "hidden_states"  # the last block's output: as output_hidden_states returns it, or "block"
    sequential: bool = False  # block by block, one block's weights in memory (a model larger than memory)
    calib_dtype: str = "float32"  # the pass's precision: float32, or bfloat16 (half the memory; a GPU's tensor cores)
    device_map: str | None = None  # Accelerate's placement over every GPU, then CPU memory, then disk (DEVICE_MAPS)
    max_memory: str | None = None  # with device_map: what each device may hold, e.g. "0=70GiB,1=70GiB,cpu=100GiB"

    def inputs(self) -> list[tuple[str, Path]]:
        """The paths an output must not touch."""
        return [("the calibration data", self.calib_data)] if self.calib_data else []


@dataclass(frozen=True)
class ScoreSettings:
    """Which criteria score which stack of a checkpoint, and how.

    `criteria`: "all" (every data-free criterion), a comma list or a sequence of registered names;
    `primary`: the criterion whose ranks and removal order are reported (always computed; None with
    `criteria=()` scores nothing: the blocks' layout alone, see `layout`);
    `dtype`: precision view, "stored" (as on disk) or the weights cast to float16 / bfloat16 / float32;
    `stack`: which stack (default: the encoder); `block_pattern`: a regex overriding detection;
    `params`: "2d" (the paper: 2-D weight matrices) or "all" tensors of each block;
    `bins`: histogram bins of hist_entropy; `seed`: of the random criterion and the calibration set;
    `workers`: threads scoring blocks (default up to 2); `aggregate`: how spectral criteria combine
    a block's matrices (mean, min, max, weighted); `calib`: data for the calibration criteria.
    """

    criteria: str | tuple[str, ...] = "all"
    primary: str | None = "entropy"
    dtype: str = "stored"
    stack: str | None = None
    block_pattern: str | None = None
    params: str = "2d"
    bins: int = 2048
    seed: int = 0
    workers: int | None = None
    aggregate: str = "mean"
    calib: CalibOptions | None = None

    @classmethod
    def of(cls, settings: ScoreSettings | None = None, **fields: Any) -> ScoreSettings:
        """`settings` (or the defaults) with `fields` on top; a list of criteria becomes a tuple."""
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"ScoreSettings has no field {unknown[0]!r}")
        if isinstance(fields.get("criteria"), list):
            fields["criteria"] = tuple(fields["criteria"])
        return dataclasses.replace(settings or cls(), **fields)

    def check(self) -> ScoreSettings:
        """One error naming the setting whose value no scoring run can use (before anything is read)."""
        from ..criteria import check_aggregate

        if self.dtype not in VIEWS:
            raise SettingError("dtype", f"{self.dtype!r}: expected one of {', '.join(VIEWS)}")
        if self.params not in PARAMS:
            raise SettingError("params", f"{self.params!r}: expected '2d' or 'all'")
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 2:
            raise SettingError("bins", f"{self.bins}: expected at least 2")
        _whole("seed", self.seed, 0)
        _whole("workers", self.workers, 1)
        check_aggregate(self.aggregate)
        return self


def _whole(name: str, value: Any, low: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise SettingError(name, f"{value}: expected {low} or more")
