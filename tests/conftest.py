"""Tiny real checkpoints of every supported layout, built from configs and written to disk."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T
from safetensors.torch import save_file

D, I, DEPTH = 32, 64, 4  # hidden size, MLP size, blocks: small enough for milliseconds


def _vit_kwargs(**extra):
    return dict(hidden_size=D, num_hidden_layers=DEPTH, num_attention_heads=2, intermediate_size=I, **extra)


CONFIGS = {
    "videomae": (T.VideoMAEForVideoClassification, lambda: T.VideoMAEConfig(
        **_vit_kwargs(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, num_labels=3))),
    "videomae_pretrain": (T.VideoMAEForPreTraining, lambda: T.VideoMAEConfig(
        **_vit_kwargs(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, decoder_num_hidden_layers=2,
                      decoder_hidden_size=D, decoder_num_attention_heads=2, decoder_intermediate_size=I))),
    "vitmae": (T.ViTMAEForPreTraining, lambda: T.ViTMAEConfig(
        **_vit_kwargs(image_size=32, patch_size=16, decoder_num_hidden_layers=2, decoder_hidden_size=D,
                      decoder_num_attention_heads=2, decoder_intermediate_size=I))),
    "vit": (T.ViTForImageClassification, lambda: T.ViTConfig(**_vit_kwargs(image_size=32, patch_size=16))),
    "dinov2": (T.Dinov2Model, lambda: T.Dinov2Config(hidden_size=D, num_hidden_layers=DEPTH, num_attention_heads=2,
                                                     mlp_ratio=I // D, image_size=32, patch_size=16)),
    "bert": (T.BertModel, lambda: T.BertConfig(**_vit_kwargs(vocab_size=50))),
    "llama": (T.LlamaForCausalLM, lambda: T.LlamaConfig(**_vit_kwargs(num_key_value_heads=1, vocab_size=50))),
}


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped, with the reason, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def run_cli(*args) -> int:
    """`gardener ARGS...` in this process; its exit code."""
    from gardener.cli import main

    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    return stop.value.code


def cli(args: list, capsys) -> tuple[int, str, str]:
    """`gardener ARGS...` in this process: (exit code, stdout, stderr) of this command alone."""
    from gardener.cli import main

    capsys.readouterr()  # only this command's output
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def one_line_error(err: str) -> str:
    """A refusal's stderr: exactly one line, `error: ...`, returned."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def build_hf(name: str, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised tiny transformers model of the named family."""
    cls, make_config = CONFIGS[name]
    torch.manual_seed(seed)
    return cls(make_config()).eval()


def llama_with_trained_norms() -> torch.nn.Module:
    """A tiny LLaMA whose norm weights are far from one (a trained model's final norm rescales each feature)."""
    model = build_hf("llama")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=torch.Generator().manual_seed(len(name))) * 3)
    return model


# where each family keeps its block list in memory (transformers 5 moved ViT's to `vit.layers`)
_VIT_LAYERS = "vit.layers" if int(T.__version__.split(".")[0]) >= 5 else "vit.encoder.layer"
IN_MEMORY_STACK = {"videomae": "videomae.encoder.layer", "vit": _VIT_LAYERS, "vitmae": _VIT_LAYERS,
                   "dinov2": "encoder.layer", "bert": "encoder.layer", "llama": "model.layers"}


def skip_layers(model: torch.nn.Module, stack_path: str, kept: list[int]) -> torch.nn.Module:
    """Reference: the original model calling only the kept layers (1-based), in order.

    Layer indices are left stale, so a LLaMA reference must run without a KV cache.
    """
    parent_path, _, attr = stack_path.rpartition(".")
    parent = model.get_submodule(parent_path)
    setattr(parent, attr, torch.nn.ModuleList([getattr(parent, attr)[i - 1] for i in kept]))
    model.config.num_hidden_layers = len(kept)
    return model


def model_inputs(name: str) -> dict:
    """Fixed inputs for a tiny model of the named family (ViTMAE gets fixed masking noise)."""
    gen = torch.Generator().manual_seed(0)
    if name.startswith("videomae"):
        return {"pixel_values": torch.randn(1, 4, 3, 32, 32, generator=gen)}
    if name in ("vit", "dinov2"):
        return {"pixel_values": torch.randn(1, 3, 32, 32, generator=gen)}
    if name == "vitmae":
        return {"pixel_values": torch.randn(1, 3, 32, 32, generator=gen), "noise": torch.rand(1, 4, generator=gen)}
    ids = {"input_ids": torch.randint(0, 50, (1, 7), generator=gen)}
    return {**ids, "use_cache": False} if name == "llama" else ids


def output_of(outputs) -> torch.Tensor:
    """The tensor to compare: logits where the model has a head, else the last hidden state."""
    return outputs["logits"] if "logits" in outputs else outputs["last_hidden_state"]


def save_hf(model: torch.nn.Module, path: Path, dtype: torch.dtype | None = None, **kwargs) -> Path:
    """save_pretrained, optionally in another precision."""
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(path, **kwargs)
    return path


# original VideoMAE name -> HF VideoMAE name, per block (fused qkv is built separately)
ORIGINAL_TO_HF = {
    "attn.q_bias": "attention.attention.query.bias", "attn.v_bias": "attention.attention.value.bias",
    "attn.proj.weight": "attention.output.dense.weight", "attn.proj.bias": "attention.output.dense.bias",
    "mlp.fc1.weight": "intermediate.dense.weight", "mlp.fc1.bias": "intermediate.dense.bias",
    "mlp.fc2.weight": "output.dense.weight", "mlp.fc2.bias": "output.dense.bias",
    "norm1.weight": "layernorm_before.weight", "norm1.bias": "layernorm_before.bias",
    "norm2.weight": "layernorm_after.weight", "norm2.bias": "layernorm_after.bias",
}


def _original_blocks(sd: dict, hf_stack: str, original_stack: str, depth: int) -> dict[str, torch.Tensor]:
    out = {}
    for i in range(depth):
        h, b = f"{hf_stack}.{i}.", f"{original_stack}.{i}."
        att = h + "attention.attention."
        out[b + "attn.qkv.weight"] = torch.cat([sd[att + "query.weight"], sd[att + "key.weight"],
                                                sd[att + "value.weight"]])
        for orig, hf in ORIGINAL_TO_HF.items():
            legacy = hf.replace("query.bias", "q_bias").replace("value.bias", "v_bias")
            out[b + orig] = sd[h + hf] if h + hf in sd else sd[h + legacy]  # transformers 4 names q_bias/v_bias
    return out


def original_videomae_state(hf_model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The original (timm-style) VideoMAE layout of an HF VideoMAE model: fused qkv, q_bias/v_bias,
    `fc_norm` and `head` for a classifier, `norm` for an encoder without mean pooling."""
    sd = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    out = {f"{prefix}patch_embed.proj.{p}": sd[f"videomae.embeddings.patch_embeddings.projection.{p}"]
           for p in ("weight", "bias")}
    out.update(_original_blocks(sd, "videomae.encoder.layer", f"{prefix}blocks", hf_model.config.num_hidden_layers))
    for hf, orig in (("videomae.layernorm", "norm"), ("fc_norm", "fc_norm"), ("classifier", "head")):
        out.update({f"{prefix}{orig}.{p}": sd[f"{hf}.{p}"] for p in ("weight", "bias") if f"{hf}.{p}" in sd})
    return out


def original_pretrain_state(hf_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The original VideoMAE pretraining layout of an HF VideoMAEForPreTraining: `encoder.blocks.N.`,
    `decoder.blocks.N.`, `encoder_to_decoder`, `mask_token`, decoder norm and head."""
    sd = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    state = original_videomae_state(hf_model, prefix="encoder.")
    state.update(_original_blocks(sd, "decoder.decoder_layers", "decoder.blocks",
                                  hf_model.config.decoder_num_hidden_layers))
    for name in ("encoder_to_decoder.weight", "mask_token", "decoder.norm.weight", "decoder.norm.bias",
                 "decoder.head.weight", "decoder.head.bias"):
        state[name] = sd[name]
    return state


@pytest.fixture
def videomae_dir(tmp_path: Path) -> Path:
    """An HF VideoMAE classification directory in float16, as the paper's checkpoint."""
    return save_hf(build_hf("videomae"), tmp_path / "videomae", dtype=torch.float16)


@pytest.fixture
def original_pth(tmp_path: Path) -> Path:
    """An original-layout VideoMAE finetuned checkpoint, nested under 'model' as the authors ship it."""
    path = tmp_path / "videomae_original.pth"
    torch.save({"model": original_videomae_state(build_hf("videomae")), "epoch": 3}, path)
    return path


def write_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(path))
    return path


def random_values(n: int, seed: int = 0, dup_every: int = 7) -> np.ndarray:
    """float32 weights with exact duplicates, zeros of both signs and a wide range."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(n) * 0.05).astype(np.float32)
    w[::dup_every] = w[1]
    w[3::11] = 0.0
    w[5::13] = -0.0
    return w


# --- video data -------------------------------------------------------------------------------

VIDEO_CLASSES = ("red_to_blue", "blue_to_red", "green_to_red", "red_to_green")


@pytest.fixture(scope="session")
def video_root(tmp_path_factory) -> Path:
    """Class folders of small synthetic .mp4 videos (10 per class, 16 frames, 32 px) and one corrupt file."""
    from gardener.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("videos") / "data"
    write_dataset(root, per_class=10, frames=16, size=32, seed=0, classes=VIDEO_CLASSES)
    (root / "blue_to_red" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return root


def tiny_videomae(path: Path, seed: int = 0, depth: int = 2, **overrides) -> Path:
    """A random tiny VideoMAE classifier for 8-frame 32 px clips (patch 8), non-zero q/v biases."""
    config = T.VideoMAEConfig(image_size=32, patch_size=8, num_frames=8, tubelet_size=2, hidden_size=32,
                              num_hidden_layers=depth, num_attention_heads=2, intermediate_size=64, num_labels=2,
                              **overrides)
    torch.manual_seed(seed)
    model = T.VideoMAEForVideoClassification(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("query.bias", "value.bias", "q_bias", "v_bias")):
                p.normal_(0, 0.1)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tiny_videomae(tmp_path_factory.mktemp("models") / "tiny")


QUICK_CLIPS = dict(sampling_rate=2, test_clips=1, test_crops=1, min_crop_scale=0.3)  # finetune's clip options


def quick_recipe(**overrides):
    """A finetuning recipe of a few steps on `tiny_model_dir`, saved every 2 steps."""
    from gardener.train import Recipe

    base = dict(batch_size=4, max_steps=4, warmup_steps=1, base_lr=0.1, layer_decay=1.0, drop_path=0.0,
                classifier_dropout=0.0, save_every=2)
    return Recipe(**{**base, **overrides})


def on_small_disk(tmp_path: Path, script: str, kib: int) -> dict:
    """Run the Python `script` with a real file system of `kib` KiB at the path `DISK` (a tmpfs mounted in a
    private mount namespace, so that a full disk is a real ENOSPC); returns the JSON its last line prints.
    Skips where this machine cannot mount one (neither root nor unprivileged user namespaces), and fails
    there instead when GARDENER_REQUIRE_SMALL_DISK is set (CI sets it)."""
    import subprocess
    import sys
    import textwrap

    disk = tmp_path / "disk"
    disk.mkdir(exist_ok=True)
    code = tmp_path / "on_small_disk.py"
    code.write_text(f"import json, sys\nfrom pathlib import Path\nDISK = Path({str(disk)!r})\n"
                    + textwrap.dedent(script))
    mount = f"mount -t tmpfs -o size={kib}k tmpfs {disk} || exit 97; exec {sys.executable} {code}"
    tried = []
    for prefix in (["unshare", "-rm"], ["unshare", "-m"]):
        try:
            done = subprocess.run([*prefix, "sh", "-c", mount], capture_output=True, text=True, timeout=900)
        except FileNotFoundError:  # no unshare
            tried.append("no unshare command")
            break
        if done.returncode == 0:
            return json.loads(done.stdout.strip().splitlines()[-1])
        if done.returncode != 97 and not done.stderr.startswith("unshare:"):
            raise AssertionError(f"the script failed:\n{done.stdout}\n{done.stderr}")
        tried.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "mount refused")
    why = f"cannot mount a small file system here ({'; '.join(tried)})"
    if os.environ.get("GARDENER_REQUIRE_SMALL_DISK"):  # CI: the full-disk tests must run, not skip
        raise AssertionError(why)
    pytest.skip(why)


def job_result(job, **fields) -> dict:
    """What a job writes as its result.json: the given fields (top1 0.5 unless given) and the job's identity
    (id, removed blocks, seed, settings), which `gardener.experiments.validation` checks."""
    from dataclasses import asdict

    return {"top1": 0.5, **fields, "id": job.id, "removed": list(job.removed), "seed": job.finetune_seed,
            "settings": asdict(job.settings)}


def markdown_table(text: str, first_header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose first header cell is `first_header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def markdown_records(text: str, first_header: str) -> list[dict[str, str]]:
    """The same table as dicts keyed by header (a repeated header gets a numeric suffix: p, p2)."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {first_header} |"))
    headers, seen = [], {}
    for cell in (c.strip() for c in line.strip("|").split("|")):
        seen[cell] = seen.get(cell, 0) + 1
        headers.append(cell if seen[cell] == 1 else f"{cell}{seen[cell]}")
    return [dict(zip(headers, row)) for row in markdown_table(text, first_header)]


WORDS = ["[UNK]", "<s>"] + [f"w{i}" for i in range(40)]  # ids 0..41: within the tiny text models' 50


def save_word_tokenizer(path: Path) -> None:
    """A word-level tokenizer of WORDS that starts every text with <s>, saved beside a model as transformers
    saves one."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    T.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>").save_pretrained(path)


def tiny_llama_with_text(root: Path, documents: int, test_documents: int) -> tuple[Path, Path]:
    """A tiny LLaMA of 3 blocks over the formal language's words (its tokenizer beside it) in ROOT/llama, and the
    language's text in ROOT/corpus (make-data --text)."""
    import shutil

    from gardener.data.synthetic_text import VOCABULARY, write_text_corpus

    corpus = root / "corpus"
    write_text_corpus(corpus, documents=documents, test_documents=test_documents, seed=0)
    torch.manual_seed(0)
    config = T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                           num_key_value_heads=1, vocab_size=len(VOCABULARY), max_position_embeddings=64)
    model_dir = root / "llama"
    T.LlamaForCausalLM(config).save_pretrained(model_dir)
    for tokenizer_file in (corpus / "tokenizer").iterdir():
        shutil.copy2(tokenizer_file, model_dir / tokenizer_file.name)
    return model_dir, corpus


@pytest.fixture(scope="session")
def llama_and_tokens(tmp_path_factory):
    """A tiny LLaMA (4 blocks) with norm weights far from one, and token sequences of different lengths."""
    model = llama_with_trained_norms()
    folder = tmp_path_factory.mktemp("llama")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(10):
        ids = rng.integers(2, 50, int(rng.integers(4, 10))).tolist()
        lines.append({"input_ids": ids + [0] * (9 - len(ids)), "attention_mask": [1] * len(ids) + [0] * (9 - len(ids))})
    (folder / "tokens.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return save_hf(model, folder / "llama"), folder / "tokens.jsonl"


@pytest.fixture(scope="session")
def classifier(tmp_path_factory):
    """A tiny VideoMAE classifier of the test videos' classes."""
    config = T.VideoMAEConfig(image_size=32, patch_size=8, num_frames=8, tubelet_size=2, hidden_size=32,
                              num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                              id2label=dict(enumerate(VIDEO_CLASSES)),
                              label2id={c: i for i, c in enumerate(VIDEO_CLASSES)})
    torch.manual_seed(0)
    return save_hf(T.VideoMAEForVideoClassification(config).eval(), tmp_path_factory.mktemp("calib") / "clf")
