"""The `gardener` command: thin commands that parse, call one library function, and print.

Commands live by subject (`weights`, `training`, `experiments`, `cluster`); options shared by several
commands are built once from the library's settings dataclasses (`options`).
"""
from . import weights, training, experiments, cluster  # noqa: F401,I001  (registers the commands, in this order)
from ._app import app, main

__all__ = ["app", "main"]
