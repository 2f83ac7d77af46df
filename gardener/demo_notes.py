"""What the demo's report says beside the tables: what its numbers are (the stages, their sizes and what
each reached) and the precision of the checkpoint it scores."""
from __future__ import annotations

import json
from pathlib import Path


def precision_of(released: Path, master: Path) -> dict:
    """The precision report of the float16 checkpoint and of its float32 original."""
    from . import precision_report

    return {"released": precision_report(released), "master": precision_report(master)}


def note(settings, out: Path) -> str:
    """What the numbers are: the stages, their sizes and what each one reached."""
    from .stats import wilson

    config = json.loads((out / "source" / "model-float16" / "config.json").read_text())
    source = json.loads((out / "source" / "gardener.json").read_text())
    loss = json.loads((out / "pretrain" / "gardener.json").read_text()).get("loss") or {}
    top1, videos = source["final"]["top1"], source["final"]["videos"]
    low, high = wilson(top1, videos)
    classes = len(settings.classes)
    device = "a GPU" if _cuda() else "the CPU"
    text = (f"**What these numbers are.** The paper's pipeline in miniature, run on {device}: a 12-block VideoMAE "
            f"({config['hidden_size']} wide, {settings.frames} frames of {settings.size} px) is pretrained with masked "
            f"autoencoding for {settings.pretrain_steps} steps on the *source task* ({classes} synthetic actions, "
            f"{settings.source_per_class * 3 // 4} training videos each: the Kinetics role)")
    if loss:
        text += (f" (reconstruction loss {loss['final_loss']:.3f} at the end, against {loss['trivial_loss']:.3f} for "
                 f"the trivial answer that ignores the visible patches: "
                 + ("it learnt from them" if loss["learned"] else "it learnt little from them") + ")")
    text += (f", finetuned on the source task for {settings.source_steps} steps with VideoMAE's stochastic depth "
             f"({settings.source_drop_path:g} at the last block, none at the first, so later blocks are trained to "
             f"be droppable) (source test top-1 "
             f"**{100 * top1:.1f} %** [{100 * low:.1f}, {100 * high:.1f}] on {videos} videos), and exported in "
             f"float16 as released VideoMAE checkpoints are; that checkpoint is scored and pruned. Every job then "
             f"finetunes a pruned copy for {settings.target_steps} steps on the *target task* (the UCF101 role: the "
             f"same {classes} actions in a new scene, {settings.target_train} training videos per class) and is "
             f"evaluated on its {settings.target_test * classes} test videos. The calibration criteria (the peers' "
             f"block influence, angular distance and skip loss) read {settings.calib_clips} source-task clips; the "
             f"healing oracle finetunes the unpruned model on the target task as every job does, then removes each "
             f"block from it and heals it for {settings.heal_steps} steps. This is not the paper's VideoMAE-B "
             f"on UCF101; run the same commands on a real checkpoint and dataset for that (see the README).")
    return text


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def precision_parts(precision: dict) -> list:
    """The precision of the scored checkpoint: exact-value entropy of the float16 export and of its
    float32 original, block by block, with each view's verdict."""
    released, master = precision["released"], precision["master"]
    rows = []
    for i, block in enumerate(released["blocks"]):
        n = released["n_params"][i]
        rows.append([str(block), f"{n:,}", f"{released['views']['stored']['entropy'][i]:.4f}",
                     released["views"]["stored"]["distinct_shown"][i].removesuffix(" %"),
                     f"{master['views']['stored']['entropy'][i]:.4f}",
                     master["views"]["stored"]["distinct_shown"][i].removesuffix(" %")])
    return [("h", 2, "The scored checkpoint: float16, as released VideoMAEs are"),
            ("p", f"Exact-value entropy per block of the float16 export that every criterion scores, and of the "
                  f"float32 weights it was rounded from. Float16: {released['verdict']}. Float32: "
                  f"{master['verdict']}."),
            ("table", ["block", "values", "entropy, float16 (nats)", "distinct, float16 (%)",
                       "entropy, float32 (nats)", "distinct, float32 (%)"], rows)]
