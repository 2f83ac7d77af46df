"""A stack's block layout without a scoring pass: what an oracle's ranking file names, from headers alone."""
from __future__ import annotations

from dataclasses import replace

import pytest

import gardener
from gardener.checkpoint import Checkpoint
from gardener.scoring import layout


def test_the_layout_is_a_scoring_pass_without_scores_and_reads_no_weight(videomae_dir, monkeypatch):
    scored = gardener.score(videomae_dir, ["l1"], primary="l1")
    monkeypatch.setattr(Checkpoint, "read", lambda self, name: pytest.fail(f"read {name}"))
    blocks = layout(videomae_dir, gardener.ScoreSettings(dtype="float16"))
    assert blocks.scores == {} and blocks.depth == scored.depth == 4 and blocks.primary is None
    assert blocks.dtype_view == "float16"
    assert blocks == replace(scored, scores={}, removes={}, meta=blocks.meta, primary=None, dtype_view="float16",
                             blocks=[replace(b, distinct=None) for b in scored.blocks])


def test_a_layout_is_plain_data_like_any_result(videomae_dir):
    blocks = layout(videomae_dir)
    data = blocks.to_dict()
    assert data["removal_order"] == [] and data["criteria"] == {} and data["depth"] == 4
    assert gardener.ScoreResult.from_dict(data) == blocks
