"""The criterion registry: a name, a pruning direction and one function per criterion."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..errors import GardenerError, SettingError

Removes = Literal["lowest", "highest"]


@dataclass(frozen=True)
class Context:
    """Settings shared by all criteria of one scoring run."""

    bins: int = 2048
    seed: int = 0
    aggregate: str = "mean"  # how per-matrix spectral statistics become one score per block


AGGREGATES = ("mean", "min", "max", "weighted")


def check_aggregate(how: str) -> str:
    """`how` if it names an aggregate, else the one-line error for --aggregate."""
    if how not in AGGREGATES:
        raise SettingError("aggregate", f"{how!r}: expected one of {', '.join(AGGREGATES)}")
    return how


@dataclass(frozen=True)
class BlockSummary:
    """What a model-scope criterion may see of each block once its values are released."""

    number: int
    n: int
    counts: object | None  # values.ValueCounts when the criterion asked for them


@dataclass(frozen=True)
class Criterion:
    """A block-importance score and what a run needs to know of it.

    `removes` says which end of the score is pruned first ("lowest": a low score marks an
    unimportant block). `scope` is "block" for fn(values, ctx) -> float, "model" for
    fn(list[BlockSummary], ctx) -> list[float] when a score depends on all blocks, or
    "calibration" for fn(CalibrationPass, ctx) -> list[float] when it runs the model on data.
    `exact_value`: it counts exact weight values, so on float32 weights its ranking can be decided
    by round-off (`scoring.roundoff`: a scoring run warns, prune refuses it unless allowed). `group`
    is the kind of criterion, by default the name of the module defining it: information,
    magnitude, spectral, baseline, calibration.
    """

    name: str
    fn: Callable
    removes: Removes
    scope: str
    needs_counts: bool
    summary: str
    group: str = ""
    exact_value: bool = False

    @property
    def needs_calibration(self) -> bool:
        """It runs the model on calibration data (`--calib-data`)."""
        return self.scope == "calibration"


_REGISTRY: dict[str, Criterion] = {}
SCOPES = ("block", "model", "calibration")


def register(name: str, *, removes: Removes, scope: str = "block", needs_counts: bool = False,
             exact_value: bool = False, group: str | None = None, replace: bool = False
             ) -> Callable[[Callable], Callable]:
    """Decorator: register `fn` under `name`; its docstring's first line is the summary.

    A name already registered is an error unless `replace=True` says the new one is meant to
    take its place (a plugin replacing a built-in on purpose).
    """
    if removes not in ("lowest", "highest"):
        raise GardenerError(f"criterion {name!r}: removes={removes!r}, expected 'lowest' or 'highest'")
    if scope not in SCOPES:
        raise GardenerError(f"criterion {name!r}: scope={scope!r}, expected one of {', '.join(SCOPES)}")

    def decorate(fn: Callable) -> Callable:
        if name in _REGISTRY and not replace:
            raise GardenerError(f"criterion {name!r} is already registered (by {_REGISTRY[name].fn.__module__}); "
                                f"choose another name, or register(..., replace=True) to replace it")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else name
        kind = group or fn.__module__.rsplit(".", 1)[-1].lstrip("_")
        _REGISTRY[name] = Criterion(name, fn, removes, scope, needs_counts, summary, kind, exact_value)
        return fn
    return decorate


def unregister(name: str) -> None:
    """Remove a registered criterion (for tests that register a made-up one)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Criterion:
    """The registered criterion `name`, or an error listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GardenerError(f"unknown criterion {name!r}; known: {', '.join(names())}") from None


def names(group: str | None = None) -> list[str]:
    """Registered criterion names in registration order (only those of `group` if given)."""
    return [n for n, c in _REGISTRY.items() if group is None or c.group == group]


def needing_data() -> list[str]:
    """The criteria that run the model on calibration data, in registration order."""
    return [n for n, c in _REGISTRY.items() if c.needs_calibration]


def data_free() -> list[str]:
    """The criteria that need the weights alone (what "all" means), in registration order."""
    return [n for n, c in _REGISTRY.items() if not c.needs_calibration]


def group_of(name: str) -> str:
    """The group of a registered criterion; 'oracle' for the sensitivity oracle, '' if unknown."""
    if name == "sensitivity":
        return "oracle"
    return _REGISTRY[name].group if name in _REGISTRY else ""


def parse(spec: str | list[str] | None) -> list[str]:
    """Criterion names from 'all' (every data-free one), a comma list or a list, validated against the
    registry; 'calibration' in a list stands for every calibration criterion."""
    if spec is None or spec == "all" or spec == ["all"]:
        return data_free()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen = [n for s in items if s.strip() for n in (needing_data() if s.strip() == "calibration"
                                                      else data_free() if s.strip() == "all" else [s.strip()])]
    for name in chosen:
        get(name)
    return list(dict.fromkeys(chosen))
