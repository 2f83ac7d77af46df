"""What the commands print, as (stream, text or table) pairs, made from results only."""
from __future__ import annotations

from typing import Any

from ..scoring import ScoreResult


def show_scores(result: ScoreResult) -> list[tuple[str, Any]]:
    """`score`'s output: the summary on stderr; the scores, ranks, removal order and, when it was
    asked for, the precision report on stdout."""
    from .tables import precision_tables, rank_table, removal_line, score_table, summary_lines

    lines: list[tuple[str, Any]] = [("err", line) for line in summary_lines(result)]
    lines.append(("out", score_table(result)))
    if len(result.scores) > 1:
        lines.append(("out", rank_table(result)))
    lines.append(("out", removal_line(result)))
    report = result.meta.get("precision")
    if report:
        lines += [("out", table) for table in precision_tables(report)]
        style = "green" if report["meaningful"] else "yellow"
        lines.append(("out", f"[{style}]exact-value entropy on this checkpoint:[/] {report['verdict']}"))
    return lines


def prune_messages(info: dict) -> list[str]:
    """The warnings of a prune: ties and round-off, the family's own, and what a .pth lost."""
    dropped = [f"dropped {e['entry']!r} ({e['tensors']} tensors): it describes the unpruned model (optimizer state "
               f"or a copy of the weights); listed in the manifest" for e in info.get("dropped_entries", [])]
    return list(info["warnings"]) + dropped


def criteria_table():
    """The registered criteria and which end of each is removed first."""
    from rich.table import Table

    from .. import criteria as registry

    table = Table("name", "family", "removes first", "scope", "what it measures", header_style="bold")
    for name in registry.names():
        c = registry.get(name)
        table.add_row(name, c.family, f"{c.removes} score", c.scope, c.summary)
    return table


def pretrain_messages(info: dict, out_dir) -> list[str]:
    """What `pretrain` says at the end: where the encoder is, and whether it learnt anything."""
    if info.get("already_finished"):
        return [f"{out_dir}: this run finished ({info['steps']} steps); nothing was changed"]
    lines = [f"pretrained {info['steps']} steps; encoder in {out_dir}/encoder"]
    summary = info["loss"]
    if summary:
        lines.append(f"final loss {summary['final_loss']:.4f}; the trivial answer (ignoring the visible patches) "
                     f"scores {summary['trivial_loss']:.4f}")
        if not summary["learned"]:
            lines.append("[yellow]warning:[/] the loss is not 10 % below the trivial one: the encoder has learnt "
                         "little from the visible patches (more steps, a lower --mask-ratio or larger frames may help)")
    return lines


def experiment_messages(result: dict, run_dir) -> list[str]:
    """What a sensitivity or sweep run says about its jobs: run, cached, left to other shards, missing."""
    counts = result["counts"]
    lines = [f"jobs: {counts['run']} run, {counts['cached']} from the cache"
             + (f", {counts['other_shards']} left to other shards" if counts["other_shards"] else "")]
    if result["table"] is None:
        lines.append(f"not every job has a result yet: run the other shards, then `gardener collect {run_dir}`")
    if result.get("waiting_for_oracle"):
        lines.append("the oracle is not complete: once every shard has finished, run the same sweep again to add "
                     "the sensitivity rows")
    return lines
