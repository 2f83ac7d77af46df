"""Finetuning and evaluation of video classifiers (Step 4 of the paper)."""
from .evaluate import metrics, predict
from .evaluation import evaluate_model
from .finetune import DataOptions, finetune
from .state import read_losses
from .recipe import Recipe

__all__ = ["DataOptions", "Recipe", "evaluate_model", "finetune", "metrics", "predict", "read_losses"]
