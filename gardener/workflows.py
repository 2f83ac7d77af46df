"""Library functions behind the commands that write files: score outputs and the demo."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .blocks import find_stacks, select_stack
from .checkpoint import TORCH_SUFFIXES, open_checkpoint
from .calibration import CalibOptions, contiguous_span
from .cost import InputSpec, flop_breakdown
from .errors import GardenerError
from .export import DEFAULT_SHARD_BYTES, copy_side_files, parse_size, renamed_tensors, write_hf_weights, \
    write_safetensors, write_torch_state
from .fileio import atomic_dir, atomic_file, check_output, write_text
from .manifest import manifest, prehash
from .families import depth_disagreement, shorten_config
from .oserrors import check_space
from .pruning import count_for_ratio, parse_blocks, plan, renamer
from .scoring import ScoreResult, score


def csv_sidecar(path: Path) -> Path:
    """Where a scores CSV's metadata goes: NAME.meta.json beside NAME.csv."""
    return Path(path).with_name(f"{Path(path).stem}.meta.json")


OUTPUT_FLAGS = {"json": "--json", "csv": "--csv", "plot": "--plot"}


def check_outputs(outputs: dict[str, Path | None], force: bool, inputs: list | None = None) -> None:
    """Fail before any work if an output touches an input, exists (without force) or cannot be written."""
    for key, path in outputs.items():
        if path is not None:
            check_output(Path(path), inputs or [], force, OUTPUT_FLAGS.get(key, key))
            if key == "csv":
                check_output(csv_sidecar(path), inputs or [], force, "--csv")


def _jsonable(arguments: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in arguments.items()}


def write_score_outputs(result: ScoreResult, outputs: dict[str, Path | None], force: bool,
                        arguments: dict[str, Any] | None = None, inputs: list | None = None) -> list[Path]:
    """Write the JSON / CSV / PNG outputs that were asked for; returns the paths written.

    `inputs` (files or (file, label) pairs to hash) defaults to the scored checkpoint's files.
    """
    from .report.figures import weight_histograms
    from .report.tables import csv_metadata, to_csv, to_json

    if not any(outputs.values()):
        return []
    inputs = inputs if inputs is not None else result.files
    meta = manifest("scores", inputs, _jsonable(arguments or {}))
    written = []
    if outputs.get("json"):
        written.append(write_text(outputs["json"], to_json(result, meta), force))
    if outputs.get("csv"):
        written.append(write_text(outputs["csv"], to_csv(result), force))
        written.append(write_text(csv_sidecar(outputs["csv"]), csv_metadata(result, meta), force))
    if outputs.get("plot"):
        written.append(weight_histograms(result.to_dict(), outputs["plot"], force=force))
    return written


def score_checkpoint(path: str | Path, outputs: dict[str, Path | None], *, force: bool = False,
                     precision: bool = False, arguments: dict | None = None, **score_args) -> tuple[ScoreResult,
                                                                                                   list[Path]]:
    """`score`: check the outputs can be written, score every block, add the precision report when
    asked (in `result.meta["precision"]`), and write the outputs; returns the result and the paths."""
    from .precision import precision_report

    ckpt = open_checkpoint(path)
    calib = score_args.get("calib")
    check_outputs(outputs, force, ckpt.as_inputs(path) + (calib.inputs() if calib else []))
    histograms = outputs.get("plot") is not None or outputs.get("json") is not None
    result = score(ckpt, histograms=histograms, **score_args)
    if precision:
        keys = ("stack", "block_pattern", "params", "workers")
        result.meta["precision"] = precision_report(path, **{k: score_args[k] for k in keys if k in score_args})
    return result, write_score_outputs(result, outputs, force, arguments=arguments)


def tiny_videomae_config(depth: int = 12, hidden: int = 64):
    """A small VideoMAE: 12 blocks so the paper's pruning ratios map one block to one ratio."""
    from transformers import VideoMAEConfig

    return VideoMAEConfig(image_size=64, patch_size=16, num_frames=8, tubelet_size=2, hidden_size=hidden,
                          num_hidden_layers=depth, num_attention_heads=4, intermediate_size=4 * hidden,
                          num_labels=5)


def _removal_order(ckpt, chosen_stack, criterion: str, ranking_file: Path | None, **score_args
                   ) -> tuple[list, dict, ScoreResult]:
    """Block numbers least-important first, from a scores file or by scoring now; their scores; the result."""
    if ranking_file is not None:
        ranked = ScoreResult.load(ranking_file)
        name = ranked.primary
        if ranked.depth != chosen_stack.depth or ranked.stack != chosen_stack.name:
            raise GardenerError(f"--ranking {ranking_file}: ranks {ranked.depth} blocks of stack {ranked.stack!r}, "
                                f"but this checkpoint's stack {chosen_stack.name!r} has {chosen_stack.depth}")
        other = ranking_source_differs(ranked, ckpt)
        if other:
            ranked.meta.setdefault("warnings", []).append(f"--ranking {ranking_file}: {other}")
    else:
        ranked, name = score(ckpt, [criterion], primary=criterion, stack=chosen_stack.name, **score_args), criterion
    return ranked.removal_order(name), {"criterion": name, "scores": ranked.scores[name],
                                        "dtype_view": ranked.dtype_view}, ranked


def ranking_source_differs(ranked: ScoreResult, ckpt) -> str | None:
    """Why a ranking file was not made from this checkpoint, by the hashes it records (a `score --json`
    manifest's inputs, or an oracle file's source hash); None when it was, or when it records none."""
    from .manifest import file_record, source_hash

    meta = ranked.meta or {}
    recorded = sorted(i.get("sha256") for i in meta.get("inputs", []) if isinstance(i, dict))
    if recorded:
        if recorded == sorted(file_record(f)["sha256"] for f in ckpt.files):
            return None
    elif meta.get("source_hash"):
        if meta["source_hash"] == source_hash(ckpt.files):
            return None
    else:
        return None
    return (f"was computed on another checkpoint (its recorded sha256 differs from {ckpt.path}'s); its block "
            f"numbers are used as they are")


def _output(ckpt, out: Path, force: bool, inputs: list) -> Path | None:
    """Check where a prune writes; returns the manifest path when a single file is written, else None.

    A file in gives a file out when -o names a checkpoint file (its manifest beside it, as
    NAME.gardener.json); otherwise -o is a folder. No input is ever replaced, written into or
    put inside the output (`check_output`).
    """
    if ckpt.format == "hf-dir" or out.suffix not in (".safetensors", *TORCH_SUFFIXES):
        check_output(out, inputs, force)
        return None
    if (out.suffix == ".safetensors") != (ckpt.format == "safetensors"):
        wanted = ".safetensors" if ckpt.format == "safetensors" else "/".join(TORCH_SUFFIXES)
        raise GardenerError(f"-o {out}: the input {ckpt.path.name} is a {ckpt.format} file; name the output "
                            f"{wanted} (the same format), or give a folder")
    sidecar = out.with_name(f"{out.name}.gardener.json")
    check_output(out, inputs, force)
    check_output(sidecar, inputs, force)
    return sidecar


def prune_checkpoint(path: str | Path, out: str | Path, *, ratio: float | None = None, remove: int | None = None,
                     blocks: str | None = None, zero_based: bool = False, criterion: str = "entropy",
                     ranking: Path | None = None, protect: str | None = None, dtype: str = "stored",
                     stack: str | None = None, block_pattern: str | None = None, force: bool = False,
                     max_shard_size: str | int = DEFAULT_SHARD_BYTES, spec: InputSpec = InputSpec(),
                     seed: int = 0, aggregate: str = "mean", arguments: dict | None = None,
                     contiguous: bool = False, calib: CalibOptions | None = None) -> dict:
    """Remove blocks from a checkpoint and write it in its own format: to the folder `out`, or for
    a single-file input to the file `out` when it is named like one (manifest beside it).

    `contiguous` removes the span of blocks whose input and output are most alike (Gromov et
    al.; `criterion` angular_distance, with `calib` data) instead of the lowest-ranked blocks.

    Returns the manifest (removed/kept blocks and tensors, parameters, GFLOPs, what was dropped
    and why the ranking may not be decided by the weights).
    """
    ckpt = open_checkpoint(path)
    out = Path(out)
    chosen = select_stack(ckpt, stack, block_pattern)
    inputs = ckpt.as_inputs(path) + (calib.inputs() if calib else []) + ([("the ranking", ranking)] if ranking else [])
    sidecar = _output(ckpt, out, force, inputs)
    shard_bytes = parse_size(max_shard_size)
    odd = depth_disagreement(ckpt.config, chosen.family, chosen.name, chosen.depth)
    if odd and odd.missing:
        raise GardenerError(f"{path}: {odd}; fix config.json or the weights before pruning")
    prehash(ckpt.files)
    decision, chosen_by, warnings = _decide(ckpt, chosen, ratio=ratio, remove=remove, blocks=blocks,
                                            zero_based=zero_based, criterion=criterion, ranking=ranking,
                                            protect=protect, contiguous=contiguous, dtype=dtype,
                                            block_pattern=block_pattern, seed=seed, aggregate=aggregate, calib=calib)
    record = {"source": str(Path(path).resolve()), "stack": chosen.name, "family": chosen.family.name,
              "how": decision.how, **chosen_by, "removed_blocks": decision.removed, "kept_blocks": decision.kept,
              "removed_indices": [b - 1 for b in decision.removed], "depth_before": chosen.depth,
              "depth_after": len(decision.kept)}
    rename = renamer(chosen.name, decision.kept, chosen.family.family.carry if chosen.family.family else None)
    tensors = renamed_tensors(ckpt, rename)
    prefix = ckpt.torch_file.prefix if ckpt.torch_file else ""
    info = {**record, "params_before": ckpt.num_params, "params_after": sum(math.prod(t[2]) for t in tensors),
            "removed_tensors": [prefix + n for n in ckpt.names() if rename(n) is None],
            "warnings": list(dict.fromkeys(ckpt.warnings + ([str(odd)] if odd else []) + warnings))}
    if ckpt.format == "torch":
        info["dropped_entries"] = []
    needed = sum(t[4] for t in tensors)
    check_space(out.parent if str(out.parent) else Path("."), needed, "the pruned checkpoint")
    head = manifest("prune", ckpt.files, _jsonable(arguments or {}))
    if sidecar is not None:
        with atomic_file(sidecar, force) as meta, atomic_file(out, force, needed) as weights:  # weights land first
            info = {**head, **info, **_write_single(ckpt, weights, tensors)}
            meta.write_text(json.dumps(info, indent=2) + "\n")
        return info
    with atomic_dir(out, force, needed) as tmp:
        if ckpt.format == "hf-dir":
            info.update(_write_hf(ckpt, tmp, chosen, decision, tensors, record, shard_bytes, spec))
            info["warnings"] += [f"not copied: {item}" for item in info["skipped_files"]]
        else:
            info.update(_write_single(ckpt, tmp / ckpt.path.name, tensors))
        info = {**head, **info}
        write_text(tmp / "gardener.json", json.dumps(info, indent=2) + "\n")
    return info


def _decide(ckpt, chosen, *, ratio, remove, blocks, zero_based, criterion, ranking, protect, contiguous,
            **score_args):
    """The prune plan, how its blocks were chosen, and the warnings that go with it."""
    keep_safe = parse_blocks(protect, chosen.depth, zero_based, "--protect") if protect else []
    explicit = parse_blocks(blocks, chosen.depth, zero_based) if blocks is not None else None
    order, chosen_by, ranked = None, {}, None
    if contiguous and (explicit is not None or ranking is not None):
        raise GardenerError(f"--contiguous chooses its own span of blocks; leave out "
                            f"{'--blocks' if explicit is not None else '--ranking'} (give --ratio or --remove)")
    if contiguous and criterion != "angular_distance":
        raise GardenerError(f"--contiguous removes the span --criterion angular_distance finds (with --calib-data); "
                            f"got --criterion {criterion}")
    if explicit is None:
        order, chosen_by, ranked = _removal_order(ckpt, chosen, criterion, ranking, **score_args)
    if contiguous:
        count = count_for_ratio(ratio, chosen.depth) if ratio is not None else remove
        chosen_by["angles"] = ranked.meta["calibration"]["angles"]  # span distances, in the manifest
        explicit, ratio, remove = contiguous_span(chosen_by["angles"], count or 0), None, None
    decision = plan(chosen.depth, ratio=ratio, remove=remove, blocks=explicit, removal_order=order,
                    protect=keep_safe, criterion=chosen_by.get("criterion"))
    if contiguous:
        decision = dataclasses.replace(decision, how=f"contiguous span of {len(explicit)} (angular distance)")
    warnings = (ranked.meta.get("warnings", []) + ranked.caveats(chosen_by["criterion"], decision.removed)
                if ranked is not None else [])
    family = chosen.family.family
    return decision, chosen_by, warnings + ([family.warning] if family and family.warning else [])


def _write_hf(ckpt, tmp: Path, chosen, decision, tensors: list, record: dict, max_shard_size, spec: InputSpec
              ) -> dict:
    """A pruned HF directory: weights, side files, the config cut to the kept blocks; its GFLOPs."""
    config = shorten_config(ckpt.config or {}, chosen.family, chosen.name, decision.kept)
    config["gardener"] = record
    write_hf_weights(tmp, tensors, max_shard_size)
    _, skipped = copy_side_files(ckpt.path, tmp, skip=["config.json"])
    write_text(tmp / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return {**_gflops_pair(ckpt.config, config, spec, decision.removed, chosen.family.depth_field, chosen.name),
            "skipped_files": skipped}


def _write_single(ckpt, path: Path, tensors: list) -> dict:
    """One safetensors or PyTorch file; for PyTorch, the entries that had to be dropped."""
    if ckpt.format == "safetensors":
        write_safetensors(path, [t[:4] for t in tensors])
        return {}
    return {"dropped_entries": write_torch_state(path, tensors, ckpt.torch_file)}


def _safe_gflops(config: dict | None, spec: InputSpec) -> tuple[float | None, str | None]:
    """GFLOPs of a config, or None and the reason when there is none or it cannot be built."""
    total, _, note = _safe_breakdown(config, spec)
    return total, note


def _safe_breakdown(config: dict | None, spec: InputSpec) -> tuple[float | None, dict, str | None]:
    if not config:
        return None, {}, "no config.json"
    try:
        return (*flop_breakdown(config, spec), None)
    except GardenerError as exc:
        return None, {}, str(exc)
    except Exception as exc:  # noqa: BLE001 - a model transformers cannot build must not stop the command
        return None, {}, f"{exc.__class__.__name__}: {exc}"[:300]


def _gflops_pair(before: dict | None, after: dict, spec: InputSpec, removed: list[int], depth_field: str | None,
                 stack: str | None = None) -> dict:
    """GFLOPs before and after a prune (1-based `removed` blocks), with the input they were counted for.

    When the pruned stack is found among the counted base model's block lists (by name, or as
    its only list of the encoder's depth), the pruned count is the full count minus the removed
    blocks' own FLOPs; otherwise it is counted anew.
    """
    value, blocks, note = _safe_breakdown(before, spec)
    pair = {"gflops_before": value, "gflops_after": None, "gflops_input": asdict(spec)}
    if value is None:
        return {**pair, "gflops_note": note}
    depth = (before or {}).get(depth_field) if depth_field == "num_hidden_layers" else None
    matching = [per_block for per_block in blocks.values() if len(per_block) == depth]
    named = [blocks[n] for n in (stack, (stack or "").partition(".")[2]) if n in blocks]  # base model: no head prefix
    matching = named[:1] or matching
    if len(matching) == 1 and max(removed, default=0) <= len(matching[0]):  # (a config that counts fewer
        pair["gflops_after"] = value - sum(matching[0][b - 1] for b in removed)  # blocks is counted anew)
    else:
        pair["gflops_after"] = _safe_gflops(after, spec)[0]
    return pair


def checkpoint_info(path: str | Path, stack: str | None = None, block_pattern: str | None = None,
                    spec: InputSpec = InputSpec()) -> dict:
    """Depth, stacks, parameters and GFLOPs of any checkpoint."""
    ckpt = open_checkpoint(path)
    chosen = select_stack(ckpt, stack, block_pattern)
    stacks = [{"name": s.name, "family": s.family.name, "role": s.family.role, "depth": s.depth}
              for s in find_stacks(ckpt.names(), block_pattern)]
    result = {"path": str(path), "format": ckpt.format, "stack": chosen.name, "depth": chosen.depth,
              "stacks": stacks, "params": ckpt.num_params,
              "dtypes": sorted({ckpt.info(n).dtype for n in ckpt.names()})}
    odd = depth_disagreement(ckpt.config, chosen.family, chosen.name, chosen.depth)
    if odd and odd.missing:  # a count would be of blocks the weights do not hold
        result["gflops"], note = None, f"config.json disagrees with the weights on {chosen.name}'s depth"
    else:
        result["gflops"], note = _safe_gflops(ckpt.config, spec)
    if note:
        result["gflops_note"] = note
    result["warnings"] = list(ckpt.warnings) + ([str(odd)] if odd else [])
    return result
