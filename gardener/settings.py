"""Settings the user hands over as JSON files (`--recipe`, `--config`), read with one-line errors."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from .errors import GardenerError

T = TypeVar("T")


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
