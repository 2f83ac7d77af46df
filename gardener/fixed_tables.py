"""Fast construction of transformers' fixed sinusoidal position tables.

transformers' VideoMAE builds its sinusoid table with a Python loop per position: about 2 s
for a ViT-B video model, paid at every model build (GFLOPs counts build two). `fast_tables()`
swaps in a vectorised function computing the same float64 formula, for the duration of a block.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


def sinusoid_table(n_position: int, d_hid: int):
    """The VideoMAE/attention-is-all-you-need table (1, n_position, d_hid) as a float32 tensor."""
    import torch

    exponent = 2 * (np.arange(d_hid) // 2) / d_hid
    angles = np.arange(n_position, dtype=np.float64)[:, None] / np.power(10000, exponent)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.FloatTensor(angles).unsqueeze(0)


@contextlib.contextmanager
def fast_tables() -> Iterator[None]:
    """Within the block, VideoMAE models build their position tables with `sinusoid_table`."""
    try:
        from transformers.models.videomae import modeling_videomae as module
    except ImportError:  # an older transformers without VideoMAE: nothing to speed up
        yield
        return
    original = module.get_sinusoid_encoding_table
    module.get_sinusoid_encoding_table = sinusoid_table
    try:
        yield
    finally:
        module.get_sinusoid_encoding_table = original
