"""One figure style for every Gardener plot, so figures read as a set."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PALETTE = ["#2E7D32", "#1565C0", "#EF6C00", "#6A1B9A", "#C62828", "#00838F", "#5D4037", "#9E9D24"]
RC = {
    "figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight", "font.size": 10,
    "axes.titlesize": 11, "axes.labelsize": 10, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
}


def figure(*args, **kwargs):
    """plt.subplots under the Gardener style."""
    with plt.rc_context(RC):
        return plt.subplots(*args, **kwargs)


def save(fig, path, format: str = "png") -> None:
    """Save with the house style and free the figure."""
    with plt.rc_context(RC):
        fig.savefig(path, format=format)
    plt.close(fig)
