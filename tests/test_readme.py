"""README leads a newcomer: a quickstart on one screen whose test line is CI's, a table of contents that
resolves, figures that are files of the recorded run they name, and the license pyproject declares."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(text: str) -> list[str]:
    body = re.sub(r"```.*?```", "", text, flags=re.S)  # a '# comment' in a code block is no heading
    return [m.group(2) for m in re.finditer(r"^(#{1,6}) (.+)$", body, re.M)]


def quickstart() -> tuple[list[str], list[str]]:
    """The lines from the title to the end of the quickstart, and its code block's lines."""
    lines = README.splitlines()
    start = lines.index("## Quickstart")
    end = next(k for k in range(start + 1, len(lines)) if lines[k].startswith("## "))
    block = lines[lines.index("```bash", start) + 1:]
    return lines[:end], block[:block.index("```")]


def test_the_quickstart_fits_on_one_screen_and_its_two_lines_install_run_and_test():
    shown, commands = quickstart()
    while shown and not shown[-1].strip():
        shown.pop()
    assert shown[0] == "# Gardener" and len(shown) <= 25
    assert len(commands) == 2 and commands[0] == 'pip install -e ".[dev]" && gardener demo'
    ci = (ROOT / ".ci" / "run").read_text()
    runs = [line.split("#")[0].strip() for line in ci.splitlines() if line.lstrip().startswith("( pytest")]
    assert runs[0] == f"( {commands[1]} )" and len(runs) == 2  # CI's first pass is exactly the README's test line
    assert "CPU build of PyTorch" in "\n".join(shown)  # said before anyone installs


def test_the_table_of_contents_links_every_top_section_and_each_link_resolves():
    anchors = {anchor(h) for h in headings(README)}
    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    linked = re.findall(r"\]\(#([^)]+)\)", contents)
    tops = [h for h in re.findall(r"^## (.+)$", re.sub(r"```.*?```", "", README, flags=re.S), re.M)
            if h not in ("Quickstart", "What you get", "Contents")]
    assert linked == [anchor(h) for h in tops]
    for target in re.findall(r"\]\(#([^)]+)\)", README):
        assert target in anchors, target


def test_links_into_benchmarks_name_sections_that_exist():
    anchors = {anchor(h) for h in headings((ROOT / "BENCHMARKS.md").read_text(encoding="utf-8"))}
    record = json.loads((ROOT / "docs" / "figures.json").read_text())
    for target in [*re.findall(r"BENCHMARKS\.md#([^)\s]+)", README), record["run"]["described_in"].split("#")[1]]:
        assert target in anchors, target


def test_every_figure_in_readme_is_a_file_of_the_recorded_run_unchanged_and_none_is_stale():
    record = json.loads((ROOT / "docs" / "figures.json").read_text())
    shown = re.findall(r'<img src="docs/([^"]+)"', README) + re.findall(r"!\[[^]]*\]\(docs/([^)]+)\)", README)
    assert shown and set(shown) == set(record["figures"])
    assert sorted(p.name for p in (ROOT / "docs").glob("*.png")) == sorted(shown)  # nothing stale in docs/
    for name, entry in record["figures"].items():
        assert hashlib.sha256((ROOT / "docs" / name).read_bytes()).hexdigest() == entry["sha256"], name
    run = record["run"]
    assert run["command"].replace("OUT ", "").split(" --seed")[0] in README  # README names the run it shows
    assert f"transformers {run['versions']['transformers']}" in (ROOT / "BENCHMARKS.md").read_text()


def test_update_figures_copies_a_runs_figures_and_records_their_hashes(tmp_path):
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import update_figures
    finally:
        sys.path.remove(str(ROOT / "docs"))
    run, docs = tmp_path / "demo", tmp_path / "docs"
    docs.mkdir()
    for k, source in enumerate(update_figures.FIGURES.values()):
        (run / source).parent.mkdir(parents=True, exist_ok=True)
        (run / source).write_bytes(bytes([k]) * 10)
    (run / "demo.json").write_text(json.dumps({"seed": 3, "quick": False}))
    (run / "pooled.json").write_text(json.dumps({"models": 4, "meta": {"created": "now", "versions": {"torch": "x"}}}))
    record = update_figures.update(run, docs, section="BENCHMARKS.md#x")
    assert record["run"]["command"] == "gardener demo OUT --replicates 4 --seed 3"
    for name, source in update_figures.FIGURES.items():
        assert (docs / name).read_bytes() == (run / source).read_bytes()
        assert record["figures"][name]["sha256"] == hashlib.sha256((run / source).read_bytes()).hexdigest()
    assert json.loads((docs / "figures.json").read_text()) == record
    shutil.rmtree(run / "run")
    with pytest.raises(SystemExit, match="not a finished `gardener demo --replicates N` folder"):
        update_figures.update(run, docs)


def test_the_license_file_is_the_one_pyproject_declares():
    declared = re.search(r'^license = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    text = (ROOT / "LICENSE").read_text()
    assert declared == "Apache-2.0" and "Apache License" in text and "Version 2.0, January 2004" in text
    assert "[LICENSE](LICENSE)" in README
