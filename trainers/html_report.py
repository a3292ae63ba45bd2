"""`trainers report RUNS --html FILE`: the report as one self-contained HTML page.

The page holds what `trainers report` prints (Tables 1 and 2, from `trainers.report`) and what
a table cannot show, per model (the latest run of each on each store, as the tables): the training curves, a
confusion matrix and per-class accuracy on the test split, and a strip of misclassified test
samples (middle frame and flow picture, or the image), so a reader sees *which* actions a model
confuses and what those clips look like. Every picture is a PNG inlined as a `data:` URL: the
file can be mailed, attached to an issue or opened offline, and nothing it shows can go stale.

The confusion matrix is not in `metrics.json`: it is computed here by loading `model.keras` and
predicting the test split of the store the run recorded (`metrics.json`'s `store.path`) in
inference mode (`trainers.predict`, as `trainers predict` does). That store must still be there and still be the one the run trained on (same
fingerprint), holding the test samples the run was tested on (as many finished ones as
`metrics.json`'s `samples` records: a store built further since keeps its fingerprint), so
that the matrix's accuracy is Table 2's; when it is not, or a test sample cannot be read, the
page says so in that model's section and the rest is shown. With `--html` and `--out` together
each model predicts once and its matrix and curves are drawn once (`RunPictures`): on
Stanford-40, thousands of images. The matrix names every class and writes every count up to 50 classes;
above that (UCF101, Kinetics) it is an image of bounded size, one class in k named and no
counts (`confusion_png`).
"""

from __future__ import annotations

import base64
import collections
import html
import io
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import MaxNLocator

import flowstore
from flowstore.console import one_line
from flowstore.errors import StoreError
from flowstore.flow_image import flow_to_rgb
from flowstore.show import flow_scale
from trainers.curves import text_as_given
from trainers.errors import (DamagedRunError, ModelConfigError, ReportOutputError,
                             UnknownModelError, WrongDatasetError)
from trainers.outputs import check_output, refuse_inside_a_run_or_store, write_whole
from trainers.predict import SplitPredictions, open_run_samples, predict_samples
from trainers.report import _ordered, row_names, table_1, table_2, table_seeds
from trainers.runs import RunRecord, latest_runs, list_runs

#: Misclassified test samples shown per model: taken from each true class in turn (store order
#: within a class), so that one badly learnt class does not fill the whole strip.
MISCLASSIFIED_SHOWN = 8
#: Inches of that strip's columns; a title line of one at most `STRIP_TITLE_WIDTH` of them
#: (a gap between neighbours), and at most `STRIP_LINES_EACH` lines for each of a sample's id,
#: true and predicted class.
STRIP_COLUMN_WIDTH = 1.9
STRIP_TITLE_WIDTH = 1.8
STRIP_LINES_EACH = 2
#: The confusion matrix figure's largest side in inches (at `figure_png`'s 100 dpi, 1400 px).
CONFUSION_MAX_SIDE = 14.0
#: Up to this many classes the confusion matrix names every class and writes every count;
#: above it (UCF101, Kinetics) neither could be read in `CONFUSION_MAX_SIDE`.
CONFUSION_LABELLED_UP_TO = 50
#: The longest class name the confusion matrix writes beside it as it is; a longer one is cut
#: in its middle (its whole name is in the per-class table): two names of 46 characters left
#: no room for the matrix itself.
CONFUSION_NAME_CHARS = 24


class StoreUnavailable(Exception):
    """The test split cannot be predicted now as the run was tested: the store a run trained
    on cannot be opened or read (a damaged sample), is another store, or holds other test
    samples than the run was tested on; or its `model.keras` is damaged. The message says why
    (for the page, and `--out`'s warning). Each leaves that model's metrics-based rows and
    curves to show, so it is a note in its section, not an error that costs the whole
    report."""


class RunPictures:
    """Each run's test-split predictions (or why there are none), its confusion matrix's PNG
    and its curves' PNG, each computed once per command: `trainers report --html FILE --out
    DIR` shows each picture twice, predicting a split is minutes on the real stores, drawing a
    matrix of hundreds of classes seconds, and decoding (or redrawing) curves a fraction of
    one a run."""

    def __init__(self) -> None:
        self._by_run: dict[Path, SplitPredictions | StoreUnavailable] = {}
        self._confusion: dict[tuple[Path, str], bytes] = {}
        self._curves: dict[Path, bytes | None] = {}

    def curves_png(self, record: RunRecord) -> bytes | None:
        """`curves_png(record)`, made the first time it is asked for this run only."""
        if record.path not in self._curves:
            self._curves[record.path] = curves_png(record)
        return self._curves[record.path]

    def of(self, record: RunRecord) -> SplitPredictions:
        """`predict_test(record)`, the first time it is asked for this run only.

        Raises:
            StoreUnavailable: as `predict_test` (again on each call, with the same reason).
        """
        if record.path not in self._by_run:
            try:
                self._by_run[record.path] = predict_test(record)
            except StoreUnavailable as exc:
                self._by_run[record.path] = exc
        found = self._by_run[record.path]
        if isinstance(found, StoreUnavailable):
            raise StoreUnavailable(str(found))
        return found

    def confusion_png(self, record: RunRecord, name: str) -> bytes:
        """`confusion_png` of the run's predictions (`of`) titled `name`, drawn the first time
        it is asked for only: the page inlines the PNG the figures folder gets.

        Raises:
            StoreUnavailable: as `of`.
        """
        key = record.path, name
        if key not in self._confusion:
            self._confusion[key] = confusion_png(self.of(record), name)
        return self._confusion[key]


def write_html_report(runs_dir: str | Path, out: str | Path,
                      run_pictures: RunPictures | None = None) -> Path:
    """Write the page for the latest run of each model on each store in `runs_dir` to `out`;
    `run_pictures`: the predictions and pictures to share with `trainers.figures.write_figures`.

    Raises:
        RunNotFoundError: `runs_dir` does not exist.
        ReportOutputError: `out` cannot be written.
    """
    out = Path(out)
    check_report_outputs(runs_dir, out, None)
    return write_whole(out, html_report(runs_dir, run_pictures), "the HTML report")


def check_report_outputs(runs_dir: str | Path, html: Path | None, figures: Path | None) -> None:
    """`trainers report`'s checks before anything predicts: the runs folder, then the HTML
    page and the figures folder, so that with both the second is not found unwritable after
    the first's predictions."""
    records = latest_runs(runs_dir)  # (refuses a missing runs folder, or a store given for one)
    for flag, path in (("--html", html), ("--out", figures)):
        # (as `predict --out`: `--html runs/flow-.../metrics.json` wrote the page over a run)
        if path is not None:
            refuse_inside_a_run_or_store(flag, path)
    if html is not None and figures is not None and (
            html.resolve() == figures.resolve() or html.resolve() in figures.resolve().parents):
        # (the figures folder was made first, where the page was then refused as a folder)
        raise ReportOutputError(f"--html {str(html)!r} would be the --out folder "
                                f"{str(figures)!r} or hold it: give them other paths")
    if html is not None and figures is not None:
        from trainers.figures import report_files  # (figures imports this module)

        names = report_files(records, figures)
        places = {(html.parent.resolve(), html.name), (html.resolve().parent, html.resolve().name)}
        if any(folder == figures.resolve() and name in names for folder, name in places):
            # (the page was written, then a figure written over it, or removed as an earlier
            # report's; a link on either side, the page's name or the figure's, as well)
            raise ReportOutputError(f"--html {str(html)!r} bears the name of a file the "
                                    f"report writes in --out {str(figures)!r}: give the page "
                                    f"another name")
    if html is not None:
        check_output(html, "the HTML report", folder=False)
    if figures is not None:
        check_output(figures, "the figures", folder=True)


def html_report(runs_dir: str | Path, run_pictures: RunPictures | None = None) -> str:
    """The page as a string (see the module docstring)."""
    run_pictures = run_pictures or RunPictures()
    records = _ordered(latest_runs(runs_dir))
    title = f"Training report: {runs_dir}"
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p class=meta>{len(records)} run(s), the latest of each model on each "
             f"store; written "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.</p>"]
    if not records:
        parts.append(f"<p>No finished runs in {_e(str(runs_dir))}.</p>")
    else:
        parts += ["<h2>Table 1: top-1 train/validation accuracy and loss at the best epoch</h2>",
                  table_1(records, render=html_table),
                  "<h2>Table 2: test accuracy, test loss and size of the saved model</h2>",
                  table_2(records, render=html_table),
                  "<h2>Test accuracy over seeds (every run; runs that differ only in their "
                  "seed are one row; SD: sample standard deviation)</h2>",
                  table_seeds(list_runs(runs_dir), render=html_table)]
        parts += [_model_section(record, name, run_pictures)
                  for record, name in zip(records, row_names(records), strict=True)]
    return _PAGE.format(title=_e(title), body="\n".join(parts))


def html_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table of cell strings (the `render` of `trainers.report.table_1`/`table_2`)."""
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def predict_test(record: RunRecord) -> SplitPredictions:
    """Load the run's model and predict the test split of its store, in inference mode, as
    the run scored it (`trainers.predict`).

    Raises:
        StoreUnavailable: the store is missing, not the one the run trained on, has no
            finished test sample or another number of them than the run was tested on, or a
            test sample cannot be read; or the run's model file is damaged.
    """
    location = record.store.get("path")
    if not location:
        raise StoreUnavailable("metrics.json records no store path")
    try:
        samples = open_run_samples(record, location)
    except ModelConfigError as exc:  # (its recipe's views: said by the message itself)
        raise StoreUnavailable(str(exc)) from None
    except (StoreError, WrongDatasetError) as exc:
        raise StoreUnavailable(f"its store cannot be opened ({exc})") from None
    except UnknownModelError as exc:  # a run of a model registered elsewhere: shown, not built
        raise StoreUnavailable(f"its model cannot be built here ({exc})") from None
    try:
        if samples.info.fingerprint != record.fingerprint:
            raise StoreUnavailable(
                f"the store at {location} is not the one the run trained on (fingerprint "
                f"{samples.info.fingerprint[:8]}, the run's {record.fingerprint[:8]})")
        finished = int(samples.indices("test").size)
        if not finished:
            raise StoreUnavailable(f"the store at {location} has no finished test sample")
        tested = (record.samples or {}).get("test")
        if tested is not None and tested != finished:
            raise StoreUnavailable(
                f"the store at {location} holds {finished} finished test samples now, the run "
                f"was tested on {tested} (it was built further, or had samples unmarked, "
                "since), so the matrix would not be of Table 2's test set")
        if record.as_many_but_others(samples.done_samples()):
            raise StoreUnavailable(
                f"the store at {location} holds other finished samples than when the run "
                f"trained (as many, but others: repaired or failed since), so the matrix may "
                f"not be of Table 2's test set")
        try:
            return predict_samples(record, samples, "test")
        except (DamagedRunError, ModelConfigError) as exc:
            raise StoreUnavailable(str(exc)) from None
        except StoreError as exc:  # one damaged sample: this model's note, not the report's end
            raise StoreUnavailable(f"a test sample cannot be read ({exc})") from None
    finally:
        samples.store.close()


def _model_section(record: RunRecord, name: str, run_pictures: RunPictures) -> str:
    """A run's section, under `name` (its `row_names` name)."""
    parts = [f"<section><h2>{_e(name)}</h2>",
             f"<p class=meta>run {_e(str(record.path))}; store {_e(record.fingerprint[:8])} "
             f"({_e(str(record.store.get('path', '?')))}); best epoch "
             f"{_e(str(record.metrics.get('best_epoch', '-')))} "
             f"({_e(str(record.metrics.get('selection', '')))})</p>",
             "<h3>Training curves</h3>", _curves(record, name, run_pictures)]
    try:
        predictions = run_pictures.of(record)
    except StoreUnavailable as exc:
        parts.append(f"<p class=unavailable>No confusion matrix, per-class accuracy or "
                     f"misclassified samples: {_e(str(exc))}.</p>")
    else:
        parts += ["<h3>Test split: confusion matrix and per-class accuracy</h3>",
                  "<div class=row>",
                  _img(run_pictures.confusion_png(record, name), f"confusion matrix of {name}"),
                  _per_class_table(predictions), "</div>",
                  "<h3>Misclassified test samples</h3>",
                  _misclassified(record, name, predictions)]
    parts.append("</section>")
    return "\n".join(parts)


def _curves(record: RunRecord, name: str, run_pictures: RunPictures) -> str:
    png = run_pictures.curves_png(record)
    if png is None:
        return f"<p class=unavailable>No curves: {_e(record.curves_unavailable())}.</p>"
    return _img(png, f"training curves of {name}")


def curves_png(record: RunRecord) -> bytes | None:
    """The run's own curves.png where it is a whole PNG; else redrawn from its history.json,
    titled as the run titled its own; None where neither is usable
    (`RunRecord.curves_unavailable` says why)."""
    own = record.whole_curves()
    if own is not None:
        return own
    history = record.history()
    if history is None:
        return None
    import tempfile

    from trainers.curves import curves_title, plot_curves

    with tempfile.TemporaryDirectory() as folder:
        path = plot_curves(history, Path(folder) / "curves.png", title=curves_title(record.metrics),
                           best_epoch=record.metrics.get("best_epoch"))
        return path.read_bytes()


def _per_class_table(predictions: SplitPredictions) -> str:
    confusion = predictions.confusion
    rows = []
    for k, name in enumerate(predictions.classes):
        total = int(confusion[k].sum())
        accuracy = "-" if not total else f"{confusion[k, k] / total:.2f}"
        rows.append([name, accuracy, f"{int(confusion[k, k])}/{total}"])
    overall = float(np.trace(confusion)) / max(int(confusion.sum()), 1)
    rows.append(["all", f"{overall:.2f}", f"{int(np.trace(confusion))}/{int(confusion.sum())}"])
    return html_table(["Class", "Test acc", "Correct"], rows)


@text_as_given
def confusion_png(predictions: SplitPredictions, title: str) -> bytes:
    """The test split's confusion matrix as a PNG: one image of the counts, each class named
    and each count written in its cell up to `CONFUSION_LABELLED_UP_TO` classes.

    Its cost is bounded whatever the class count: the figure grows with the classes only up
    to `CONFUSION_MAX_SIDE` inches a side (at 0.5 in a class, 101 classes drew a 5400 x 5300
    px figure in 22 s and 0.9 GB, Kinetics-400 would take 12 GB), and above
    `CONFUSION_LABELLED_UP_TO` classes, where a cell is a few pixels and no number in it or name
    beside it can be read, the counts are left out and one class in k is named, as the title
    says (10,201 text artists at 101 classes were most of that cost)."""
    confusion = predictions.confusion
    count = len(predictions.classes)
    side = min(2.5 + 0.5 * count, CONFUSION_MAX_SIDE)
    # (at least as wide as a model's name: at 2-3 classes the title was cut)
    figure = Figure(figsize=(max(side + 1, 6.0), side), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    labelled = count <= CONFUSION_LABELLED_UP_TO
    # (square cells fill a figure of many classes nearly anyway; with them, the constrained
    # layout put the top of that figure's three-line title outside it)
    shown = ax.imshow(confusion, cmap="Blues", vmin=0, interpolation="nearest",
                      aspect="equal" if labelled else "auto")
    figure.colorbar(shown, ax=ax, shrink=0.8).ax.yaxis.set_major_locator(
        MaxNLocator(integer=True))  # counts
    every = 1 if labelled else -(-count // CONFUSION_LABELLED_UP_TO)  # (ceil)
    named = range(0, count, every)
    names = _distinct_labels([predictions.classes[k] for k in named], CONFUSION_NAME_CHARS)
    ax.set_xticks(named, names, rotation=45, ha="right")
    ax.set_yticks(named, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    heading = f"{title}\ntest split ({int(confusion.sum())} samples)"
    if labelled:
        # (half a cell, in points: 0.5 in a class until the side is capped, then the side
        # less about 3.5 in of class names and colour bar)
        size = min(10.0, 0.5 * 72 * min(0.5, (CONFUSION_MAX_SIDE - 3.5) / max(count, 1)))
        threshold = confusion.max() / 2 if confusion.size else 0
        for (row, column), value in np.ndenumerate(confusion):
            ax.text(column, row, str(value), ha="center", va="center", fontsize=size,
                    color="white" if value > threshold else "black")
    else:
        heading += (f"\n{count} classes: counts not shown above {CONFUSION_LABELLED_UP_TO} "
                    f"classes; one class in {every} named")
    ax.set_title(heading)
    return figure_png(figure)


@text_as_given
def _misclassified(record: RunRecord, name: str, predictions: SplitPredictions) -> str:
    wrong = predictions.misclassified
    if not wrong.size:
        return "<p>None: every test sample is classified right.</p>"
    shown = wrong[:MISCLASSIFIED_SHOWN]
    try:
        with flowstore.open(record.store["path"]) as dataset:
            pictures = [name for name in ("middle_frame", "image") if name in dataset.features]
            flows = ["flow"] if "flow" in dataset.features else []
            drawn = pictures[:1] + flows  # a row each; a store may hold flow alone
            if not drawn:
                return ("<p>No picture or flow in its store to show its misclassified "
                        "samples.</p>")
            batch = dataset.split("test", features=drawn, float_dtype="float32").read(shown)
    except StoreError as exc:  # a picture the model does not read may be the damaged one
        return (f"<p class=unavailable>No misclassified samples: a test sample cannot be read "
                f"({_e(str(exc))}).</p>")
    figure = Figure(figsize=(STRIP_COLUMN_WIDTH * len(shown), 2.1 * len(drawn) + 0.4),
                    layout="constrained")
    renderer = FigureCanvasAgg(figure).get_renderer()
    font = FontProperties(size=8)

    def fits(line: str) -> bool:
        width = renderer.get_text_width_height_descent(line, font, ismath=False)[0]
        return width <= STRIP_TITLE_WIDTH * figure.dpi

    axes = np.asarray(figure.subplots(len(drawn), len(shown), squeeze=False))
    classes = predictions.classes
    for column, position in enumerate(shown):
        titles = (["\n".join(_column_lines(one_line(text), fits) for text in (
                       str(predictions.ids[position]),
                       f"true {classes[predictions.labels[position]]}",
                       f"predicted {classes[predictions.predicted[position]]}"))]
                  + [""] * (len(drawn) - 1))
        for row, key in enumerate(drawn):
            ax = axes[row, column]
            if key == "flow":
                flow = batch["flow"][column]
                middle = flow[flow.shape[0] // 2]
                ax.imshow(flow_to_rgb(middle, max_magnitude=flow_scale(flow)))
                titles[row] += (("\n" if titles[row] else "")
                                + f"flow, step {flow.shape[0] // 2 + 1}/{flow.shape[0]}")
            else:
                ax.imshow(batch[key][column])
            ax.set_title(titles[row], fontproperties=font)
            ax.set_axis_off()
    note = (f"{len(shown)} of {wrong.size} misclassified (of {predictions.labels.size}), "
            "the true classes in turn"
            + ("; flow in the Middlebury colour coding (hue = direction), full colour at the "
               "sample's 99th-percentile |flow|" if flows else ""))
    return (_img(figure_png(figure), f"misclassified test samples of {name}")
            + f"<p class=meta>{_e(note)}.</p>")


def _column_lines(text: str, fits: Callable[[str], bool]) -> str:
    """`text` in lines that `fits` says fit a column of the misclassified strip, broken at
    spaces where it can be: a title one line wide ran over its neighbours' where ids are long
    (videofolder's `class/clip`: `ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01`). Beyond
    `STRIP_LINES_EACH` lines its last line is '…' and the end of the text, for the ends tell
    samples apart (a class folder, a clip's number). Measured, not counted: a YouTube id's
    capitals are half again as wide as its digits."""
    lines: list[str] = []
    rest = text
    while rest:
        if fits(rest):
            lines.append(rest)
            break
        if len(lines) == STRIP_LINES_EACH - 1:
            tail = next((rest[start:] for start in range(1, len(rest) + 1)
                         if fits("\N{HORIZONTAL ELLIPSIS}" + rest[start:])), "")
            lines.append("\N{HORIZONTAL ELLIPSIS}" + tail)
            break
        end = 1  # (a character at least, whatever its width)
        while fits(rest[:end + 1]):
            end += 1
        space = rest.rfind(" ", 1, end + 1)
        if space > 0:
            lines.append(rest[:space])
            rest = rest[space + 1:]
        else:
            lines.append(rest[:end])
            rest = rest[end:]
    return "\n".join(lines)


def _distinct_labels(names: Sequence[str], most: int) -> list[str]:
    """Each name within `most` characters (`_shortened`), no two alike: names that share their
    start and their end ("playing musical instrument (wind) in a concert hall", "... (brass)
    ...") were all cut to one label, and the matrix could not be read (found by review). Such
    names are shown from where they begin to differ; any still alike get their position."""
    labels = [_shortened(name, most) for name in names]
    for label in set(labels):
        alike = [k for k, other in enumerate(labels) if other == label]
        if len(alike) > 1:
            start = len(os.path.commonprefix([names[k] for k in alike]))
            for k in alike:
                labels[k] = "\N{HORIZONTAL ELLIPSIS}" + _shortened(names[k][start:], most - 1)
    seen = collections.Counter(labels)
    return [f"{label} ({k})" if seen[label] > 1 else label for k, label in enumerate(labels)]


def _shortened(text: str, most: int) -> str:
    """`text`, or its first and last characters around '…' where it is longer than `most`."""
    if len(text) <= most:
        return text
    kept = most - 1
    return text[:(kept + 1) // 2] + "\N{HORIZONTAL ELLIPSIS}" + text[len(text) - kept // 2:]


def figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _e(text: str) -> str:
    return html.escape(text, quote=True)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.7em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead {{ background: #eee; }}
section {{ border-top: 2px solid #ccc; margin-top: 2em; }}
img {{ max-width: 100%; }}
.row {{ display: flex; gap: 2em; align-items: flex-start; flex-wrap: wrap; }}
.meta {{ color: #666; font-size: 90%; }}
.unavailable {{ background: #fff3cd; border: 1px solid #e0c060; padding: 0.5em; }}
</style></head>
<body>
{body}
</body></html>
"""
