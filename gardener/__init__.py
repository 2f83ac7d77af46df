"""Gardener: data-free importance of transformer blocks from their weights, and pruning.

    import gardener
    result = gardener.score("path/to/checkpoint", criteria="all", dtype="stored")
    result.removal_order("entropy")   # block numbers, least important first
    gardener.prune_checkpoint("path/to/checkpoint", "small/", gardener.Cut(ratio=0.5))
    model, record = gardener.prune_model(model, remove=result.removal_order("entropy")[:3])
    gardener.precision_report("path/to/checkpoint")["verdict"]  # is exact-value entropy meaningful here?
"""
from .checkpoint import Checkpoint, open_checkpoint
from .errors import GardenerError, SettingError
from .info import checkpoint_info
from .plugins import load_plugins
from .pruning import Cut, WriteOptions, prune_checkpoint, prune_model
from .scoring import BlockInfo, CalibOptions, ScoreResult, ScoreSettings, precision_report, score

__version__ = "0.1.0"
__all__ = ["BlockInfo", "CalibOptions", "Checkpoint", "Cut", "GardenerError", "ScoreResult", "ScoreSettings",
           "SettingError", "WriteOptions", "checkpoint_info", "load_plugins",
           "open_checkpoint", "precision_report", "prune_checkpoint", "prune_model",
           "score"]
