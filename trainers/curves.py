"""Training curves like the report's Figures 1-4: accuracy and loss, train and validation.

Uses matplotlib's object API with the Agg canvas, never pyplot: no GUI backend, no global figure
state, safe on a headless machine and inside a test run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def plot_curves(history: Mapping[str, Sequence[float]], path: str | Path, *, title: str,
                best_epoch: int | None = None) -> Path:
    """Save a two-panel PNG (accuracy | loss) of a Keras history.

    Args:
        history: Keras `History.history`-like lists per metric (`accuracy`, `val_accuracy`,
            `loss`, `val_loss`), one value per epoch.
        path: PNG file to write.
        title: figure title (model name and store).
        best_epoch: 1-based epoch whose weights were kept; marked with a dashed line.
    """
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    for ax, metric, label in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        for key, name in ((metric, "train"), (f"val_{metric}", "validation")):
            values = list(history.get(key, []))
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1,
                       label=f"best epoch ({best_epoch})")
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    figure.suptitle(title)
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
