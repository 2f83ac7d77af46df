"""The Typer app, its consoles, progress bars and the entry point that turns user mistakes into one line."""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..errors import GardenerError, SettingError, Terminated
from ..oserrors import describe
from ..plugins import load_plugins
from ._help import App, Group

# Flags renamed since a release: the old spelling still works and says the new one, once.
RENAMED = {"run": "out"}
_RENAMED_SAID: set[str] = set()


def _renamed(flag: str) -> str:
    """Click's token normaliser (the name without its dashes): an old flag becomes its new name."""
    if flag in RENAMED and flag not in _RENAMED_SAID:
        _RENAMED_SAID.add(flag)
        warn(f"--{flag} is now --{RENAMED[flag]}; the old name will go in a later release")
    return RENAMED.get(flag, flag)


# -h is --help everywhere (subcommands inherit the settings); --install-completion / --show-completion for shells.
app = App(cls=Group, add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
          context_settings={"help_option_names": ["-h", "--help"], "token_normalize_func": _renamed},
          help="Find and remove the unimportant blocks of a pretrained transformer, without data.")
# Piped output is not squeezed into 80 columns: tables are meant to be read whole.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

# typer >= 0.25 vendors its own click; take the exception bases from typer itself.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_TERMINATED: list[int] = []
# The flag of each library setting whose flag is not --setting-name (filled by the option groups).
SETTING_FLAGS: dict[str, str] = {"out": "-o", "primary": "--criterion"}


def flag_of(setting: str) -> str:
    """The command-line flag of a library setting: `dtype` -> --dtype, `out` -> -o."""
    return SETTING_FLAGS.get(setting, "--" + setting.replace("_", "-"))


def version_line() -> str:
    """`gardener 0.1.0 (torch 2.x, transformers 5.x)`: gardener's version and those of the libraries that
    shape its results, read from package metadata (importing torch would take seconds)."""
    from importlib import metadata

    found = []
    for name in ("torch", "transformers"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return f"gardener {__version__} ({', '.join(found)})"


def _print_version(value: bool) -> None:
    if value:
        out.print(version_line(), highlight=False, markup=False)
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                          help="Print the versions of gardener, torch and transformers and exit."),
             threads: Optional[int] = typer.Option(
                 None, "--threads", min=1, help="Threads for torch and the OpenMP/BLAS libraries in each process "
                 "(default: GARDENER_THREADS, else OMP_NUM_THREADS, else the cores this process may use, shared "
                 "among local workers).")) -> None:
    """The options of `gardener` itself (before any command)."""
    from ..threads import set_threads

    set_threads(threads)


def say(message: str) -> None:
    """One plain line on stderr (as it is: a path like `s [a].json` is not markup)."""
    err.print(message, highlight=False, markup=False)


def warn(message: str) -> None:
    """One warning line on stderr, its text as it is."""
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def is_main_process() -> bool:
    """Under torchrun / accelerate launch only rank 0 prints results."""
    return int(os.environ.get("RANK", "0")) == 0


def progress(label: str, unit: str = "block", quiet_for: float = 3.0):
    """A bar with an ETA on stderr for work counted in `unit`s (without a terminal, one line per tenth of it once
    it has run `quiet_for` seconds: a short run says nothing); returns (context manager, callback(done, total))."""
    from .progress import Live

    live = Live(err, label, show=is_main_process(), unit=unit, quiet_for=quiet_for)
    return live, live.step


def live_progress(label: str):
    """The bars of a training run or an experiment on stderr (cli/progress.py): `.step`, `.job` and `.stage` are
    its callbacks; without a terminal, one line per event; under torchrun only rank 0 shows them."""
    from .progress import Live

    return Live(err, label, show=is_main_process())


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes become one line on stderr and a non-zero exit, never a traceback."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # gardener draws its own progress bars
    previous = _on_sigterm()
    try:
        load_plugins()  # before the command runs: their criteria and families are the command's too
        code = app(args=argv, standalone_mode=False, prog_name="gardener")
    except GardenerError as exc:  # escaped: a message naming `[slurm]` or a path with brackets is not markup
        message = exc.render(flag_of) if isinstance(exc, SettingError) else str(exc)  # settings as their flags
        err.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except _USAGE_ERROR as exc:
        err.print(f"[red]error:[/] {escape(exc.format_message())}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # what the system refused (a full disk, a name too long, a permission): one line
        err.print(f"[red]error:[/] {escape(describe(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except MemoryError:
        err.print("[red]error:[/] ran out of memory; give smaller sizes (or run where more memory is free)",
                  highlight=False, soft_wrap=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code == 130:  # typer returns 130 for a KeyboardInterrupt, which our SIGTERM handler raises too
        err.print("terminated (SIGTERM)" if _TERMINATED else "interrupted")
        sys.exit(143 if _TERMINATED else 130)
    sys.exit(code if isinstance(code, int) else 0)


def _on_sigterm():
    """Handle SIGTERM like Ctrl-C (temporaries removed, exit 143); returns the handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _TERMINATED.clear()

    def stop(signum, frame):
        _TERMINATED.append(signum)
        raise Terminated()
    return signal.signal(signal.SIGTERM, stop)
