"""Healing an image classifier: class folders of real PNG files, a ViT or DINOv2 encoder gets a head and learns,
the saved classifier reloads in stock transformers and reproduces its evaluation, a run resumes exactly, and
folders that cannot make a task are one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import transformers as T

from gardener import tasks
from gardener.data.synthetic_images import texture, write_images
from gardener.errors import GardenerError
from gardener.train.image import ImageRecipe, evaluate_image_model, finetune_images

CLASSES = ("horizontal", "vertical", "dots")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("images") / "data"
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for k in range(40):
            Image.fromarray(texture(kind, rng, 40)).save(root / kind / f"{k}.png")
    return root


def vit(path, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    T.ViTModel(T.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64)).save_pretrained(path)
    return path


def recipe(**changes) -> ImageRecipe:
    return ImageRecipe(**{"batch_size": 8, "max_steps": 80, "warmup_steps": 3, "base_lr": 0.02, "layer_decay": 1.0,
                          "save_every": 1000, **changes})


def test_a_vit_encoder_learns_the_images_and_its_classifier_reloads_and_reproduces_the_evaluation(images, tmp_path):
    model = vit(tmp_path / "vit")
    assert tasks.infer(model).name == "image-classification"
    info = finetune_images(model, tmp_path / "run", images, recipe(), val_fraction=0.25, workers=0)
    final = info["final"]
    assert final["images"] == 30 and final["top1_interval"][0] > 1 / 3  # above chance beyond noise
    saved = T.AutoModelForImageClassification.from_pretrained(tmp_path / "run" / "model")
    assert type(saved).__name__ == "ViTForImageClassification" and saved.config.id2label[0] == "dots"
    again = evaluate_image_model(tmp_path / "run" / "model", images, val_fraction=0.25)
    assert again["top1"] == pytest.approx(final["top1"])
    written = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert written["top1"] == final["top1"] and (tmp_path / "run" / "predictions.csv").is_file()


def test_an_interrupted_image_run_resumes_on_the_same_trajectory(images, tmp_path):
    model = vit(tmp_path / "vit", seed=1)
    whole: list[float] = []
    finetune_images(model, tmp_path / "a", images, recipe(max_steps=6, save_every=2), seed=2, workers=0,
                    callbacks=[lambda step, loss: whole.append(loss)])

    def crash(step, loss):
        if step == 3:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError, match="killed"):
        finetune_images(model, tmp_path / "b", images, recipe(max_steps=6, save_every=2), seed=2, workers=0,
                        callbacks=[crash])
    resumed: list[float] = []
    finetune_images(model, tmp_path / "b", images, recipe(max_steps=6, save_every=2), seed=2, workers=0,
                    resume=True, callbacks=[lambda step, loss: resumed.append(loss)])
    assert resumed == pytest.approx(whole[2:], abs=1e-6)


def test_a_dinov2_encoder_gets_a_head_and_trains(images, tmp_path):
    T.Dinov2Model(T.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                 image_size=32, patch_size=8)).save_pretrained(tmp_path / "dino")
    info = finetune_images(tmp_path / "dino", tmp_path / "run", images, recipe(max_steps=2), workers=0)
    assert T.AutoModelForImageClassification.from_pretrained(tmp_path / "run" / "model").config.num_labels == 3
    assert info["data"]["classes"] == sorted(CLASSES)


def test_folders_that_cannot_make_the_task_are_one_line_errors_before_any_run(images, tmp_path):
    from PIL import Image

    model = vit(tmp_path / "vit")
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(one / "a.png")
    with pytest.raises(GardenerError, match=r"1 class folder\(s\) \(only\); image classification needs at least two"):
        finetune_images(model, tmp_path / "r1", tmp_path / "one", recipe(), workers=0)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(GardenerError, match="class folder 'a' holds no image"):
        finetune_images(model, tmp_path / "r2", tmp_path / "empty", recipe(), workers=0)
    T.LlamaForCausalLM(T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     num_key_value_heads=1, vocab_size=20)).save_pretrained(tmp_path / "llama")
    with pytest.raises(GardenerError, match="--task image-classification: does not fit .* tasks that fit it: causal-lm"):
        finetune_images(tmp_path / "llama", tmp_path / "r3", images, recipe(), workers=0)
    broken = tmp_path / "broken"
    for kind in ("a", "b"):
        (broken / kind).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(broken / kind / f"ok{k}.png")
    (broken / "b" / "._ok0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    with pytest.raises(GardenerError, match=r"\._ok0\.png: not an image PIL can read"):
        finetune_images(model, tmp_path / "r4", broken, recipe(), workers=0)
    with pytest.raises(GardenerError, match="--size 64: .* takes images of 32 px"):
        finetune_images(model, tmp_path / "r5", images, recipe(), size=64, workers=0)
    with pytest.raises(GardenerError, match="--val-fraction 0: expected a share between 0 and 1"):
        finetune_images(model, tmp_path / "r6", images, recipe(), val_fraction=0, workers=0)
    with pytest.raises(GardenerError, match="^96 training samples make no batch of 200; lower --batch-size$"):
        finetune_images(model, tmp_path / "r7", images, recipe(batch_size=200), workers=0)
    assert not any((tmp_path / name).exists() for name in ("r1", "r2", "r3", "r4", "r5", "r6", "r7"))


def test_the_commands_finetune_and_evaluate_an_image_model_with_intervals(images, tmp_path, capsys):
    from conftest import cli, one_line_error

    model = vit(tmp_path / "vit")
    code, shown, err = cli(["finetune", model, "--data", images, "--val-fraction", "0.25", "--max-steps", "4",
                            "--lr", "0.05", "--workers", "0", "-o", tmp_path / "run"], capsys)
    assert code == 0, err
    used = json.loads((tmp_path / "run" / "gardener.json").read_text())
    assert used["task"] == "image-classification"
    assert used["recipe"] == {**ImageRecipe().to_dict(), "max_steps": 4, "base_lr": 0.05, "betas": [0.9, 0.999]}
    assert "evaluation on 30 images" in shown and "95 % interval" in shown
    code, shown, err = cli(["evaluate", tmp_path / "run" / "model", "--data", images, "--val-fraction", "0.25",
                            "-o", tmp_path / "test"], capsys)
    assert code == 0, err
    written = json.loads((tmp_path / "test" / "eval.json").read_text())
    assert written["top1"] == used["final"]["top1"] and written["manifest"]["inputs"]
    for other in (["--frames", "8"], ["--mix"], ["--seq-len", "16"]):
        code, _, err = cli(["finetune", model, "--data", images, "--max-steps", "2", *other, "-o", tmp_path / "no"],
                           capsys)
        assert code == 2 and one_line_error(err) == f"error: {other[0]}: does not apply to the image-classification task"
    assert not (tmp_path / "no").exists()


def test_make_data_images_writes_texture_classes_that_read_as_train_and_val_splits(tmp_path, capsys):
    from conftest import cli, one_line_error

    from PIL import Image

    from gardener.data.images import read_image_splits

    code, _, err = cli(["make-data", tmp_path / "a", "--images", "--classes", "dots,rings", "--per-class", "3",
                        "--test-per-class", "2", "--size", "16"], capsys)
    assert code == 0, err
    train, test = read_image_splits(tmp_path / "a")
    assert train.classes == ["dots", "rings"] and len(train) == 6 and len(test) == 4
    write_images(tmp_path / "b", classes=("dots", "rings"), per_class=3, test_per_class=2, size=16, seed=0)
    assert [p.read_bytes() for p in sorted((tmp_path / "a").rglob("*.png"))] == \
        [p.read_bytes() for p in sorted((tmp_path / "b").rglob("*.png"))]  # the same seed, the same files
    noisy = write_images(tmp_path / "n", classes=("dots", "rings"), per_class=3, test_per_class=2, size=16, noise=80)
    spread = [np.asarray(Image.open(p)).std() for p in sorted((tmp_path / "n").rglob("*.png"))]
    plain = [np.asarray(Image.open(p)).std() for p in sorted((tmp_path / "b").rglob("*.png"))]
    assert noisy["noise"] == 80 and np.mean(spread) > np.mean(plain)  # the demo's harder textures, recorded
    code, _, err = cli(["make-data", tmp_path / "c", "--images", "--frames", "8"], capsys)
    assert code == 2 and one_line_error(err) == "error: --frames: does not apply to images (--images)"
    code, _, err = cli(["make-data", tmp_path / "c", "--images", "--classes", "dots,stars"], capsys)
    assert code == 2 and "'stars' is not a texture" in one_line_error(err)
    assert not (tmp_path / "c").exists()


def test_a_swin_counts_its_blocks_over_every_stage_for_layer_decay_and_lora(tmp_path):
    """Swin's blocks are numbered within their stage: the lr decay and LoRA take every stage's blocks, in order."""
    from gardener.train.lora import Lora, block_linears, with_adapters
    from gardener.train.recipe import param_groups

    model = T.SwinForImageClassification(T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 1, 3],
                                                      num_heads=[2, 2, 4], window_size=2, num_labels=3))
    groups = [g for g in param_groups(model, recipe(layer_decay=0.5), 1.0) if g["weight_decay"]]
    scales = [g["lr_scale"] for g in groups]
    assert max(scales) == 1.0 and scales == sorted(scales) and len(set(scales)) == 2 + 6  # embeddings, 6 blocks, top
    stages = {name.split(".blocks.")[0] for name in block_linears(model)}
    assert stages == {f"swin.encoder.layers.{k}" for k in range(3)}
    wrapped = with_adapters(model, Lora(rank=2), ("classifier",))
    adapted = {name.removeprefix("base_model.model.").split(".blocks.")[0] for name, _ in wrapped.named_parameters()
               if "lora_A" in name}
    assert adapted == stages
