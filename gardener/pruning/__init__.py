"""Pruning: which blocks go (a plan, pure), and cutting them out of a checkpoint on disk or a model in memory.

    from gardener.pruning import Cut, prune_checkpoint
    from gardener.scoring import ScoreSettings
    info = prune_checkpoint("model/", "small/", Cut(ratio=0.5), ScoreSettings(primary="entropy"))
    model, record = prune_model(model, remove=[3, 7])   # a transformers model already in memory
"""
from .disk import prune_checkpoint
from .memory import prune_model
from .plan import PrunePlan, block_list, count_for_ratio, parse_blocks, plan, renamer
from .settings import Cut, WriteOptions

__all__ = ["Cut", "PrunePlan", "WriteOptions", "block_list", "count_for_ratio", "parse_blocks", "plan",
           "prune_checkpoint", "prune_model", "renamer"]
