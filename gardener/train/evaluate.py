"""Multi-clip, multi-crop evaluation of a video classifier, and its metrics.

A video's prediction is the mean of the softmax over all its views (clips x crops), as in
VideoMAE's UCF101 test protocol. Metrics: top-1 (the paper's WAR: correct / total), top-5,
UAR (mean per-class recall), per-class recall and the confusion matrix.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalisation(model_dir: str | Path | None) -> tuple[tuple, tuple]:
    """Mean and std from the model directory's preprocessor_config.json, ImageNet's by default."""
    import json

    path = Path(model_dir) / "preprocessor_config.json" if model_dir else None
    if path is not None and path.is_file():
        config = json.loads(path.read_text())
        return tuple(config.get("image_mean", IMAGENET_MEAN)), tuple(config.get("image_std", IMAGENET_STD))
    return IMAGENET_MEAN, IMAGENET_STD


def to_model_input(pixels, mean: tuple, std: tuple, dtype=None):
    """uint8 (..., C, H, W) on the model's device -> normalised float."""
    import torch

    m = torch.tensor(mean, device=pixels.device).view(3, 1, 1)
    s = torch.tensor(std, device=pixels.device).view(3, 1, 1)
    out = (pixels.float() / 255 - m) / s
    return out if dtype is None else out.to(dtype)


def collate_views(items: list[dict]) -> dict:
    import torch

    return {"pixel_values": torch.stack([i["pixel_values"] for i in items]),
            "labels": torch.tensor([i["labels"] for i in items]), "index": torch.tensor([i["index"] for i in items])}


BATCH_VIEWS = 32  # views per forward pass at evaluation (whole videos: 2 videos of 15 views, 32 of 1)


def predict(model, dataset, *, batch_videos: int | None = None, workers: int = 0, device=None, mean=IMAGENET_MEAN,
            std=IMAGENET_STD, indices: list[int] | None = None, progress=None, autocast_dtype=None) -> dict:
    """Averaged softmax per video over every view; also the views and seconds it took."""
    import torch
    from torch.utils.data import DataLoader, Subset

    if batch_videos is None:
        spec = getattr(dataset, "spec", None)
        views = spec.test_clips * spec.test_crops if spec is not None else 1
        batch_videos = max(1, BATCH_VIEWS // views)
    device = device or next(model.parameters()).device
    subset = Subset(dataset, indices) if indices is not None else dataset
    loader = DataLoader(subset, batch_size=batch_videos, num_workers=workers, collate_fn=collate_views)
    was_training = model.training
    model.eval()
    probs, labels, order, views = [], [], [], 0
    start = time.perf_counter()
    with torch.inference_mode():
        for done, batch in enumerate(loader, start=1):
            pixels = batch["pixel_values"].to(device, non_blocking=True)
            b, v = pixels.shape[:2]
            inputs = to_model_input(pixels.flatten(0, 1), mean, std)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(pixel_values=inputs).logits.float()
            probs.append(logits.softmax(-1).view(b, v, -1).mean(1).cpu())
            labels.append(batch["labels"])
            order.append(batch["index"])
            views += b * v
            if progress:
                progress(done, len(loader))
    model.train(was_training)
    seconds = time.perf_counter() - start
    return {"probs": torch.cat(probs).numpy(), "labels": torch.cat(labels).numpy(), "index": torch.cat(order).numpy(),
            "views": views, "seconds": seconds}


def metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Top-1 (WAR), top-5, UAR, per-class recall and confusion matrix (rows: true, columns: predicted)."""
    n_classes = len(classes)
    predicted = probs.argmax(1)
    k = min(5, n_classes)
    top5 = (np.argsort(-probs, axis=1)[:, :k] == labels[:, None]).any(1)
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    support = confusion.sum(1)
    recall = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    return {"videos": int(len(labels)), "top1": float((predicted == labels).mean()), "top5": float(top5.mean()),
            "uar": float(np.nanmean(recall)), "per_class_recall": {c: (None if np.isnan(r) else float(r))
                                                                    for c, r in zip(classes, recall)},
            "confusion": confusion.tolist(), "classes": list(classes)}


def write_eval_outputs(folder: Path, result: dict, paths: list, extra: dict | None = None) -> list[Path]:
    """eval.json (metrics and `extra`), predictions.csv (per video) and confusion.csv: data only
    (gardener.report.figures.draw_eval_figures draws the confusion matrix from them)."""
    import csv
    import json

    folder = Path(folder)
    classes = result["classes"]
    public = {k: v for k, v in result.items() if k not in ("probs", "labels", "index")}
    (folder / "eval.json").write_text(json.dumps({**public, **(extra or {})}, indent=2) + "\n")
    with open(folder / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "predicted", *[f"p_{c}" for c in classes]])
        for row, index in enumerate(result["index"]):
            probs = result["probs"][row]
            writer.writerow([str(paths[index]), classes[result["labels"][row]], classes[int(probs.argmax())],
                             *[f"{p:.8g}" for p in probs]])
    with open(folder / "confusion.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, result["confusion"]):
            writer.writerow([name, *row])
    return [folder / n for n in ("eval.json", "predictions.csv", "confusion.csv")]


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """predictions.csv back as {path: probabilities}."""
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return {r[0]: np.array([float(x) for x in r[3:]]) for r in rows[1:]}
