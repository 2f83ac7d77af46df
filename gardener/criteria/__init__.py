"""Block-importance criteria. Importing this package registers every built-in criterion."""
# Import order is registration order, which is the order `all` lists and tables show.
from . import information, magnitude, baseline  # noqa: F401,I001  (registration side effects)
from ._registry import BlockSummary, Context, Criterion, get, names, parse, register

__all__ = ["BlockSummary", "Context", "Criterion", "get", "names", "parse", "register"]
