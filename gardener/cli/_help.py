"""How `--help` reads: Click's conventions on typer's rendering, for every command of the app.

Recent typer versions show a flag as `--force <bool>` and a positional as `{path}`; users expect what Click
does: a flag without a value placeholder, and a positional by its upper-case name (`CHECKPOINT`,
`[OTHERS]...`). The app's commands get these classes by default (`Typer.command` below), so a new command
needs nothing.
"""
from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


def _is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def conventional(params: list) -> list:
    """The parameters with Click's placeholders: none for a flag, the upper-case name for a positional
    (its own metavar, where a command gives one, is kept)."""
    for param in params:
        if _is_argument(param):
            if param.metavar is None:
                param.metavar = param.name.upper()
        elif getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.metavar = ""
    return params


def usage_name(param: Any) -> str:
    """A positional as Click writes it in the usage line: NAME, [NAME] when optional, ... when repeatable."""
    name = param.metavar or param.name.upper()
    name = name if param.required else f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


class Command(TyperCommand):
    """A command whose help and usage line follow Click's conventions (see the module docstring)."""

    def get_params(self, ctx):
        return conventional(super().get_params(ctx))

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [usage_name(p) for p in self.get_params(ctx) if _is_argument(p)]


class Group(TyperGroup):
    """The app itself: its own flags (--version, --install-completion, --help) without placeholders."""

    def get_params(self, ctx):
        return conventional(super().get_params(ctx))


class App(typer.Typer):
    """A Typer app whose commands are `Command`s unless one names another class."""

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **settings: Any):
        """`Typer.command`, with `Command` as the default class."""
        return super().command(name, cls=cls or Command, **settings)
