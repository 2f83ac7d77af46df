"""Plugins: installed packages that register criteria and model families (and later tasks).

A plugin declares an entry point in the group `gardener.plugins`; its value is a module (importing
it registers what it defines) or a function (called once, it registers). The `gardener` command
loads every plugin at start-up, so `gardener criteria`, `score`, `prune` and `--help` see what the
plugins add; Python code calls `load_plugins()` (or imports the plugin itself). A plugin that fails
to load, or registers a name that is taken, stops the command with one line naming the plugin;
`GARDENER_NO_PLUGINS=1` starts without any.

    # the plugin's pyproject.toml
    [project.entry-points."gardener.plugins"]
    cellnet = "gardener_cellnet"
"""
from __future__ import annotations

import os
from importlib import metadata
from types import ModuleType

from .errors import GardenerError

GROUP = "gardener.plugins"
_LOADED: dict[str, str] = {}  # entry-point name -> "distribution version"


def load_plugins() -> dict[str, str]:
    """Load every installed plugin not loaded yet; returns the loaded ones (name -> distribution and version)."""
    if os.environ.get("GARDENER_NO_PLUGINS", "") not in ("", "0"):
        return dict(_LOADED)
    for entry in metadata.entry_points(group=GROUP):
        if entry.name in _LOADED:
            continue
        where = f"plugin {entry.name!r} ({entry.value})"
        try:
            target = entry.load()
            if callable(target) and not isinstance(target, ModuleType):
                target()
        except GardenerError as exc:
            raise GardenerError(f"{where}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's setup, said in one line
            raise GardenerError(f"{where} failed to load ({exc.__class__.__name__}: {exc}); uninstall it, or set "
                                f"GARDENER_NO_PLUGINS=1 to run without plugins") from None
        dist = entry.dist
        _LOADED[entry.name] = f"{dist.name} {dist.version}" if dist is not None else entry.value
    return dict(_LOADED)


def loaded() -> dict[str, str]:
    """The plugins loaded so far (name -> distribution and version), for manifests."""
    return dict(_LOADED)
