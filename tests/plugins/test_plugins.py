"""Plugins: a package installed with pip that registers a criterion and a family is seen by the command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_safetensors

import gardener
from gardener import criteria, families
from gardener.errors import GardenerError
from gardener.families import Family, StackKind

PLUGIN = '''
import numpy as np
from gardener import criteria, families
from gardener.families import Family, StackKind


@criteria.register("max_abs", removes="lowest")
def max_abs(values, ctx) -> float:
    """Largest |w| of the block."""
    return float(max(np.abs(chunk).max() for chunk in values.float_chunks()))


families.register(Family(
    "cellring", "a made-up model whose blocks are `ring.cells.N.`",
    stacks=(StackKind("cellring", r"(?P<stack>ring\\.cells)\\.(?P<index>\\d+)", "encoder",
                      example="ring.cells.0.fc.weight"),),
))
'''

CLASH = '''
from gardener import criteria


def setup():
    @criteria.register("entropy", removes="lowest")
    def entropy(values, ctx) -> float:
        """Another entropy."""
        return 0.0
'''


def _install(tmp_path: Path, name: str, module: str, source: str, value: str) -> Path:
    """Build and pip-install a one-module package with a `gardener.plugins` entry point into its own folder."""
    project = tmp_path / f"src-{name}"
    (project / module).mkdir(parents=True)
    (project / module / "__init__.py").write_text(source)
    (project / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "0.3.1"

        [project.entry-points."gardener.plugins"]
        {name} = "{value}"
    '''))
    target = tmp_path / f"site-{name}"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(project)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return target


def _gardener(site: Path, *args, **env) -> subprocess.CompletedProcess:
    """The `gardener` command in a fresh process that sees the plugin's install folder."""
    env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "gardener", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    return _install(tmp_path_factory.mktemp("plugin"), "gardener-cellring", "gardener_cellring", PLUGIN,
                    "gardener_cellring")


@pytest.fixture
def ring(tmp_path):
    """A checkpoint only the plugin's family can read: 4 blocks under `ring.cells.N.`, block 3 the smallest."""
    scale = {0: 1.0, 1: 2.0, 2: 0.1, 3: 3.0}
    rng = np.random.default_rng(0)
    return write_safetensors({f"ring.cells.{i}.fc.weight": torch.from_numpy(
        (rng.standard_normal((8, 8)) * s).astype(np.float32)) for i, s in scale.items()}, tmp_path / "ring.safetensors")


def test_without_the_plugin_nothing_knows_its_names(ring):
    assert "max_abs" not in criteria.names() and "cellring" not in [f.name for f in families.families()]
    with pytest.raises(GardenerError, match="no transformer block stack found"):
        gardener.score(ring, ["l1"])


def test_the_command_line_lists_scores_and_prunes_with_a_plugins_criterion_and_family(plugin_site, ring, tmp_path):
    listed = _gardener(plugin_site, "criteria")
    assert listed.returncode == 0 and "max_abs" in listed.stdout and "Largest |w| of the block." in listed.stdout
    helped = _gardener(plugin_site, "score", "--help")
    assert helped.returncode == 0 and "--criteria" in helped.stdout
    listed = _gardener(plugin_site, "families", "--json")
    assert listed.returncode == 0 and "cellring" in [f["name"] for f in json.loads(listed.stdout)]

    scores = tmp_path / "scores.json"
    scored = _gardener(plugin_site, "score", ring, "--criteria", "max_abs,l1", "--criterion", "max_abs",
                       "--json", scores)
    assert scored.returncode == 0, scored.stderr
    data = json.loads(scores.read_text())
    assert data["stack"] == "ring.cells" and data["family"] == "cellring" and data["depth"] == 4
    assert data["criteria"]["max_abs"]["removal_order"][0] == 3  # the block scaled by 0.1
    assert data["meta"]["versions"]["plugin gardener-cellring"] == "gardener-cellring 0.3.1"

    small = tmp_path / "small.safetensors"
    pruned = _gardener(plugin_site, "prune", ring, "-o", small, "--remove", "1", "--criterion", "max_abs")
    assert pruned.returncode == 0, pruned.stderr
    info = json.loads(Path(f"{small}.gardener.json").read_text())
    assert info["removed_blocks"] == [3] and info["criterion"] == "max_abs" and info["family"] == "cellring"
    assert sorted(gardener.open_checkpoint(small).names()) == [f"ring.cells.{i}.fc.weight" for i in range(3)]


def test_a_plugin_taking_a_registered_name_is_a_one_line_error(tmp_path, ring):
    site = _install(tmp_path, "gardener-clash", "gardener_clash", CLASH, "gardener_clash:setup")
    for args in (["criteria"], ["score", ring]):
        failed = _gardener(site, *args)
        assert failed.returncode != 0 and "Traceback" not in failed.stderr
        assert failed.stderr.strip().count("\n") == 0
        assert "plugin 'gardener-clash' (gardener_clash:setup)" in failed.stderr
        assert "criterion 'entropy' is already registered" in failed.stderr
    quiet = _gardener(site, "criteria", GARDENER_NO_PLUGINS="1")  # the way out the message names
    assert quiet.returncode == 0 and "entropy" in quiet.stdout


def test_registering_a_taken_name_needs_replace():
    with pytest.raises(GardenerError, match="criterion 'l1' is already registered"):
        criteria.register("l1", removes="lowest")(lambda values, ctx: 0.0)
    assert criteria.get("l1").summary != "<lambda>"
    with pytest.raises(GardenerError, match="family 'llama' is already registered"):
        families.register(Family("llama", "another", stacks=(StackKind("llama2", r"(?P<stack>x)\.(?P<index>\d+)",
                                                                       "main"),)))
    try:
        criteria.register("made_up", removes="lowest")(lambda values, ctx: 0.0)
        criteria.register("made_up", removes="highest", replace=True)(lambda values, ctx: 1.0)
        assert criteria.get("made_up").removes == "highest"
    finally:
        criteria.unregister("made_up")
    assert "made_up" not in criteria.names()


def test_unknown_names_get_the_same_friendly_error():
    with pytest.raises(GardenerError, match=r"unknown criterion 'nope'; known: entropy, "):
        criteria.get("nope")
    with pytest.raises(GardenerError, match=r"unknown family 'nope'; known: swin, "):
        families.get("nope")
