"""`trainers report RUNS --html FILE`: the page's content, and the page in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import in_ci
from trainers.cli import app
from trainers.html_report import _misclassified, html_report, predict_test
from trainers.predict import SplitPredictions
from trainers.runs import latest_runs
from trainers.testing import make_tiny_store

runner = CliRunner()


def _latest(runs, model):
    """The latest run of `model` under `runs` (these tests' runs folders hold one store)."""
    (record,) = [r for r in latest_runs(runs) if r.model == model]
    return record


class Page(HTMLParser):
    """The parts of a page the tests look at: images, tables (as rows of cells), text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A tvhi_flow run whose store is there, and a stanford40 run whose store was deleted."""
    folder = tmp_path_factory.mktemp("html")
    tvhi = make_tiny_store(folder / "tvhi.zarr", size=16, steps=2, per_class=(2, 1, 2))
    gone = make_tiny_store(folder / "s40.zarr", dataset="stanford40", size=16,
                           per_class=(2, 1, 1))
    for model, store in (("tvhi_flow", tvhi), ("stanford40", gone)):
        result = runner.invoke(app, ["run", model, "--store", str(store), "--runs-dir",
                                     str(folder / "runs"), "--epochs", "1", "--quiet"])
        assert result.exit_code == 0, result.output + repr(result.exception)
    shutil.rmtree(gone)
    return folder / "runs"


@pytest.fixture(scope="module")
def report_file(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("page") / "report.html"
    result = runner.invoke(app, ["report", str(runs), "--html", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.stdout.strip() == f"HTML report written to {out}"
    return out



def _predictions(labels: np.ndarray, predicted: np.ndarray) -> SplitPredictions:
    """Predictions of eight clips `clip0..7` of the four TV-HI classes, as sure as can be."""
    classes = ("handShake", "highFive", "hug", "kiss")
    return SplitPredictions(classes=classes, ids=np.array([f"clip{k}" for k in range(8)]),
                            labels=labels, predicted=predicted,
                            probabilities=np.eye(4, dtype=np.float32)[predicted],
                            true_classes=np.array([classes[k] for k in labels], dtype=object),
                            splits=np.array(["test"] * 8))

def test_table_cells_are_text_not_markup():
    """A class or dataset name of a folder of images may hold `<` or `&`."""
    from trainers.html_report import html_table

    table = html_table(["<Model>"], [["a & <b>c</b>"]])
    assert "<th>&lt;Model&gt;</th>" in table and "<td>a &amp; &lt;b&gt;c&lt;/b&gt;</td>" in table


def test_the_pages_seeds_table_is_over_every_run_not_the_latest(tmp_path):
    """Its mean is over the seeds of a recipe, as the text report's: over the latest runs
    only, seeds 0 and 1 became seed 1 alone."""
    runs = tmp_path / "runs"
    for seed, accuracy in ((0, 0.30), (1, 0.40)):
        folder = runs / f"flow-{seed}"
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"")
        (folder / "metrics.json").write_text(json.dumps({
            "model": "flow", "created": f"2026-01-01T00:00:0{seed}", "seed": seed,
            "recipe": {"learning_rate": 1e-3, "epochs": 20}, "augment": False,
            "mixed_precision": False, "store": {"dataset": "tvhi", "fingerprint": "f1"},
            "test": {"accuracy": accuracy, "loss": 1.0}}))
    seeds = Page(html_report(runs)).tables[2]
    assert seeds[1] == ["TV-HI flow", "report", "0, 1", "0.35", "0.07", "0.30-0.40"]


def test_the_page_holds_both_tables_curves_and_a_confusion_matrix(report_file):
    page = Page(report_file.read_text())
    table_1, table_2, seeds = page.tables[:3]
    assert seeds[0] == ["Model", "Recipe", "Seeds", "Test acc mean", "SD", "Range"]
    assert table_1[0] == ["Model", "Recipe", "train acc", "val acc", "train loss", "val loss",
                          "Epoch"]
    assert table_2[0] == ["Model", "Recipe", "Test acc", "Test loss", "Model size (GB)"]
    assert [row[0] for row in table_1[1:]] == ["Stanford 40", "TV-HI flow"]
    assert all(image["src"].startswith("data:image/png;base64,") for image in page.images)
    alts = [image["alt"] for image in page.images]
    assert "training curves of Stanford 40" in alts and "training curves of TV-HI flow" in alts
    assert "confusion matrix of TV-HI flow" in alts
    per_class = page.tables[3]
    assert per_class[0] == ["Class", "Test acc", "Correct"]
    assert [row[0] for row in per_class[1:]] == ["handShake", "highFive", "hug", "kiss", "all"]
    assert per_class[-1][2].endswith("/8")  # 2 test samples per class


def test_a_run_whose_store_is_gone_is_said_on_the_page(report_file, runs):
    text = " ".join(Page(report_file.read_text()).text)
    assert "No confusion matrix, per-class accuracy or misclassified samples: its store " \
           "cannot be opened" in text
    assert "confusion matrix of Stanford 40" not in report_file.read_text()


def test_the_confusion_matrix_agrees_with_the_runs_test_accuracy(runs):
    record = _latest(runs, "flow")  # (trained as tvhi_flow, an alias)
    predictions = predict_test(record)
    confusion = predictions.confusion
    assert confusion.shape == (4, 4) and confusion.sum() == 8
    assert np.trace(confusion) / confusion.sum() == pytest.approx(
        record.metrics["test"]["accuracy"])


def test_no_confusion_matrix_from_as_many_but_other_samples(runs):
    """The same counts, other finished samples (one repaired, another failed since): the
    matrix was drawn as Table 2's test set."""
    from trainers.html_report import StoreUnavailable
    from trainers.runs import RunRecord

    record = _latest(runs, "flow")
    other = RunRecord(path=record.path, metrics={**record.metrics, "samples_digest": "0" * 16})
    with pytest.raises(StoreUnavailable, match="holds other finished samples than when the run "
                                               "trained"):
        predict_test(other)


def test_no_confusion_matrix_from_a_store_of_another_fingerprint(runs):
    """A store rebuilt at the run's path with other parameters or clips is not the one the run
    was tested on: its matrix would not be Table 2's test set."""
    from trainers.html_report import StoreUnavailable
    from trainers.runs import RunRecord

    record = _latest(runs, "flow")
    other = RunRecord(path=record.path, metrics={
        **record.metrics, "store": {**record.store, "fingerprint": "0" * 64}})
    with pytest.raises(StoreUnavailable, match="is not the one the run trained on "
                                               r"\(fingerprint [0-9a-f]{8}, the run's 00000000\)"):
        predict_test(other)


def test_misclassified_samples_show_frame_and_flow(runs):
    record = _latest(runs, "flow")  # (trained as tvhi_flow, an alias)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    all_wrong = _predictions(labels, (labels + 1) % 4)
    strip = Page(_misclassified(record, "flow", all_wrong))
    assert len(strip.images) == 1
    assert "8 of 8 misclassified (of 8), the true classes in turn; flow in the Middlebury" \
        in " ".join(strip.text)
    assert all_wrong.misclassified.tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    right = _predictions(labels, labels)
    assert "every test sample is classified right" in _misclassified(record, "flow", right)


def test_misclassified_sample_titles_stay_within_their_column(runs, monkeypatch):
    """Long ids (videofolder's `class/clip`, HMDB51's) and long class names (Kinetics') are
    broken into lines of the column's width, and cut in the middle beyond two lines: one line
    each ran over the neighbouring columns' titles."""
    import trainers.html_report as html_report_module

    record = _latest(runs, "flow")
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    ids = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", "April_09_brush_hair_u_nm_np1_ba_goo_0",
           "WWMMWWMMWWMMWWMMWWMMWWMMW", "a" * 200, "-X4bQ2mW_z0_000010_000020",
           "a" * 10 + "\n" + "b" * 10, "clip6", "class/" * 20 + "clip7"]
    classes = ("exercising with an exercise ball", "highFive", "hug", "kiss" * 20)
    predicted = (labels + 1) % 4
    predictions = SplitPredictions(classes=classes, ids=np.array(ids), labels=labels,
                                   predicted=predicted,
                                   probabilities=np.eye(4, dtype=np.float32)[predicted],
                                   true_classes=np.array([classes[k] for k in labels]),
                                   splits=np.array(["test"] * 8))
    figures = []
    drawn = html_report_module.figure_png
    monkeypatch.setattr(html_report_module, "figure_png",
                        lambda figure: (figures.append(figure), drawn(figure))[1])
    _misclassified(record, "flow", predictions)
    (figure,) = figures
    renderer = figure.canvas.get_renderer()
    for row in (figure.axes[:8], figure.axes[8:]):  # the pictures', the flows'
        extents = [axes.title.get_window_extent(renderer) for axes in row]
        assert 0 <= extents[0].x0 and extents[-1].x1 <= figure.bbox.x1
        for left, right, axes in zip(extents, extents[1:], row):
            assert left.x1 < right.x0, axes.get_title()  # apart from the next column's
    first = figure.axes[0].get_title().splitlines()
    assert "".join(first[:2]) == ids[0]  # broken where the column ends, not cut
    assert first[2:4] == ["true exercising with an", "exercise ball"]  # broken at a space
    escaped = figure.axes[predictions.misclassified.tolist().index(5)].get_title()
    assert "a\\nb" in escaped.replace("\n", "")  # a newline written as an escape, as listed
    column = predictions.misclassified.tolist().index(3)  # the id of 200 characters
    cut = figure.axes[column].get_title().splitlines()[:2]
    assert set(cut[0]) == {"a"} and cut[1].startswith("\N{HORIZONTAL ELLIPSIS}a")
    assert 2 * len(cut[0]) < 200


def test_per_class_accuracy_is_of_each_true_class():
    """A class's accuracy is its samples classified right over its samples (the confusion
    matrix's row), not over the samples predicted as it (its column)."""
    from trainers.html_report import _per_class_table

    labels = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    table = _per_class_table(_predictions(labels, np.array([0, 1, 1, 1, 1, 1, 2, 0])))
    assert "<td>handShake</td><td>0.25</td><td>1/4</td>" in table
    assert "<td>highFive</td><td>1.00</td><td>2/2</td>" in table
    assert "<td>kiss</td><td>0.00</td><td>0/1</td>" in table
    assert "<td>all</td><td>0.50</td><td>4/8</td>" in table


def test_misclassified_samples_of_a_store_holding_flow_alone_show_the_flow(tmp_path):
    """A store may hold flow and no picture (the flow model trains on it); the strip drew
    `pictures[0]` regardless, an IndexError that ended the whole page."""
    store = make_tiny_store(tmp_path / "flow.zarr", size=16, steps=2, per_class=(2, 1, 2),
                            arrays=("flow",))
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir",
                                 str(tmp_path / "runs"), "--epochs", "1", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    record = _latest(tmp_path / "runs", "flow")
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    all_wrong = _predictions(labels, (labels + 1) % 4)
    strip = Page(_misclassified(record, "flow", all_wrong))
    assert len(strip.images) == 1 and "flow in the Middlebury" in " ".join(strip.text)


def test_an_empty_runs_dir_is_a_page_that_says_so(tmp_path):
    (tmp_path / "runs").mkdir()
    assert "No finished runs in" in html_report(tmp_path / "runs")


def test_an_unwritable_html_file_is_one_error_line(runs, tmp_path):
    (tmp_path / "taken").mkdir()
    result = runner.invoke(app, ["report", str(runs), "--html", str(tmp_path / "taken")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot write the HTML report to")
    assert len(result.stderr.strip().splitlines()) == 1



@pytest.mark.parametrize("option", ["--out", "--html", "--html and --out", "--html a folder"])
def test_an_unwritable_output_is_refused_before_any_model_predicts(runs, tmp_path, monkeypatch,
                                                                   option):
    """Every model predicted its whole test split (minutes on the real runs) before the output
    was found unwritable."""
    from trainers import html_report as page

    def never(*args, **kwargs):
        raise AssertionError("a model predicted before the output was checked")

    monkeypatch.setattr(page, "predict_test", never)  # (the figures' predictions too)
    taken = tmp_path / "taken"
    taken.write_text("a file")
    args = {"--out": ["--out", str(taken)], "--html": ["--html", str(taken / "report.html")],
            # the figures' folder was checked only after the page's predictions
            "--html and --out": ["--html", str(tmp_path / "page.html"), "--out", str(taken)],
            # (a folder where the page's file goes: its write failed only after predicting)
            "--html a folder": ["--html", str(tmp_path)]}
    result = runner.invoke(app, ["report", str(runs), *args[option]])
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert result.stderr.startswith("error: cannot write the ")
    assert len(result.stderr.strip().splitlines()) == 1 and taken.read_text() == "a file"


#: Appended to a copy of the page: after load, each image's decoded width goes into the DOM.
MEASURE = ("<script>window.addEventListener('load', () => { for (const img of "
           "document.images) img.setAttribute('data-natural-width', img.naturalWidth); "
           "document.body.setAttribute('data-loaded', 'yes'); });</script>")


def test_the_page_renders_in_headless_chromium_with_every_figure(report_file, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        if in_ci():
            pytest.fail("chromium is not installed; CI installs Debian's chromium (.ci/run)")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    measured = tmp_path / "measured.html"
    measured.write_text(report_file.read_text().replace("</body>", MEASURE + "</body>"))
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", measured.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    dom = Page(proc.stdout)
    assert 'data-loaded="yes"' in proc.stdout, proc.stdout[:2000]
    alts = {image["alt"] for image in dom.images}  # (+ the strip when a sample is wrong)
    assert {"training curves of Stanford 40", "training curves of TV-HI flow",
            "confusion matrix of TV-HI flow"} <= alts
    for image in dom.images:
        assert image["src"].startswith("data:image/png;base64,")
        assert int(image["data-natural-width"]) > 100, image["alt"]
    assert len(dom.tables) == 4 and dom.tables[0][0][0] == "Model"


def test_report_out_writes_the_documented_figures(runs, tmp_path):
    """`--out DIR`: per model its curves and (store still there) its confusion matrix, and the
    comparison with the report's Table 2; a model whose store is gone says why it has none."""
    import matplotlib.image

    from trainers.figures import COMPARISON_FILE

    out = tmp_path / "figures"
    result = runner.invoke(app, ["report", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "Table 2" in result.stdout
    figures = sorted(out.glob("*.png"))  # (and the hidden list of them, for the next report)
    assert {p.name for p in figures} == {
        "flow_curves.png", "flow_confusion.png", "image_curves.png", COMPARISON_FILE}
    for path in figures:
        assert f"- {path}" in result.stdout
        picture = matplotlib.image.imread(path)
        assert picture.shape[0] > 200 and picture.shape[1] > 300
        assert picture[..., :3].std() > 0.05  # something is drawn
    assert "warning: Stanford 40: no confusion matrix (its store cannot be opened" in result.stderr
    # The confusion matrix is the one the HTML page shows (one drawing, two outlets).
    from trainers.html_report import confusion_png, predict_test
    from trainers.report import _name

    flow = _latest(runs, "flow")
    assert (out / "flow_confusion.png").read_bytes() == confusion_png(predict_test(flow),
                                                                      _name(flow))


# --- The review of `trainers report` (findings 1-13): each test failed before its fix. ---


def _copied_run(runs: Path, model: str, tmp_path: Path, **metrics) -> Path:
    """A copy of the fixture's run of `model` and of its store in `tmp_path` (so a test may
    damage or change them), its metrics.json pointing at the copied store, with `metrics`
    merged into it; the copy's runs folder."""
    record = _latest(runs, model)
    store = Path(shutil.copytree(record.store["path"], tmp_path / "store.zarr"))
    run = Path(shutil.copytree(record.path, tmp_path / "runs" / record.path.name))
    values = {**record.metrics, "store": {**record.store, "path": str(store)}, **metrics}
    (run / "metrics.json").write_text(json.dumps(values))
    return run.parent


def test_a_store_with_no_finished_test_sample_gets_no_matrix(tmp_path, monkeypatch):
    """A run of a store that holds no finished test sample (none built yet, or no test split)
    is a note saying so, not a prediction of nothing."""
    import trainers.fit
    from trainers.html_report import StoreUnavailable
    from trainers.testing import write_untrained_run

    monkeypatch.setattr(trainers.fit, "train_model", write_untrained_run)
    store = make_tiny_store(tmp_path / "tvhi.zarr", size=16, steps=2, per_class=(2, 1, 0))
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir",
                                 str(tmp_path / "runs"), "--epochs", "1", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    (record,) = latest_runs(tmp_path / "runs")
    with pytest.raises(StoreUnavailable, match=f"the store at {store} has no finished test "
                                               f"sample"):
        predict_test(record)


def test_a_store_holding_other_test_samples_than_the_run_was_tested_on_gets_no_matrix(
        runs, tmp_path):
    """A store built further after the run keeps its fingerprint: the matrix was drawn on
    every test sample done now (8) beside Table 2's accuracy on the run's 6, unsaid."""
    record = _latest(runs, "flow")
    copied = _copied_run(runs, "flow", tmp_path,
                         samples={**record.metrics["samples"], "test": 6})
    page, out = tmp_path / "page.html", tmp_path / "figures"
    result = runner.invoke(app, ["report", str(copied), "--html", str(page), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    why = "holds 8 finished test samples now, the run was tested on 6"
    assert why in " ".join(Page(page.read_text()).text)
    assert "confusion matrix of TV-HI flow" not in page.read_text()
    assert "warning: TV-HI flow: no confusion matrix (the store at" in result.stderr
    assert why in result.stderr and not (out / "flow_confusion.png").exists()


def test_a_damaged_curves_png_is_redrawn_and_a_damaged_history_said_so(runs, tmp_path,
                                                                       monkeypatch):
    """A run's curves.png cut short was copied into --out and the page as it was (a broken
    image, exit 0, no word); with its history.json damaged too, the report said the run had
    neither file. The curves are redrawn from history.json, once for both outputs, titled as
    the run titled its own (the report's row name was the title first), and what is damaged is
    said so."""
    import trainers.curves

    copied = _copied_run(runs, "flow", tmp_path)
    (run,) = copied.iterdir()
    whole = (run / "curves.png").read_bytes()
    (run / "curves.png").write_bytes(whole[:len(whole) // 2])
    titles = []
    draw = trainers.curves.plot_curves
    monkeypatch.setattr(trainers.curves, "plot_curves",
                        lambda *args, title, **kw: titles.append(title) or draw(
                            *args, title=title, **kw))
    out, page = tmp_path / "figures", tmp_path / "page.html"
    result = runner.invoke(app, ["report", str(copied), "--out", str(out), "--html", str(page)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    from PIL import Image

    with Image.open(out / "flow_curves.png") as image:
        image.load()  # whole: redrawn (a copy of the cut file raised "image file is truncated")
    assert "training curves of TV-HI flow" in page.read_text()
    fingerprint = json.loads((run / "metrics.json").read_text())["store"]["fingerprint"]
    # (drawn once for both outputs: the figure and the page's picture are one PNG)
    assert titles == [f"flow on tvhi ({fingerprint[:8]})"]

    (run / "history.json").write_text('{"loss": [1.0, ')
    result = runner.invoke(app, ["report", str(copied), "--out", str(out), "--html", str(page)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    why = "its curves.png is not a whole PNG and its history.json is not a training history"
    assert f"warning: TV-HI flow: no curves ({why} in {run})" in result.stderr
    assert f"No curves: {why}." in " ".join(Page(page.read_text()).text)
    assert not (out / "flow_curves.png").exists()


def test_out_removes_the_report_figures_it_did_not_draw_and_nothing_else(runs, tmp_path):
    """An old MODEL_confusion.png stayed beside fresh curves when the model's store was gone
    (its warning said there was none), and so did figures of models no longer in RUNS. Only
    figures an earlier report wrote (it lists them) are removed: not a user's file of such a
    name, and nothing by a report of no runs (the wrong folder, most likely)."""
    from trainers.figures import WRITTEN_FILE

    out = tmp_path / "figures"
    out.mkdir()
    stale = ["image_confusion.png", "two_stream_curves.png", "two_stream_confusion.png"]
    kept = ["notes.txt", "my_curves.png", "flow_confusion.png.bak", "frames_curves.png"]
    for name in stale + kept:
        (out / name).write_bytes(b"an earlier file")
    (out / WRITTEN_FILE).write_text("".join(f"{name}\n" for name in stale))
    result = runner.invoke(app, ["report", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    drawn = {"flow_curves.png", "flow_confusion.png", "image_curves.png", "test_accuracy.png"}
    assert {p.name for p in out.iterdir()} == {*drawn, *kept, WRITTEN_FILE}
    for name in stale:
        assert f"removed {out / name}: an earlier report's figure" in result.stdout
    assert set((out / WRITTEN_FILE).read_text().split()) == drawn
    # the same report again: its own figures, listed by the first, are drawn, not removed
    again = runner.invoke(app, ["report", str(runs), "--out", str(out)])
    assert again.exit_code == 0 and "removed" not in again.stdout, again.output
    assert {p.name for p in out.iterdir()} == {*drawn, *kept, WRITTEN_FILE}

    empty = tmp_path / "no-runs"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "removed" not in result.stdout
    assert {p.name for p in out.iterdir()} == {*drawn, *kept, WRITTEN_FILE}


def test_out_replaces_a_link_of_a_figures_name_and_never_writes_through_it(runs, tmp_path):
    """A link left in the --out folder under a figure's name had the figure written through it:
    over another run's curves.png, or over a store's zarr.json (the store then unreadable).
    The report's figures are its own files: a link of their name is replaced, its target left
    as it was."""
    from trainers.figures import WRITTEN_FILE

    flow_run = next(runs.glob("flow-*"))
    curves = (flow_run / "curves.png").read_bytes()
    victim = tmp_path / "zarr.json"
    victim.write_text("{}")
    out = tmp_path / "figures"
    out.mkdir()
    (out / "image_curves.png").symlink_to(flow_run / "curves.png")
    (out / "test_accuracy.png").symlink_to(victim)
    os.link(victim, out / "flow_confusion.png")  # another name of the same file
    (out / WRITTEN_FILE).symlink_to(victim)
    result = runner.invoke(app, ["report", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (flow_run / "curves.png").read_bytes() == curves and victim.read_text() == "{}"
    for name in ("image_curves.png", "test_accuracy.png", "flow_confusion.png"):
        path = out / name
        assert not path.is_symlink() and path.stat().st_nlink == 1
        assert path.read_bytes().startswith(b"\x89PNG"), name
    assert "test_accuracy.png" in (out / WRITTEN_FILE).read_text()


@pytest.mark.parametrize("name", ["test_accuracy.png", "flow_curves.png", "old_curves.png",
                                  "a link to a figure", "a figure's name linked elsewhere"])
def test_a_page_named_as_a_figure_in_the_out_folder_is_refused(runs, tmp_path, name):
    """`--html figures/test_accuracy.png --out figures` said the page was written, then wrote a
    figure over it (or removed it as an earlier report's figure): one line, nothing written;
    a link on either side (the page a link to a figure, a figure's name a link to the page)
    as well. A page of its own name beside the figures is fine."""
    from trainers.figures import WRITTEN_FILE

    out = tmp_path / "figures"
    out.mkdir()
    (out / WRITTEN_FILE).write_text("old_curves.png\n")
    page = out / name
    if name == "a link to a figure":
        page = tmp_path / "page.html"
        page.symlink_to(out / "test_accuracy.png")
    elif name == "a figure's name linked elsewhere":
        page = out / "test_accuracy.png"
        page.symlink_to(tmp_path / "page.html")
    before = sorted(p.name for p in out.iterdir())
    result = runner.invoke(app, ["report", str(runs), "--html", str(page), "--out", str(out)])
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert result.stderr.strip().splitlines() == [
        f"error: --html {str(page)!r} bears the name of a file the report writes in "
        f"--out {str(out)!r}: give the page another name"]
    assert sorted(p.name for p in out.iterdir()) == before
    for path in out.iterdir():
        if path.is_symlink():
            path.unlink()
    result = runner.invoke(app, ["report", str(runs), "--html", str(out / "report.html"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_a_full_disk_mid_way_leaves_each_earlier_figure_whole(runs, tmp_path):
    """Figures were written straight to their names: a disk filling during a report left a
    truncated PNG in place of the earlier one. A real write failure (the file-size limit, as a
    full disk fails a write) now leaves every earlier figure as it was and no partial file."""
    import resource
    import signal

    out = tmp_path / "figures"
    assert runner.invoke(app, ["report", str(runs), "--out", str(out)]).exit_code == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (EFBIG, not a killed process)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))  # (under any figure's size)
    try:
        result = runner.invoke(app, ["report", str(runs), "--out", str(out)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write the figures to {str(out / 'image_curves.png')!r}: File too large"]


def _fake_record(tmp_path: Path, name: str, model: str, dataset: str, accuracy, **recipe):
    """A run's record as `metrics.json` gives it (no model, no store): enough to draw the
    comparison figure."""
    from trainers.runs import RunRecord

    return RunRecord(path=tmp_path / name, metrics={
        "model": model, "created": name, "seed": 0,
        "recipe": {"learning_rate": 1e-3, "batch_size": 2, "epochs": 20,
                   "lr_halve_every": None, **recipe},
        "store": {"dataset": dataset, "fingerprint": "fp"}, "test": {"accuracy": accuracy}})


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The matplotlib figures the report's figure functions make, kept to be measured."""
    from matplotlib.figure import Figure

    from trainers import curves, figures, html_report as page

    made = []

    class Kept(Figure):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    for module in (curves, figures, page):
        monkeypatch.setattr(module, "Figure", Kept)
    return made


def _texts(figure) -> list[str]:
    return [text.get_text() for ax in figure.axes for text in ax.texts]


def _legend_texts(figure) -> list[str]:
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes)]
    return [text.get_text() for legend in legends if legend is not None
            for text in legend.get_texts()]


def test_the_comparison_sets_only_the_reports_own_dataset_against_table_2(tmp_path, drawn):
    """Runs on ucf101 or a folder of images had the report's TV-HI/Stanford-40 number (0.39,
    0.17) beside them."""
    from trainers.figures import comparison_png

    comparison_png([_fake_record(tmp_path, "a", "image", "imagefolder", 0.5),
                    _fake_record(tmp_path, "b", "flow", "ucf101", 0.5),
                    _fake_record(tmp_path, "c", "flow", "tvhi", 0.5)])
    (figure,) = drawn
    report_bars = _texts(figure)[:3]  # the grey bars are drawn first
    assert report_bars == ["-", "-", "0.39"], report_bars


def test_a_recipe_overridden_on_the_command_line_is_named_in_the_legend(tmp_path, drawn):
    """`--epochs 1` runs read "these runs (report recipes)" beside the report's Table 2."""
    from trainers.figures import comparison_png

    comparison_png([_fake_record(tmp_path, "a", "flow", "tvhi", 0.5, epochs=1)])
    assert "these runs (recipe: report, epochs 1)" in _legend_texts(drawn[0])
    drawn.clear()
    comparison_png([_fake_record(tmp_path, "a", "flow", "tvhi", 0.5)])
    assert "these runs (recipe: report)" in _legend_texts(drawn[0])


def test_the_comparison_of_one_model_shows_its_whole_title_and_no_legend_over_a_bar(
        tmp_path, drawn):
    """With one or two models the figure was 3.6 or 5.2 in wide and its title cut on both
    sides; the legend in the upper left covered a bar's "1.00"."""
    from matplotlib.transforms import Bbox

    from trainers.figures import comparison_png

    comparison_png([_fake_record(tmp_path, "a", "image", "stanford40", 1.0)])
    (figure,) = drawn
    renderer = figure.canvas.get_renderer()
    page = figure.bbox
    titles = [text for ax in figure.axes for text in (ax.title,) if text.get_text()]
    titles += [text for text in figure.texts if text.get_text()]
    assert titles
    for title in titles:
        box = title.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1, (box, page)
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes)]
    legend_boxes = [legend.get_window_extent(renderer) for legend in legends if legend]
    numbers = [text.get_window_extent(renderer) for ax in figure.axes for text in ax.texts]
    assert legend_boxes and numbers
    assert not any(Bbox.intersection(legend, number) for legend in legend_boxes
                   for number in numbers)


@pytest.mark.parametrize("fields", [{}, {"epochs": 2, "batch_size": 1, "ema_momentum": 0.9},
                                    {"epochs": 2, "batch_size": 1, "ema_momentum": 0.9,
                                     "dropout": 0.7, "subtract_mean_flow": True}])
def test_the_comparisons_legend_fits_the_figure_however_many_fields_a_run_overrode(
        tmp_path, drawn, fields):
    """A run with batch size, weight averaging and epochs overridden drew its legend entry on
    one line past both edges of the figure, the recipe cut off (found by review)."""
    from trainers.figures import comparison_png

    comparison_png([_fake_record(tmp_path, "a", "flow", "tvhi", 0.5, **fields)])
    (figure,) = drawn
    renderer = figure.canvas.get_renderer()
    page = figure.bbox
    legends = [legend for legend in [*figure.legends, *(ax.get_legend() for ax in figure.axes)]
               if legend]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0, (box, page)
    said = " ".join(" ".join(_legend_texts(figure)).split())
    for name in fields:
        assert name in said, said


def test_class_names_and_ids_with_dollar_signs_are_drawn_as_written(drawn, runs):
    """Matplotlib reads text between `$` signs as maths: a class folder named `p$^$q` made the
    report an internal error, and `cost $5 and $6` was drawn as `cost 5and6` in italics (found
    by review)."""
    from trainers.html_report import confusion_png

    classes = ("p$^$q", "cost $5 and $6")
    labels = np.array([0, 1, 0, 1])
    predictions = SplitPredictions(
        classes=classes, ids=np.array(["p$^$q/a", "b", "c", "d"]), labels=labels,
        predicted=1 - labels, probabilities=np.eye(2)[1 - labels],
        true_classes=np.array([classes[k] for k in labels]), splits=np.array(["test"] * 4))
    confusion_png(predictions, "flow")
    (figure,) = drawn
    renderer = figure.canvas.get_renderer()
    (matrix,) = [ax for ax in figure.axes if ax.get_xticklabels()]
    for label in matrix.get_xticklabels() + matrix.get_yticklabels():
        assert label.get_text() in classes and not label.get_parse_math()
        label.get_window_extent(renderer)  # (drawn: raised ValueError for `p$^$q`)
    import dataclasses

    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    named = ("p$^$q", "cost $5 and $6", "x_{y}^z", "a$b")
    wrong = dataclasses.replace(_predictions(labels, (labels + 1) % 4), classes=named,
                                true_classes=np.array([named[k] for k in labels], dtype=object))
    strip = Page(_misclassified(_latest(runs, "flow"), "flow", wrong))  # (raised ValueError)
    assert len(strip.images) == 1
    titles = [ax.title for ax in drawn[-1].axes if ax.title.get_text()]
    assert titles and not any(title.get_parse_math() for title in titles)


def _all_right(classes: tuple[str, str]) -> SplitPredictions:
    """Four test samples of two classes, each predicted right."""
    labels = np.array([0, 1, 0, 1])
    return SplitPredictions(
        classes=classes, ids=np.array(["a", "b", "c", "d"]), labels=labels, predicted=labels,
        probabilities=np.eye(2)[labels], true_classes=np.array([classes[k] for k in labels]),
        splits=np.array(["test"] * 4))


def test_a_confusion_matrix_of_long_class_names_keeps_room_for_the_matrix(drawn):
    """Two names of 46 characters written whole left the matrix no room (constrained layout
    "collapsed to zero"): a name is cut in its middle beyond 24 characters (found by review)."""
    from trainers.html_report import confusion_png

    predictions = _all_right(("a very long class name of forty-six characters",
                              "exercising with an exercise ball"))
    confusion_png(predictions, "image")
    (figure,) = drawn
    renderer = figure.canvas.get_renderer()
    (matrix,) = [ax for ax in figure.axes if ax.get_xticklabels()]
    assert matrix.get_window_extent(renderer).width >= 1.2 * figure.dpi  # (was none)
    names = [label.get_text() for label in matrix.get_yticklabels()]
    assert names == ["a very long \N{HORIZONTAL ELLIPSIS} characters",
                     "exercising w\N{HORIZONTAL ELLIPSIS}ercise ball"]  # 24 characters each


def test_characters_the_font_cannot_draw_are_one_warning(drawn):
    """matplotlib warned once for each such character and place in its code: 18 warnings of
    two lines each for two Chinese class names (found by review)."""
    import warnings

    from trainers.html_report import confusion_png

    predictions = _all_right(("跑步", "日本 \N{PARTY POPPER}"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        confusion_png(predictions, "image")
    (warning,) = caught
    assert str(warning.message).startswith("the figures' font (")
    assert "\\N{PARTY POPPER}" in str(warning.message)
    assert str(warning.message).endswith(": drawn as boxes")
    # every other warning is shown as it was, and a user's filter of the glyphs' holds
    from trainers.curves import text_as_given

    @text_as_given
    def draw_and_warn() -> None:
        confusion_png(predictions, "image")
        warnings.warn("another warning")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message="Glyph")
        draw_and_warn()
    assert [str(warning.message) for warning in caught] == ["another warning"]


@pytest.mark.parametrize("count", [2, 3, 40])
def test_a_confusion_matrix_shows_its_whole_title(drawn, count):
    """A model of 2 or 3 classes drew a figure 4-5 in wide, and its title ("TV-HI two-stream
    (from scratch): test split (4 sampl") was cut."""
    from trainers.html_report import confusion_png
    from trainers.predict import SplitPredictions

    labels = np.arange(4) % count
    predictions = SplitPredictions(
        classes=tuple(f"class {k}" for k in range(count)), ids=np.array(["a", "b", "c", "d"]),
        labels=labels, predicted=labels, probabilities=np.eye(count)[labels],
        true_classes=np.array([f"class {k}" for k in labels]), splits=np.array(["test"] * 4))
    confusion_png(predictions, "TV-HI two-stream (from scratch)")
    (figure,) = drawn
    renderer = figure.canvas.get_renderer()
    (title,) = [ax.title for ax in figure.axes if ax.title.get_text()]
    box, page = title.get_window_extent(renderer), figure.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1, (title.get_text(), box, page)


def test_a_null_test_accuracy_draws_the_comparison_with_a_dash(tmp_path, drawn):
    """`"test": {"accuracy": null}` passes as a run's metrics and the tables show "-"; the
    comparison called float(None) after every model had predicted, and wrote no figure."""
    runs = tmp_path / "runs"
    run = runs / "flow-a"
    run.mkdir(parents=True)
    (run / "model.keras").write_bytes(b"")
    (run / "metrics.json").write_text(json.dumps({
        "model": "flow", "created": "a", "store": {"dataset": "tvhi", "fingerprint": "fp"},
        "test": {"accuracy": None, "loss": None}}))
    result = runner.invoke(app, ["report", str(runs), "--out", str(tmp_path / "figures")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (tmp_path / "figures" / "test_accuracy.png").is_file()
    # the report's 0.39 beside a dash, as Table 2 shows it: no bar of 0.00 claimed
    assert _texts(drawn[-1]) == ["0.39", "-"]


def test_one_epochs_curves_have_the_tick_1(drawn, tmp_path):
    """A one-epoch run's x axis read 0.945 ... 1.050, without the tick "1"."""
    from trainers.curves import plot_curves

    plot_curves({"accuracy": [0.5], "val_accuracy": [0.4], "loss": [1.2], "val_loss": [1.3]},
                tmp_path / "curves.png", title="TV-HI flow", best_epoch=1)
    (figure,) = drawn
    for ax in figure.axes:
        low, high = ax.get_xlim()
        assert [tick for tick in ax.get_xticks() if low <= tick <= high] == [1]


def test_a_damaged_test_sample_is_a_note_in_its_section_not_the_reports_end(runs, tmp_path):
    """A chunk that cannot be read raised a StoreError out of the prediction: the command
    printed one error and wrote neither the page nor the figures."""
    from tests.conftest import chunk_file

    copied = _copied_run(runs, "flow", tmp_path)
    record = _latest(copied, "flow")
    store = record.store["path"]
    chunk_file(store, "flow", _first_test_sample(store)).write_bytes(bytes(range(100)))
    page, out = tmp_path / "page.html", tmp_path / "figures"
    result = runner.invoke(app, ["report", str(copied), "--html", str(page), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "a test sample cannot be read" in " ".join(Page(page.read_text()).text)
    assert "warning: TV-HI flow: no confusion matrix (a test sample cannot be read" \
        in result.stderr
    assert (out / "flow_curves.png").is_file() and (out / "test_accuracy.png").is_file()


def test_a_damaged_picture_of_a_misclassified_sample_is_a_note(runs, tmp_path):
    """The flow model does not read the middle frame, so its prediction succeeds; the strip's
    read of that frame raised out of the whole page."""
    from tests.conftest import chunk_file

    record = _latest(_copied_run(runs, "flow", tmp_path), "flow")
    store = record.store["path"]
    chunk_file(store, "middle_frame", _first_test_sample(store)).write_bytes(bytes(range(100)))
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    all_wrong = _predictions(labels, (labels + 1) % 4)
    strip = _misclassified(record, "flow", all_wrong)
    assert strip.startswith("<p class=unavailable>No misclassified samples: a test sample "
                            "cannot be read"), strip


def _first_test_sample(store: str) -> int:
    """The store index of the first test sample (the first in the split's order)."""
    import flowstore

    with flowstore.open(store) as dataset:
        return int(dataset.split("test", features=["flow"]).indices[0])


def test_html_and_out_together_predict_each_test_split_once(runs, tmp_path, monkeypatch):
    """The page and the figures each predicted every test split: 5,532 Stanford-40 images
    twice."""
    from trainers import models

    loaded = []
    load_trained = models.load_trained

    def counted(path):
        loaded.append(path)
        return load_trained(path)

    monkeypatch.setattr(models, "load_trained", counted)
    result = runner.invoke(app, ["report", str(runs), "--html", str(tmp_path / "page.html"),
                                 "--out", str(tmp_path / "figures")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert len(loaded) == 1, loaded  # the flow run (the Stanford-40 run's store is gone)


# --- The review of the confusion matrix's cost and of a run directory given for RUNS. ---


def _many_classes(count: int) -> SplitPredictions:
    """Three test clips a class of `count` classes, each predicted as the next class."""
    labels = np.repeat(np.arange(count), 3)
    predicted = (labels + 1) % count
    classes = tuple(f"class_{k:03d}" for k in range(count))
    return SplitPredictions(classes=classes, ids=np.array([f"c{k}" for k in range(labels.size)]),
                            labels=labels, predicted=predicted,
                            probabilities=np.eye(count, dtype=np.float32)[predicted],
                            true_classes=np.array([classes[k] for k in labels], dtype=object),
                            splits=np.array(["test"] * labels.size))


def test_a_confusion_matrix_of_400_classes_is_drawn_within_a_bounded_size(drawn, monkeypatch):
    """The figure grew 0.5 in a class and wrote a count in each of the classes^2 cells: 101
    classes drew 5400 x 5300 px in 22 s and 0.9 GB; Kinetics-400 would take about 12 GB."""
    import struct

    from trainers import html_report as page

    bound = 2000  # pixels a side; the old figure of 400 classes was 20,500 x 20,400
    figure_png = page.figure_png

    def checked(figure):  # (so that a figure of the old size fails here, not in 12 GB)
        width, height = figure.get_size_inches() * 100
        assert width <= bound and height <= bound, (width, height)
        return figure_png(figure)

    monkeypatch.setattr(page, "figure_png", checked)
    png = page.confusion_png(_many_classes(400), "Kinetics flow")
    width, height = struct.unpack(">II", png[16:24])  # (the IHDR chunk)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 0 < width <= bound and 0 < height <= bound
    (figure,) = drawn
    (ax, _colour_bar) = figure.axes
    assert not ax.texts  # no count written in 160,000 cells
    assert "counts not shown above" in ax.get_title()
    assert 0 < len(ax.get_xticklabels()) <= 50 and 0 < len(ax.get_yticklabels()) <= 50


def test_a_confusion_matrix_names_and_counts_every_class_up_to_50_classes(drawn):
    """README: counts and names "up to 50 classes"; at 51 a note says they are left out."""
    from trainers import html_report as page

    page.confusion_png(_many_classes(50), "fifty")
    page.confusion_png(_many_classes(51), "fifty-one")
    fifty, fifty_one = ((figure.axes[0]) for figure in drawn)
    assert len(fifty.texts) == 50 * 50 and len(fifty.get_xticklabels()) == 50
    assert "counts not shown" not in fifty.get_title()
    assert not fifty_one.texts and "counts not shown above 50 classes" in fifty_one.get_title()
    # (above 50 classes at most 50 are named, one in ceil(count / 50): at 51, one in 2)
    assert "one class in 2 named" in fifty_one.get_title()
    assert len(fifty_one.get_xticklabels()) == len(fifty_one.get_yticklabels()) == 26


def test_html_and_out_together_draw_each_confusion_matrix_once(runs, tmp_path, monkeypatch):
    """The page and the figures each drew the same matrix: two minutes of drawing a
    Kinetics-400 matrix twice. The page now inlines the very PNG the folder gets."""
    import base64

    from trainers import figures, html_report as page

    made = []
    confusion_png = page.confusion_png

    def counted(predictions, title):
        made.append(title)
        return confusion_png(predictions, title)

    monkeypatch.setattr(page, "confusion_png", counted)
    # (the old figures module drew with its own import of it)
    monkeypatch.setattr(figures, "confusion_png", counted, raising=False)
    html, out = tmp_path / "page.html", tmp_path / "figures"
    result = runner.invoke(app, ["report", str(runs), "--html", str(html), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert made == ["TV-HI flow"]  # the flow run (the Stanford-40 run's store is gone)
    (inlined,) = [image["src"] for image in Page(html.read_text()).images
                  if image["alt"] == "confusion matrix of TV-HI flow"]
    assert base64.b64decode(inlined.split(",", 1)[1]) == (out / "flow_confusion.png").read_bytes()


@pytest.mark.parametrize("options", [[], ["--html", "page.html", "--out", "figures"]])
def test_a_run_directory_given_for_the_runs_folder_is_one_error_line(runs, tmp_path, options,
                                                                     monkeypatch):
    """`trainers report runs/flow-...` printed "No finished runs in ..." and exited 0; with
    --html and --out it wrote an empty page and "0 figure(s)"."""
    monkeypatch.chdir(tmp_path)
    run = _latest(runs, "flow").path
    result = runner.invoke(app, ["report", str(run), *options])
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert result.stderr == (f"error: {str(run)!r} is a run directory, not a runs directory: "
                             f"pass the folder that holds it ({str(runs)!r})\n")
    assert result.stdout == "" and not list(tmp_path.iterdir())
    # a runs folder holding a stray model.keras or metrics.json beside its runs still reports
    shutil.copy(run / "model.keras", runs / "model.keras")
    try:
        assert runner.invoke(app, ["report", str(runs)]).exit_code == 0
    finally:
        (runs / "model.keras").unlink()


def test_confusion_labels_of_names_alike_at_both_ends_stay_apart():
    """Names that share their start and their end (Kinetics has such) were all cut to one
    label, 'playing musi…oncert hall', at 5 classes as at 400: the matrix could not be read
    (found by review). Each is shown from where they differ, within the same width."""
    from trainers.html_report import CONFUSION_NAME_CHARS, _distinct_labels

    kinds = ["wind", "string", "brass", "percussion", "keyboard"]
    names = [f"playing musical instrument ({kind}) in a concert hall" for kind in kinds]
    labels = _distinct_labels(names, CONFUSION_NAME_CHARS)
    assert len(set(labels)) == len(labels)
    assert all(len(label) <= CONFUSION_NAME_CHARS for label in labels)
    assert all(kind in label for kind, label in zip(kinds, labels))
    assert _distinct_labels(["hug", "kiss", "a" * 40], 24) == ["hug", "kiss",
                                                              "a" * 12 + "\N{HORIZONTAL ELLIPSIS}"
                                                              + "a" * 11]
