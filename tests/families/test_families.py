"""Model families are registered descriptions: each is found from its keys, a new one plugs in from
outside the package, and staged models (Swin) are pruned within a stage."""
from __future__ import annotations

import json

import pytest
import torch
import transformers as T
from safetensors.torch import save_file

import gardener
from gardener import families
from gardener.blocks import find_stacks
from gardener.families import Family, StackKind
from gardener.info import checkpoint_info
from gardener.pruning import Cut, prune_checkpoint
from gardener.scoring import ScoreSettings


def _second_block(kind: StackKind) -> str:
    match = kind.key.match(kind.example)
    return f"{match.group('stack')}.1.{match.group('param')}"


@pytest.mark.parametrize("kind", families.kinds(), ids=lambda k: f"{k.family.name}:{k.name}:{k.role}")
def test_every_registered_stack_kind_is_found_from_its_example(kind):
    assert kind.example, f"{kind.name}: a registered stack kind names an example key"
    stacks = find_stacks([kind.example, _second_block(kind)])
    assert len(stacks) == 1
    assert (stacks[0].kind, stacks[0].depth, stacks[0].kind.role) == (kind, 2, kind.role)


def test_generic_is_the_last_fallback_whatever_registers_after_it():
    assert families.families()[-1].name == "generic"


# --- a made-up family, registered from outside the package --------------------------------------
CELLS = Family(
    "cellnet", "a made-up model whose blocks are `trunk.layers.N.`",
    stacks=(StackKind("cellnet", r"(?P<stack>trunk\.layers)\.(?P<index>\d+)", "encoder", "num_cells",
                      per_layer=("cell_kinds",), example="trunk.layers.0.mix.weight"),),
    fused=(("mix.weight", 0),),
    renumber=lambda block, position, config: setattr(block, "position", position),
)


class CellNet(torch.nn.Module):
    def __init__(self, depth: int = 4):
        super().__init__()
        self.config = type("Config", (), {"num_cells": depth, "cell_kinds": [f"k{i}" for i in range(depth)]})()
        self.trunk = torch.nn.Module()
        self.trunk.layers = torch.nn.ModuleList(torch.nn.Linear(6, 6) for _ in range(depth))
        for cell in self.trunk.layers:
            cell.mix = torch.nn.Linear(6, 6)


@pytest.fixture
def cellnet():
    families.register(CELLS)
    yield CELLS
    families.unregister("cellnet")


def test_a_family_registered_from_outside_wins_over_generic(cellnet, tmp_path):
    model = CellNet()
    before = find_stacks([n for n, _ in model.named_parameters()])
    assert [(s.name, s.kind.name, s.depth) for s in before] == [("trunk.layers", "cellnet", 4)]
    families.unregister("cellnet")
    assert find_stacks([n for n, _ in model.named_parameters()])[0].kind.name == "generic"


def test_a_registered_family_scores_prunes_a_folder_and_cuts_its_config_lists(cellnet, tmp_path):
    model = CellNet()
    src = tmp_path / "cells"
    src.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(src / "model.safetensors"))
    (src / "config.json").write_text(json.dumps({"num_cells": 4, "cell_kinds": ["a", "b", "c", "d"]}))
    result = gardener.score(src, ["l1"])
    assert (result.stack, result.stack_kind, result.depth) == ("trunk.layers", "cellnet", 4)
    info = prune_checkpoint(src, tmp_path / "out", Cut(blocks=(2, 3)))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["num_cells"], config["cell_kinds"]) == (2, ["a", "d"])
    assert info["family"] == "cellnet" and info["depth_after"] == 2


def test_a_registered_family_drops_blocks_in_memory_with_its_own_fix_up(cellnet):
    model, record = gardener.prune_model(CellNet(), remove=[1, 3])
    assert record["family"] == "cellnet" and len(model.trunk.layers) == 2
    assert [cell.position for cell in model.trunk.layers] == [0, 1]
    assert (model.config.num_cells, model.config.cell_kinds) == (2, ["k1", "k3"])


def test_a_registered_family_splits_its_fused_matrix(cellnet):
    import numpy as np

    parts = families.split_fused("trunk.layers.0.mix.weight", np.arange(18.0).reshape(6, 3))
    assert [p.shape for p in parts] == [(2, 3)] * 3


# --- Swin: each stage is a stack -----------------------------------------------------------------
def _swin() -> torch.nn.Module:
    torch.manual_seed(0)
    config = T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 3], num_heads=[2, 2],
                          window_size=2, num_labels=3)
    return T.SwinForImageClassification(config).eval()


def test_swin_stages_are_stacks_and_downsampling_is_no_block(tmp_path):
    _swin().save_pretrained(tmp_path / "swin")
    info = checkpoint_info(tmp_path / "swin")
    assert [(s["name"], s["family"], s["depth"]) for s in info["stacks"]] == [
        ("swin.encoder.layers.0.blocks", "swin-stage", 2), ("swin.encoder.layers.1.blocks", "swin-stage", 3)]
    assert info["stack"] == "swin.encoder.layers.1.blocks"  # the deepest stage by default


def test_swin_prunes_within_a_stage_and_the_file_and_memory_copies_agree(tmp_path):
    stage = "swin.encoder.layers.1.blocks"
    _swin().save_pretrained(tmp_path / "swin")
    info = prune_checkpoint(tmp_path / "swin", tmp_path / "small", Cut(blocks=(2,)), ScoreSettings(stack=stage))
    assert any("shifted windows" in w for w in info["warnings"])
    assert info["gflops_after"] < info["gflops_before"]
    reloaded, loading = T.SwinForImageClassification.from_pretrained(tmp_path / "small", output_loading_info=True)
    assert reloaded.config.depths == [2, 2] and not loading["missing_keys"]
    in_memory, _ = gardener.prune_model(_swin(), remove=[2], stack=stage)
    assert in_memory.config.depths == [2, 2]
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(pixels).logits, in_memory(pixels).logits, atol=1e-5)


# --- every registered family with a tiny instance: real transformers models ---------------------
def _depth(config: dict, stack) -> int:
    value = config[stack.kind.depth_field]
    stage = stack.kind.stage(stack.name)
    return value[stage] if stage is not None else value


def _ours(names, family) -> list:
    return sorted((s for s in find_stacks(list(names)) if s.kind.family is family), key=lambda s: s.name)


@pytest.mark.parametrize("family", [f for f in families.families() if f.tiny], ids=lambda f: f.name)
def test_every_registered_family_reads_and_prunes_a_real_model_of_its_kind(tmp_path, family):
    """Stacks found in memory and on disk (transformers 5 may save other names than its modules),
    depths equal the config's, and a pruned copy loads without a missing or unexpected key."""
    torch.manual_seed(0)
    model = T.AutoModel.from_config(T.AutoConfig.for_model(**family.tiny))
    model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    on_disk, in_memory = _ours(gardener.open_checkpoint(tmp_path / "model").names(), family), \
        _ours(model.state_dict(), family)
    assert on_disk and in_memory, f"{family.name}: a {family.tiny['model_type']} model is not read as this family"
    assert [s.depth for s in on_disk] == [_depth(config, s) for s in on_disk] == \
        [len(model.get_submodule(s.name)) for s in in_memory]
    last = on_disk[-1]
    prune_checkpoint(tmp_path / "model", tmp_path / "small", Cut(blocks=(last.depth,)), ScoreSettings(stack=last.name))
    small, loading = T.AutoModel.from_pretrained(tmp_path / "small", output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"]
    assert _depth(small.config.to_dict(), last) == last.depth - 1
    assert len(small.get_submodule(_ours(small.state_dict(), family)[-1].name)) == last.depth - 1


# --- T5: the first block holds the stack's relative position bias --------------------------------
def test_t5_keeps_its_position_bias_when_the_first_block_goes(tmp_path):
    torch.manual_seed(0)
    model = T.AutoModel.from_config(T.AutoConfig.for_model(**families.get("t5").tiny))
    model.save_pretrained(tmp_path / "t5")
    prune_checkpoint(tmp_path / "t5", tmp_path / "small", Cut(blocks=(1,)), ScoreSettings(stack="decoder.block"))
    small, loading = T.AutoModel.from_pretrained(tmp_path / "small", output_loading_info=True)
    assert not loading["missing_keys"] and len(small.decoder.block) == 2
    bias = "layer.0.SelfAttention.relative_attention_bias.weight"
    assert torch.equal(small.decoder.block[0].state_dict()[bias], model.decoder.block[0].state_dict()[bias])
    with pytest.raises(gardener.GardenerError, match="first block holds its relative position bias"):
        gardener.prune_model(model, remove=[1], stack="decoder.block")
    assert len(model.decoder.block) == 3  # refused before anything changed
    assert len(gardener.prune_model(model, remove=[2], stack="decoder.block")[0].decoder.block) == 2
