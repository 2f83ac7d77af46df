"""Gardener: data-free importance of transformer blocks from their weights, and pruning.

    import gardener
    result = gardener.score("path/to/checkpoint", criteria="all", dtype="stored")
    result.removal_order("entropy")   # block numbers, least important first
    model, record = gardener.prune_model(model, remove=result.removal_order("entropy")[:3])
    gardener.precision_report("path/to/checkpoint")["verdict"]  # is exact-value entropy meaningful here?
"""
from .checkpoint import Checkpoint, open_checkpoint
from .errors import GardenerError
from .precision import precision_report
from .scoring import BlockInfo, ScoreResult, score
from .surgery import prune_model

__version__ = "0.1.0"
__all__ = ["BlockInfo", "Checkpoint", "GardenerError", "ScoreResult", "open_checkpoint", "precision_report",
           "prune_model", "score"]
