"""Settings the user hands over as JSON files (`--recipe`, `--config`), read with one-line errors."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, TypeVar

from .errors import GardenerError

T = TypeVar("T")


def read_json(path: str | Path, what: str = "") -> Any:
    """What a JSON file holds; a one-line error naming the file when it is missing or not readable JSON
    (a truncated write, a hand edit)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GardenerError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GardenerError(f"{path}: not readable JSON ({exc.__class__.__name__}){what}") from None


def read_json_object(path: str | Path, flag: str) -> dict:
    """The JSON object in a file, or the error naming the flag and the file."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GardenerError(f"{flag} {path}: cannot read a JSON object ({exc})") from None
    if not isinstance(value, dict):
        raise GardenerError(f"{flag} {path}: expected a JSON object, found a {type(value).__name__}")
    return value


def with_file(cls: type[T], fields: dict[str, Any], path: str | Path | None, flag: str) -> T:
    """A dataclass from the command's options, with the fields of a JSON file (if any) on top."""
    if path is not None:
        extra = read_json_object(path, flag)
        unknown = sorted(set(extra) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise GardenerError(f"{flag} {path}: unknown field {unknown[0]!r}")
        fields = {**fields, **extra}
    return cls(**fields)


def check_number(flag: str, value: Any, low: float | None = None, high: float | None = None, *,
                 above: bool = False, below: bool = False) -> None:
    """A finite number in [low, high] (or above `low` / below `high` when `above` / `below`); None passes
    (an option left unset). The error names the flag and the range."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (low is not None and (value <= low if above else value < low)) \
            or (high is not None and (value >= high if below else value > high)):
        if low is not None and high is not None:
            wanted = f"a number in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"
        elif low is not None:
            wanted = f"a number above {low:g}" if above else f"{low:g} or more"
        else:
            wanted = f"a number below {high:g}" if below else f"{high:g} or less"
        raise GardenerError(f"{flag} {value}: expected {wanted}")
