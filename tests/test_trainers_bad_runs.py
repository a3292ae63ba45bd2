"""Damaged run directories: a cut-short or corrupt `model.keras`, a `metrics.json` of the
wrong types. A run folder that is not a run's is skipped, as a junk folder is; a model file
that cannot be read is named in one line (`trainers run`) or a note (`trainers report`), never
Keras' "File not found" traceback of a file that is there."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainers.cli import app
from trainers.runs import list_runs, read_run
from trainers.testing import TINY_FLOW, make_tiny_store

runner = CliRunner()

#: The start of a zip archive, as a `.keras` file cut short after its first bytes has.
CUT_SHORT = b"PK\x03\x04" + bytes(200)


def _run(runs: Path, name: str, model: str = "image", store: dict | None = None,
         model_file: bytes = b"", **fields) -> Path:
    """A finished run directory as `trainers run` writes it (`fields` added or replaced in
    its metrics.json), with `model_file` as its model.keras."""
    folder = runs / name
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(model_file)
    (folder / "metrics.json").write_text(json.dumps({
        "model": model, "created": f"2026-01-01T00:00:{len(list(runs.iterdir())):02d}",
        "seed": 0, "recipe": {"learning_rate": 1e-3, "epochs": 20}, "augment": False,
        "mixed_precision": False,
        "store": store or {"dataset": "stanford40", "fingerprint": "f1", "params": {"size": 32}},
        "best": {"train_accuracy": 0.5, "val_accuracy": 0.4, "train_loss": 1.0,
                 "val_loss": 1.1}, "best_epoch": 3,
        "test": {"accuracy": 0.3, "loss": 1.2}, "model_size_gb": 0.01, **fields}))
    return folder


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[-1]


def test_a_metrics_json_nested_too_deep_is_skipped_not_a_traceback(tmp_path):
    """json.loads raises RecursionError on deep nesting, which no `except` took: one such
    file anywhere in a runs folder crashed `trainers report` and every run lookup."""
    runs = tmp_path / "runs"
    _run(runs, "image-good")
    deep = runs / "image-deep"
    deep.mkdir()
    (deep / "model.keras").write_bytes(b"")
    (deep / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    assert read_run(deep) is None
    assert [record.path.name for record in list_runs(runs)] == ["image-good"]


def test_a_cut_short_base_model_is_one_line_naming_it_before_training(tmp_path):
    """Keras said "File not found" of it, in a traceback, after TensorFlow's start-up."""
    store = make_tiny_store(tmp_path / "tvhi.h5", size=32, steps=4, per_class=(1, 1, 1))
    base = _run(tmp_path / "runs", "image-cut", model_file=CUT_SHORT)
    result = runner.invoke(app, ["run", "frames", "--store", str(store), "--base", str(base),
                                 "--runs-dir", str(tmp_path / "runs"), "--epochs", "1"])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1  # no TensorFlow, no device line
    line = _one_error_line(result)
    assert str(base / "model.keras") in line and "damaged or unreadable" in line
    assert "not found" not in line.lower() and "epoch" not in result.output


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory) -> Path:
    """A whole `.keras` file of a tiny model."""
    import keras

    path = tmp_path_factory.mktemp("keras") / "model.keras"
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path)
    return path


def test_load_trained_says_a_cut_short_or_corrupt_file_is_damaged(keras_file, tmp_path):
    from trainers.errors import DamagedRunError
    from trainers.models import load_trained

    whole = keras_file.read_bytes()
    with zipfile.ZipFile(keras_file) as archive:  # where config.json's bytes start
        info = archive.getinfo("config.json")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    corrupt = bytearray(whole)
    corrupt[start + 10:start + 20] = b"#" * 10
    # whole zip archives lacking a member (a KeyError, a ValueError out of Keras: tracebacks)
    lacking = {}
    for dropped in ("config.json", "model.weights.h5"):
        path = tmp_path / f"without-{dropped}"
        with zipfile.ZipFile(keras_file) as source, zipfile.ZipFile(path, "w") as copy:
            for member in source.namelist():
                if member != dropped:
                    copy.writestr(member, source.read(member))
        lacking[dropped] = path.read_bytes()
    # a whole zip whose config.json is no JSON (Keras' JSONDecodeError: a traceback)
    not_json = tmp_path / "not-json"
    with zipfile.ZipFile(keras_file) as source, zipfile.ZipFile(not_json, "w") as copy:
        for member in source.namelist():
            copy.writestr(member, b"{not json" if member == "config.json" else
                          source.read(member))
    for name, data, reason in [("cut", whole[:len(whole) // 2], "not a whole .keras file"),
                               ("not-json", not_json.read_bytes(), "Expecting"),
                               ("corrupt", bytes(corrupt), "Bad CRC-32"),
                               ("no-config", lacking["config.json"], "without config.json"),
                               ("no-weights", lacking["model.weights.h5"],
                                "without model.weights.h5 or model.weights.npz")]:
        path = tmp_path / f"{name}.keras"
        path.write_bytes(data)
        with pytest.raises(DamagedRunError) as info:
            load_trained(path)
        message = str(info.value)
        assert str(path) in message and "damaged or unreadable" in message, message
        assert reason in message and "\n" not in message
    assert load_trained(keras_file).output_shape == (None, 2)


def test_report_notes_a_damaged_model_and_writes_the_rest(tmp_path):
    """Its confusion matrix needs its model: the page says why it has none and --out warns,
    as for a store that is gone; the tables (from metrics.json) and other figures remain."""
    from trainers.samples import open_samples

    store = make_tiny_store(tmp_path / "s40.h5", dataset="stanford40", size=32,
                            per_class=(1, 1, 1))
    samples = open_samples(store, "image")
    fingerprint = samples.info.fingerprint
    samples.store.close()
    runs = tmp_path / "runs"
    run = _run(runs, "image-cut", model_file=CUT_SHORT, store={
        "dataset": "stanford40", "fingerprint": fingerprint, "path": str(store),
        "params": {"size": 32}})
    page, figures = tmp_path / "page.html", tmp_path / "figures"
    result = runner.invoke(app, ["report", str(runs), "--html", str(page), "--out",
                                 str(figures)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    model_file = str(run / "model.keras")
    (warning,) = [line for line in result.stderr.splitlines() if "confusion" in line]
    assert warning.startswith("warning: Stanford 40: no confusion matrix (")
    assert model_file in warning and "damaged or unreadable" in warning
    assert (figures / "test_accuracy.png").is_file()
    text = page.read_text()
    assert "damaged or unreadable" in text and "Stanford 40" in text


@pytest.mark.parametrize("fields", [
    {"best": []},
    {"store": "tvhi"},
    {"test": {"accuracy": "high", "loss": 1.0}},
    {"model_size_gb": "small"},
    {"seed": [0]},
    {"recipe": ["tuned"]},
    {"recipe": {"recipe_set": ["tuned"]}},
    {"bases": ["image-1"]},
    # each read as the latest run of its model, its row named "['s']" (they were reported)
    {"created": None},
    {"created": 20260101},
    {"store": {"dataset": ["stanford40"], "fingerprint": "f1", "params": {"size": 32}}},
    # (a traceback of `predict` and of the report's page; a string named the classes by its
    # letters; `predict --split all` summed the counts)
    {"store": {"dataset": "stanford40", "fingerprint": "f1", "params": {"size": 32},
               "classes": 5}},
    {"store": {"dataset": "stanford40", "fingerprint": "f1", "params": {"size": 32},
               "classes": "wxyz"}},
    {"samples": {"train": "a"}},
    {"samples": {"train": None}},
    {"samples": [3, 1]},
    {"samples": {"train": -3, "val": 1, "test": 2}},  # (no split holds fewer than none)
    # printed as "seed True" and an accuracy of "nan" (a loss may be NaN: a run that diverged)
    {"seed": True},
    {"best_epoch": False},
    {"test": {"accuracy": float("nan"), "loss": 1.0}},
    {"test": {"accuracy": 1.5, "loss": 1.0}},
    {"test": {"accuracy": True, "loss": 1.0}},
    {"best": {"train_accuracy": 0.5, "val_accuracy": 1.5, "train_loss": 1.0, "val_loss": 1.1}},
    {"best": {"train_accuracy": float("nan"), "val_accuracy": 0.5, "train_loss": 1.0,
              "val_loss": 1.1}},
], ids=lambda fields: json.dumps(fields))
def test_a_metrics_json_of_the_wrong_types_is_skipped_as_junk_is(tmp_path, fields):
    """Each crashed `trainers report` with a traceback; an unparsable metrics.json was always
    skipped (no run), and so is this one now: the other runs are still reported."""
    runs = tmp_path / "runs"
    good = _run(runs, "image-good")
    bad = _run(runs, "image-bad", **fields)  # the latest: it would be the model's row
    junk = runs / "image-junk"
    junk.mkdir()
    (junk / "model.keras").write_bytes(b"")
    (junk / "metrics.json").write_text("{not json")
    assert read_run(bad) is None and read_run(junk) is None and read_run(good) is not None
    result = runner.invoke(app, ["report", str(runs)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"- Stanford 40: {good} " in result.stdout
    assert str(bad) not in result.stdout and str(junk) not in result.stdout


def test_a_run_whose_weights_diverged_is_one_line_and_not_written(tmp_path, monkeypatch):
    """Trained in bfloat16 on a CPU (`--mixed-precision`), the frame CNN's weights turned NaN
    within its first epochs while its losses stayed finite (NaN becomes a constant output in
    TensorFlow's CPU kernels): the NaN model was restored as the best epoch and published,
    scoring chance as if it had learnt nothing. Divergence is simulated here (every epoch's
    weights NaN), since when bfloat16 diverges depends on the CPU's kernels."""
    import numpy as np

    from trainers import fit

    checked = fit.BestEpoch.on_epoch_end

    def diverging(self, epoch, logs=None):
        self.model.set_weights([np.full(w.shape, np.nan, w.dtype) if w.dtype.kind == "f" else w
                                for w in self.model.get_weights()])
        checked(self, epoch, logs)

    monkeypatch.setattr(fit.BestEpoch, "on_epoch_end", diverging)
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(2, 1, 1))
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir",
                                 str(tmp_path / "runs"), "--epochs", "2", "-q"])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert line == ("error: flow diverged: none of its 2 epochs ended with finite weights (NaN "
                    "or infinite from epoch 1); try a lower learning rate; no flow run was "
                    "written")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_run_without_a_finite_val_loss_or_a_test_split_is_written_with_warnings(tmp_path,
                                                                                  monkeypatch):
    """Epochs whose val loss is not finite (weights finite: simulated here, as the diverged
    test does) keep the last epoch, said on stderr and in metrics.json; a store with no
    finished test sample trains and is not evaluated, said too. Neither is an error: the run
    is written."""
    from trainers import fit

    checked = fit.BestEpoch.on_epoch_end

    def nan_scores(self, epoch, logs=None):
        checked(self, epoch, {**(logs or {}), "val_loss": float("nan")})

    monkeypatch.setattr(fit.BestEpoch, "on_epoch_end", nan_scores)
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(2, 1, 0))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir", str(runs),
                                 "--epochs", "2", "-q"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: no epoch of flow scored a finite val_loss (a sample of the val split holds "
        "NaN or infinite values?): the last epoch is kept, as the run records",
        "warning: no finished 'test' sample; flow is not evaluated"], result.stderr
    (record,) = list_runs(runs)
    assert record.metrics["test"] is None
    assert record.metrics["selection"] == "last epoch (no finite val_loss)"
    assert record.metrics["best_epoch"] == record.metrics["epochs_run"] == 2


@pytest.mark.parametrize("failure", ["disk full", "ctrl-c"])
def test_a_run_that_cannot_be_written_leaves_nothing_behind(tmp_path, monkeypatch, failure):
    """A full disk, or Ctrl-C, while a trained run was being written left its hidden work
    folder (the whole model) in --runs-dir for good, and a full disk was a traceback."""
    import errno

    from trainers import fit

    def fails(*args, **kwargs):
        if failure == "ctrl-c":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fit, "plot_curves", fails)  # after model.keras is saved
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(2, 1, 1))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir", str(runs),
                                 "--epochs", "1", "-q"])
    line = _one_error_line(result)
    if failure == "ctrl-c":
        assert result.exit_code == 130 and line.startswith("error: interrupted; no run")
    else:
        assert result.exit_code == 2
        assert line == (f"error: cannot write the flow run into {str(runs)!r} (No space left "
                        f"on device); no flow run was written")
    assert not runs.exists() or list(runs.iterdir()) == []  # (the lock made it, and removed it)


def test_a_runs_dir_inside_a_store_is_refused_before_training(tmp_path):
    """Runs were written inside the store (where `trainers report` refuses to look and
    `flowstore build --overwrite` deletes them)."""
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(2, 1, 1))
    (tmp_path / "link").symlink_to(store, target_is_directory=True)  # into it by a link
    for runs_dir, says in ((store, "is a store"), (store / "runs", "lies inside the store"),
                           (tmp_path / "link" / "runs", "lies inside the store")):
        result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir",
                                     str(runs_dir), "--epochs", "1"])
        assert result.exit_code == 2, result.output
        assert says in _one_error_line(result) and "epoch" not in result.output
    assert not (store / "runs").exists() and not list(store.glob("flow-*"))


def test_a_runs_dir_that_is_a_run_directory_is_refused_before_training(tmp_path):
    """A run's own folder given as --runs-dir (as `trainers report` was given one) trained and
    wrote the new run inside it, where no report of the runs folder looks."""
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(2, 1, 1))
    run = _run(tmp_path / "runs", "flow-x", model="flow")
    before = sorted(p.name for p in run.iterdir())
    for runs_dir, says in ((run, f"--runs-dir {str(run)!r} is a run directory, not a runs "
                                 f"folder: give the folder that holds the runs "
                                 f"({str(tmp_path / 'runs')!r})"),
                           (run / "more", "lies inside the run directory")):
        result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir",
                                     str(runs_dir), "--epochs", "1"])
        assert result.exit_code == 2, result.output
        assert says in _one_error_line(result) and "epoch" not in result.output
    assert sorted(p.name for p in run.iterdir()) == before


def test_report_of_a_file_or_a_store_says_what_it_is(tmp_path):
    """`trainers report notes.txt` said "no runs directory at 'notes.txt'", a file being
    there; an HDF5 store given for the runs directory is a file too."""
    from trainers.testing import TINY_FLOW, make_tiny_store

    (tmp_path / "notes.txt").write_text("not runs")
    store = make_tiny_store(tmp_path / "tvhi.h5", **TINY_FLOW)
    for given, says in ((tmp_path / "notes.txt", "is a file, not a runs directory"),
                        (store, "is a store, not a runs directory"),
                        (tmp_path / "nowhere", "no runs directory at")):
        result = runner.invoke(app, ["report", str(given)])
        assert result.exit_code == 2 and says in _one_error_line(result), result.output


@pytest.mark.parametrize("metrics", [{"model": "../escape"}, {"model": "sub/flow"},
                                     {"model": ""}, {"model": "image "}, {}],
                         ids=["..", "slash", "blank", "padded", "{}"])
def test_a_run_whose_model_is_no_plain_name_is_skipped(tmp_path, metrics):
    """`"model": "../escape"` made `--out` write escape_curves.png beside the folder; a foreign
    folder's `{}` was a blank-named row in every table and wrote `_curves.png`."""
    runs = tmp_path / "runs"
    good = _run(runs, "image-good")
    bad = runs / "bad"
    bad.mkdir()
    (bad / "model.keras").write_bytes(b"")
    (bad / "history.json").write_text(json.dumps({"accuracy": [0.5], "loss": [1.0]}))
    (bad / "metrics.json").write_text(json.dumps(metrics))
    assert read_run(bad) is None
    figures = tmp_path / "out" / "figures"
    result = runner.invoke(app, ["report", str(runs), "--out", str(figures)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"- Stanford 40: {good} " in result.stdout and str(bad) not in result.stdout
    assert "|  |" not in result.stdout  # no blank-named row
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["figures"]
    assert sorted(p.name for p in figures.glob("*.png")) == ["test_accuracy.png"]


def test_out_removes_no_file_outside_it_whatever_its_list_of_figures_names(tmp_path):
    """`--out` removes the figures its list (`WRITTEN_FILE`) names that it did not draw: a
    list edited or copied from elsewhere naming `../notes.txt` or `sub/a.png` deletes
    nothing outside the folder's own figures."""
    from trainers.figures import WRITTEN_FILE

    runs, out = tmp_path / "runs", tmp_path / "out" / "figures"
    _run(runs, "image-good")
    out.mkdir(parents=True)
    (out / "sub").mkdir()
    kept = [tmp_path / "out" / "notes.txt", out / "sub" / "a.png", tmp_path / "elsewhere.png"]
    for path in kept:
        path.write_bytes(b"the user's")
    (out / WRITTEN_FILE).write_text(f"../notes.txt\nsub/a.png\n{tmp_path / 'elsewhere.png'}\n")
    result = runner.invoke(app, ["report", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert all(path.read_bytes() == b"the user's" for path in kept)
    assert "removed" not in result.stdout


@pytest.mark.parametrize("model", ["flow", "two_stream"])
def test_a_store_with_no_finished_training_sample_is_refused_before_anything_trains(
        tmp_path, monkeypatch, model):
    """Checked when the store is opened, not by the training (after TensorFlow's start-up,
    and, for a chain, after its prerequisites were looked for or trained)."""
    import trainers.fit

    def never(*args, **kwargs):
        raise AssertionError("a model trained on a store with no training sample")

    monkeypatch.setattr(trainers.fit, "train_model", never)
    store = make_tiny_store(tmp_path / "tvhi.zarr", size=16, steps=2, per_class=(0, 1, 1))
    result = runner.invoke(app, ["run", model, "--store", str(store), "--runs-dir",
                                 str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert "has no finished 'train' sample" in _one_error_line(result)
    assert not (tmp_path / "runs").exists()


def test_a_history_that_is_no_history_draws_no_curves_and_the_report_goes_on(tmp_path):
    """`[1, 2]` (valid JSON, not a history) in a run without curves.png raised an
    AttributeError out of the figures (a traceback, exit 1, the figures half written)."""
    from trainers.html_report import curves_png

    run = _run(tmp_path / "runs", "image-x")
    for history in ("[1, 2]", '{"loss": 5}', '{"loss": ["low"]}', '{"loss": [true, false]}'):
        (run / "history.json").write_text(history)
        assert curves_png(read_run(run)) is None
    (run / "history.json").write_text('{"loss": [1.0, 0.5], "val_loss": [1.1, 0.9]}')
    assert curves_png(read_run(run)).startswith(b"\x89PNG")


@pytest.mark.parametrize("option, path", [("--html", "metrics.json"), ("--out", "."),
                                          ("--out", "figures")])
def test_report_outputs_in_a_run_directory_are_one_line_and_write_nothing(tmp_path, option,
                                                                          path):
    """As `predict --out` was: `--html runs/image-x/metrics.json` wrote the page over the
    run's record, and the run was gone from every later report."""
    run = _run(tmp_path / "runs", "image-x")
    before = sorted(p.name for p in run.iterdir())
    metrics = (run / "metrics.json").read_text()
    result = runner.invoke(app, ["report", str(tmp_path / "runs"), option, str(run / path)])
    assert result.exit_code == 2, result.output
    assert f"is the run directory {str(run)!r} or lies inside it" in _one_error_line(result)
    assert sorted(p.name for p in run.iterdir()) == before
    assert (run / "metrics.json").read_text() == metrics


@pytest.mark.parametrize("option, inside", [("--out", "."), ("--out", "figures"),
                                            ("--html", "report.html")])
def test_report_outputs_in_a_store_are_one_line_and_write_nothing(tmp_path, option, inside):
    """`report --out store.zarr` wrote its figures into the store, lost to it (`--overwrite`
    deletes them with it), as `predict --out` and `--runs-dir` are refused."""
    from trainers.testing import TINY_FLOW, make_tiny_store

    _run(tmp_path / "runs", "image-x")
    store = make_tiny_store(tmp_path / "s.zarr", **TINY_FLOW)
    before = sorted(p.name for p in store.iterdir())
    result = runner.invoke(app, ["report", str(tmp_path / "runs"), option,
                                 str(store / inside)])
    assert result.exit_code == 2, result.output
    assert f"is the store {str(store)!r} or lies inside it" in _one_error_line(result)
    assert sorted(p.name for p in store.iterdir()) == before


@pytest.mark.parametrize("out", ["same", "same/figures"])
def test_html_and_out_on_one_path_is_one_line_and_makes_nothing(tmp_path, out):
    """The figures folder was made first, then the page refused as "Is a directory", the
    empty folder left behind."""
    runs = tmp_path / "runs"
    _run(runs, "image-x")
    result = runner.invoke(app, ["report", str(runs), "--html", str(tmp_path / "same"),
                                 "--out", str(tmp_path / out)])
    assert result.exit_code == 2, result.output
    assert "would be the --out folder" in _one_error_line(result)
    assert not (tmp_path / "same").exists()


def _edit_store(store: Path, edit: str) -> None:
    """A store `flowstore verify` refuses: root attributes edited, or `flow`'s type."""
    path = store / ("flow" if edit == "flow.int8" else "") / "zarr.json"
    metadata = json.loads(path.read_text())
    if edit == "flow.int8":
        metadata["data_type"] = "int8"
    elif edit == "dataset":
        metadata["attributes"]["dataset"] = "nope"
    else:
        metadata["attributes"]["params"][edit.split(".")[1]] = "abc" if edit == "params.size" else 3
    path.write_text(json.dumps(metadata))


@pytest.mark.parametrize("edit", ["params.size", "dataset", "params.steps", "flow.int8"])
def test_a_store_verify_refuses_is_refused_before_training_in_its_words(tmp_path, edit,
                                                                         keras_file):
    """`params.size` "abc" trained to the end, then the run (90 MB) was published unreadable
    ("internal error", and `trainers report` skipped it); an unknown dataset or params no
    longer of the arrays' shapes trained as if sound; `predict` took them all."""
    from flowstore.cli import app as flowstore_app

    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(2, 1, 1))
    runs = tmp_path / "runs"
    _run(runs, "flow-sound", model="flow", model_file=keras_file.read_bytes(),
         store={"dataset": "tvhi", "fingerprint": "f1", "params": dict(TINY_FLOW)})
    _edit_store(store, edit)
    verified = runner.invoke(flowstore_app, ["verify", str(store)])
    assert verified.exit_code == 2, verified.output
    said = _one_error_line(verified)
    trained = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir",
                                  str(tmp_path / "new-runs"), "--epochs", "1", "-q"])
    assert trained.exit_code == 2, trained.output
    assert _one_error_line(trained) == said and "epoch" not in trained.output
    assert not (tmp_path / "new-runs").exists()
    predicted = runner.invoke(app, ["predict", str(runs / "flow-sound"), "--store", str(store),
                                    "--out", str(tmp_path / "predictions")])
    assert predicted.exit_code == 2, predicted.output
    assert _one_error_line(predicted) == said
    assert not (tmp_path / "predictions").exists()


def test_a_run_that_would_not_read_back_is_not_left_behind(tmp_path, monkeypatch):
    """Metrics no run has the types of (a store's `params.size` "abc" recorded as it was)
    were published, then `write_run` found them unreadable: a RuntimeError, and the whole
    run left in --runs-dir, which `trainers report` and the prerequisite lookup skip."""
    import keras

    from trainers import fit

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    best = fit.BestEpoch(None)
    metrics = {"model": "flow", "store": {"dataset": "tvhi", "fingerprint": "f" * 64,
                                          "path": "tvhi.zarr", "params": {"size": "abc"}},
               "recipe": {}, "test": {"accuracy": 0.5, "loss": 1.0}}
    runs = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="does not read back as a run.*no flow run was"):
        fit.write_run(runs, model, {"loss": [1.0]}, best, metrics)
    assert list(runs.iterdir()) == []


def test_an_output_folder_that_takes_no_file_is_refused_before_any_model_predicts(tmp_path,
                                                                                  monkeypatch):
    """A folder that exists but takes no file (a read-only mount, /proc/sys; root passes the
    permission bits) was found only when the first figure was written, after every model
    predicted (minutes on the real runs)."""
    import trainers.html_report

    if not os.path.isdir("/proc/sys"):
        pytest.skip("needs Linux's /proc/sys, a folder that takes no file")
    monkeypatch.setattr(trainers.html_report, "predict_test",
                        lambda *args, **kwargs: pytest.fail("predicted before the check"))
    runs = tmp_path / "runs"
    (runs / "flow-a").mkdir(parents=True)
    (runs / "flow-a" / "model.keras").write_bytes(b"")
    (runs / "flow-a" / "metrics.json").write_text(json.dumps({
        "model": "flow", "created": "2026-01-01T00:00:00", "seed": 0,
        "store": {"dataset": "tvhi", "fingerprint": "f", "path": str(tmp_path / "s.zarr")},
        "test": {"accuracy": 0.5, "loss": 1.0}}))
    result = runner.invoke(app, ["report", str(runs), "--out", "/proc/sys"])
    assert result.exit_code == 2
    assert "error: cannot write the figures to '/proc/sys'" in result.output


_FIT_OUT_OF_MEMORY = """
import sys
import keras

def fit_out_of_memory(self, *args, **kwargs):
    import tensorflow as tf

    raise tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[5,5,5,128,256] and type float")

keras.Model.fit = fit_out_of_memory
from trainers.cli import main
sys.argv = ["trainers", *sys.argv[1:]]
main()
"""


def test_training_out_of_memory_is_one_line_that_says_to_ask_for_less(tmp_path):
    """TensorFlow's "OOM when allocating tensor" (a GPU's memory, or a CPU's under `ulimit
    -v`) was "internal error: a bug in trainers", its traceback and all (found by review)."""
    import subprocess
    import sys

    store = make_tiny_store(tmp_path / "s.zarr", **TINY_FLOW)
    out = subprocess.run([sys.executable, "-c", _FIT_OUT_OF_MEMORY, "run", "flow", "--store",
                          str(store), "--runs-dir", str(tmp_path / "runs"), "--epochs", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.splitlines()[-1] == (
        "error: training ran out of memory (tensorflow.ResourceExhaustedError: OOM when "
        "allocating tensor with shape[5,5,5,128,256] and type float): ask for less (a smaller "
        "--batch-size or --size, --mixed-precision on a GPU) or raise a limit set (ulimit -v)")
    assert not list_runs(tmp_path / "runs")


class XlaRuntimeError(RuntimeError):
    """JAX's runtime error, as jaxlib names it (jax is not installed where the tests run)."""


XlaRuntimeError.__module__ = "jaxlib.xla_extension"


@pytest.mark.parametrize("make, out_of_memory", [
    (lambda: __import__("torch").OutOfMemoryError("CUDA out of memory. Tried to allocate "
                                                  "2.00 GiB"), True),
    (lambda: XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                             "8589934592 bytes."), True),
    (lambda: XlaRuntimeError("INVALID_ARGUMENT: shapes do not match"), False),
    (lambda: __import__("tensorflow").errors.InvalidArgumentError(None, None, "shapes"), False),
    (lambda: RuntimeError("OutOfMemoryError"), False)])
def test_each_frameworks_out_of_memory_is_memory_and_nothing_else_is(make, out_of_memory):
    from flowstore.errors import resource_advice, resource_exhaustion

    exc = make()
    assert resource_exhaustion(exc) == ("memory" if out_of_memory else None)
    if out_of_memory:
        assert resource_advice(exc).startswith(
            f"training ran out of memory ({type(exc).__module__.split('.')[0]}."
            f"{type(exc).__name__}: ")


_KERAS_UNMAPPED = """
import importlib.util, os, resource, sys

class NoAddressSpaceForKeras:
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "keras" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):  # (TensorFlow's start-up lines first, as it prints them)
        os.write(2, b"I0000 00:00:1796659988.756499   12328 port.cc:153] oneDNN custom "
                    b"operations are on.\\n")
        raise ImportError("libtensorflow_cc.so.2: failed to map segment from shared object")

sys.meta_path.insert(0, NoAddressSpaceForKeras())
resource.setrlimit(resource.RLIMIT_AS, (2**50, resource.RLIM_INFINITY))  # (a limit, set)
from trainers.cli import main
sys.argv = ["trainers", *sys.argv[1:]]
main()
"""


def test_a_backend_that_cannot_be_mapped_under_a_limit_is_the_limit_not_a_broken_install(
        tmp_path):
    """Under `ulimit -v` TensorFlow's libraries cannot be mapped: that was "Keras cannot start
    its tensorflow backend, installed but failing to import (...): pip install
    --force-reinstall ..." (the limit's words inside a reinstall's), and the start-up lines
    TensorFlow had printed came before it (found by review)."""
    import subprocess
    import sys

    from tests.conftest import assert_one_line_error

    store = make_tiny_store(tmp_path / "s.zarr", **TINY_FLOW)
    quiet = {key: value for key, value in os.environ.items()  # (as a user starts it: a
             if key != "TF_CPP_MIN_LOG_LEVEL"}  # level of their own shows TensorFlow's log)
    out = subprocess.run([sys.executable, "-c", _KERAS_UNMAPPED, "run", "flow", "--store",
                          str(store), "--runs-dir", str(tmp_path / "runs"), "--epochs", "1"],
                         capture_output=True, text=True, timeout=300, env=quiet)
    assert assert_one_line_error(out) == (
        "error: the system gave no more memory (ImportError: libtensorflow_cc.so.2: failed to "
        "map segment from shared object): raise the limit (ulimit -v, -n, -u) or ask for less "
        "(a smaller --batch-size)")
