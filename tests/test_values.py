"""A block's weights as values: the precision views round exactly as torch does."""
from __future__ import annotations

import numpy as np
import torch
from conftest import random_values

from gardener.values import bf16_bits, in_view


def test_views_round_like_torch():
    x = torch.from_numpy(random_values(4096, seed=5) * 37)
    assert np.array_equal(bf16_bits(x.numpy()), x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
    half, tag = in_view(x.numpy(), "F32", "float16")
    assert tag == "F16" and np.array_equal(half, x.half().numpy())
    back, tag = in_view(x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16), "BF16", "float32")
    assert tag == "F32" and np.array_equal(back, x.to(torch.bfloat16).float().numpy())
