"""The conventions a command-line user expects: --version, -h, shell completion, commands grouped by subject,
Click's placeholders, machine-readable listings, and help that names only options that exist."""
from __future__ import annotations

import json
import re
from importlib import metadata

import pytest
import torch
import typer
from conftest import build_hf, cli, one_line_error, save_hf

import gardener
from gardener import families
from gardener.cli import app
from gardener.cost import InputSpec
from gardener.families import Family, StackKind
from gardener.info import checkpoint_info
from gardener.train.pretrain import PretrainRecipe

GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)
GLOBAL_FLAGS = {"--help", "--version", "--threads", "--install-completion", "--show-completion"}
PANELS = {"weights": "Weights", "training": "Training", "experiments": "Experiments", "cluster": "Cluster"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
GARDENER_CODE = re.compile(r"`gardener ([a-z-]+)([^`]*)`")  # `gardener score --json`: a flag of another command


@pytest.fixture
def wide(monkeypatch):
    """Help rendered 1000 columns wide: no help text is wrapped, so a quoted command stays on one line."""
    monkeypatch.setenv("COLUMNS", "1000")


def help_of(args: list[str], capsys) -> str:
    code, out, err = cli([*args, "--help"], capsys)
    assert code == 0, err
    return out


def usage_of(shown: str) -> str:
    return next(line.strip() for line in shown.splitlines() if line.strip().startswith("Usage:"))


def flags_of(name: str) -> set[str]:
    """Every long flag the command `name` accepts (both halves of --x/--no-x)."""
    params = GROUP.commands[name].params
    return {o for p in params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}


# --- --version -----------------------------------------------------------------------------------------
def test_version_flag_prints_gardeners_version_with_torch_and_transformers_and_exits_0(capsys):
    code, out, _ = cli(["--version"], capsys)
    assert code == 0
    assert out.strip() == (f"gardener {gardener.__version__} (torch {metadata.version('torch')}, "
                           f"transformers {metadata.version('transformers')})")


def test_the_version_command_still_lists_every_library(capsys):
    code, out, _ = cli(["version"], capsys)
    assert code == 0 and f"torch {metadata.version('torch')}" in out and "numpy " in out


# --- -h ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_dash_h_shows_the_same_help_as_dash_dash_help(name, capsys):
    args = [name] if name else []
    code, short, _ = cli([*args, "-h"], capsys)
    assert code == 0 and "Usage: gardener" in short
    assert short == help_of(args, capsys)


def test_no_option_of_any_command_takes_dash_h_for_itself():
    for name, command in GROUP.commands.items():
        assert not [p.name for p in command.params if "-h" in p.opts], name


# --- shell completion ----------------------------------------------------------------------------------
def test_completion_can_be_installed_and_completes_command_names_and_flags(capsys, monkeypatch):
    shown = help_of([], capsys)
    assert "--install-completion" in shown and "--show-completion" in shown
    monkeypatch.setenv("_GARDENER_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "gardener fam")
    monkeypatch.setenv("COMP_CWORD", "1")
    assert cli([], capsys)[1].split() == ["families"]
    monkeypatch.setenv("COMP_WORDS", "gardener prune --zero")
    monkeypatch.setenv("COMP_CWORD", "2")
    assert cli([], capsys)[1].split() == ["--zero-based"]


# --- help panels ---------------------------------------------------------------------------------------
def panels_of(text: str) -> dict[str, str]:
    """command -> the panel `gardener --help` lists it under."""
    found, panel = {}, None
    for line in text.splitlines():
        heading = re.match(r"\s*╭─ (.+?) ─", line)
        if heading:
            panel = heading.group(1)
        elif panel and (row := re.match(r"\s*│ ([a-z][a-z-]*) ", line)):
            found[row.group(1)] = panel
    return found


def test_commands_are_listed_in_panels_by_subject(wide, capsys):
    listed = panels_of(help_of([], capsys))
    expected = {info.name or info.callback.__name__.replace("_", "-"): PANELS[info.callback.__module__.split(".")[-1]]
                for info in app.registered_commands}
    assert {name: listed.get(name) for name in GROUP.commands} == {name: expected[name] for name in GROUP.commands}
    assert listed["families"] == "Weights" and listed["demo"] == "Experiments" and listed["worker"] == "Cluster"


# --- placeholders --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", COMMANDS)
def test_flags_take_no_placeholder_and_positionals_show_an_upper_case_name(name, wide, capsys):
    shown = help_of([name], capsys)
    assert "<bool>" not in shown and "{" not in usage_of(shown)
    positionals = [p.metavar or p.name.upper() for p in GROUP.commands[name].params if p.param_type_name == "argument"]
    shown_names = re.findall(r"\b[A-Z][A-Z_]*\b", usage_of(shown).split("[OPTIONS]")[1])
    assert shown_names == positionals and all(n.isupper() for n in positionals)


def test_usage_lines_read_as_click_writes_them(wide, capsys):
    assert usage_of(help_of(["prune"], capsys)) == "Usage: gardener prune [OPTIONS] CHECKPOINT"
    assert usage_of(help_of(["collect"], capsys)) == "Usage: gardener collect [OPTIONS] RUN_DIR [OTHERS]..."
    assert usage_of(help_of(["demo"], capsys)) == "Usage: gardener demo [OPTIONS] [OUT_DIR]"
    forced = option_help("prune", "--force", capsys).split()
    assert forced[1:3] == ["--force", "Replace"], forced  # no placeholder between the flag and its help
    assert option_help("prune", "--remove", capsys).split()[1:3] == ["--remove", "<int>"]  # a value has one
    code, _, err = cli(["score"], capsys)
    assert code == 2 and "Missing argument 'CHECKPOINT'" in one_line_error(err)


# --- gardener families ---------------------------------------------------------------------------------
ODD = Family("oddnet", "a made-up layout [red]`odd.N.`[/] whose text holds brackets",
             stacks=(StackKind("oddnet", r"(?P<stack>odd)\.(?P<index>\d+)", "main", example="odd.0.w"),),
             model_types={"oddnet": "tokens"})


@pytest.fixture
def oddnet():
    families.register(ODD)
    yield ODD
    families.unregister("oddnet")


def test_families_lists_every_registered_family_including_one_registered_from_outside(oddnet, wide, capsys):
    code, out, _ = cli(["families"], capsys)
    assert code == 0
    assert all(f.name in out for f in families.families())
    assert "a made-up layout [red]`odd.N.`[/] whose text holds brackets" in out  # as it is, not markup
    assert "oddnet (main)" in out and "oddnet (tokens)" in out


def test_families_json_is_the_registry_in_the_order_families_are_tried(oddnet, capsys):
    code, out, _ = cli(["families", "--json"], capsys)
    listed = json.loads(out)
    assert code == 0 and [f["name"] for f in listed] == [f.name for f in families.families()]
    odd = next(f for f in listed if f["name"] == "oddnet")
    assert odd["model_types"] == {"oddnet": "tokens"} and odd["stacks"] == [
        {"name": "oddnet", "role": "main", "depth_field": None, "example": "odd.0.w"}]
    assert listed[-1]["name"] == "generic"


# --- gardener info -------------------------------------------------------------------------------------
def test_info_json_is_what_info_finds_with_the_input_its_gflops_are_for(videomae_dir, capsys):
    code, out, _ = cli(["info", videomae_dir, "--frames", "4", "--size", "32", "--json"], capsys)
    assert code == 0
    shown = json.loads(out)
    assert shown == json.loads(json.dumps(checkpoint_info(videomae_dir, spec=InputSpec(4, 32))))
    assert shown["gflops"] > 0 and shown["gflops_input"] == {"input": "video", "frames": 4, "size": 32}


def test_info_says_which_input_its_gflops_assume(videomae_dir, tmp_path, capsys):
    code, out, _ = cli(["info", videomae_dir, "--frames", "4", "--size", "32"], capsys)
    assert code == 0 and "GFLOPs of one forward pass on one clip of 4 frames at 32x32 px (--frames, --size)" in out
    text = save_hf(build_hf("bert"), tmp_path / "bert")
    code, out, _ = cli(["info", text, "--seq-len", "64"], capsys)
    assert code == 0 and "GFLOPs of one forward pass on one sequence of 64 tokens (--seq-len)" in out
    assert json.loads(cli(["info", text, "--seq-len", "64", "--json"], capsys)[1])["gflops_input"] == {
        "input": "tokens", "seq_len": 64}


# --- help that matches behaviour -----------------------------------------------------------------------
def option_help(command: str, flag: str, capsys) -> str:
    """The help text of one option, as `gardener COMMAND --help` shows it (one line when wide)."""
    rows = [line for line in help_of([command], capsys).splitlines() if re.search(rf"│\s*\*?\s*{flag}\s", line)]
    assert len(rows) == 1, rows
    return rows[0]


def test_prune_offers_one_criterion_as_it_accepts_one(videomae_dir, tmp_path, wide, capsys):
    shown = option_help("prune", "--criterion", capsys)
    assert "one criterion" in shown and "Comma list" not in shown and "'all'" not in shown
    for refused in ("all", "entropy,l1"):
        code, _, err = cli(["prune", videomae_dir, "-o", tmp_path / "p", "--remove", "1", "--criterion", refused],
                           capsys)
        assert code == 2 and f"unknown criterion '{refused}'" in one_line_error(err)
    assert "Comma list or 'all'" in option_help("score", "--criteria", capsys)


def test_warmup_steps_overrides_warmup_epochs_only_where_there_is_such_an_option(wide, capsys):
    assert "(overrides --warmup-epochs)" in option_help("finetune", "--warmup-steps", capsys)
    for command in ("pretrain", "sweep", "sensitivity"):
        assert "--warmup-epochs" not in help_of([command], capsys) and "--warmup-epochs" not in flags_of(command)
    assert f"default: {PretrainRecipe().warmup_epochs:g} epochs' worth" in option_help("pretrain", "--warmup-steps",
                                                                                       capsys)


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_names_only_flags_that_exist(name, wide, capsys):
    """Every --flag in a command's help is its own or a global one; a quoted `gardener OTHER --flag` is OTHER's."""
    shown = help_of([name] if name else [], capsys)
    own = (flags_of(name) if name else set()) | GLOBAL_FLAGS
    for other, rest in GARDENER_CODE.findall(shown):
        assert other in GROUP.commands, f"help of {name} quotes an unknown command: gardener {other}"
        assert set(FLAG.findall(rest)) <= flags_of(other) | GLOBAL_FLAGS, f"help of {name}: gardener {other}{rest}"
    named = set(FLAG.findall(GARDENER_CODE.sub("", shown)))
    assert named, shown  # the help was read (it names its own flags at least)
    assert named <= own, f"help of {name} names flags it does not have: {sorted(named - own)}"


def test_every_output_folder_or_file_is_dash_o_dash_dash_out():
    for name, command in GROUP.commands.items():
        outs = [p for p in command.params if "-o" in p.opts]
        assert all("--out" in p.opts for p in outs), name
        assert "--run" not in flags_of(name), name


def test_the_old_run_flag_still_works_and_says_its_new_name(tmp_path, monkeypatch, capsys):
    from gardener.cli import _app

    monkeypatch.setattr(_app, "_RENAMED_SAID", set())
    code, _, err = cli(["sensitivity", tmp_path / "missing", "--run", tmp_path / "r", "--data", tmp_path], capsys)
    assert "--run is now --out" in err and "No such option" not in err
    assert code == 2 and "missing" in err.splitlines()[-1]  # it got as far as the checkpoint


def test_parameters_count_floating_point_tensors_not_an_int64_position_ids_buffer(tmp_path, capsys):
    """Older BERT-style checkpoints store `position_ids` (int64) beside the weights: not a parameter."""
    import transformers as T
    from safetensors.torch import load_file, save_file

    model = build_hf("bert")
    folder = save_hf(model, tmp_path / "bert")
    tensors = load_file(folder / "model.safetensors")
    position_ids = next(name for name in tensors if "embeddings.word_embeddings" in name).replace(
        "word_embeddings.weight", "position_ids")
    save_file({**tensors, position_ids: torch.arange(16).unsqueeze(0)}, folder / "model.safetensors",
              metadata={"format": "pt"})
    parameters = sum(p.numel() for p in model.parameters())
    code, out, _ = cli(["info", folder, "--json"], capsys)
    assert code == 0 and json.loads(out)["params"] == parameters
    code, _, err = cli(["prune", folder, "--blocks", "1", "-o", tmp_path / "small"], capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "small" / "gardener.json").read_text())
    small = T.AutoModel.from_pretrained(tmp_path / "small")
    assert manifest["params_before"] == parameters
    assert manifest["params_after"] == sum(p.numel() for p in small.parameters())
