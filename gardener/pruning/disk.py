"""Cut blocks out of a checkpoint on disk and write it in its own format, with a manifest of what was done.

No model is built: tensors are renamed (kept blocks renumbered 0..k-1) and copied one by one; an
HF directory gets its config cut to the kept blocks and its side files copied.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..blocks import Stack, select_stack
from ..checkpoint import TORCH_SUFFIXES, Checkpoint, open_checkpoint
from ..checkpoint.tensors import is_parameter_dtype
from ..cost import gflops_pair
from ..errors import GardenerError, SettingError
from ..families import depth_disagreement, shorten_config
from ..fileio import atomic_dir, atomic_file, check_output, write_text
from ..manifest import manifest, prehash
from ..oserrors import check_space
from ..scoring import ScoreSettings
from .choose import decide
from .plan import renamer
from .settings import Cut, WriteOptions
from .write import copy_side_files, parse_size, renamed_tensors, write_hf_weights, write_safetensors, write_torch_state


def prune_checkpoint(path: str | Path, out: str | Path, cut: Cut, settings: ScoreSettings = ScoreSettings(),
                     write: WriteOptions = WriteOptions(), *, arguments: dict | None = None) -> dict:
    """Remove the blocks `cut` names (ranked by `settings`) and write the checkpoint in its own format: to
    the folder `out`, or for a single-file input to the file `out` when it is named like one (manifest
    beside it, as NAME.gardener.json). `arguments` are recorded in the manifest.

    Returns the manifest: removed/kept blocks and tensors, parameters, GFLOPs, what was dropped and
    why the ranking may not be decided by the weights.
    """
    ckpt, out = open_checkpoint(path), Path(out)
    chosen = select_stack(ckpt, settings.stack, settings.block_pattern)
    inputs = ckpt.as_inputs(path) + (settings.calib.inputs() if settings.calib else []) + (
        [("the ranking", cut.ranking)] if cut.ranking else [])
    sidecar = _output(ckpt, out, write.force, inputs)
    shard_bytes = parse_size(write.max_shard_size)
    odd = depth_disagreement(ckpt.config, chosen.kind, chosen.name, chosen.depth)
    if odd and odd.missing:
        raise GardenerError(f"{path}: {odd}; fix config.json or the weights before pruning")
    prehash(ckpt.files)
    decision = decide(ckpt, chosen, cut, settings.check())
    record = {"source": str(Path(path).resolve()), "stack": chosen.name, "family": chosen.kind.name,
              "how": decision.plan.how, **decision.chosen_by, **_blocks_record(decision.plan, chosen.depth)}
    info, tensors = _tensors_record(ckpt, chosen, record, ([str(odd)] if odd else []) + decision.warnings)
    needed = sum(t[4] for t in tensors)
    check_space(out.parent if str(out.parent) else Path("."), needed, "the pruned checkpoint")
    head = manifest("prune", ckpt.files, {k: (str(v) if isinstance(v, Path) else v)
                                          for k, v in (arguments or {}).items()})
    if sidecar is not None:
        with atomic_file(sidecar, write.force) as meta, atomic_file(out, write.force, needed) as weights:  # weights first
            info = {**head, **info, **_write_single(ckpt, weights, tensors)}
            meta.write_text(json.dumps(info, indent=2) + "\n")
        return info
    with atomic_dir(out, write.force, needed) as tmp:
        if ckpt.format == "hf-dir":
            info.update(_write_hf(ckpt, tmp, chosen, record, tensors, shard_bytes, write))
            info["warnings"] += [f"not copied: {item}" for item in info["skipped_files"]]
        else:
            info.update(_write_single(ckpt, tmp / ckpt.path.name, tensors))
        info = {**head, **info}
        write_text(tmp / "gardener.json", json.dumps(info, indent=2) + "\n")
    return info


def _blocks_record(plan, depth: int) -> dict:
    return {"removed_blocks": plan.removed, "kept_blocks": plan.kept, "removed_indices": [b - 1 for b in plan.removed],
            "depth_before": depth, "depth_after": len(plan.kept)}


def _tensors_record(ckpt: Checkpoint, chosen: Stack, record: dict, warnings: list[str]) -> tuple[dict, list]:
    """The manifest (before anything is written: `record`, parameters, tensors removed, warnings) and the
    renamed tensors to write."""
    family = chosen.kind.family
    rename = renamer(chosen.name, record["kept_blocks"], family.carry if family else None)
    tensors = renamed_tensors(ckpt, rename)
    prefix = ckpt.torch_file.prefix if ckpt.torch_file else ""
    info = {**record, "params_before": ckpt.num_params, "params_after": sum(math.prod(t[2]) for t in tensors if is_parameter_dtype(t[1])),
            "removed_tensors": [prefix + n for n in ckpt.names() if rename(n) is None],
            "warnings": list(dict.fromkeys(ckpt.warnings + warnings))}
    if ckpt.format == "torch":
        info["dropped_entries"] = []
    return info, tensors


def _output(ckpt: Checkpoint, out: Path, force: bool, inputs: list) -> Path | None:
    """Check where a prune writes; returns the manifest path when a single file is written, else None.

    A file in gives a file out when `out` names a checkpoint file (its manifest beside it, as
    NAME.gardener.json); otherwise `out` is a folder. No input is ever replaced, written into or
    put inside the output (`check_output`).
    """
    if ckpt.format == "hf-dir" or out.suffix not in (".safetensors", *TORCH_SUFFIXES):
        check_output(out, inputs, force, "out")
        return None
    if (out.suffix == ".safetensors") != (ckpt.format == "safetensors"):
        wanted = ".safetensors" if ckpt.format == "safetensors" else "/".join(TORCH_SUFFIXES)
        raise SettingError("out", f"{out}: the input {ckpt.path.name} is a {ckpt.format} file; name the output "
                                  f"{wanted} (the same format), or give a folder")
    sidecar = out.with_name(f"{out.name}.gardener.json")
    check_output(out, inputs, force, "out")
    check_output(sidecar, inputs, force, "out")
    return sidecar


def _write_hf(ckpt: Checkpoint, tmp: Path, chosen: Stack, record: dict, tensors: list, shard_bytes: int,
              write: WriteOptions) -> dict:
    """A pruned HF directory: weights, side files, the config cut to the kept blocks; its GFLOPs."""
    config = shorten_config(ckpt.config or {}, chosen.kind, chosen.name, record["kept_blocks"])
    config["gardener"] = record
    write_hf_weights(tmp, tensors, shard_bytes)
    _, skipped = copy_side_files(ckpt.path, tmp, skip=["config.json"])
    write_text(tmp / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return {**gflops_pair(ckpt.config, config, write.spec, record["removed_blocks"], chosen.kind.depth_field,
                          chosen.name),
            "skipped_files": skipped}


def _write_single(ckpt: Checkpoint, path: Path, tensors: list) -> dict:
    """One safetensors or PyTorch file; for PyTorch, the entries that had to be dropped."""
    if ckpt.format == "safetensors":
        write_safetensors(path, [t[:4] for t in tensors])
        return {}
    return {"dropped_entries": write_torch_state(path, tensors, ckpt.torch_file)}
