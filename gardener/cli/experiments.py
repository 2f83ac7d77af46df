"""Commands that run and read experiments: sensitivity, sweep, agree, collect, report, demo."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import criteria as registry
from ..scoring.calibration_data import check_data
from ..scoring.settings import ScoreSettings
from ..data.clips import ClipOptions
from ..demo import RUN_TIMES
from ..errors import GardenerError
from ..experiments.launch import Launch
from ._app import app, live_progress, is_main_process, out, say, warn
from .task_runs import experiment_task
from .options import CALIB, CLIPS, DATA, EXPERIMENT_RECIPE, JOBS, LAUNCH, Jobs, command
from .weights import AGGREGATE_OPT, DTYPE_OPT

CHECKPOINT_ARG = typer.Argument(..., help="transformers model folder (the unpruned model): VideoMAE, an image "
                                "classifier (ViT, DeiT, DINOv2, Swin, BEiT) or a causal LM.")
TASK_OPT = typer.Option(None, "--task", help="video-classification, image-classification or causal-lm (default: the "
                        "one that fits CHECKPOINT's class).")
SEQ_LEN_OPT = typer.Option(128, "--seq-len", help="causal-lm: tokens per packed sequence.")
RUN_OPT = typer.Option(..., "-o", "--out", help="Run folder (created, or reused for the same checkpoint).")
JOB_SEED_OPT = typer.Option(0, "--seed", help="Seed of every job's finetuning.")
HEAL_OPT = typer.Option(None, "--heal-steps", help="The healing oracle: remove each block from CHECKPOINT (a "
                        "classifier finetuned on this data), keep its head, finetune K optimizer steps, evaluate; "
                        "writes healing.json and healing_oracle.json. Default: the full oracle (the whole recipe).")
EXPERIMENT = dict(data=DATA, recipe=EXPERIMENT_RECIPE, clips=CLIPS, jobs=JOBS, launch=LAUNCH)


def _prepare(ctx: typer.Context, checkpoint: Path, run_dir: Path, data, recipe, clips: ClipOptions, jobs: Jobs,
             launch: Launch, seed: int, task: str | None, seq_len: int, ratios: str | None = None,
             heal_steps: int | None = None, calib=None):
    """The experiment and the shard of its jobs to run here (the task and its options, ratios, heal steps and the
    launcher are checked before the run folder is made; the launch is recorded in RUN/launch.json)."""
    from ..experiments.launchers import launcher_for
    from ..experiments.protocol import prepare
    from ..experiments.queue import QueueOptions
    from ..experiments.runs import parse_shard

    task, recipe, clip = experiment_task(ctx, Path(checkpoint), task, recipe, clips, seq_len)
    shard = parse_shard(jobs.shard)
    launcher = launcher_for(launch)
    launch.check()
    launcher.prepare(sharded=jobs.shard is not None)
    queue = QueueOptions(retries=jobs.retries, stale_after=jobs.stale_after).check()
    return prepare(checkpoint, run_dir, data, recipe, clip, seed, jobs.keep_models, jobs.oracle_seeds,
                   ratios, heal_steps, queue, launch, calib.inputs() if calib is not None else [], task), shard


def _finish(result: dict, exp, table, wrote: str) -> None:
    """Let the launcher finish (`slurm` submits the queue), print what happened and the table; failed jobs
    make it an error."""
    from ..experiments.launchers import launcher_for
    from ..report.console import experiment_messages

    run_dir = exp.run.path
    result = launcher_for(exp.launch).finish(exp, result, say)
    if not is_main_process():
        return
    for line in experiment_messages(result, run_dir):
        say(line)
    if result["table"] is not None:
        out.print(table(result["table"]))
        say(wrote)
    if result["counts"].get("failed"):
        raise GardenerError(f"{run_dir}: {result['counts']['failed']} job(s) failed; `gardener status {run_dir}` "
                            f"says why")


@command(rich_help_panel="Experiments", **EXPERIMENT)
def sensitivity(ctx: typer.Context, checkpoint: Path = CHECKPOINT_ARG, run_dir: Path = RUN_OPT,
                seed: int = JOB_SEED_OPT, heal_steps: Optional[int] = HEAL_OPT, task: Optional[str] = TASK_OPT,
                seq_len: int = SEQ_LEN_OPT, *, data, recipe, clips: ClipOptions, jobs: Jobs, launch) -> None:
    """The oracle: remove each block in turn, finetune, evaluate (the paper's Table 1 and Fig. 1a).

    Video, image and text (causal-lm) models: each task's metric (top-1, or perplexity: lower is better) ranks the
    blocks. A language model's --heal-steps 0 measures each removal without training."""
    from ..experiments.oracle import run_sensitivity
    from ..experiments.results import ORACLE_FILES
    from ..report.tables import sensitivity_table

    exp, part = _prepare(ctx, checkpoint, run_dir, data, recipe, clips, jobs, launch, seed, task, seq_len,
                         heal_steps=heal_steps)
    with live_progress("healing oracle" if heal_steps is not None else "oracle") as live:
        result = run_sensitivity(exp, part, progress=live.job, job_progress=live.step, heal_steps=heal_steps)
    table_file, ranking_file = ORACLE_FILES[result["kind"]]
    _finish(result, exp, sensitivity_table,
            f"wrote {run_dir}/{table_file} and {run_dir}/{ranking_file} (a ranking for `prune --ranking`)")


@command(rich_help_panel="Experiments", **EXPERIMENT, calib=CALIB)
def sweep(
    ctx: typer.Context, checkpoint: Path = CHECKPOINT_ARG, run_dir: Path = RUN_OPT,
    criteria: str = typer.Option(",".join(registry.sweep_criteria()), "--criteria", help="Criteria to compare; "
                                 "'sensitivity' is the oracle, 'calibration' the peers' criteria (with --calib-data). Default: the "
                                 "paper's criteria and the spectral ones."),
    ratios: str = typer.Option("8.3,25,41.7,58.3,75,91.7", "--ratios", help="Pruning ratios in % (or fractions)."),
    random_seeds: int = typer.Option(3, "--random-seeds", help="Random rankings averaged for 'random'."),
    dtype: str = DTYPE_OPT, aggregate: str = AGGREGATE_OPT, seed: int = JOB_SEED_OPT,
    task: Optional[str] = TASK_OPT, seq_len: int = SEQ_LEN_OPT, *,
    data, recipe, clips: ClipOptions, jobs: Jobs, launch, calib,
) -> None:
    """The task's metric by pruning ratio for each criterion (the paper's Tables 3, 7-12 and Fig. 1b)."""
    from ..experiments.sweep import parse_sweep_criteria, run_sweep
    from ..report.tables import sweep_table

    names = parse_sweep_criteria(criteria)
    registry.check_aggregate(aggregate)  # before the run folder is made
    if set(names) & set(registry.needing_data()):
        check_data(calib)
    exp, part = _prepare(ctx, checkpoint, run_dir, data, recipe, clips, jobs, launch, seed, task, seq_len, ratios,
                         calib=calib)
    with live_progress("sweep") as live:
        result = run_sweep(exp, names, None, random_seeds, ScoreSettings(dtype=dtype, aggregate=aggregate, calib=calib),
                           part, progress=live.job, job_progress=live.step)
    _finish(result, exp, sweep_table,
            f"wrote {run_dir}/sweep.json" + (" and agreement.json" if result["oracle"] else ""))


@app.command(rich_help_panel="Experiments")
def agree(
    scores: Path = typer.Argument(..., help="A `gardener score --json` file (or RUN/scores.json)."),
    oracle: Path = typer.Argument(..., help="RUN/oracle.json written by `gardener sensitivity`."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the agreement as JSON."),
    force: bool = typer.Option(False, "--force", help="Overwrite the JSON file."),
) -> None:
    """Rank agreement of each data-free criterion with the oracle: Spearman, Kendall, top-k overlap."""
    from ..experiments.agreement import agree_files
    from ..report.agreement import agreement_summary
    from ..report.tables import agreement_table

    result = agree_files(scores, oracle, json_out=json_out, force=force)
    out.print(agreement_table(result))
    out.print(agreement_summary(result).replace("**", ""), highlight=False)
    if json_out:
        say(f"wrote {json_out}")


@app.command(rich_help_panel="Experiments")
def collect(
    run_dir: Path = typer.Argument(..., help="Run folder to complete."),
    others: Optional[list[Path]] = typer.Argument(None, help="Run folders of other shards to merge in."),
) -> None:
    """Merge the job results of sharded runs and build the tables of every finished plan."""
    from ..experiments.plans import collect_runs

    done = collect_runs(run_dir, list(others or []), warn)
    say(f"merged {done['copied']} job results; tables built: {', '.join(done['tables']) or 'none'}; jobs without "
        f"a result: {done['missing']}")
    if done["missing"]:
        raise GardenerError(f"{run_dir}: {done['missing']} job(s) of its plans have no result yet; run the missing "
                            f"shards (or the same command again if the sweep waited for the oracle)")


@app.command(rich_help_panel="Experiments")
def pool(
    runs: list[Path] = typer.Argument(..., help="Run folders of the same study on different models (2 or more)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the pooled tables as JSON."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write the pooled report as Markdown, its "
                                            "figures (per-model points, pooled intervals) in figures/ beside it."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random orders behind the pooled random band."),
    force: bool = typer.Option(False, "--force", help="Overwrite the JSON and Markdown files and the figures."),
) -> None:
    """Pool the agreement and ratio tables of several models: per-model values, mean, interval over models."""
    from ..experiments.pooled import write_pooled
    from ..report.pooled import gain, pooled_agreement_rows, pooled_summary, pooled_sweep_rows
    from ..report.pooled import check_pooled_markdown, write_pooled_markdown
    from ..report.tables import rich_table

    inputs = [Path(r) / f"{name}.json" for r in runs for name in ("agreement", "sweep")]
    if markdown:
        if json_out is not None and Path(json_out).resolve() == Path(markdown).resolve():
            raise GardenerError(f"--json and --markdown name one file ({markdown}): give each its own")
        check_pooled_markdown(markdown, inputs, force)
    pooled = write_pooled(runs, json_out, force=force, seed=seed)
    if "agreement" in pooled:
        out.print(rich_table("agreement with the oracle, pooled over models", *pooled_agreement_rows(pooled)))
    if "sweep" in pooled:
        out.print(rich_table(f"{gain(pooled['sweep'])[0]}, pooled over models", *pooled_sweep_rows(pooled)))
    out.print(pooled_summary(pooled), highlight=False, markup=False)
    if json_out:
        say(f"wrote {json_out}")
    if markdown:
        say(f"wrote {write_pooled_markdown(pooled, markdown, [str(r) for r in runs], inputs, force)}")


@app.command(rich_help_panel="Experiments")
def report(
    run_dir: Path = typer.Argument(..., help="Run folder of `gardener sensitivity` / `sweep`."),
    fmt: str = typer.Option("md", "--format", help="md (report.md + figures/) or html (one self-contained page)."),
) -> None:
    """Write the paper's tables and figures for a run folder: report.md or report.html."""
    from ..report.experiment import write_report

    say(f"wrote {write_report(run_dir, fmt)}")


@command(rich_help_panel="Experiments", launch=LAUNCH)
def demo(
    out_dir: Path = typer.Argument(Path("gardener-demo"), help="Folder for the demo (reused if run again)."),
    quick: bool = typer.Option(False, "--quick", help=f"Smaller settings: {RUN_TIMES['quick']} (measured "
                               f"{RUN_TIMES['quick_date']}) instead of {RUN_TIMES['default']} (measured "
                               f"{RUN_TIMES['default_date']}) on 2 CPU cores."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data, the pretraining and every finetuning job."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing folder."),
    replicates: int = typer.Option(1, "--replicates", help="Run the whole study on N independently trained models "
                                   "(seeds seed..seed+N-1; OUT/replicates/K) and pool their verdicts (pooled.md)."),
    task: str = typer.Option("video", "--task", help="video (the paper's VideoMAE), image (a ViT on synthetic "
                             f"textures: {RUN_TIMES['image']}) or text (a LLaMA on a synthetic formal language: "
                             f"{RUN_TIMES['text']}); each measured {RUN_TIMES['tasks_date']} on 2 CPU cores."),
    *, launch: Launch,
) -> None:
    """The paper in miniature: synthetic videos, masked pretraining, scores, oracle, sweep and report.

    The oracles' and the sweep's jobs run here, on local workers or as a SLURM array (the Cluster options); after
    a SLURM submission, run the same command again once the jobs are done to write the reports."""
    from ..demo import run_demo

    with live_progress("demo") as live:
        written = run_demo(out_dir, quick=quick, seed=seed, force=force, replicates=replicates, launch=launch,
                           say=say, job_progress=live.job, step_progress=live.step,
                           stage_progress=live.stage, task=task)
    if written is not None:
        say(f"wrote {written}")
