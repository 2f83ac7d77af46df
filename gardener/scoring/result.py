"""A scoring run's result: per-block scores of one stack, with what is needed to say how they were made."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import criteria as registry
from .. import ranking
from ..errors import GardenerError
from . import roundoff


@dataclass
class BlockInfo:
    """One scored block: its 1-based number, how many numbers it holds and from which tensors."""

    number: int
    n_params: int
    tensors: list[str]
    distinct: int | None = None  # distinct exact values, when an exact-value criterion ran


@dataclass
class ScoreResult:
    """Per-block scores of one stack, with everything needed to say how they were made."""

    source: str
    format: str
    stack: str
    stack_kind: str  # the stack's kind (a registered family's layout), e.g. hf-encoder; "family" in files
    dtype_view: str
    stored_dtypes: list[str]
    params: str
    primary: str
    bins: int
    seed: int
    blocks: list[BlockInfo]
    scores: dict[str, list[float]]
    removes: dict[str, str]
    histograms: list[dict] | None = None
    aggregate: str = "mean"  # how spectral criteria combined each block's matrices
    meta: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # the checkpoint files read, for manifests

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def ranks(self, criterion: str | None = None) -> list[int]:
        """Importance rank per block (1 = most important)."""
        name = criterion or self.primary
        return ranking.ranks(self._scores(name), self.removes[name])

    def ranking(self, criterion: str | None = None) -> list[int]:
        """Block numbers (1-based), most important first."""
        name = criterion or self.primary
        return [self.blocks[i].number for i in ranking.importance_order(self._scores(name), self.removes[name])]

    def removal_order(self, criterion: str | None = None) -> list[int]:
        """Block numbers (1-based) in the order the criterion removes them."""
        return self.ranking(criterion)[::-1]

    def caveats(self, criterion: str | None = None, removed: list[int] | None = None) -> list[str]:
        """Why the criterion's ranking may not be decided by the weights: round-off or ties.

        With `removed` (1-based block numbers a prune takes), only ties that straddle the cut
        count: blocks of equal score of which some go and some stay, chosen by block index.
        """
        name = criterion or self.primary
        scores, out = self._scores(name), []
        share = self.round_off(name)
        if share is not None:
            out.append(f"{roundoff.share_clause(share)}, so {name} barely separates blocks and its ranking is decided "
                       f"by round-off; try {roundoff.remedies(self.precisions)}")
        for group in ranking.tie_groups(scores):
            numbers = [self.blocks[i].number for i in group]
            shown = ", ".join(map(str, numbers[:8])) + (f" ... ({len(numbers)} blocks)" if len(numbers) > 8 else "")
            if removed is None:
                out.append(f"blocks {shown} score exactly the same by {name}: block index orders them")
            elif 0 < len(gone := [n for n in numbers if n in removed]) < len(numbers):
                out.append(f"blocks {shown} score exactly the same by {name}: block index chose which "
                           f"{len(gone)} of them {'is' if len(gone) == 1 else 'are'} removed")
        return out

    @property
    def precisions(self) -> list[str]:
        """The precisions the scores read: the stored dtypes, or the --dtype view's (e.g. ["F16"])."""
        return roundoff.in_use(self.dtype_view, self.stored_dtypes)

    def round_off(self, criterion: str | None = None) -> float | None:
        """The share of distinct values in the least distinct block when the criterion counts exact values
        and `roundoff.entropy_meaningful` says that its ranking is decided by round-off; else None."""
        name = criterion or self.primary
        share = roundoff.least_distinct_share([b.distinct for b in self.blocks], [b.n_params for b in self.blocks])
        return share if _exact_value(name) and share is not None and not roundoff.entropy_meaningful(share) else None

    def _scores(self, name: str) -> list[float]:
        if name not in self.scores:
            raise GardenerError(f"criterion {name!r} was not computed; computed: {', '.join(self.scores)}")
        return self.scores[name]

    def to_frame(self):
        """A pandas DataFrame: one row per block, a score and a rank column per criterion."""
        import pandas as pd

        rows = {"block": [b.number for b in self.blocks], "n_params": [b.n_params for b in self.blocks]}
        for name, values in self.scores.items():
            rows[name] = values
            rows[f"{name}_rank"] = self.ranks(name)
        order = self.removal_order() if self.primary in self.scores else []
        if order:
            rows["removal_order"] = [order.index(b.number) + 1 for b in self.blocks]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): metadata, blocks, and per criterion scores, ranks and direction."""
        data = {("family" if k == "stack_kind" else k): v for k, v in asdict(self).items()}  # the file format's key
        data["depth"] = self.depth
        data["criteria"] = {name: {"removes": self.removes[name], "scores": vals, "ranks": self.ranks(name),
                                   "removal_order": self.removal_order(name)}
                            for name, vals in self.scores.items()}
        data["removal_order"] = self.removal_order() if self.primary in self.scores else []  # [] for a layout
        del data["scores"], data["removes"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreResult:
        """Rebuild a result from `to_dict` output (e.g. a `gardener score --json` file)."""
        kept = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        kept["stack_kind"] = data.get("family", "")
        kept["blocks"] = [BlockInfo(**b) for b in data["blocks"]]
        kept["scores"] = {n: c["scores"] for n, c in data["criteria"].items()}
        kept["removes"] = {n: c["removes"] for n, c in data["criteria"].items()}
        return cls(**kept)

    @classmethod
    def load(cls, path: str | Path) -> ScoreResult:
        """Read a `gardener score --json` file."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise GardenerError(f"{path}: no such file") from None
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise GardenerError(f"{path}: not a gardener scores file ({exc.__class__.__name__}: {exc})") from None


def _exact_value(name: str) -> bool:
    """Whether a registered criterion counts exact weight values (its ranking can be decided by round-off)."""
    return name in registry.names() and registry.get(name).exact_value

