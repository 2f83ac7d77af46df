"""`gardener report RUN`: the paper's tables and figures from a run folder's JSON files.

The report is built as a list of parts (headings, paragraphs, tables, figures) and rendered
to Markdown (figures as PNG files beside it) or to one self-contained HTML page (figures
inlined), so both formats always carry the same numbers.
"""
from __future__ import annotations

import base64
import html
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GardenerError
from ..fileio import atomic_file, write_text
from .style import PALETTE, figure, save

Part = tuple  # ("h", level, text) | ("p", text) | ("table", headers, rows) | ("img", file, caption)


def pct(x: float | None) -> str:
    """An accuracy in percent, as the paper prints it."""
    return "-" if x is None else f"{100 * x:.2f}"


def num(x: float | None) -> str:
    """GFLOPs or millions of parameters: 4 significant digits, whatever the model's size."""
    return "-" if x is None else f"{x:.4g}"


def sensitivity_rows(table: dict) -> tuple[list[str], list[list[str]]]:
    """Table 1: the unpruned model and each single-block removal, with the oracle rank."""
    headers = ["model state", "params (M)", "GFLOPs", "top-1 (%)", "top-5 (%)", "UAR (%)", "rank"]
    base = table["baseline"]
    rows = [["unpruned", num(base["params"] / 1e6), num(base["gflops"]), pct(base["top1"]), pct(base["top5"]),
             pct(base["uar"]), ""]]
    rows += [[f"block {r['block']} removed", num(r["params"] / 1e6), num(r["gflops"]), pct(r["top1"]),
              pct(r["top5"]), pct(r["uar"]), str(r["rank"])] for r in table["blocks"]]
    return headers, rows


def sweep_rows(sweep: dict) -> tuple[list[str], list[list[str]]]:
    """Table 3: GFLOPs, then accuracy per criterion (rows) and ratio (columns); random as mean ± std."""
    ratios = sweep["ratios"]
    by = {(r["criterion"], r["ratio"]): r for r in sweep["rows"]}
    gflops = [next((by[(c, q)]["gflops"] for c in sweep["criteria"] if (c, q) in by), None) for q in ratios]
    rows = [["GFLOPs", *map(num, gflops)]]
    for name in sweep["criteria"]:
        cells = []
        for q in ratios:
            r = by.get((name, q))
            cells.append("-" if r is None else pct(r["top1"]) + (f" ± {100 * r['top1_std']:.2f}" if r["top1_std"]
                                                                  else ""))
        rows.append([name, *cells])
    return ["ratio (%)", *[f"{q:g}" for q in ratios]], rows


def by_agreement(agree: dict) -> list[str]:
    """Criterion names, best Spearman rho against the oracle first (an undefined rho last)."""
    def key(name: str) -> float:
        rho = agree["criteria"][name]["spearman"]
        return -rho if rho == rho else np.inf
    return sorted(agree["criteria"], key=key)


def _family(agree: dict, name: str) -> str:
    from ..criteria import family_of

    return agree["criteria"][name].get("family") or family_of(name)


def agreement_rows(agree: dict) -> tuple[list[str], list[list[str]]]:
    """Every criterion ranked by Spearman rho with the oracle: Kendall tau, p-values, top-k overlap."""
    names = by_agreement(agree)
    ks = list(agree["criteria"][names[0]]["top_k_overlap"]) if names else []
    headers = ["#", "criterion", "family", "Spearman rho", "p", "Kendall tau", "p", *[f"top-{k} overlap" for k in ks]]
    rows = []
    for place, name in enumerate(names, start=1):
        c = agree["criteria"][name]
        rows.append([str(place), name, _family(agree, name), f"{c['spearman']:.3f}", f"{c['spearman_p']:.3g}",
                     f"{c['kendall']:.3f}", f"{c['kendall_p']:.3g}", *[f"{c['top_k_overlap'][k]:.2f}" for k in ks]])
    return headers, rows


def _load(run: Path, name: str) -> Any:
    path = run / name
    return json.loads(path.read_text()) if path.is_file() else None


def _save_figure(fig, path: Path) -> Path:
    with atomic_file(path, force=True) as tmp:
        save(fig, tmp)
    return path


def figure_single_block(table: dict, path: Path) -> Path:
    """Fig. 1a: accuracy after removing each block, with the unpruned accuracy as a dashed line."""
    blocks = [r["block"] for r in table["blocks"]]
    values = [100 * r["top1"] for r in table["blocks"]]
    fig, ax = figure(figsize=(7, 3.6), layout="constrained")
    ax.bar(blocks, values, color=PALETTE[0])
    ax.axhline(100 * table["baseline"]["top1"], color=PALETTE[4], linestyle="--", label="unpruned")
    ax.set_xticks(blocks)
    ax.set_xlabel("block removed")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("accuracy after removing one block and finetuning")
    ax.legend(loc="lower right")
    return _save_figure(fig, path)


def figure_ratio_curves(sweep: dict, path: Path) -> Path:
    """Fig. 1b: accuracy against pruning ratio, one line per criterion (random: mean +/- std).

    Spectral criteria are dashed, so that the paper's and the spectral school read apart."""
    from ..criteria import family_of

    import matplotlib

    names = sweep["criteria"]
    colours = PALETTE if len(names) <= len(PALETTE) else [matplotlib.colormaps["tab20"](k % 20)
                                                          for k in range(len(names))]
    fixed = {"sensitivity": "black", "random": "grey"}  # the oracle and the floor stand out
    colours = [fixed.get(name, colours[k]) for k, name in enumerate(names)]
    fig, ax = figure(figsize=(8, 4.4), layout="constrained")
    for k, name in enumerate(names):
        rows = sorted((r for r in sweep["rows"] if r["criterion"] == name), key=lambda r: r["ratio"])
        x, y = [r["ratio"] for r in rows], [100 * r["top1"] for r in rows]
        style = {"linewidth": 2.4, "marker": "o"} if name in ("entropy", "sensitivity") else {"marker": "."}
        style["linestyle"] = "--" if family_of(name) == "spectral" else "-"
        ax.plot(x, y, label=name, color=colours[k], **style)
        if any(r["top1_std"] for r in rows):
            std = [100 * (r["top1_std"] or 0) for r in rows]
            ax.fill_between(x, np.subtract(y, std), np.add(y, std), color=colours[k], alpha=0.15)
    ax.axhline(100 * sweep["baseline"]["top1"], color="grey", linestyle=":", label="unpruned")
    ax.set_xlabel("pruning ratio (% of blocks removed)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("accuracy after pruning and finetuning")
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save_figure(fig, path)


FAMILY_COLOURS = {"information": PALETTE[0], "magnitude": PALETTE[1], "spectral": PALETTE[2], "baseline": "grey"}


def figure_agreement(agree: dict, path: Path) -> Path:
    """Every criterion's Spearman rho with the oracle, best first, coloured by family."""
    names = by_agreement(agree)
    rho = [agree["criteria"][n]["spearman"] for n in names]
    fig, ax = figure(figsize=(7, 0.32 * len(names) + 1.2), layout="constrained")
    colours = [FAMILY_COLOURS.get(_family(agree, n), PALETTE[3]) for n in names]
    ax.barh(range(len(names)), np.nan_to_num(rho), color=colours)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Spearman rho with the oracle ranking")
    ax.set_title("rank agreement with the oracle, all criteria")
    for family, colour in FAMILY_COLOURS.items():
        if any(_family(agree, n) == family for n in names):
            ax.barh([0], [0], color=colour, label=family)
    ax.legend(fontsize=8, loc="lower right")
    return _save_figure(fig, path)


def figure_rank_scatter(agreement: dict, criterion: str, path: Path) -> Path:
    """A criterion's importance ranks against the oracle's, one point per block."""
    mine, oracle = agreement["criteria"][criterion]["ranks"], agreement["oracle_ranks"]
    depth = len(oracle)
    fig, ax = figure(figsize=(4.4, 4.2), layout="constrained")
    ax.plot([1, depth], [1, depth], color="grey", linestyle=":", linewidth=1)
    ax.scatter(oracle, mine, color=PALETTE[1], zorder=3)
    for block, (x, y) in enumerate(zip(oracle, mine), start=1):
        ax.annotate(str(block), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    stats = agreement["criteria"][criterion]
    ax.set_title(f"{criterion} vs oracle: Spearman {stats['spearman']:.3f}, Kendall {stats['kendall']:.3f}",
                 fontsize=9)
    ax.set_xlabel("oracle (sensitivity) rank")
    ax.set_ylabel(f"{criterion} rank")
    ax.set_xticks(range(1, depth + 1))
    ax.set_yticks(range(1, depth + 1))
    return _save_figure(fig, path)


def figure_profile(scores: dict, criterion: str, path: Path) -> Path:
    """A criterion's score per block (the entropy profile)."""
    values = scores["criteria"][criterion]["scores"]
    blocks = [b["number"] for b in scores["blocks"]]
    fig, ax = figure(figsize=(7, 3.2), layout="constrained")
    ax.plot(blocks, values, marker="o", color=PALETTE[0])
    ax.set_xticks(blocks)
    ax.set_xlabel("block")
    ax.set_ylabel(f"{criterion} ({scores['dtype_view']} view)")
    ax.set_title(f"{criterion} per block")
    return _save_figure(fig, path)


def build(run: Path, figures: Path, note: str | None = None) -> list[Part]:
    """The report's parts from the run folder's files; figures are written into `figures`."""
    from .figures import weight_histograms

    info, sens, sweep = _load(run, "run.json"), _load(run, "sensitivity.json"), _load(run, "sweep.json")
    agree, scores = _load(run, "agreement.json"), _load(run, "scores.json")
    if info is None:
        raise GardenerError(f"{run}: not a gardener run folder (no run.json)")
    if sens is None and sweep is None:
        raise GardenerError(f"{run}: no finished experiment yet (no sensitivity.json or sweep.json); run "
                            f"`gardener sensitivity` or `gardener sweep` (and `gardener collect` after shards)")
    figures.mkdir(parents=True, exist_ok=True)
    parts: list[Part] = [("h", 1, "Gardener report"),
                         ("p", f"Checkpoint: `{info['source']}` (sha256 of its weights {info['source_hash'][:16]}). "
                               f"Accuracies are top-1 on the test split in percent (the paper's WAR).")]
    if note:
        parts.append(("p", note))
    plan = _load(run, "sensitivity.plan.json") or _load(run, "sweep.plan.json")
    if plan:
        s = plan["settings"]
        parts.append(("p", f"Finetuning recipe: {_recipe_line(s['recipe'])}; data: `{s['data']['data']}`; "
                           f"seed {s['seed']}."))
    if sens:
        parts += [("h", 2, "Single-block removal (oracle, Table 1)"), ("table", *sensitivity_rows(sens)),
                  ("img", figure_single_block(sens, figures / "single_block_removal.png"),
                   "Accuracy after removing each block (dashed: unpruned).")]
    if agree:
        names = list(agree["criteria"])
        depth = len(agree["oracle_ranks"])
        parts += [("h", 2, "Block ranks (1 = most important, Table 2)"),
                  ("table", ["block", *map(str, range(1, depth + 1))],
                   [[name, *map(str, agree["criteria"][name]["ranks"])] for name in names]
                   + [["sensitivity (oracle)", *map(str, agree["oracle_ranks"])]]),
                  ("h", 2, "Agreement with the oracle, all criteria ranked"),
                  ("p", "Every data-free criterion, the paper's and the spectral ones, ranked by Spearman rho "
                        "between its block ranks and the oracle's."),
                  ("table", *agreement_rows(agree)),
                  ("img", figure_agreement(agree, figures / "agreement.png"),
                   "Spearman rho with the oracle per criterion, coloured by family.")]
        if "entropy" in agree["criteria"]:
            parts.append(("img", figure_rank_scatter(agree, "entropy", figures / "entropy_vs_oracle_ranks.png"),
                          "Entropy rank against oracle rank per block."))
    if sweep:
        ratios = sweep["ratios"]
        by = {(r["criterion"], r["ratio"]): r for r in sweep["rows"]}
        parts += [("h", 2, "Accuracy by pruning ratio (Table 3)"),
                  ("p", f"Unpruned: {pct(sweep['baseline']['top1'])} % top-1, {num(sweep['baseline']['gflops'])} "
                        f"GFLOPs."),
                  ("table", *sweep_rows(sweep)),
                  ("h", 3, "Blocks removed"),
                  ("table", ["criterion", *[f"{q:g} %" for q in ratios]],
                   [[name, *[_removed(by.get((name, q))) for q in ratios]] for name in sweep["criteria"]]),
                  ("img", figure_ratio_curves(sweep, figures / "accuracy_vs_ratio.png"),
                   "Accuracy against pruning ratio, one line per criterion.")]
    if scores:
        parts.append(("h", 2, "Weights"))
        if "entropy" in scores["criteria"]:
            parts.append(("img", figure_profile(scores, "entropy", figures / "entropy_per_block.png"),
                          "Entropy per block."))
        if scores.get("histograms"):
            parts.append(("img", weight_histograms(scores, figures / "weight_histograms.png", force=True),
                          "Weight histograms at several depths."))
    return parts


def _removed(row: dict | None) -> str:
    if row is None:
        return "-"
    removed = row["removed"]
    if removed and isinstance(removed[0], list):
        return " / ".join(",".join(map(str, r)) for r in removed)
    return ",".join(map(str, removed))


def _recipe_line(recipe: dict) -> str:
    length = f"{recipe['max_steps']} steps" if recipe.get("max_steps") else f"{recipe['epochs']} epochs"
    return (f"{length}, batch {recipe['batch_size']} x {recipe['grad_accum']}, lr {recipe['base_lr']:g}/256, "
            f"layer decay {recipe['layer_decay']}, drop path {recipe['drop_path']}")


def to_markdown(parts: list[Part], base: Path) -> str:
    out = []
    for part in parts:
        if part[0] == "h":
            out.append("#" * part[1] + " " + part[2])
        elif part[0] == "p":
            out.append(part[1])
        elif part[0] == "table":
            headers, rows = part[1], part[2]
            out.append("\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                                 + ["| " + " | ".join(r) + " |" for r in rows]))
        elif part[0] == "img":
            link = os.path.relpath(Path(part[1]).resolve(), Path(base).resolve())
            out.append(f"![{part[2]}]({Path(link).as_posix()})\n\n*{part[2]}*")
    return "\n\n".join(out) + "\n"


def to_html(parts: list[Part]) -> str:
    body = []
    for part in parts:
        if part[0] == "h":
            body.append(f"<h{part[1]}>{html.escape(part[2])}</h{part[1]}>")
        elif part[0] == "p":
            text = html.escape(part[1]).replace("`", "")
            body.append("<p>" + re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text) + "</p>")
        elif part[0] == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in part[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in part[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif part[0] == "img":
            data = base64.b64encode(Path(part[1]).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(part[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(part[2])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%}"
             "figcaption{font-size:0.85em;color:#555}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Gardener report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(run: str | Path, fmt: str = "md", out: str | Path | None = None, note: str | None = None) -> Path:
    """RUN/report.md with RUN/figures/*.png, or RUN/report.html with the figures inlined (or `out`)."""
    run = Path(run)
    if fmt not in ("md", "html"):
        raise GardenerError(f"--format {fmt!r}: expected md or html")
    if not run.is_dir():
        raise GardenerError(f"{run}: no such run folder")
    target = Path(out) if out is not None else run / f"report.{fmt}"
    parts = build(run, run / "figures", note)
    if fmt == "md":
        return write_text(target, to_markdown(parts, target.parent), force=True)
    return write_text(target, to_html(parts), force=True)
