"""A job's result.json, checked before anything counts it: against its job, its run and its ranges.

A result is the one source of truth of a job, so a file that is not what the job wrote (another
job's result copied in, a result of another checkpoint's run, a hand-edited `top1: 7.5`, `{}`, a
truncated write) must not be counted as done or enter a table. `result_problem` says what is wrong;
`read_result` returns the result, None when there is none, or raises `InvalidResult` naming the file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import GardenerError
from .identity import Job, Settings

RESULT = "result.json"
_FRACTIONS = ("top1", "top5", "uar")  # accuracies: in [0, 1]
_COUNTS = ("params", "steps", "warmup_steps", "classes")  # whole numbers >= 0
_AMOUNTS = ("gflops", "seconds")  # numbers >= 0


class InvalidResult(GardenerError):
    """A result.json that cannot be its job's result."""


def _number(value: object, whole: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value >= 0 and (not whole or float(value).is_integer())


def result_problem(result: object, job_id: str, source_hash: str | None = None) -> str | None:
    """What makes `result` not the result of job `job_id` (of the checkpoint `source_hash`); None when it is."""
    if not isinstance(result, dict) or not result:
        return "it holds no result"
    if result.get("id") != job_id:
        return f"it is the result of job {result.get('id')!r}, not of {job_id}"
    try:
        settings = Settings(**result["settings"])
        job = Job(settings, tuple(sorted(int(b) for b in result["removed"])),
                  None if result["seed"] in (None, settings.seed) else int(result["seed"]))
        recomputed = job.id
    except (KeyError, TypeError, ValueError):
        return "it does not record its job (settings, removed blocks and seed)"
    if recomputed != job_id:
        return f"its settings, blocks and seed are those of job {recomputed}, not of {job_id}"
    if source_hash is not None and settings.source_hash != source_hash:
        return (f"it was made from another checkpoint (hash {settings.source_hash[:12]}), not this run's "
                f"({source_hash[:12]})")
    why = _metric_problem(result, settings.task)
    if why:
        return why
    for key in _COUNTS + _AMOUNTS:
        if result.get(key) is not None and not _number(result[key], whole=key in _COUNTS):
            return f"its {key} {result[key]!r} is not a {'whole ' if key in _COUNTS else ''}number of 0 or more"
    count_key = "videos" if "videos" in result else "samples"
    count = result.get(count_key)
    if count is not None and (not _number(count, whole=True) or count < 1):
        return f"its {count_key} {count!r} is not a count of test {'videos' if count_key == 'videos' else 'samples'}"
    return _per_sample_problem(result, count, "video" if count_key == "videos" else "sample")


def _metric_problem(result: dict, task: str) -> str | None:
    """What is wrong with the result's metrics for its task: accuracies in [0, 1], a perplexity of 1 or more."""
    if task == "causal-lm":
        value = result.get("perplexity")
        if not _number(value) or value < 1:
            return f"its perplexity {value!r} is not a perplexity (a number of 1 or more)"
        accuracy = result.get("next_token_accuracy")
        if accuracy is not None and (not _number(accuracy) or accuracy > 1):
            return f"its next_token_accuracy {accuracy!r} is not an accuracy between 0 and 1"
        return None
    if not _number(result.get("top1")) or result["top1"] > 1:
        return f"its top1 {result.get('top1')!r} is not an accuracy between 0 and 1"
    for key in _FRACTIONS[1:]:
        if result.get(key) is not None and (not _number(result[key]) or result[key] > 1):
            return f"its {key} {result[key]!r} is not an accuracy between 0 and 1"
    return None


def _per_sample_problem(result: dict, count: int | None, unit: str) -> str | None:
    """Per-sample records that do not match the test-set size or the metric they are the parts of."""
    correct = result.get("correct")
    if correct is not None:
        if not isinstance(correct, str) or set(correct) - {"0", "1"}:
            return f"its per-{unit} results are not a string of 0 and 1"
        if count is not None and len(correct) != count:
            return f"it records {len(correct)} per-{unit} results for {count} test {unit}s"
        if count and abs(correct.count("1") / count - result["top1"]) > 0.5 / count + 1e-9:
            return f"its top1 {result['top1']} disagrees with its per-{unit} results ({correct.count('1')} of {count})"
    nll, tokens = result.get("nll"), result.get("tokens")
    if nll is None and tokens is None:
        return None
    if not (isinstance(nll, list) and isinstance(tokens, list) and all(_number(x) for x in nll)
            and all(_number(t, whole=True) and t > 0 for t in tokens)):
        return "its per-sequence losses and token counts are not lists of numbers of 0 or more"
    if len(nll) != len(tokens) or (count is not None and len(nll) != count):
        return f"it records {len(nll)} per-sequence losses and {len(tokens)} token counts for {count} test sequences"
    if abs(math.log(result["perplexity"]) - sum(nll) / sum(tokens)) > 1e-4:
        return f"its perplexity {result['perplexity']} disagrees with its per-sequence losses"
    return None


def read_result(folder: Path, source_hash: str | None = None) -> dict | None:
    """The job folder's result, checked; None when it has none; `InvalidResult` when it is not this job's."""
    path = Path(folder) / RESULT
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidResult(f"{path}: not readable ({exc.__class__.__name__}); delete it to run the job again") \
            from None
    try:
        result = json.loads(text)
    except ValueError:
        raise InvalidResult(f"{path}: not readable JSON (a truncated or damaged file); delete it to run the job "
                            f"again") from None
    why = result_problem(result, Path(folder).name, source_hash)
    if why:
        raise InvalidResult(f"{path}: {why}; delete it to run the job again")
    return result


_RUN_HASHES: dict[tuple[str, int], str | None] = {}  # run.json (path, mtime) -> its hash: read once, not per look


def run_hash(jobs: Path) -> str | None:
    """The source hash of the run folder a jobs/ folder belongs to (its run.json), or None when unknown."""
    marker = Path(jobs).parent / "run.json"
    try:
        key = (str(marker), marker.stat().st_mtime_ns)
    except OSError:
        return None
    if key not in _RUN_HASHES:
        try:
            value = json.loads(marker.read_text()).get("source_hash")
        except (OSError, ValueError, AttributeError):
            value = None
        _RUN_HASHES[key] = value if isinstance(value, str) else None
    return _RUN_HASHES[key]
