"""Calibration: a few clips (or token sequences) through the model, for the peers' data-aware criteria.

ShortGPT's block influence, Gromov et al.'s angular distance and SLEB's skip loss all score blocks
from a forward pass over a small calibration set instead of from the weights alone. One pass keeps
every block's input hidden state; the cosine statistics of every pair of positions are summed per
batch, so memory holds one batch, not the set. The input a model takes comes from its registered
family (`model_types`: video, image or tokens).
"""
from __future__ import annotations

import math
import tempfile
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import open_checkpoint
from ..errors import GardenerError
from .calibration_data import NEEDS_TASK_LOSS, calibration_batches, check_data, load_model, model_class
from .placement import device_map_of, main_device, preload_whole_blocks
from .sequential import hidden_of as _hidden_of
from .sequential import StoredWeights, load_rest, skeleton
from .settings import CalibOptions


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_first(output, value):
    return (value, *output[1:]) if isinstance(output, tuple) else value


class CalibrationPass:
    """A model, its calibration batches and the stack under study; statistics computed once, on demand.

    h_i is the input of block i (0-based) and h_depth the last block's output: by default as
    `output_hidden_states` returns it (after the final norm in LLaMA- and GPT-2-style decoders, as
    ShortGPT and PruneMe read it), or the block's own output (`last_output="block"`).
    `one_minus_cos[i][j]` is the mean of 1 - cos(h_i, h_j) over every real token (ShortGPT), and
    `angles[i][j]` the mean of arccos(cos(h_i, h_j)) / pi over the tokens `tokens` names: the last
    real token of each sequence for causal LMs (Gromov et al.), the mean over tokens otherwise.
    """

    def __init__(self, path: str | Path, options: CalibOptions, stack: str | None = None, seed: int = 0):
        import torch

        torch.manual_seed(seed)
        check_data(options)
        self.path, self.options, self.seed = Path(path), options, seed
        self.dtype = getattr(torch, options.calib_dtype)  # the pass's weights and pixels
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # inputs, and the statistics
        self.offload = (tempfile.TemporaryDirectory(prefix="gardener-offload-", ignore_cleanup_errors=True)
                        if options.device_map else None)  # a failed removal must not hide the pass's own error
        self.notes: list[str] = []
        try:
            self._load(stack)
            self.batches = calibration_batches(self.model, self.path, options, seed, self.notes)
        except BaseException:
            self.close()  # the offload folder goes with a pass that could not begin
            raise
        self.clips = sum(len(next(iter(b["inputs"].values()))) for b in self.batches)
        self.items = self.batches[0]["items"] if self.batches else 0
        self.last_source = options.last_output
        self.seconds: dict[str, float] = {}

    def _load(self, stack: str | None) -> None:
        """The model (whole, placed by a device map, or with its blocks on the meta device), its stack and blocks."""
        from ..blocks import choose_stack

        options = self.options
        empty = options.sequential or options.device_map is not None  # built on the meta device first
        self.model = skeleton(self.path, model_class(self.path)) if empty else load_model(self.path, options)
        names = [name for name, _ in self.model.named_parameters()]
        named = stack is not None and any(n.startswith(f"{stack}.") for n in names)
        self.stack = choose_stack(names, stack if named else None, where=str(self.path))  # else the default
        if options.device_map is not None:
            placed = device_map_of(self.model, self.stack.name, options)
            self.model, self.device = load_model(self.path, options, Path(self.offload.name), placed), main_device(placed)
            preload_whole_blocks(self.model, self.stack.name)
        self.blocks = self.model.get_submodule(self.stack.name)
        if options.sequential:
            self.checkpoint = StoredWeights(open_checkpoint(self.path), self.model)
            self.checkpoint.check(self.model)
            load_rest(self.model, self.checkpoint, self.stack.name, self.device, dtype=self.dtype)
        self.tokens = self._token_choice(names)

    def _token_choice(self, names: list[str]) -> str:
        """--tokens, else the family's registered choice, else the last token of a causal LM and the mean otherwise."""
        chosen = self.options.tokens or getattr(self.stack.kind.family, "calib_tokens", None) or (
            "last" if _causal(self.model) else "mean")
        if chosen == "cls" and not (any(n.endswith("cls_token") for n in names)
                                    or _input_kind(self.model) == "tokens"):
            raise GardenerError(f"--tokens cls: {self.path} ({self.model.config.model_type}) has no class token; "
                                f"use mean or last")
        return chosen

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @cached_property
    def _pairs(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{token choice: (mean angle, mean 1 - cos)} for every pair of positions, for "mean" and `tokens`."""
        start, depth = time.monotonic(), self.depth
        choices = list(dict.fromkeys(["mean", self.tokens]))
        sums = {c: [np.zeros((depth + 1, depth + 1)), np.zeros((depth + 1, depth + 1)), 0.0] for c in choices}
        if self.options.sequential:
            self._sequential_sums(sums)
        for batch in self.batches if not self.options.sequential else []:
            hidden = self._hidden_states(batch)
            mask = self._mask(batch, hidden[0])
            for choice in choices:
                picked, weight = _pick(hidden, mask, choice)
                for i in range(depth):
                    for j in range(i + 1, depth + 1):
                        _add_pair(sums[choice], i, j, picked[i], picked[j], weight)
                sums[choice][2] += float(weight.sum())
        self.seconds["hidden_states"] = time.monotonic() - start
        self.token_counts = {c: int(n) for c, (_, _, n) in sums.items()}
        return {c: (a / n, o / n) for c, (a, o, n) in sums.items()}

    def _sequential_sums(self, sums: dict) -> None:
        """`_pairs`' sums, block by block (`sequential`): every pair of depths for the tokens a choice picks from
        each sequence (kept at every depth: a few per sequence); pairs up to the span apart for every token."""
        from .sequential import SequentialPass

        window = max(self.options.span, 1) if self.tokens == "mean" else 1
        picked: dict = {c: {} for c in sums if c != "mean"}  # {choice: {(depth, batch): (states, weight)}}

        def visit(j: int, b: int, hidden, earlier: list) -> None:
            hidden = hidden.reshape(hidden.shape[0], -1, hidden.shape[-1])
            mask = self._mask(self.batches[b], hidden)
            for i, before in earlier:
                _add_pair(sums["mean"], i, j, before.reshape(hidden.shape), hidden, mask)
            sums["mean"][2] += float(mask.sum()) if j == 0 else 0.0
            for choice, kept in picked.items():
                states, weight = _pick([hidden], mask, choice)
                for i in range(j):
                    _add_pair(sums[choice], i, j, kept[i, b][0], states[0], weight)
                kept[j, b] = (states[0], weight)
                sums[choice][2] += float(weight.sum()) if j == 0 else 0.0

        SequentialPass(self, self.checkpoint).walk(window, visit)
        far = np.triu(np.ones((self.depth + 1,) * 2, dtype=bool), k=window + 1)
        sums["mean"][0][far] = sums["mean"][1][far] = np.nan  # every token, further apart than read: not computed

    @staticmethod
    def _mask(batch: dict, hidden):
        import torch

        mask = batch["mask"] if batch["mask"] is not None else torch.ones(hidden.shape[:2])
        return mask.to(hidden.device, torch.float32)

    @property
    def angles(self) -> np.ndarray:
        """Mean angular distance between positions, over the tokens angular_distance reads (`tokens`)."""
        return self._pairs[self.tokens][0]

    @property
    def one_minus_cos(self) -> np.ndarray:
        """Mean 1 - cos between positions over every real token: ShortGPT's block influence."""
        return self._pairs["mean"][1]

    def _hidden_states(self, batch: dict) -> list:
        """[input of block 0, ..., input of the last block, its output], each (B, tokens, D), float32."""
        import torch

        kept: list = []
        device = self.device  # where a device map ran each block, the statistics are taken on one device
        hooks = [block.register_forward_pre_hook(lambda m, a, k: kept.append(_hidden_of(a, k).to(device, torch.float32)),
                                                 with_kwargs=True) for block in self.blocks]
        hooks.append(self.blocks[-1].register_forward_hook(lambda m, a, o: kept.append(_first(o).to(device,
                                                                                                  torch.float32))))
        try:
            with torch.no_grad():
                output = self._base_forward(batch, hidden_states=self.options.last_output == "hidden_states")
        finally:
            for hook in hooks:
                hook.remove()
        if self.options.last_output == "hidden_states":
            kept[-1] = self._reported_last(output, kept)
        return [h.reshape(h.shape[0], -1, h.shape[-1]) for h in kept]

    def _reported_last(self, output, kept: list):
        """The last entry of `output_hidden_states` where it reports this stack (its other entries are the blocks'
        inputs), else the block's own output (a stack the model does not report, such as an MAE decoder)."""
        import torch

        reported = getattr(output, "hidden_states", None)
        if (reported is not None and len(reported) == len(kept)
                and all(torch.equal(r.to(self.device, torch.float32), k) for r, k in zip(reported[:-1], kept[:-1]))):
            self.last_source = "hidden_states"
            return reported[-1].to(self.device, torch.float32)
        self.last_source = "block (output_hidden_states does not report this stack)"
        return kept[-1]

    def _inputs(self, batch: dict) -> dict:
        """A batch's inputs on the pass's device, pixels in the pass's dtype (token ids stay integers)."""
        return {k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in batch["inputs"].items()}

    def _base_forward(self, batch: dict, hidden_states: bool = False):
        """The forward that reaches every block on every patch: the base model (no head, no masking)."""
        base = getattr(self.model, "base_model", self.model)
        inputs = self._inputs(batch)
        if hidden_states:
            inputs["output_hidden_states"] = True
        if getattr(base.config, "use_cache", None) is not None:
            inputs["use_cache"] = False  # a decoder would fill a key/value cache nothing reads
        if getattr(base.config, "model_type", "") != "vit_mae":
            return base(**inputs)
        ratio, base.config.mask_ratio = base.config.mask_ratio, 0.0  # every patch, as at finetuning time
        try:
            return base(**inputs, noise=torch_noise(base.config, len(inputs["pixel_values"]), self.seed,
                                                      self.device))
        finally:
            base.config.mask_ratio = ratio

    @cached_property
    def skip_losses(self) -> list[float]:
        """The task loss with each block bypassed (its output replaced by its input), minus the full model's."""
        start = time.monotonic()
        if self.options.sequential:
            from .sequential import SequentialPass

            out = SequentialPass(self, self.checkpoint).skip_losses()
            self.seconds["skip_loss"] = time.monotonic() - start
            return out
        full = self._mean_loss(None)
        out = [self._mean_loss(block) - full for block in self.blocks]
        self.seconds["skip_loss"] = time.monotonic() - start
        return out

    def _mean_loss(self, skipped) -> float:
        """The task loss over the whole calibration set: per predicted token for a causal LM, per clip otherwise."""
        import torch

        hook = None
        if skipped is not None:
            hook = skipped.register_forward_hook(lambda m, a, k, o: _with_first(o, _hidden_of(a, k)), with_kwargs=True)
        try:
            total, weight = 0.0, 0
            with torch.no_grad():
                for batch in self.batches:
                    loss, count = self._loss(batch)
                    total, weight = total + float(loss) * count, weight + count
            return total / weight
        finally:
            if hook is not None:
                hook.remove()

    def _loss(self, batch: dict):
        """(mean loss of the batch, how many predictions it averages)."""
        from ..train.pretrain import tube_mask

        import torch

        inputs = self._inputs(batch)
        name = type(self.model).__name__
        size = len(next(iter(inputs.values())))
        if _causal(self.model):
            mask = inputs["attention_mask"]
            labels = inputs["input_ids"].masked_fill(mask == 0, -100)  # padding is not predicted,
            labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1] == 0, -100)  # nor predicted from
            return self.model(**inputs, labels=labels, use_cache=False).loss, int((labels[:, 1:] != -100).sum())
        if name == "VideoMAEForPreTraining":
            generator = torch.Generator().manual_seed(self.seed)
            mask = tube_mask(size, self.model.config, 0.9, generator)
            return self.model(**inputs, bool_masked_pos=mask.to(self.device)).loss, size
        if name == "ViTMAEForPreTraining":
            noise = torch_noise(self.model.config, size, self.seed, self.device)
            return self.model(**inputs, noise=noise).loss, size
        if name.endswith("Classification") and batch["labels"] is not None:
            logits = self.model(**inputs).logits
            return torch.nn.functional.cross_entropy(logits.float(), batch["labels"].to(logits.device)), size
        why = ("its labels are not the calibration data's classes" if name.endswith("Classification")
               else f"a {name} has no task loss")
        raise GardenerError(f"skip_loss on {self.path}: {why}; {NEEDS_TASK_LOSS}")

    def check_task_loss(self) -> None:
        """Before any pass: a classifier's skip loss needs labels of its own classes in the data."""
        if type(self.model).__name__.endswith("Classification") and any(b["labels"] is None for b in self.batches):
            raise GardenerError(f"skip_loss on {self.path}: its labels are not the calibration data's classes; "
                                f"{NEEDS_TASK_LOSS}")

    def close(self) -> None:
        """Remove the folder a device map offloaded weights to (nothing to do without one)."""
        if self.offload is not None:
            self.offload.cleanup()

    def summary(self) -> dict[str, Any]:
        """What the pass read, the conventions it followed, what it cost, and the span statistics a contiguous
        prune chooses from."""
        token_models = any(b["mask"] is not None for b in self.batches)
        out = {"data": str(self.options.calib_data), "clips": self.clips, "requested": self.options.calib_clips,
               ("sequences" if token_models else "videos"): self.items, "span": self.options.span,
               "stack": self.stack.name, "device": str(self.device), "seed": self.seed,
               "sequential": self.options.sequential, "dtype": self.options.calib_dtype,
               "device_map": _device_map_of(self.model) if self.options.device_map else None,
               "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}
        if token_models:
            out["seq_len"] = self.options.calib_seq_len
        if "hidden_states" in self.seconds:
            out["convention"] = {
                "last_block_output": self.last_source,
                "block_influence": {"tokens": "mean", "tokens_used": self.token_counts["mean"]},
                "angular_distance": {"tokens": self.tokens, "tokens_used": self.token_counts[self.tokens]}}
            out["angles"] = [[None if math.isnan(a) else a for a in row] for row in self.angles.round(6).tolist()]
        if self.notes:
            out["warnings"] = list(self.notes)
        return out


def _device_map_of(model) -> dict[str, str] | None:
    """Where Accelerate put each part of the model ({module: device}), as text; None without a device map."""
    placed = getattr(model, "hf_device_map", None)
    return {name: str(device) for name, device in placed.items()} if placed else None


def _causal(model) -> bool:
    """A causal language model with its head: LLaMA's `...ForCausalLM`, GPT-2's `GPT2LMHeadModel`."""
    return type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))


def _input_kind(model) -> str:
    from ..families import input_kind

    return input_kind(getattr(model.config, "model_type", ""))


def _add_pair(sums: list, i: int, j: int, a, b, weight) -> None:
    """Add the (weighted) arccos(cos)/pi and 1 - cos between hidden states `a` (depth i) and `b` (depth j)."""
    import torch

    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)
    sums[0][i, j] += float(((torch.arccos(cos) / math.pi) * weight).sum())
    sums[1][i, j] += float(((1 - cos) * weight).sum())


def _pick(hidden: list, mask, choice: str) -> tuple[list, Any]:
    """The hidden states at the tokens `choice` names, and the weight of each (padding weighs 0).

    "mean": every token, weighted by the mask; "last": the last real token of each sequence;
    "cls": the first real token (a class token, or BERT's [CLS])."""
    import torch

    if choice == "mean":
        return hidden, mask
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    real = torch.where(mask > 0, positions, -1 if choice == "last" else mask.shape[1])
    index = real.max(dim=1).values if choice == "last" else real.min(dim=1).values
    rows = torch.arange(mask.shape[0], device=mask.device)
    return [h[rows, index].unsqueeze(1) for h in hidden], torch.ones(mask.shape[0], 1, device=mask.device)


def torch_noise(config, batch: int, seed: int, device):
    """ViTMAE's masking noise, fixed by the seed."""
    import torch

    patches = (config.image_size // config.patch_size) ** 2
    return torch.rand(batch, patches, generator=torch.Generator().manual_seed(seed)).to(device)


def contiguous_span(angles: list[list[float]], count: int) -> list[int]:
    """Gromov et al.: the `count` contiguous blocks (1-based) whose input and output are most alike."""
    depth = len(angles) - 1
    if not 1 <= count < depth:
        raise GardenerError(f"cannot remove {count} contiguous blocks of {depth}")
    if any(angles[i][i + count] is None for i in range(depth - count + 1)):
        raise GardenerError(f"the calibration pass measured no angles {count} blocks apart (a sequential pass over "
                            f"every token measures them up to --span apart): give --span {count}")
    start = min(range(depth - count + 1), key=lambda i: (angles[i][i + count], i))
    return list(range(start + 1, start + count + 1))
