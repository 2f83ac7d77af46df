"""Calibration block by block, for a model larger than memory (`--calib-sequential`).

The model is built with the parameters of its blocks on the meta device (no memory); the rest (embeddings, final
norm, head) is read from the checkpoint. The model's own forward, with each block replaced by a stand-in that
passes its input on, records what every block receives (hidden states, attention masks, position embeddings), so
the model's code, not gardener's, builds them. Then block by block: its weights are read from the checkpoint,
every batch goes through it (no key/value cache, SDPA attention), the statistics the criteria need are taken from
its input and output, and it goes back to the meta device before the next one is read. Peak memory: one block's
weights and the calibration set's hidden states at two depths (span + 1 of them when a span is read over every
token). The figures are the whole-model pass's (tested).
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..checkpoint import Checkpoint
from ..errors import GardenerError
from .placement import attention_of


def skeleton(path: Path, cls):
    """The model of `cls` from the checkpoint's config, every parameter on the meta device (buffers real)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    with init_empty_weights(include_buffers=False):
        model = cls._from_config(config, attn_implementation=attention_of(cls))
    return model.eval()


class StoredWeights:
    """A checkpoint's tensors under the names the model gives them, as transformers' own loading names them: it adds
    or strips the base model's prefix (a LlamaModel checkpoint read as a LlamaForCausalLM), and transformers 5 renames
    some keys (VideoMAE's `q_bias` is its `query.bias`, ViT's `encoder.layer` its `layers`). The pass reads each
    weight under the key it is stored as. Keys transformers 5 merges into one parameter as it loads them (fused
    experts) cannot be read one block at a time: `check` says so before any work."""

    def __init__(self, ckpt: Checkpoint, model):
        self.ckpt, self.path = ckpt, ckpt.path
        self.keys, self.merged = _renamed(model, ckpt.names())

    def names(self):
        """The model's names of the stored tensors (a set-like view)."""
        return self.keys.keys()

    def check(self, model) -> None:
        """The one-line error, before any pass, where a parameter of the model is made by merging stored tensors."""
        merged = [n for n, _ in model.named_parameters() if n not in self.keys and n in self.merged]
        if merged:
            raise GardenerError(f"{self.path}: {merged[0]}{f' (and {len(merged) - 1} more)' if merged[1:] else ''} "
                                f"is stored as separate tensors that transformers merges as it loads them; the "
                                f"sequential calibration pass reads stored tensors one block at a time: run the "
                                f"whole-model pass, or --calib-device-map")

    def tensor(self, name: str, dtype):
        """The stored tensor behind the model's `name`, as torch in `dtype` (bfloat16 arrives as raw bits)."""
        import torch

        key = self.keys[name]
        t = torch.from_numpy(np.array(self.ckpt.read(key)))
        return (t.view(torch.bfloat16) if self.ckpt.info(key).dtype == "BF16" else t).to(dtype)


def _renamed(model, keys: list[str]) -> tuple[dict[str, str], set[str]]:
    """({the model's name: the stored key}, {names made by merging stored keys}), as transformers loads them."""
    meta = dict(model.state_dict())  # decides whether a stored key lacks the base model's prefix, or has one too many
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # transformers 4: keys as stored, but for the base model's prefix
        return {_prefixed(key, model.base_model_prefix, meta): key for key in keys}, set()
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    out: dict[str, str] = {}
    merged: set[str] = set()
    for key in keys:
        name, converted = rename_source_key(key, renamings, converters, model.base_model_prefix, meta)
        if converted is None:
            out.setdefault(name, key)
        else:
            merged.add(name)
    return out, merged


def _prefixed(key: str, prefix: str, names: dict) -> str:
    """A stored key as the model names it: with the base model's prefix added or stripped where only that fits."""
    if key in names or not prefix:
        return key
    if f"{prefix}.{key}" in names:
        return f"{prefix}.{key}"
    return key[len(prefix) + 1:] if key.startswith(f"{prefix}.") and key[len(prefix) + 1:] in names else key


def load_weights(model, weights: StoredWeights, names: list[str], device, dtype=None) -> None:
    """The named parameters of `model` from the checkpoint, onto `device` in the torch `dtype` (the pass's, whatever
    the config's; None: float32); an error naming one it lacks."""
    from accelerate.utils import set_module_tensor_to_device

    stored = weights.names()
    lacking = [n for n in names if n not in stored]
    if lacking:
        raise GardenerError(f"{weights.path}: holds no {lacking[0]}{f' (nor {len(lacking) - 1} more)' if lacking[1:] else ''}"
                            f", which the sequential calibration pass reads")
    import torch

    for name in names:
        value = weights.tensor(name, dtype or torch.float32)
        set_module_tensor_to_device(model, name, device, value=value, dtype=value.dtype)


def load_rest(model, ckpt: StoredWeights, stack: str, device, head: bool = False, dtype=None) -> None:
    """Every parameter the base model's forward reads outside the blocks (embeddings, final norm); a head (an LM's
    vocabulary-wide projection: as large as a block, read by skip_loss alone) too where `head`, else it stays on
    the meta device."""
    base = getattr(model, "base_model", model)
    prefix = "" if base is model or head else f"{model.base_model_prefix}."
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)
             if n.startswith(prefix) and not n.startswith(f"{stack}.")]
    stored, params = set(ckpt.names()), dict(model.named_parameters(remove_duplicate=False))
    load_weights(model, ckpt, [n for n in names if n in stored and params[n].device.type == "meta"], device, dtype)
    model.tie_weights()
    load_weights(model, ckpt, [n for n, p in model.named_parameters() if n in names and p.device.type == "meta"],
                 device, dtype)  # none left, or the error naming it


class _Reached(Exception):
    """The first block was reached and what it receives recorded: the rest of the forward is not run."""


def _stand_in(original):
    """A module to take a block's place in the model's forward. Its `role` says what it does there: "pass" its
    input on, "stop" the forward once it has recorded what it receives (in `seen`), or give `value`. It is a
    subclass of the block's class and keeps its plain attributes, so a model that records its blocks' outputs by
    class (transformers 5 hooks them once per model) or reads e.g. `attention_type` treats it as the block; one
    stand-in serves a block for the whole pass, so hooks put on it stay."""
    import torch

    def forward(self, *args, **kwargs):
        if self.role == "stop":
            self.seen.append((args, kwargs))
            raise _Reached
        hidden = self.value if self.role == "value" else hidden_of(args, kwargs)
        return (hidden,) if self.as_tuple else hidden

    kind = type(original)
    module = object.__new__(type(f"StandIn{kind.__name__}", (kind,), {"forward": forward}))
    torch.nn.Module.__init__(module)
    for key, value in vars(original).items():
        if not key.startswith("_") and isinstance(value, (str, int, float, bool)):
            setattr(module, key, value)
    module.role, module.as_tuple, module.seen, module.value = "pass", False, [], None
    return module


def _replaced(blocks, stand_ins: list, run: Callable[[], None]) -> None:
    """Run `run` (without gradients) with the blocks' places taken by `stand_ins`, and put the blocks back."""
    import torch

    originals = list(blocks)
    try:
        for k, module in enumerate(stand_ins):
            blocks[k] = module
        with torch.no_grad():
            run()
    finally:
        for k, module in enumerate(originals):
            blocks[k] = module


class _Store:
    """Hidden states by (depth or stream, batch) in a folder: one batch's in memory at a time, whatever the set's
    size."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, depth: int | str, batch: int) -> Path:
        return self.folder / f"{depth}-{batch}.pt"

    def put(self, depth: int | str, batch: int, hidden) -> None:
        import torch

        torch.save(hidden, self._path(depth, batch))

    def get(self, depth: int | str, batch: int):
        import torch

        return torch.load(self._path(depth, batch), weights_only=True)

    def drop(self, depth: int) -> None:
        for path in self.folder.glob(f"{depth}-*.pt"):
            path.unlink()


class SequentialPass:
    """A calibration pass depth by depth, one block's weights in memory at a time (see the module's docstring)."""

    def __init__(self, calib, ckpt: StoredWeights):
        self.calib, self.ckpt, self.blocks = calib, ckpt, calib.blocks
        self.stack, self.device, self.dtype = calib.stack.name, calib.device, calib.dtype
        self.stand_ins = [_stand_in(b) for b in self.blocks]

    def _cast(self, as_tuple: bool, roles: dict[int, str]) -> None:
        """Give every stand-in its role for the next forward ("pass" where `roles` names none)."""
        for k, module in enumerate(self.stand_ins):
            module.role, module.as_tuple, module.seen = roles.get(k, "pass"), as_tuple, []

    def _entry(self, index: int, batch: dict, as_tuple: bool) -> tuple[tuple, dict]:
        """What block `index` receives for `batch`: the model's forward with stand-ins passing the input on up to
        it (its masks and position embeddings are the model's own, whatever they are per block)."""
        def run():
            try:
                self.calib._base_forward(batch)
            except _Reached:
                return
            raise GardenerError(f"{self.ckpt.path}: the model's forward never reached block {index + 1} of its "
                                f"stack {self.stack!r}")
        self._cast(as_tuple, {index: "stop"})
        _replaced(self.blocks, self.stand_ins, run)
        return self.stand_ins[index].seen[0]

    def _reported_last(self, batch: dict, last, as_tuple: bool):
        """The last entry of `output_hidden_states` made from the last block's output (e.g. after a final norm),
        where the model reports this stack; else None."""
        self._cast(as_tuple, {len(self.blocks) - 1: "value"})
        self.stand_ins[-1].value = last.to(self.dtype)  # as the whole model's last block gives it
        reported: list = []
        _replaced(self.blocks, self.stand_ins, lambda: reported.append(
            getattr(self.calib._base_forward(batch, hidden_states=True), "hidden_states", None)))
        states = reported[0]
        return states[-1].float() if states is not None and len(states) == len(self.blocks) + 1 else None

    def _through(self, index: int, batch: dict, hidden, as_tuple: bool, report: bool = True) -> tuple[object, bool]:
        """Block `index` (its weights loaded) on one batch: its output (float32; the last block's as `last_output`
        asks, where `report`), and whether it returns a tuple."""
        import torch

        args, kwargs = self._entry(index, batch, as_tuple)
        block, hidden = self.blocks[index], hidden.to(self.dtype)  # stored in float32, exactly
        with torch.no_grad():
            raw = block(hidden, *args[1:], **kwargs) if args else block(**{**kwargs, "hidden_states": hidden})
        as_tuple = isinstance(raw, (tuple, list))
        out = (raw[0] if as_tuple else raw).float()
        if report and index == len(self.blocks) - 1 and self.calib.options.last_output == "hidden_states":
            reported = self._reported_last(batch, out, as_tuple)
            self.calib.last_source = ("hidden_states" if reported is not None
                                      else "block (output_hidden_states does not report this stack)")
            out = out if reported is None else reported
        return out, as_tuple

    def walk(self, window: int, visit: Callable) -> None:
        """visit(depth, batch number, hidden states, earlier) from depth 0 (the first block's input) to the
        stack's depth (its output, as `last_output` asks), every batch at one depth before the next; `earlier`
        holds the same batch's (depth, hidden states) at the `window` depths before. Hidden states wait on disk."""
        batches = self.calib.batches
        with tempfile.TemporaryDirectory(prefix="gardener-hidden-") as folder:
            store, as_tuple = _Store(Path(folder)), False
            for b, batch in enumerate(batches):
                hidden = hidden_of(*self._entry(0, batch, as_tuple)).float()
                store.put(0, b, hidden)
                visit(0, b, hidden, [])
            for index in range(len(self.blocks)):
                with self._holding(index):
                    for b, batch in enumerate(batches):
                        out, as_tuple = self._through(index, batch, store.get(index, b), as_tuple)
                        earlier = [(i, store.get(i, b)) for i in range(max(index + 1 - window, 0), index + 1)]
                        store.put(index + 1, b, out)
                        visit(index + 1, b, out, earlier)
                store.drop(index + 1 - window)

    @contextmanager
    def _holding(self, index: int) -> Iterator[None]:
        """Block `index`'s weights read from the checkpoint for the time of the `with`, then sent back to the meta
        device and their memory returned before the next block is read."""
        block = self.blocks[index]
        names = [f"{self.stack}.{index}.{n}" for n, _ in block.named_parameters()]
        load_weights(self.calib.model, self.ckpt, names, self.device, self.dtype)
        try:
            yield
        finally:
            block.to("meta")
            _give_back_freed_memory()

    def skip_losses(self) -> list[float]:
        """SLEB's skip loss block by block: beside the full model's hidden states, one stream per block already
        passed in which that block was skipped (its input went on); each block runs on every stream, and the
        model's own head and loss end each stream. Streams wait on disk, one batch's in memory at a time."""
        batches, depth = self.calib.batches, len(self.blocks)
        load_rest(self.calib.model, self.ckpt, self.stack, self.device, head=True, dtype=self.dtype)
        with tempfile.TemporaryDirectory(prefix="gardener-streams-") as folder:
            store, as_tuple = _Store(Path(folder)), False
            for b, batch in enumerate(batches):
                store.put("full", b, hidden_of(*self._entry(0, batch, as_tuple)).float())
            for index in range(depth):
                with self._holding(index):
                    for b, batch in enumerate(batches):
                        full = store.get("full", b)
                        for k in range(index):
                            store.put(k, b, self._through(index, batch, store.get(k, b), as_tuple, report=False)[0])
                        store.put(index, b, full)  # block `index` skipped: its input goes on
                        out, as_tuple = self._through(index, batch, full, as_tuple, report=False)
                        store.put("full", b, out)
            losses = [self._mean_loss(store, stream, as_tuple) for stream in ["full", *range(depth)]]
        return [loss - losses[0] for loss in losses[1:]]

    def _mean_loss(self, store: _Store, stream: int | str, as_tuple: bool) -> float:
        """The task loss over the calibration set with `stream`'s last hidden states as the stack's output."""
        total, weight = 0.0, 0
        for b, batch in enumerate(self.calib.batches):
            self._cast(as_tuple, {len(self.blocks) - 1: "value"})
            self.stand_ins[-1].value = store.get(stream, b).to(self.dtype)
            measured: list = []
            _replaced(self.blocks, self.stand_ins, lambda: measured.append(self.calib._loss(batch)))
            loss, count = measured[0]
            total, weight = total + float(loss) * count, weight + count
        return total / weight


def _give_back_freed_memory() -> None:
    """Return the C heap's free memory to the system (glibc's malloc_trim): without it, the heap left fragmented by
    one block's arrays after another grew the peak RSS by about 3 MB a block (measured; flat with it)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to do
        pass


def hidden_of(args: tuple, kwargs: dict):
    """The hidden states a block is called with (its first argument, or the `hidden_states` keyword)."""
    return args[0] if args else kwargs["hidden_states"]
