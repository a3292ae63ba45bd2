"""`trainers report RUNS --out DIR`: the figures a reader of the report expects, as PNG files.

For the latest run of each model on each store (as the tables): its training and validation curves (like the
report's Figures 1-4), its confusion matrix on the test split, and one figure of every model's
test accuracy beside the report's Table 2. The curves and the confusion matrix are the ones
`trainers report --html` shows (`trainers.html_report`), written to files instead of inlined:
a confusion matrix needs the run's store (its model predicts the test split), and a model whose
store is gone gets no confusion matrix and a note saying why. A figure an earlier report wrote
into the folder (it lists them in `WRITTEN_FILE`) that this report did not draw is removed, so
that no figure of an earlier report (another run's confusion matrix) is read as this one's;
other files there are left alone, whatever their names, and a report of no runs removes
nothing.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trainers.curves import text_as_given
from trainers.errors import ReportOutputError
from trainers.html_report import RunPictures, StoreUnavailable, figure_png
from trainers.outputs import check_output, write_whole
from trainers.report import _ordered, recorded_test_accuracy, row_names, run_recipe
from trainers.runs import RunRecord, latest_runs

#: The report's Table 2 test accuracy of each model (catalogue names) on the dataset it was
#: measured on, for the comparison: a run on another dataset (UCF101, a folder of images) has
#: no number of the report's to stand beside.
REPORT_TEST_ACCURACY = {("image", "stanford40"): 0.17, ("frames", "tvhi"): 0.34,
                        ("flow", "tvhi"): 0.39, ("two_stream", "tvhi"): 0.40}
#: The comparison figure's narrowest width in inches: its title and legend fit it.
COMPARISON_MIN_WIDTH = 6.4
#: Characters a line of the comparison's legend entry for these runs, wrapped: under the
#: report's entry it fits COMPARISON_MIN_WIDTH at matplotlib's default font; beside it, an
#: entry of up to LEGEND_BESIDE_CHARS does.
LEGEND_LINE_CHARS, LEGEND_BESIDE_CHARS = 72, 50

COMPARISON_FILE = "test_accuracy.png"
#: In a `--out` folder, the names of the figures the last report wrote there, one a line.
WRITTEN_FILE = ".trainers-report-figures"


@dataclass
class WrittenFigures:
    """What `write_figures` wrote, and why a figure it could not draw is missing."""

    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    #: Figures of the report's own names left by an earlier report that this one did not draw.
    removed: list[Path] = field(default_factory=list)


def figure_files(stem: str) -> tuple[str, str]:
    """The curves and confusion-matrix file names of a run's figures (`figure_stems`)."""
    return f"{stem}_curves.png", f"{stem}_confusion.png"


def figure_stems(records: list[RunRecord]) -> list[str]:
    """Each run's figure file stem: its model ("flow"), with its store's fingerprint where the
    report has the model's latest runs on two stores ("flow-0f4c8094"), whose figures would
    otherwise be written over each other."""
    models = [r.model for r in records]
    return [r.model if models.count(r.model) == 1 else f"{r.model}-{r.fingerprint[:8]}"
            for r in records]


def write_figures(runs_dir: str | Path, out: str | Path,
                  run_pictures: RunPictures | None = None) -> WrittenFigures:
    """Write the figures of the latest run of each model on each store in `runs_dir` into the
    folder `out`, and remove those of the report's own names there that it did not draw;
    `run_pictures`: the predictions and pictures to share with
    `trainers.html_report.write_html_report`.

    Raises:
        RunNotFoundError: `runs_dir` does not exist.
        ReportOutputError: `out` cannot be written.
    """
    records = _ordered(latest_runs(runs_dir))
    run_pictures = run_pictures or RunPictures()
    out = Path(out)
    check_output(out, "the figures", folder=True)
    written = WrittenFigures()
    pictures: dict[str, bytes] = {}
    for record, name, stem in zip(records, row_names(records), figure_stems(records),
                                  strict=True):
        curves_name, confusion_name = figure_files(stem)
        curves = run_pictures.curves_png(record)
        if curves is None:
            written.missing.append(f"{name}: no curves ({record.curves_unavailable()} in "
                                   f"{record.path})")
        else:
            pictures[curves_name] = curves
        try:
            pictures[confusion_name] = run_pictures.confusion_png(record, name)
        except StoreUnavailable as exc:
            written.missing.append(f"{name}: no confusion matrix ({exc})")
    if records:
        pictures[COMPARISON_FILE] = comparison_png(records)
    # Each figure whole or not at all (a full disk mid-way leaves the earlier figure, not half
    # a PNG); the list of them last, so that it never names a figure not written. A link of a
    # figure's name is replaced, not written through: one left pointing at a run's curves.png
    # or a store's zarr.json had the figure written over it.
    for name, png in pictures.items():
        written.files.append(write_whole(out / name, png, "the figures", replace_links=True))
    try:
        if records:  # (no runs: most likely the wrong folder; nothing there is touched)
            for name in sorted(_written_before(out) - set(pictures)):
                if (out / name).is_file():
                    (out / name).unlink()
                    written.removed.append(out / name)
            write_whole(out / WRITTEN_FILE, "".join(f"{name}\n" for name in pictures),
                        "the figures", replace_links=True)
    except OSError as exc:
        raise ReportOutputError(f"cannot write the figures to {str(out)!r}: "
                                f"{exc.strerror or exc}") from None
    return written


def report_files(records: list[RunRecord], out: str | Path) -> set[str]:
    """The names `write_figures` writes, or may remove, in `out` for `records` (the latest runs
    of a runs folder, in any order)."""
    return ({name for stem in figure_stems(records) for name in figure_files(stem)}
            | {COMPARISON_FILE, WRITTEN_FILE} | _written_before(Path(out)))


def _written_before(out: Path) -> set[str]:
    """The figures the last report wrote into `out` (`WRITTEN_FILE`): only those are ever
    removed, never a file of the user's that happens to bear a figure's name."""
    try:
        listed = (out / WRITTEN_FILE).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return set()
    return {name for name in listed if name and Path(name).name == name}


@text_as_given
def comparison_png(records: list[RunRecord]) -> bytes:
    """Each model's test accuracy beside the report's (Table 2), as grouped bars.

    The legend names the runs' recipe ("report", "report, epochs 1": `run_recipe`, which names
    what a run overrode); where the runs' recipes differ, each is named under its model
    instead. The legend sits below the axes, where no bar's number can be under it."""
    recipes = [run_recipe(r) for r in records]
    one_recipe = len(set(recipes)) == 1
    # A recipe under its model: one field a line, in a wider slot, so that neighbours' long
    # field names ("subtract_mean_flow True") do not run into each other.
    names = [name.replace(", store ", "\nstore ") for name in row_names(records)]
    labels = [name if one_recipe else "\n".join([name, *recipe.split(", ")])
              for name, recipe in zip(names, recipes, strict=True)]
    slot = 1.6 if one_recipe else 2.2
    ours = [np.nan if accuracy is None else accuracy
            for accuracy in map(recorded_test_accuracy, records)]
    report = [REPORT_TEST_ACCURACY.get((r.model, r.dataset), np.nan)
              for r in records]
    figure = Figure(figsize=(max(COMPARISON_MIN_WIDTH, 2.0 + slot * len(records)), 4.6),
                    layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    positions = np.arange(len(records))
    # (wrapped: a recipe with several fields overridden ran past both edges of the figure,
    # the legend one line wide and the figure as wide as its bars; found by review)
    ours_name = textwrap.fill(f"these runs (recipe: {recipes[0]})" if one_recipe
                              else "these runs (recipe under each model)", LEGEND_LINE_CHARS)
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
    figure.legend(loc="outside lower center",
                  ncols=2 if len(ours_name) <= LEGEND_BESIDE_CHARS else 1)
    ax.set_title("Test accuracy: the latest run of each model\nagainst the report's Table 2")
    return figure_png(figure)
