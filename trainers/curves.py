"""Training curves like the report's Figures 1-4: accuracy and loss, train and validation.

Uses matplotlib's object API with the Agg canvas, never pyplot: no GUI backend, no global figure
state, safe on a headless machine and inside a test run.
"""

from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


Draw = TypeVar("Draw", bound=Callable[..., Any])


#: matplotlib's warning for each character its fonts cannot draw (as a box), one at a time.
MISSING_GLYPH = re.compile(r"Glyph \d+ \((.+)\) missing from font\(s\) (.+)\.")


def text_as_given(draw: Draw) -> Draw:
    """Draw every text of the figures `draw` makes as it is written: matplotlib reads text
    between `$` signs as maths, and a class folder or clip named with them (`p$^$q`, `cost $5
    and $6`) made `trainers report --out/--html` an internal error, or drew a class the store
    does not have (`cost 5and6` in italics; found by review). Characters its font cannot draw
    (CJK, emoji) are said in one warning a drawing, where matplotlib gave one, two lines, for
    each character and place in its code (18 for two Chinese class names). Only how a glyph's
    warning is shown changes: the filters (a user's "ignore" too) and their once-only
    registries are left as they are, and every other warning is shown as it would be."""

    @functools.wraps(draw)
    def drawing(*args: Any, **kwargs: Any) -> Any:
        missing: dict[str, str] = {}
        shown = warnings.showwarning

        def collect(message, category, filename, lineno, file=None, line=None) -> None:
            glyph = MISSING_GLYPH.fullmatch(str(message))
            if glyph is None:
                shown(message, category, filename, lineno, file, line)
            else:
                missing.setdefault(glyph[1], glyph[2])

        warnings.showwarning = collect
        try:
            with matplotlib.rc_context({"text.parse_math": False}):
                result = draw(*args, **kwargs)
        finally:
            warnings.showwarning = shown
        if missing:
            warnings.warn(f"the figures' font ({', '.join(sorted(set(missing.values())))}) "
                          f"has no {', '.join(missing)}: drawn as boxes", stacklevel=2)
        return result

    return drawing  # type: ignore[return-value]


def curves_title(metrics: Mapping) -> str:
    """The title a run's curves.png bears ("two_stream on tvhi (d527e82b)"): the run writes it,
    and a report that redraws a damaged one from history.json gives it the same."""
    store = metrics.get("store") or {}
    fingerprint = store.get("fingerprint")
    where = f" ({fingerprint[:8]})" if isinstance(fingerprint, str) else ""
    return f"{metrics['model']} on {store.get('dataset', 'its store')}{where}"


@text_as_given
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
    figure = Figure(figsize=(10, 4.3), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    epochs = max((len(history.get(key, [])) for key in
                  ("accuracy", "val_accuracy", "loss", "val_loss")), default=0)
    for ax, metric, label in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        for key, name in ((metric, "train"), (f"val_{metric}", "validation")):
            values = list(history.get(key, []))
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1,
                       label=f"best epoch ({best_epoch})")
        ax.set_xlabel("Epoch")
        # Half an epoch either side: a one-epoch run's axis was 0.945-1.055, with no tick "1".
        ax.set_xlim(0.5, max(epochs, best_epoch or 0, 1) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    # One legend for both panels (their lines are the same), below them: inside, it covered
    # the curves wherever they ran.
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    figure.suptitle(title)
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
