"""Model families. Importing this package registers every built-in family.

A new family is one `register(Family(...))` call (see README, "Extending Gardener").
"""
from . import swin, hf, timm, text, generic  # noqa: F401,I001  (registration side effects, in order)
from ._registry import (DepthMismatch, Family, StackKind, depth_disagreement, families, get, input_kind, kind_of, kinds, register,
                        shorten_config, split_fused, split_key, split_module, summaries, unregister)

__all__ = ["DepthMismatch", "Family", "StackKind", "depth_disagreement", "families", "get", "input_kind", "kind_of", "kinds", "register",
           "shorten_config", "split_fused", "split_key", "split_module", "summaries", "unregister"]
