"""Scoring: every block of a checkpoint's stack scored by the registered criteria.

    settings = ScoreSettings(criteria=("entropy", "l1"), dtype="float16")
    result = score("path/to/checkpoint", settings=settings)   # or score(path, ["l1"], dtype="float16")
    result.removal_order("entropy")                           # block numbers, least important first
"""
from .outputs import ScoreOutputs, score_checkpoint, write_score_outputs
from .precision import precision_report
from .result import BlockInfo, ScoreResult
from .roundoff import entropy_meaningful
from .run import checkpoint_warnings, layout, reporting, score
from .settings import CalibOptions, ScoreSettings

__all__ = ["BlockInfo", "CalibOptions", "ScoreOutputs", "ScoreResult", "ScoreSettings", "checkpoint_warnings",
           "entropy_meaningful", "layout", "precision_report", "reporting", "score", "score_checkpoint",
           "write_score_outputs"]
