"""Block-importance criteria. Importing this package registers every built-in criterion."""
# Import order is registration order, which is the order `all` lists and tables show.
from . import information, magnitude, spectral, baseline, calibration  # noqa: F401,I001  (registration side effects)
from ._registry import (AGGREGATES, BlockSummary, Context, Criterion, check_aggregate, data_free, group_of, get,
                        names, needing_data, parse, register,
                        unregister)

# the paper's Table 3 criteria (the data-free ones; "sensitivity" is the oracle run by experiments)
PAPER_CRITERIA = ["entropy", "l1", "l2", "mean", "variance", "std", "kurtosis", "mutual_information"]


def sweep_criteria() -> list[str]:
    """What a sweep compares by default: the paper's criteria, the spectral ones, random, the oracle."""
    return [*PAPER_CRITERIA, *names("spectral"), "random", "sensitivity"]


__all__ = ["AGGREGATES", "PAPER_CRITERIA", "BlockSummary", "Context", "Criterion", "check_aggregate", "data_free", "group_of",
           "get", "names", "needing_data", "parse", "register", "sweep_criteria",
           "unregister"]
