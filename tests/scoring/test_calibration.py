"""The peers' calibration criteria equal a direct computation on a tiny model's hidden states and losses."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import transformers as T
from conftest import build_hf, run_cli, save_hf, skip_layers, write_safetensors

import gardener
from gardener.scoring import CalibOptions
from gardener.scoring.calibration import calibration_batches, contiguous_span
from gardener.errors import GardenerError

DEPTH = 4
CALIB = "block_influence,angular_distance,skip_loss"


def _pairs(hidden: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """By hand: mean over every token of every clip of 1 - cos and arccos(cos) / pi, for each pair."""
    n = len(hidden)
    one_minus, angle = np.zeros((n, n)), np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            cos = torch.nn.functional.cosine_similarity(hidden[i], hidden[j], dim=-1).clamp(-1, 1).double()
            one_minus[i, j], angle[i, j] = float((1 - cos).mean()), float((torch.arccos(cos) / math.pi).mean())
    return one_minus, angle


def _by_hand_losses(model, batches, loss) -> list[float]:
    """The loss of the model with each block left out of its ModuleList, minus the full model's."""
    def mean_loss(m):
        with torch.no_grad():
            return sum(float(loss(m, b)) * len(next(iter(b["inputs"].values()))) for b in batches) / \
                sum(len(next(iter(b["inputs"].values()))) for b in batches)
    full = mean_loss(model)
    out = []
    for block in range(1, DEPTH + 1):
        copy = type(model).from_pretrained(model.name_or_path, attn_implementation="sdpa").eval()
        stack = "videomae.encoder.layer" if hasattr(copy, "videomae") else "model.layers"
        out.append(mean_loss(skip_layers(copy, stack, [b for b in range(1, DEPTH + 1) if b != block])) - full)
    return out


def test_videomae_criteria_equal_a_direct_computation(classifier, video_root):
    options = CalibOptions(video_root, calib_clips=6, span=2, calib_batch=4)
    result = gardener.score(classifier, CALIB, primary="block_influence", calib=options, seed=1)
    model = T.VideoMAEForVideoClassification.from_pretrained(classifier, attn_implementation="sdpa").eval()
    batches = calibration_batches(model, classifier, options, seed=1)
    assert sum(len(b["inputs"]["pixel_values"]) for b in batches) == 6
    with torch.no_grad():  # hidden_states: the input of every block, then the last block's output
        states = [model.videomae(**b["inputs"], output_hidden_states=True).hidden_states for b in batches]
    hidden = [torch.cat([s[i] for s in states]) for i in range(DEPTH + 1)]
    one_minus, angle = _pairs(hidden)
    assert result.scores["block_influence"] == pytest.approx([one_minus[i, i + 1] for i in range(DEPTH)], rel=1e-5)
    assert result.scores["angular_distance"] == pytest.approx(
        [angle[i, min(i + 2, DEPTH)] for i in range(DEPTH)], rel=1e-5)
    def cross_entropy(m, b):
        return torch.nn.functional.cross_entropy(m(**b["inputs"]).logits, b["labels"])
    assert result.scores["skip_loss"] == pytest.approx(_by_hand_losses(model, batches, cross_entropy), abs=1e-5)
    assert result.removes == {"block_influence": "lowest", "angular_distance": "lowest", "skip_loss": "lowest"}
    cost = result.meta["calibration"]["cost"]
    assert cost["skip_loss"]["clips"] == 6 and cost["skip_loss"]["seconds"] > 0
    assert np.allclose(result.meta["calibration"]["angles"], angle.round(6), atol=2e-6)


def test_one_seed_gives_the_same_scores_another_seed_other_clips(classifier, video_root):
    options = CalibOptions(video_root, calib_clips=4, calib_batch=4)
    first, again, other = (gardener.score(classifier, "block_influence", primary="block_influence", calib=options,
                                          seed=s).scores["block_influence"] for s in (3, 3, 4))
    assert first == again and first != other


def test_the_best_contiguous_span_is_removed_when_asked(classifier, video_root, tmp_path):
    args = ["--criterion", "angular_distance", "--calib-data", video_root, "--calib-clips", 4, "--remove", 2]
    assert run_cli("prune", classifier, "-o", tmp_path / "small", "--contiguous", *args) == 0
    info = json.loads((tmp_path / "small" / "gardener.json").read_text())
    angles = info["angles"]
    again = gardener.score(classifier, "angular_distance", primary="angular_distance",
                           calib=CalibOptions(video_root, calib_clips=4))
    assert np.allclose(angles, again.meta["calibration"]["angles"])
    assert info["removed_blocks"] == contiguous_span(angles, 2) and info["how"].startswith("contiguous span of 2")
    starts = {b: angles[b - 1][b + 1] for b in range(1, DEPTH)}  # the distance over each 2-block span
    assert starts[info["removed_blocks"][0]] == min(starts.values())
    assert T.VideoMAEForVideoClassification.from_pretrained(tmp_path / "small").config.num_hidden_layers == 2


def test_calibration_errors_are_one_line(classifier, video_root, tmp_path, capsys):
    with pytest.raises(GardenerError, match="give --calib-data"):
        gardener.score(classifier, "block_influence", primary="block_influence")
    (tmp_path / "empty").mkdir()
    for data, said in ((tmp_path / "missing", "--calib-data .*missing: no such file"),
                       (tmp_path / "empty", "--calib-data")):
        capsys.readouterr()
        assert run_cli("score", classifier, "--criteria", "block_influence", "--criterion", "block_influence",
                       "--calib-data", data) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    raw = write_safetensors(T.VideoMAEForVideoClassification.from_pretrained(classifier).state_dict(),
                            tmp_path / "raw.safetensors")
    assert run_cli("score", raw, "--criteria", "skip_loss", "--criterion", "skip_loss", "--calib-data", video_root) == 2
    assert "needs a transformers model directory with config.json" in " ".join(capsys.readouterr().err.split())


def test_skip_loss_needs_a_loss_and_all_means_the_data_free_criteria(video_root, tmp_path):
    path = save_hf(build_hf("vit"), tmp_path / "vit")  # labels LABEL_0, LABEL_1: not the videos' classes
    with pytest.raises(GardenerError, match="skip_loss .* its labels are not the calibration data's classes"):
        gardener.score(path, "skip_loss", primary="skip_loss", calib=CalibOptions(video_root, calib_clips=2))
    image = gardener.score(path, "block_influence", primary="block_influence",
                           calib=CalibOptions(video_root, calib_clips=2))  # an image model: one frame per clip
    assert len(image.scores["block_influence"]) == 4 and all(s > 0 for s in image.scores["block_influence"])
    assert not set(gardener.criteria.parse("all")) & {"block_influence", "angular_distance", "skip_loss"}
    assert gardener.criteria.parse("calibration") == ["block_influence", "angular_distance", "skip_loss"]


@pytest.mark.parametrize("name", ["vit", "dinov2", "bert"])
def test_block_influence_of_image_and_text_encoders_equals_their_hidden_states(name, video_root, tmp_path):
    """Images take one frame of each clip; BERT takes token ids; neither has a head, so no skip loss."""
    path = save_hf(build_hf(name), tmp_path / name)
    data = video_root
    if name == "bert":
        data = tmp_path / "tokens.jsonl"
        data.write_text("".join(json.dumps({"input_ids": list(range(i, i + 6))}) + "\n" for i in range(4)))
    options = CalibOptions(data, calib_clips=4, calib_batch=2)
    result = gardener.score(path, "block_influence", primary="block_influence", calib=options)
    model = type(build_hf(name)).from_pretrained(path, attn_implementation="sdpa").eval()
    batches = calibration_batches(model, path, options, seed=0)
    with torch.no_grad():
        states = [model(**b["inputs"], output_hidden_states=True).hidden_states for b in batches]
    hidden = [torch.cat([s[i] for s in states]) for i in range(DEPTH + 1)]
    assert result.scores["block_influence"] == pytest.approx([_pairs(hidden)[0][i, i + 1] for i in range(DEPTH)],
                                                             rel=1e-5)
