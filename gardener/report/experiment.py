"""`gardener report RUN`: the paper's tables and figures from a run folder's JSON files, with the
statistics that say which differences are beyond noise.

Every accuracy carries its 95 % Wilson interval from the number of test videos, and each table
states the test-set size and chance level. The oracle's ranking is marked where its accuracies
are not separable; when none are, the agreement of the data-free criteria with it is printed
without p-values and said to be noise. The report is a list of parts rendered to Markdown or
HTML (`render`), so both formats carry the same numbers. Its sections are their own modules: the
oracles (oracles.py), the criteria against the oracle (agreement.py) and the sweep (sweep.py); numbers
are written in words by text.py. Only the run folder's files are read: no model is opened.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import GardenerError
from ..experiments.runs import open_existing, plan_job_ids
from ..fileio import write_text
from ..settings import read_json
from . import experiment_figures as figs
from .agreement import agreement_parts
from .oracles import KINDS, between_parts, oracle_sections
from .render import Part, to_html, to_markdown
from .sweep import sweep_parts
from .text import recipe_line


VERSIONED = ("torch", "transformers", "accelerate")  # what a trained model's numbers can move with


def _load(run: Path, name: str) -> Any:
    path = run / name
    return read_json(path) if path.is_file() else None


def _chance(*tables) -> float | None:
    classes = next((t.get("classes") for t in tables if t and t.get("classes")), None)
    return 1 / classes if classes else None


def check_job_results(run: Path) -> None:
    """Every job result the run folder's plans name must be its job's own (`InvalidResult` otherwise): the
    tables were built from them, and a report must not print a result that is not what its job measured."""
    folder = open_existing(run)
    for job_id in plan_job_ids(folder):
        folder.result(job_id)


def _files(run: Path) -> dict[str, Any]:
    """The run folder's result files by name (None where absent); an error when there is nothing to report."""
    files = {name: _load(run, f"{name}.json") for name in ("run", "sensitivity", "healing", "sweep", "agreement",
                                                            "scores")}
    if files["run"] is None:
        raise GardenerError(f"{run}: not a gardener run folder (no run.json)")
    check_job_results(run)
    if all(files[name] is None for name in ("sensitivity", "healing", "sweep")):
        raise GardenerError(f"{run}: no finished experiment yet (no sensitivity.json, healing.json or sweep.json); "
                            f"run `gardener sensitivity` or `gardener sweep` (and `gardener collect` after shards)")
    return files


def _head_parts(run: Path, info: dict, note: str | None, extra: list[Part] | None) -> list[Part]:
    """The title, the checkpoint, the note and extra parts, and the recipe the run's jobs share."""
    plan = _load(run, "sensitivity.plan.json") or _load(run, "sweep.plan.json") or _load(run, "healing.plan.json")
    task = ((plan or {}).get("settings") or {}).get("task") or "video-classification"
    measured = {"video-classification": "Accuracies are top-1 on the test split in percent (the paper's WAR).",
                "image-classification": "Task: image classification; accuracies are top-1 on the test images in "
                                        "percent.",
                "causal-lm": "Task: causal language modelling; the metric is the perplexity of the held-out text "
                             "(lower is better)."}.get(task, f"Task: {task}.")
    parts: list[Part] = [("h", 1, "Gardener report"),
                         ("p", f"Checkpoint: `{info['source']}` (sha256 of its weights {info['source_hash'][:16]}). "
                               + measured)]
    parts.append(("p", versions_line(info.get("versions") or {})))
    if note:
        parts.append(("p", note))
    parts += extra or []
    if plan:
        s = plan["settings"]
        parts.append(("p", f"Finetuning recipe: {recipe_line(s['recipe'])}; data: `{s['data']['data']}`; "
                           f"seed {s['seed']}."))
    return parts


def versions_line(made_with: dict[str, str]) -> str:
    """The versions of torch, transformers and accelerate behind the numbers: those the run folder was made with,
    and this report's own where they differ (an accuracy can move with how a release initialises a model)."""
    from ..manifest import versions

    def names(found: dict[str, str]) -> str:
        return ", ".join(f"{p} {found[p]}" for p in VERSIONED if p in found) or "versions not recorded"

    now = versions()
    text = f"Made with {names(made_with)}"
    if any(made_with.get(p) != now.get(p) for p in VERSIONED):
        text += f" (this report was written with {names(now)})"
    return text + "; numbers from trained models can move with these versions."


def build(run: Path, figures: Path, note: str | None = None, extra: list[Part] | None = None, *,
          after_oracles: list[Part] | None = None, after_weights: list[Part] | None = None) -> list[Part]:
    """The report's parts from the run folder's files, in the paper's order: each oracle's Table 1 and Fig. 1a,
    how the oracles agree with each other, the criteria against the oracle (Table 2), the sweep (Table 3, Fig.
    1b), the weights (Fig. 3). Figures are written into `figures`. `extra` parts (e.g. the demo's) go after the
    note, `after_oracles` after the oracle sections (e.g. an agreement between oracles of two run folders),
    `after_weights` at the end."""
    files = _files(run)
    figures.mkdir(parents=True, exist_ok=True)
    parts = _head_parts(run, files["run"], note, extra)
    sweep, agree = files["sweep"], files["agreement"]
    chance = _chance(files["sensitivity"], files["healing"], sweep)
    parts += oracle_sections([files[kind] for kind in KINDS if files[kind]], figures, chance)
    if agree and agree.get("between_oracles"):
        parts += between_parts(agree["between_oracles"])
    parts += after_oracles or []
    if agree and agree.get("criteria"):
        parts += agreement_parts(agree, figures)
    if sweep:
        parts += sweep_parts(sweep, figures, chance)
    if files["scores"]:
        parts += _weights_parts(files["scores"], figures)
    return parts + (after_weights or [])


def _weights_parts(scores: dict, figures: Path) -> list[Part]:
    """The entropy profile and the weight histograms (Fig. 3)."""
    from .figures import weight_histograms

    parts: list[Part] = [("h", 2, "Weights")]
    if "entropy" in scores["criteria"]:
        parts.append(("img", figs.profile(scores, "entropy", figures / "entropy_per_block.png"),
                      f"Entropy per block ({scores['dtype_view']} view of weights stored as "
                      f"{'/'.join(scores.get('stored_dtypes', []))}; absolute values, no axis offset)."))
    if scores.get("histograms"):
        parts.append(("img", weight_histograms(scores, figures / "weight_histograms.png", force=True),
                      "Weight histograms at several depths."))
    return parts


def write_report(run: str | Path, fmt: str = "md", out: str | Path | None = None, note: str | None = None,
                 extra: list[Part] | None = None, *, after_oracles: list[Part] | None = None,
                 after_weights: list[Part] | None = None) -> Path:
    """RUN/report.md with RUN/figures/*.png, or RUN/report.html with the figures inlined (or `out`). Parts
    from elsewhere go after the note (`extra`), after the oracle sections or at the end (see `build`)."""
    run = Path(run)
    if fmt not in ("md", "html"):
        raise GardenerError(f"--format {fmt!r}: expected md or html")
    if not run.is_dir():
        raise GardenerError(f"{run}: no such run folder")
    target = Path(out) if out is not None else run / f"report.{fmt}"
    parts = build(run, run / "figures", note, extra, after_oracles=after_oracles, after_weights=after_weights)
    if fmt == "md":
        return write_text(target, to_markdown(parts, target.parent), force=True)
    return write_text(target, to_html(parts), force=True)
