"""`trainers report RUNS --out DIR`: the figures a reader of the report expects, as PNG files.

For the latest run of each model (as the tables): its training and validation curves (like the
report's Figures 1-4), its confusion matrix on the test split, and one figure of every model's
test accuracy beside the report's Table 2. The curves and the confusion matrix are the ones
`trainers report --html` shows (`trainers.html_report`), written to files instead of inlined:
a confusion matrix needs the run's store (its model predicts the test split), and a model whose
store is gone gets no confusion matrix and a note saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trainers.errors import ReportOutputError
from trainers.html_report import (StoreUnavailable, check_output, confusion_png, curves_png,
                                  figure_png, predict_test)
from trainers.report import _name, _ordered
from trainers.runs import RunRecord, latest_runs

#: The report's Table 2 test accuracy of each model (catalogue names), for the comparison.
REPORT_TEST_ACCURACY = {"image": 0.17, "frames": 0.34, "flow": 0.39, "two_stream": 0.40}

COMPARISON_FILE = "test_accuracy.png"


@dataclass
class WrittenFigures:
    """What `write_figures` wrote, and why a figure it could not draw is missing."""

    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def figure_files(model: str) -> tuple[str, str]:
    """The curves and confusion-matrix file names of a model's figures."""
    return f"{model}_curves.png", f"{model}_confusion.png"


def write_figures(runs_dir: str | Path, out: str | Path) -> WrittenFigures:
    """Write the figures of the latest run of each model in `runs_dir` into the folder `out`.

    Raises:
        RunNotFoundError: `runs_dir` does not exist.
        ReportOutputError: `out` cannot be written.
    """
    records = _ordered(latest_runs(runs_dir).values())
    out = Path(out)
    check_output(out, "the figures", folder=True)
    written = WrittenFigures()
    pictures: dict[str, bytes] = {}
    for record in records:
        curves_name, confusion_name = figure_files(record.model)
        curves = curves_png(record)
        if curves is None:
            written.missing.append(f"{_name(record)}: no curves (neither curves.png nor "
                                   "history.json in its run)")
        else:
            pictures[curves_name] = curves
        try:
            pictures[confusion_name] = confusion_png(predict_test(record), _name(record))
        except StoreUnavailable as exc:
            written.missing.append(f"{_name(record)}: no confusion matrix ({exc})")
    if records:
        pictures[COMPARISON_FILE] = comparison_png(records)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, png in pictures.items():
            (out / name).write_bytes(png)
            written.files.append(out / name)
    except OSError as exc:
        raise ReportOutputError(f"cannot write the figures to {str(out)!r}: "
                                f"{exc.strerror or exc}") from None
    return written


def comparison_png(records: list[RunRecord]) -> bytes:
    """Each model's test accuracy beside the report's (Table 2), as grouped bars."""
    labels = [_name(r) for r in records]
    ours = [float((r.metrics.get("test") or {}).get("accuracy", np.nan)) for r in records]
    report = [REPORT_TEST_ACCURACY.get(r.model, np.nan) for r in records]
    figure = Figure(figsize=(2.0 + 1.6 * len(records), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    positions = np.arange(len(records))
    sets = sorted({str(r.metrics.get("recipe", {}).get("recipe_set", "report")) for r in records})
    ours_name = f"these runs ({', '.join(sets)} recipes)"
    width = 0.38
    for offset, values, name, colour in ((-width / 2, report, "report (Table 2)", "#bbbbbb"),
                                         (width / 2, ours, ours_name, "#1f77b4")):
        bars = ax.bar(positions + offset, np.nan_to_num(values), width, label=name, color=colour)
        for bar, value in zip(bars, values):
            ax.annotate("-" if np.isnan(value) else f"{value:.2f}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=9, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_xticks(positions, labels)
    ax.set_ylabel("Test accuracy")
    ax.set_ylim(0, 1.08)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title("Test accuracy: the latest run of each model against the report's Table 2")
    return figure_png(figure)
