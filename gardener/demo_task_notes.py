"""What the image and text demos' reports say beside the tables: what was trained, how far it got (against
chance, or against the unigram perplexity of the same text), and what every job does."""
from __future__ import annotations

import json
from pathlib import Path


def note(settings, out: Path) -> str:
    """The demo's stages in words, with the trained model's own measure and its interval."""
    final = json.loads((out / "train" / "gardener.json").read_text())["final"]
    if settings.task == "image":
        return _image_note(settings, final)
    data = json.loads((out / "data" / "gardener.json").read_text())
    return _text_note(settings, final, data)


def _image_note(settings, final: dict) -> str:
    low, high = final["top1_interval"]
    classes = len(final["classes"])
    return (f"**What these numbers are.** The study in miniature on an image classifier: a {settings.depth}-block ViT "
            f"({settings.hidden} wide; 32 px images in 4 px patches, 64 tokens) is trained from scratch for "
            f"{settings.train_steps} steps on {classes} synthetic textures under pixel noise (standard deviation "
            f"{settings.noise:g} of 255; {settings.samples} training images each); its test top-1 is "
            f"**{100 * final['top1']:.1f} %** [{100 * low:.1f}, {100 * high:.1f}] on "
            f"{final['images']} test images (chance {100 / classes:.1f} %). That classifier is scored and pruned. "
            f"Every oracle and sweep job gives the pruned copy a fresh head and finetunes it for {settings.job_steps} "
            f"steps on the same training images, then evaluates it on the test images; the calibration criteria read "
            f"{settings.calib} training images; the second oracle keeps the trained head and heals each removal for "
            f"{settings.second_oracle_steps} steps. This is not a real ViT on ImageNet; run the same commands on a "
            f"real checkpoint and dataset for that (see the README).")


def _text_note(settings, final: dict, data: dict) -> str:
    low, high = final["perplexity_interval"]
    return (f"**What these numbers are.** The study in miniature on a language model: a {settings.depth}-block "
            f"LLaMA ({settings.hidden} wide) is trained from scratch for {settings.train_steps} steps on a synthetic "
            f"formal language ({settings.samples} documents, {data['words']['train']:,} words; every verb agrees in "
            f"number with its subject across nested clauses, so predicting it needs the context a few words back). "
            f"Its perplexity on {settings.test_samples} held-out documents ({final['sequences']} sequences of "
            f"{settings.seq_len} tokens) is **{final['perplexity']:.2f}** [{low:.2f}, {high:.2f}], against "
            f"{data['unigram_perplexity']:.1f} for the word frequencies alone (the unigram perplexity of the same "
            f"text: the best a model that ignores the context can do). That model is scored and pruned. Every oracle "
            f"and sweep job heals the pruned copy for {settings.job_steps} steps on the training text and measures "
            f"its held-out perplexity (lower is better); the calibration criteria read {settings.calib} sequences of "
            f"the training text; the second oracle measures each removal without any training (the plain "
            f"remove-one-block perplexity of the layer-pruning literature). This is not a real LLaMA; run the same "
            f"commands on a real checkpoint and text for that (see the README).")
