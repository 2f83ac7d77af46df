"""Where a calibration pass runs and in what precision: Accelerate's big-model placement of a model larger than one
GPU (`--calib-device-map`: every GPU, then CPU memory, then disk, within `--calib-max-memory`) and the pass's dtype.

The checks come before any model loads; the placement is computed on the model built on the meta device, with a
block never split between devices, and an offloaded block loads all its weights as it begins (`preload_whole_blocks`).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GardenerError
from .settings import CALIB_DTYPES, DEVICE_MAPS, CalibOptions


def check_placement(options: CalibOptions) -> None:
    """The pass's precision and placement, before any model loads."""
    if options.calib_dtype not in CALIB_DTYPES:
        raise GardenerError(f"--calib-dtype {options.calib_dtype!r}: expected one of {', '.join(CALIB_DTYPES)}")
    if options.device_map is not None and options.device_map not in DEVICE_MAPS:
        raise GardenerError(f"--calib-device-map {options.device_map!r}: expected one of {', '.join(DEVICE_MAPS)}")
    if options.device_map is not None and options.sequential:
        raise GardenerError("--calib-device-map and --calib-sequential: choose one (a device map keeps every block "
                            "somewhere at once; the sequential pass holds one block at a time)")
    if options.max_memory is not None and options.device_map is None:
        raise GardenerError("--calib-max-memory limits what --calib-device-map places on each device: give both")
    memory_limits(options.max_memory)


def placement_kwargs(options: CalibOptions, offload: Path | None, device_map: dict | None) -> dict:
    """from_pretrained's arguments for a calibration pass: its dtype (`torch_dtype` before transformers 4.56), and
    where a device map puts each module, with the folder for those it sends to disk."""
    import torch
    import transformers
    from packaging.version import Version

    dtype = getattr(torch, options.calib_dtype)
    out: dict = {"dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype": dtype}
    if device_map is not None:
        out.update(device_map=device_map, offload_folder=str(offload) if offload else None)
    return out


def device_map_of(model, blocks: str, options: CalibOptions) -> dict:
    """Accelerate's big-model placement of `model` (built on the meta device) as `options.device_map` asks: every
    GPU, then CPU memory, then disk, within `max_memory`; "auto" and "balanced" spread the blocks evenly over the
    GPUs, "balanced_low_0" leaves GPU 0 room, "sequential" fills one GPU after another. A block is never split
    between devices (the class of `blocks`' members is kept whole, beside the model's own `_no_split_modules`, which
    not every model class declares)."""
    import torch
    from accelerate.utils import get_balanced_memory, infer_auto_device_map

    whole = sorted({type(model.get_submodule(blocks)[0]).__name__, *(getattr(model, "_no_split_modules", None) or [])})
    dtype, memory = getattr(torch, options.calib_dtype), memory_limits(options.max_memory)
    model = model.to(dtype)  # sized as the pass holds it, not as stored (Accelerate counts the smaller of the two)
    model.tie_weights()  # a head that shares the embeddings' weights goes where they go
    if options.device_map != "sequential":
        memory = get_balanced_memory(model, memory, no_split_module_classes=whole, dtype=dtype,
                                     low_zero=options.device_map == "balanced_low_0")
    placed = infer_auto_device_map(model, memory, no_split_module_classes=whole, dtype=dtype)
    if set(placed.values()) == {"disk"}:
        raise GardenerError(f"--calib-max-memory {options.max_memory!r}: no device may hold even the model's first "
                            f"part (its embeddings); give more memory, or run --calib-sequential")
    return placed


def memory_limits(text: str | None) -> dict | None:
    """--calib-max-memory "0=70GiB,1=70GiB,cpu=100GiB" as Accelerate's max_memory ({0: "70GiB", ..., "cpu": ...});
    None for none, and the one-line error for a malformed one or a device this machine lacks."""
    if text is None:
        return None  # before the imports: every `score` checks its placement, calibration or not
    import torch
    from accelerate.utils import convert_file_size_to_int

    gpus, limits = torch.cuda.device_count(), {}
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    for part in text.split(","):
        device, _, size = (piece.strip() for piece in part.partition("="))
        key = int(device) if device.isascii() and device.isdigit() else device
        try:
            ok = (isinstance(key, int) or key in ("cpu", "mps")) and convert_file_size_to_int(size) > 0
        except ValueError:
            ok = False
        if not ok:
            raise GardenerError(f"--calib-max-memory {text!r}: expected DEVICE=SIZE pairs separated by commas, DEVICE "
                                f"a GPU number, cpu or mps, e.g. 0=70GiB,1=70GiB,cpu=100GiB")
        if key in limits:
            raise GardenerError(f"--calib-max-memory {text!r}: names {device} twice")
        if (isinstance(key, int) and key >= gpus) or (key == "mps" and not mps):
            seen = f"{gpus} GPU{'s' if gpus != 1 else ''}" + (" and MPS" if mps else "")
            what = f"GPU {key}" if isinstance(key, int) else "MPS device"
            raise GardenerError(f"--calib-max-memory {text!r}: this machine has no {what} (it has {seen})")
        limits[key] = size
    return limits


def main_device(placed: dict):
    """Where a placed model takes its inputs and the pass takes its statistics: the first accelerator the map
    names (Accelerate's main device), else the CPU."""
    import torch

    first = next((d for d in placed.values() if d != "disk" and torch.device(_device_text(d)).type != "cpu"), "cpu")
    return torch.device(_device_text(first))


def _device_text(device) -> str | object:
    """A device map's value as torch reads it: a GPU number is that CUDA device (Accelerate's maps use no other)."""
    return f"cuda:{device}" if isinstance(device, int) else device


def attention_of(cls) -> str:
    """SDPA attention where the model class has it (no attention matrix kept), else eager (Swin V2, and under
    transformers 4 Swin and T5)."""
    return "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"


def preload_whole_blocks(model, blocks: str) -> None:
    """Give each offloaded block of the stack `blocks` one Accelerate hook that loads all its weights as the block
    begins and frees them as it ends (Accelerate's `preload_module_classes`), in place of a hook on each of its
    modules that holds weights. Those load a module's weights only when the module itself is called, and some blocks
    read a child's weights without calling it (VideoMAE's attention under transformers 4 reads `self.key.weight`):
    offloaded to disk, it computed with uninitialised memory (measured: NaN scores). Blocks held where they run have
    no such hooks and are left as they are."""
    from accelerate.hooks import attach_align_device_hook, remove_hook_from_submodules

    for index, block in enumerate(model.get_submodule(blocks)):
        hooks = [m._hf_hook for m in block.modules() if getattr(m, "_hf_hook", None) is not None]
        offloaded = [h for h in hooks if getattr(h, "offload", False) and h.weights_map is not None]
        if not offloaded:
            continue
        hook = offloaded[0]  # every one of them reads the model's offloaded weights through a prefix of its name
        remove_hook_from_submodules(block)
        attach_align_device_hook(block, execution_device=hook.execution_device, offload=True,
                                 weights_map=hook.weights_map.dataset, module_name=f"{blocks}.{index}",
                                 skip_keys=hook.skip_keys, preload_module_classes=[type(block).__name__],
                                 tied_params_map=hook.tied_params_map)
