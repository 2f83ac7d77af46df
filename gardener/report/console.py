"""What the commands print, as (stream, text or table) pairs, made from results only."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # reports read results; they import no scoring code
    from ..scoring.result import ScoreResult


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

    table = Table("name", "group", "removes first", "scope", "what it measures", header_style="bold")
    for name in registry.names():
        c = registry.get(name)
        table.add_row(name, c.group, f"{c.removes} score", c.scope, c.summary)
    return table


def pretrain_messages(info: dict, out_dir) -> list[str]:
    """What `pretrain` says at the end: where the encoder is, and whether it learnt anything."""
    from rich.markup import escape

    if info.get("already_finished"):
        return [escape(f"{out_dir}: this run finished ({info['steps']} steps); nothing was changed")]
    lines = [escape(f"pretrained {info['steps']} steps; encoder in {out_dir}/encoder")]
    summary = info["loss"]
    if summary:
        lines.append(f"final loss {summary['final_loss']:.4f}; the trivial answer (ignoring the visible patches) "
                     f"scores {summary['trivial_loss']:.4f}")
        if not summary["learned"]:
            lines.append("[yellow]warning:[/] the loss is not 10 % below the trivial one: the encoder has learnt "
                         "little from the visible patches (more steps, a lower --mask-ratio or larger frames may help)")
    return lines


def counts_line(counts: dict) -> str:
    """What became of a command's (or a worker's) jobs, in one line."""
    more = {"elsewhere": "done by other workers", "held": "running elsewhere", "failed": "failed for good",
            "other_shards": "left to other shards", "queued": "queued"}
    return "jobs: " + ", ".join([f"{counts['run']} run", f"{counts['cached']} from the cache"]
                                + [f"{counts[k]} {text}" for k, text in more.items() if counts.get(k)])


def experiment_messages(result: dict, run_dir) -> list[str]:
    """What a sensitivity or sweep run says about its jobs: run, cached, elsewhere, failed, left to
    other shards or queued, and what to do next."""
    counts = result["counts"]
    lines = [counts_line(counts)]
    if counts.get("failed"):
        lines.append(f"`gardener status {run_dir}` names the failed jobs and why; run the same command again to "
                     f"try them again")
    if result["table"] is None and (counts.get("queued") or counts.get("held")):
        lines.append(f"watch the jobs with `gardener status {run_dir}`; once every job is done, `gardener collect "
                     f"{run_dir}` builds the tables")
    elif result["table"] is None:
        lines.append(f"not every job has a result yet: run the other shards, then `gardener collect {run_dir}`")
    if result.get("waiting_for_oracle"):
        lines.append("the oracle is not complete: once every shard has finished, run the same sweep again to add "
                     "the sensitivity rows")
    return lines


def status_table(state: dict):
    """`gardener status`: one row per plan group (an oracle, the sweep's criterion x ratio) with its jobs by state."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{state['run']}: jobs by plan"), title_justify="left")
    for name in ("plan", "criterion", "ratio %", "done", "running", "failed", "pending"):
        table.add_column(name, justify="left" if name in ("plan", "criterion") else "right")
    for group in state["groups"]:
        c = group["counts"]
        ratio = "" if group["ratio"] is None else f"{group['ratio']:g}"
        table.add_row(group["plan"], group["criterion"], ratio, str(c["done"]), str(c["running"] + c["stale"]),
                      str(c["failed"]), group.get("note") or str(c["pending"]))
    return table


def status_lines(state: dict) -> list[str]:
    """Totals, then each running job (host, pid, age; stale ones flagged), each failed one (why), the time left."""
    c = state["counts"]
    lines = [f"{sum(c.values())} jobs: {c['done']} done, {c['running']} running, {c['stale']} stale, "
             f"{c['failed']} failed, {c['pending']} pending"]
    for job_id, job in state["jobs"].items():
        if job["state"] in ("running", "stale"):
            where = f"{job['host']} pid {job['pid']}" + (f" (SLURM {job['slurm_job']})" if job.get("slurm_job") else "")
            why = ("its worker is no longer running" if job.get("dead") else
                   f"no heartbeat for {job['heartbeat_age']:.0f} s")
            note = (f"; {why}: a waiting worker takes it over once the claim is stale (start "
                    f"`gardener worker {state['run']}` if none runs)" if job["state"] == "stale" else "")
            verb = "claimed" if job["state"] == "stale" else "running"
            lines.append(f"  {verb} {job_id} on {where} for {duration(job['running_for'])}{note}")
        elif job["state"] == "failed":
            lines.append(f"  failed {job_id} after {job['attempts']} attempt(s) on {job['host']}: {job['reason']}")
        elif job.get("invalid_result"):
            lines.append(f"  invalid result, runs again: {job['invalid_result']}")
    lines += [f"  cannot be run: {message}" for message in state.get("unreadable", {}).values()]
    if state["eta_seconds"] is None:
        lines.append("time left: unknown until a job is done")
    elif c["running"]:
        lines.append(f"time left: about {duration(state['eta_seconds'])} (mean job "
                     f"{duration(state['mean_job_seconds'] or 0)}, over the {c['running']} worker(s) running now)")
    elif state["eta_seconds"]:
        lines.append(f"time left: about {duration(state['eta_seconds'])} for one worker (mean job "
                     f"{duration(state['mean_job_seconds'] or 0)}); no worker is running now")
    return lines


def duration(seconds: float) -> str:
    """A time as people read it: 45 s, 3 min 12 s, 2 h 5 min."""
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
