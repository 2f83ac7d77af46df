"""Score tables for the terminal (Rich) and for files (CSV, JSON)."""
from __future__ import annotations

import io
import json
import math
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:  # reports read results; they import no scoring code
    from ..scoring.result import ScoreResult

ARROWS = {"lowest": "▼", "highest": "▲"}


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def score_table(result: ScoreResult) -> Table:
    """Per block: parameters, distinct values, the primary score and rank, and removal position."""
    name = result.primary
    table = Table(title=f"{name} per block ({ARROWS[result.removes[name]]} {result.removes[name]} removed first)",
                  header_style="bold", title_justify="left")
    for column in ("block", "params", "distinct", name, "rank", "removed #"):
        table.add_column(column, justify="right", style="bold green" if column == name else None)
    ranks, order = result.ranks(name), result.removal_order()
    for pos, block in enumerate(result.blocks):
        removal = order.index(block.number) + 1
        distinct = f"{block.distinct:,}" if block.distinct is not None else "-"
        table.add_row(str(block.number), f"{block.n_params:,}", distinct, _fmt(result.scores[name][pos]),
                      str(ranks[pos]), str(removal) if removal < len(order) else "kept")
    return table


WIDE = 24  # blocks beyond which a column per block is unreadable
SHOWN = 8  # blocks listed at each end of a compact rank table


def rank_table(result: ScoreResult) -> Table:
    """Criteria as rows, blocks as columns, importance ranks as cells (the paper's Table 2 layout);
    past WIDE blocks, each criterion's least and most important blocks instead."""
    if result.depth > WIDE:
        return _compact_rank_table(result)
    table = Table(title="importance rank per block (1 = most important)", header_style="bold",
                  title_justify="left", caption="▼ lowest score removed first, ▲ highest first",
                  caption_justify="left")
    table.add_column("criterion / block", no_wrap=True)
    for block in result.blocks:
        table.add_column(str(block.number), justify="right")
    for name in result.scores:
        style = "bold green" if name == result.primary else None
        table.add_row(f"{name} {ARROWS[result.removes[name]]}", *map(str, result.ranks(name)), style=style)
    return table


def _compact_rank_table(result: ScoreResult) -> Table:
    table = Table(title=f"least and most important of {result.depth} blocks per criterion", header_style="bold",
                  title_justify="left", caption="▼ lowest score removed first, ▲ highest first; every rank is in "
                  "--json / --csv", caption_justify="left")
    table.add_column("criterion", no_wrap=True)
    table.add_column(f"removed first ({SHOWN} blocks)")
    table.add_column(f"most important ({SHOWN} blocks)")
    for name in result.scores:
        order = result.removal_order(name)
        style = "bold green" if name == result.primary else None
        table.add_row(f"{name} {ARROWS[result.removes[name]]}", ", ".join(map(str, order[:SHOWN])),
                      ", ".join(map(str, order[::-1][:SHOWN])), style=style)
    return table


def summary_lines(result: ScoreResult) -> list[str]:
    """What was scored, in words: stack, block count, parameters per block, precision view."""
    sizes = sorted({b.n_params for b in result.blocks})
    per_block = f"{sizes[0]:,}" if len(sizes) == 1 else f"{sizes[0]:,}-{sizes[-1]:,}"
    tensors = sorted({len(b.tensors) for b in result.blocks})
    lines = [
        f"Scored stack [bold]{escape(result.stack)}[/] ({result.stack_kind}) of {escape(str(result.source))}",
        f"  {result.depth} blocks, {per_block} parameters per block from {'/'.join(map(str, tensors))} "
        f"tensors ({'2-D weight matrices' if result.params == '2d' else 'all tensors'})",
        f"  dtype view: {result.dtype_view} (stored as {', '.join(result.stored_dtypes)})",
    ]
    if result.blocks[0].distinct is not None:
        lines.append(f"  distinct values per block: {min(b.distinct for b in result.blocks):,}"
                     f"-{max(b.distinct for b in result.blocks):,}")
    lines += [f"  [yellow]warning:[/] {escape(c)}" for c in result.meta.get("warnings", []) + result.caveats()]
    return lines


def removal_line(result: ScoreResult) -> str:
    """The primary criterion's removal order as one line."""
    which = result.removes[result.primary]
    order = ", ".join(map(str, result.removal_order()[:-1]))
    return f"Removal order by {result.primary} ({which} first): {order}"


def to_json(result: ScoreResult, meta: dict[str, Any] | None = None) -> str:
    """The full result (scores, ranks, directions, histograms, metadata) as JSON text."""
    data = result.to_dict()
    data["meta"] = {**data.get("meta", {}), **(meta or {})}  # e.g. a precision report beside the manifest
    return json.dumps(data, indent=2, allow_nan=True) + "\n"


def to_csv(result: ScoreResult) -> str:
    """One row per block, a plain CSV any reader takes (metadata goes to `csv_metadata`)."""
    buf = io.StringIO()
    result.to_frame().to_csv(buf, index=False, float_format="%.17g")
    return buf.getvalue()


def csv_metadata(result: ScoreResult, meta: dict[str, Any] | None = None) -> str:
    """What the CSV's rows were scored from and how, as the JSON written beside it."""
    head = {
        "source": result.source, "stack": result.stack, "family": result.stack_kind,
        "dtype_view": result.dtype_view, "stored_dtypes": result.stored_dtypes, "params": result.params,
        "primary": result.primary, "seed": result.seed, "bins": result.bins, "aggregate": result.aggregate,
        "removes": result.removes, "warnings": result.caveats(), **(meta or {}),
    }
    return json.dumps(head, indent=2) + "\n"


def _gf(value: float | None, note: str | None = None) -> str:
    return f"n/a ({note or 'no config.json'})" if value is None else f"{value:,.1f}"


def prune_table(info: dict[str, Any]) -> Table:
    """Before/after depth, parameters and GFLOPs of a prune, with the blocks removed."""
    table = Table(title=f"pruned {info['stack']} ({info['how']}" + (f", by {info['criterion']}" if info.get(
        "criterion") else "") + ")", title_justify="left", header_style="bold")
    for column in ("", "before", "after", "ratio"):
        table.add_column(column, justify="right")
    table.add_row("blocks", str(info["depth_before"]), str(info["depth_after"]),
                  f"{info['depth_after'] / info['depth_before']:.3f}")
    table.add_row("params", f"{info['params_before']:,}", f"{info['params_after']:,}",
                  f"{info['params_after'] / info['params_before']:.3f}")
    before, after = info.get("gflops_before"), info.get("gflops_after")
    table.add_row("GFLOPs", _gf(before), _gf(after), f"{after / before:.3f}" if before else "-")
    table.caption = f"removed blocks {', '.join(map(str, info['removed_blocks']))} (1-based)"
    return table


def info_table(info: dict[str, Any]) -> Table:
    """Stacks, depth, parameters and GFLOPs of one checkpoint."""
    table = Table(title=escape(f"{info['path']} ({info['format']}, {', '.join(info['dtypes'])})"), title_justify="left",
                  header_style="bold")
    for column in ("stack", "family", "role", "depth"):
        table.add_column(column)
    for s in info["stacks"]:
        mark = " *" if s["name"] == info["stack"] else ""
        table.add_row(s["name"] + mark, s["family"], s["role"], str(s["depth"]))
    table.caption = escape(f"* selected; parameters {info['params']:,}; GFLOPs "
                           f"{_gf(info['gflops'], info.get('gflops_note'))}")
    return table


def eval_table(result: dict[str, Any], unit: str = "videos") -> Table:
    """Top-1 (WAR) and top-5 with their 95 % Wilson intervals, UAR and throughput, then the recall of each class."""
    from ..stats import interval_of

    n = result["videos"]
    table = Table("metric", "value", "95 % interval", title=f"evaluation on {n} {unit}", header_style="bold")
    for name, key in (("top-1 accuracy (WAR)", "top1"), ("top-5 accuracy", "top5")):
        low, high = interval_of(result[key], n)
        table.add_row(name, f"{result[key]:.4f}", f"[{low:.4f}, {high:.4f}]")
    table.add_row("UAR (mean class recall)", f"{result['uar']:.4f}", "")
    if result.get("clips_per_s"):
        table.add_row("views evaluated", str(result["views"]), "")
        table.add_row("evaluation clips/s", f"{result['clips_per_s']:.1f}", "")
    recalls = result.get("per_class_recall", {})
    if recalls and len(recalls) <= 30:
        for name, value in recalls.items():
            table.add_row(f"  recall {name}", "-" if value is None else f"{value:.3f}", "")
    return table


def lm_eval_table(result: dict[str, Any]) -> Table:
    """Perplexity and next-token accuracy, each with its 95 % interval over sequences."""
    table = Table("metric", "value", "95 % interval (over sequences)", header_style="bold",
                  title=f"evaluation on {result['sequences']} sequences of {result['seq_len']} tokens "
                        f"({result['tokens_predicted']:,} predicted)")
    low, high = result["perplexity_interval"]
    table.add_row("perplexity (lower is better)", f"{result['perplexity']:.3f}", f"[{low:.3f}, {high:.3f}]")
    low, high = result["next_token_accuracy_interval"]
    table.add_row("next-token accuracy", f"{result['next_token_accuracy']:.4f}", f"[{low:.4f}, {high:.4f}]")
    return table


def rich_table(title: str, headers: list[str], rows: list[list[str]]) -> Table:
    """A Rich table of text rows under a title."""
    table = Table(*headers, title=title, header_style="bold")
    for row in rows:
        table.add_row(*row)
    return table


def sensitivity_table(table: dict[str, Any]) -> Table:
    """Table 1 in the terminal (the same rows as the report)."""
    from .oracles import oracle_name, sensitivity_rows

    return rich_table(f"single-block removal ({oracle_name(table.get('oracle'))})", *sensitivity_rows(table))


def sweep_table(table: dict[str, Any]) -> Table:
    """Table 3 in the terminal (the same rows as the report)."""
    from .sweep import sweep_rows
    from .text import metric_header, metric_of, value_text

    metric = metric_of(table)
    return rich_table(f"{metric_header(metric)} by pruning ratio; unpruned "
                      f"{value_text(table['baseline'][metric['name']], metric)}", *sweep_rows(table))


def agreement_table(result: dict[str, Any]) -> Table:
    """Agreement with the oracle in the terminal (the same rows as the report)."""
    from .agreement import agreement_rows

    return rich_table("agreement with the oracle ranking", *agreement_rows(result))


def precision_tables(report: dict) -> list[Table]:
    """The precision report: entropy, distinct share and rank per view, then rank agreement between views."""
    views = list(report["views"])
    stored = "/".join(report["stored_dtypes"])
    blocks = Table(title=f"exact-value entropy under each precision view (stored as {stored})",
                   header_style="bold", title_justify="left")
    blocks.add_column("block", justify="right")
    blocks.add_column("params", justify="right")
    for view in views:
        blocks.add_column(f"distinct {view}", justify="right")
    for view in views:
        blocks.add_column(f"entropy {view}", justify="right")
        blocks.add_column(f"rank {view}", justify="right")
    for i, number in enumerate(report["blocks"]):
        n = report["n_params"][i]
        cells = [report["views"][v]["distinct_shown"][i] for v in views]  # as the verdict prints shares
        for v in views:
            cells += [_fmt(report["views"][v]["entropy"][i]), str(report["views"][v]["ranks"][i])]
        blocks.add_row(str(number), f"{n:,}", *cells)
    agreement = Table(title="Spearman rho between the views' entropy rankings", header_style="bold",
                      title_justify="left")
    agreement.add_column("view")
    for view in views:
        agreement.add_column(view, justify="right")
    for a in views:
        agreement.add_row(a, *[f"{report['spearman'][a][b]:.2f}" for b in views])
    return [blocks, agreement]
