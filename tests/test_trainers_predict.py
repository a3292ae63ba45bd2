"""`trainers predict`: a trained run's predictions on a split of a store, one CSV row per
sample, checked against the saved model's logits computed by hand and against the accuracy the
run recorded; other stores are scored by class name, and refused in one line where the model
cannot read them."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import flowstore
from trainers.cli import app
from trainers.predict import extraction_differences, open_run_samples
from trainers.runs import list_runs, read_run
from tests.conftest import CTRL_C_WHERE_KERAS_SWALLOWS, chunk_file, run_python
from trainers.testing import TVHI_CLASSES, make_tiny_store

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A frames run (2 epochs) on a tiny TV-HI store: (store, run directory)."""
    folder = tmp_path_factory.mktemp("predict")
    store = make_tiny_store(folder / "tvhi.zarr", per_class=(3, 1, 3))
    result = runner.invoke(app, ["run", "frames", "--store", str(store), "--runs-dir",
                                 str(folder / "runs"), "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    record, = list_runs(folder / "runs")
    return store, record.path


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _by_hand(run, store, split: str):
    """The run's model on the split's middle frames: (ids, label names, softmax)."""
    import keras

    from trainers.models import load_trained

    model = load_trained(run / "model.keras")
    with flowstore.open(store) as ds:
        part = ds.split(split, features=("middle_frame",))
        batch = part[list(range(len(part)))]
        names = [ds.classes[label] for label in batch["label"]]
    logits = keras.ops.convert_to_numpy(model(batch["middle_frame"], training=False))
    logits = logits.astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    return list(batch["id"]), names, probabilities / probabilities.sum(axis=1, keepdims=True)


def test_a_run_predicts_its_stores_test_split_as_it_scored_it(trained):
    store, run = trained
    result = runner.invoke(app, ["predict", str(run)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = _rows(result.stdout)
    ids, names, probabilities = _by_hand(run, store, "test")
    assert [row["id"] for row in rows] == ids  # store order, every test sample once
    assert [row["label"] for row in rows] == names
    assert list(rows[0]) == ["id", "split", "label", "predicted",
                             *(f"p_{c}" for c in TVHI_CLASSES)]
    assert {row["split"] for row in rows} == {"test"}
    shown = np.array([[float(row[f"p_{c}"]) for c in TVHI_CLASSES] for row in rows])
    np.testing.assert_allclose(shown, probabilities, atol=2e-5)
    assert [row["predicted"] for row in rows] == [TVHI_CLASSES[k]
                                                  for k in probabilities.argmax(axis=1)]
    # The accuracy it says is the one the run recorded for its test split.
    recorded = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    correct = sum(row["predicted"] == row["label"] for row in rows)
    assert correct / len(rows) == pytest.approx(recorded)
    summary = result.stderr.strip().splitlines()[-1]
    assert f"{run.name}: {len(rows)} test sample(s) of {store}" in summary
    assert "(the run's own)" in summary
    assert f"accuracy {recorded:.4f} ({correct} of {len(rows)})" in summary
    assert "Traceback" not in result.output and "warning" not in result.stderr


def test_out_dash_is_standard_output(trained, tmp_path, monkeypatch):
    """`--out -` wrote a file named '-' in the current folder (from review)."""
    store, run = trained
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["predict", str(run), "--out", "-"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert [row["id"] for row in _rows(result.stdout)] == _by_hand(run, store, "test")[0]
    assert not (tmp_path / "-").exists() and "written to" not in result.stderr


#: `trainers predict` whose Ctrl-C lands where Keras swallows it, in a batch's output logs
#: (`tests/test_trainers_cli.py` has the same in `fit`).
_CTRL_C_KERAS_SWALLOWS = CTRL_C_WHERE_KERAS_SWALLOWS + """
sys.argv = ["trainers", "predict", sys.argv[1], "--out", sys.argv[2]]
from trainers.cli import main
main()
"""


def test_a_ctrl_c_that_keras_swallows_still_stops_a_prediction(trained, tmp_path):
    """The predictions were made to the end and written, exit 0, as if never interrupted."""
    import signal

    _, run = trained
    out = tmp_path / "test.csv"
    out.write_text("an earlier file\n")
    result = run_python(_CTRL_C_KERAS_SWALLOWS, run, out)
    assert result.returncode == -signal.SIGINT, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "error: interrupted"
    assert out.read_text() == "an earlier file\n"


def test_another_split_goes_to_a_file_written_whole(trained, tmp_path):
    store, run = trained
    out = tmp_path / "new" / "train.csv"
    out.parent.mkdir()
    out.write_text("an earlier file\n")
    result = runner.invoke(app, ["predict", str(run), "--split", "train", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.stdout == ""
    rows = _rows(out.read_text())
    assert [row["id"] for row in rows] == _by_hand(run, store, "train")[0]
    assert result.stderr.strip().endswith(f"; written to {out}")
    assert [p.name for p in out.parent.iterdir()] == ["train.csv"]  # no temporary left


def test_another_store_is_scored_by_class_name_and_its_unknown_classes_are_not_counted(
        trained, tmp_path):
    store, run = trained
    classes = ("hug", "kiss", "dance")  # two the run knows, in other places; one it does not
    other = make_tiny_store(tmp_path / "other.zarr", classes=classes, per_class=(1, 1, 2),
                            seed=3)
    result = runner.invoke(app, ["predict", str(run), "--store", str(other)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = _rows(result.stdout)
    ids, names, probabilities = _by_hand(run, other, "test")
    assert [row["id"] for row in rows] == ids
    assert [row["label"] for row in rows] == names
    assert sorted(set(names)) == sorted(classes)
    assert [row["predicted"] for row in rows] == [TVHI_CLASSES[k]
                                                  for k in probabilities.argmax(axis=1)]
    known = [row for row in rows if row["label"] != "dance"]
    correct = sum(row["predicted"] == row["label"] for row in known)
    summary = result.stderr.strip().splitlines()[-1]
    with flowstore.open(other) as ds:
        fingerprint = ds.fingerprint
    assert f"store {fingerprint[:8]} (the run's: " in summary
    assert f"accuracy {correct / len(known):.4f} ({correct} of {len(known)})" in summary
    assert "2 sample(s) of 1 class(es) the run does not know ('dance') predicted, not counted" \
        in summary


def test_a_store_of_other_shapes_or_without_the_split_is_one_error_line(trained, tmp_path):
    store, run = trained
    small = make_tiny_store(tmp_path / "small.zarr", size=16)
    result = runner.invoke(app, ["predict", str(run), "--store", str(small)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: store {str(small)!r} gives frames's 'frame' input samples of shape (16, 16, 3); "
        f"run {run.name!r} reads (32, 32, 3) (build the store with the run's --size and "
        f"--steps)"]
    unfinished = make_tiny_store(tmp_path / "unfinished.zarr", per_class=(1, 1, 1),
                                 not_done=(8, 9, 10, 11))  # the four test samples
    result = runner.invoke(app, ["predict", str(run), "--store", str(unfinished)])
    assert result.exit_code == 2
    assert "has no finished 'test' sample" in result.output
    assert "Traceback" not in result.output


def test_split_all_predicts_every_finished_sample_of_a_store(trained, tmp_path):
    """A store's samples are spread over its splits: `--split all` scores every finished one
    (here of a class the run does not know: predicted, counted in no accuracy)."""
    _, run = trained
    new = make_tiny_store(tmp_path / "new.zarr", classes=("unknown",), per_class=(2, 1, 2),
                          not_done=(1,), failed=(4,))
    result = runner.invoke(app, ["predict", str(run), "--store", str(new), "--split", "all"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = _rows(result.stdout)
    assert [(row["id"], row["split"]) for row in rows] == [
        ("unknown_train_0000", "train"), ("unknown_val_0000", "val"),
        ("unknown_test_0000", "test")]
    assert "3 sample(s) of all splits of" in result.stderr
    assert result.stderr.strip().endswith(
        "no accuracy (no sample is of a class the run knows); 3 sample(s) of 1 class(es) the "
        "run does not know ('unknown') predicted, not counted; 2 sample(s) not built, so not "
        "predicted: 1 failed (flowstore inspect names them), 1 not yet extracted (flowstore "
        "build resumes them)")
    # a split's own: the failed sample is a test one, the one not extracted a train one
    tested = runner.invoke(app, ["predict", str(run), "--store", str(new)])
    assert tested.exit_code == 0 and len(_rows(tested.stdout)) == 1
    assert tested.stderr.strip().endswith(
        "; 1 sample(s) not built, so not predicted: 1 failed (flowstore inspect names them)")
    trained_on = runner.invoke(app, ["predict", str(run), "--store", str(new), "--split", "val"])
    assert trained_on.exit_code == 0 and "not built" not in trained_on.stderr
    # A damaged failure column stopped predict after the model had predicted: the model needs
    # nothing of it, so only why the samples are missing is unknown.
    chunk = chunk_file(new, "failure", 0)
    chunk.write_bytes(b"\x07" * len(chunk.read_bytes()))
    damaged = runner.invoke(app, ["predict", str(run), "--store", str(new), "--split", "all"])
    assert damaged.exit_code == 0, damaged.output
    assert damaged.stdout == result.stdout
    assert damaged.stderr.strip().endswith(
        "; 2 sample(s) not built, so not predicted: 2 for a reason the store's damaged failure "
        "column hides (flowstore inspect)")
    assert runner.invoke(app, ["predict", str(run), "--store", str(new),
                               "--split", "val"]).exit_code == 0  # none missing: not read


def test_a_store_of_clips_of_no_class_is_predicted_not_trained_on(trained, tmp_path):
    """New clips, built as `flowstore build clips` builds them at the run's size: each is
    predicted (its label empty), no accuracy is claimed, and `trainers run` refuses the store
    in one line (there is no class to learn)."""
    from tests.conftest import flowstore_cli

    _, run = trained
    new = tmp_path / "new.zarr"
    built = flowstore_cli("build", "clips", "--synthetic", "--store", new, "--size", "32",
                          "--steps", "4", "-q", env={"FLOWSTORE_CACHE": str(tmp_path / "c")})
    assert built.returncode == 0, built.stderr
    result = runner.invoke(app, ["predict", str(run), "--store", str(new)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = _rows(result.stdout)
    with flowstore.open(new) as ds:
        assert [row["id"] for row in rows] == list(ds.split("test").ids) and len(rows) > 1
    assert {row["label"] for row in rows} == {""}
    assert {row["predicted"] for row in rows} <= set(TVHI_CLASSES)
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.endswith("no accuracy (its samples are of no class: predictions only)")
    assert f"{len(rows)} test sample(s) of {new}" in summary
    refused = runner.invoke(app, ["run", "frames", "--store", str(new), "--runs-dir",
                                  str(tmp_path / "runs"), "--epochs", "1", "--quiet"])
    assert refused.exit_code == 2
    assert refused.output.strip().splitlines() == [
        f"error: store {str(new)!r} (dataset 'clips') holds samples of no class, to predict "
        f"with a trained run (trainers predict RUN --store {new}), not to train on"]
    assert not (tmp_path / "runs").exists()
    images = tmp_path / "images.zarr"
    assert flowstore_cli("build", "images", "--synthetic", "--store", images, "--size", "16",
                         "-q", env={"FLOWSTORE_CACHE": str(tmp_path / "c")}).returncode == 0
    refused = runner.invoke(app, ["run", "image", "--store", str(images), "--runs-dir",
                                  str(tmp_path / "runs"), "--epochs", "1", "--quiet"])
    assert refused.exit_code == 2 and "(dataset 'images') holds samples of no class" in (
        refused.output)


@pytest.mark.parametrize("args, message", [
    (["--split", "every"], "error: --split must be one of train, val, test, all, got 'every'"),
    (["--store", "nowhere.zarr"], "nowhere.zarr"),
    (["--out", "{folder}"], "error: cannot write the predictions to "),
])
def test_bad_options_are_one_error_line(trained, tmp_path, args, message):
    _, run = trained
    args = [arg.replace("{folder}", str(tmp_path)) for arg in args]
    result = runner.invoke(app, ["predict", str(run), *args])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output
    assert "Traceback" not in result.output


def test_a_folder_that_is_no_run_is_one_error_line(tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: run {str(tmp_path)!r} is not a finished run "
                                     f"directory (no readable metrics.json and model.keras)")


def test_a_model_is_told_of_the_extraction_it_reads_only(trained, tmp_path):
    """A store whose flow was extracted otherwise is told for a model reading flow, not for
    one that reads frames alone; a frame parameter is told for both."""
    _, run = trained
    record = read_run(run)
    other = make_tiny_store(tmp_path / "uint8.zarr", flow_dtype="uint8", flow_bound=20.0)
    samples = open_run_samples(record, other)
    try:
        assert extraction_differences(record, samples) == ()
    finally:
        samples.store.close()
    flow_record = type(record)(record.path, {**record.metrics, "model": "flow"})
    samples = open_run_samples(flow_record, other)
    try:
        assert extraction_differences(flow_record, samples) == (
            "flow_dtype 'uint8', not 'float16'", "flow_bound 20.0, not recorded in the run's store",
            "flow_quantization " + repr(samples.info.params["flow_quantization"])
            + ", not recorded in the run's store")
    finally:
        samples.store.close()
    resized = type(record)(record.path, {**record.metrics, "store": {
        **record.store, "params": {**record.store["params"], "resize": "center-crop"}}})
    for model in ("frames", "flow"):
        changed = type(record)(resized.path, {**resized.metrics, "model": model})
        samples = open_run_samples(changed, other)
        try:
            assert "resize 'stretch' (the default), not 'center-crop'" in extraction_differences(changed,
                                                                                   samples)
        finally:
            samples.store.close()


def test_a_middle_frame_model_is_not_told_of_steps_nor_a_float_store_of_its_flow_bound(
        trained, tmp_path):
    """The middle frame is the clip's whatever the steps; `flow_bound` means something only to
    uint8 flow. A flow model is told of other steps (its shapes would refuse them first) and
    of another sampling."""
    _, run = trained
    record = read_run(run)
    other = make_tiny_store(tmp_path / "seg.zarr", steps=4, segments=2)
    samples = open_run_samples(record, other)
    try:
        assert extraction_differences(record, samples) == ()
    finally:
        samples.store.close()
    bound = {**record.store["params"], "flow_bound": 20.0}
    flow_record = type(record)(record.path, {**record.metrics, "model": "flow", "store": {
        **record.store, "params": bound}})
    samples = open_run_samples(flow_record, other)
    try:
        assert extraction_differences(flow_record, samples) == (
            "sampling 'segments', not 'linspace' (the default)",
            "segments 2, not none (the default)", "stack 2, not none (the default)")
    finally:
        samples.store.close()


def test_out_is_never_the_store_read_nor_inside_the_run(trained, tmp_path):
    store, run = trained
    copy = tmp_path / "copy.h5"
    make_tiny_store(copy, per_class=(3, 1, 3))
    before = copy.read_bytes()
    for args in (["--store", str(copy), "--out", str(copy)],
                 ["--out", str(run / "metrics.json")],
                 ["--out", str(store / "p.csv")]):
        result = runner.invoke(app, ["predict", str(run), *args])
        assert result.exit_code == 2, result.output
        assert "lies inside it; give the predictions another path" in result.stderr
        assert len(result.output.strip().splitlines()) == 1
    assert copy.read_bytes() == before
    assert read_run(run) is not None and not (store / "p.csv").exists()
    # Nor inside another run, whose record it replaced (that run gone from every report).
    other = tmp_path / "runs" / "other-run"
    shutil.copytree(run, other)
    result = runner.invoke(app, ["predict", str(run), "--out", str(other / "metrics.json")])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        f"error: --out {str(other / 'metrics.json')!r} is the run directory {str(other)!r} or "
        f"lies inside it; give the predictions another path"]
    assert read_run(other) is not None


def test_a_written_file_has_the_mode_a_plain_write_gives(trained, tmp_path):
    import os

    _, run = trained
    out = tmp_path / "p.csv"
    mask = os.umask(0o027)
    try:
        assert runner.invoke(app, ["predict", str(run), "--out", str(out)]).exit_code == 0
        assert out.stat().st_mode & 0o777 == 0o640
        out.chmod(0o604)  # an earlier file keeps its mode
        assert runner.invoke(app, ["predict", str(run), "--out", str(out)]).exit_code == 0
        assert out.stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(mask)


def test_a_run_whose_files_disagree_or_whose_store_changed_is_told(trained, tmp_path):
    import shutil

    store, run = trained
    edited = tmp_path / "edited"
    shutil.copytree(run, edited)
    metrics = json.loads((edited / "metrics.json").read_text())
    (edited / "metrics.json").write_text(json.dumps({**metrics, "model": "flow"}))
    result = runner.invoke(app, ["predict", str(edited)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"error: run {str(edited)!r}: its model.keras reads the input(s) 'frame', its "
        f"metrics.json's model 'flow' is fed 'flow' (the two files disagree: a run directory "
        f"edited or put together by hand?)"]
    # The run's own store, a test sample unmarked since: the accuracy is not the recorded one.
    moved = tmp_path / "store.zarr"
    shutil.copytree(store, moved)
    from flowstore.store import open_store

    opened = open_store(moved, mode="r+")
    try:
        done = opened.read("done", slice(None)).copy()
        done[-1] = False
        opened.write("done", slice(None), done)
        opened.flush()
    finally:
        opened.close()
    result = runner.invoke(app, ["predict", str(run), "--store", str(moved)])
    assert result.exit_code == 0, result.output
    assert ("(the run's own)" in result.stderr and "; the store held 12 finished test sample(s) "
            "when the run trained (built further, or samples unmarked, since), so this is not "
            "the accuracy it recorded" in result.stderr)
    # As many finished samples, but others (one repaired, another failed since): the run's
    # digest of its done samples is not the store's.
    metrics = json.loads((run / "metrics.json").read_text())
    (edited / "metrics.json").write_text(json.dumps({**metrics, "samples_digest": "0" * 16}))
    result = runner.invoke(app, ["predict", str(edited), "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert ("(the run's own)" in result.stderr and "; the store's finished samples are not all "
            "those it held when the run trained (as many, but others: repaired or failed "
            "since), so this may not be the accuracy it recorded" in result.stderr)


def test_top_k_counts_a_sample_whose_class_is_among_the_k_most_probable():
    from trainers.predict import SplitPredictions

    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1],
                              [0.2, 0.5, 0.3]], np.float32)
    labels = np.array([1, 0, 2, -1])  # second, third, third most probable; one unknown class
    predictions = SplitPredictions(
        classes=("a", "b", "c"), ids=np.array(["s0", "s1", "s2", "s3"]), labels=labels,
        predicted=probabilities.argmax(1), probabilities=probabilities,
        true_classes=np.array(["b", "a", "c", "d"], dtype=object), splits=np.array(["test"] * 4))
    assert predictions.accuracy == 0.0
    assert predictions.top_k_accuracy(1) == 0.0
    assert predictions.top_k_accuracy(2) == pytest.approx(1 / 3)
    assert predictions.top_k_accuracy(3) == 1.0


@pytest.mark.parametrize("count", [5, 6])
def test_the_summary_adds_top_5_for_more_than_five_classes(count):
    from pathlib import Path

    from trainers.predict import RunPredictions, SplitPredictions
    from trainers.runs import RunRecord

    classes = tuple("abcdef"[:count])
    probabilities = np.tile(np.linspace(1, 2, count, dtype=np.float32), (2, 1))
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # the last class most probable
    predictions = SplitPredictions(
        classes=classes, ids=np.array(["s0", "s1"]), labels=np.array([0, count - 2]),
        predicted=np.full(2, count - 1), probabilities=probabilities,
        true_classes=np.array([classes[0], classes[-2]], dtype=object),
        splits=np.array(["test", "test"]))
    found = RunPredictions(run=RunRecord(Path("runs/r"), {"store": {"fingerprint": "f" * 64}}),
                           store="s.zarr", fingerprint="e" * 64, split="test",
                           predictions=predictions, differences=())
    assert found.summary() == (
        "r: 2 test sample(s) of s.zarr, store eeeeeeee (the run's: ffffffff): accuracy 0.0000 "
        "(0 of 2)" + (", top-5 0.5000" if count > 5 else ""))


def test_a_failed_write_leaves_the_earlier_file_and_a_link_is_written_through(
        trained, tmp_path, monkeypatch):
    import errno
    import os

    import trainers.outputs

    _, run = trained
    out = tmp_path / "p.csv"
    out.write_text("an earlier file\n")

    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(trainers.outputs.os, "replace", full_disk)
    result = runner.invoke(app, ["predict", str(run), "--out", str(out)])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: cannot write the predictions to {str(out)!r}: No space left on device"]
    assert out.read_text() == "an earlier file\n" and os.listdir(tmp_path) == ["p.csv"]
    monkeypatch.undo()
    # A link is written through, as a plain write does, not replaced by a file.
    link = tmp_path / "link.csv"
    link.symlink_to(out)
    assert runner.invoke(app, ["predict", str(run), "--out", str(link)]).exit_code == 0
    assert link.is_symlink() and out.read_text().startswith("id,split,label,predicted")
    # So is a hard link: the file's other name reads the new predictions too.
    other = tmp_path / "other.csv"
    other.write_text("an earlier file\n")
    os.link(other, tmp_path / "hard.csv")
    assert runner.invoke(app, ["predict", str(run), "--out", str(tmp_path / "hard.csv")]
                         ).exit_code == 0
    assert other.read_text().startswith("id,split,label,predicted")


def test_cheap_refusals_come_before_any_output_folder_is_made(trained, tmp_path):
    _, run = trained
    for args in (["predict", str(tmp_path / "nowhere")], ["predict", str(run), "--split", "x"],
                 ["predict", str(run), "--store", str(tmp_path / "nowhere.zarr")]):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "made" / "p.csv")])
        assert result.exit_code == 2, result.output
        assert not (tmp_path / "made").exists()


def test_a_run_recording_no_classes_nor_recipe_predicts_its_store_as_it_scored_it(
        trained, tmp_path):
    import shutil

    _, run = trained
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    metrics = json.loads((bare / "metrics.json").read_text())
    recorded = metrics["test"]["accuracy"]
    del metrics["recipe"], metrics["store"]["classes"]
    (bare / "metrics.json").write_text(json.dumps(metrics))
    result = runner.invoke(app, ["predict", str(bare)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"(the run's own): accuracy {recorded:.4f}" in result.stderr
    assert {row["predicted"] for row in _rows(result.stdout)} <= set(TVHI_CLASSES)


def test_a_run_whose_store_is_gone_is_told_to_name_one(trained, tmp_path):
    """`trainers predict RUN` with the store it recorded gone said only "no store at PATH", a
    path the user never typed; the line now says whose path it is and what to do."""
    import shutil

    store, run = trained
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    metrics = json.loads((moved / "metrics.json").read_text())
    gone = str(tmp_path / "gone.zarr")
    metrics["store"]["path"] = gone
    (moved / "metrics.json").write_text(json.dumps(metrics))
    result = runner.invoke(app, ["predict", str(moved)])
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert result.stderr.strip().splitlines() == [
        f"error: run {str(moved)!r} was trained on the store at {gone!r}, which is not there "
        f"now; name it with --store"]
    result = runner.invoke(app, ["predict", str(moved), "--store", str(store)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    del metrics["store"]["path"]  # (a run written by hand, or another tool)
    (moved / "metrics.json").write_text(json.dumps(metrics))
    result = runner.invoke(app, ["predict", str(moved)])
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert result.stderr.strip().splitlines() == [
        f"error: run {str(moved)!r} records no store path; name one with --store"]
    from trainers.errors import RunNotFoundError
    from trainers.models import load_trained

    (moved / "model.keras").rename(moved / "kept.keras")  # (a run folder half deleted)
    with pytest.raises(RunNotFoundError, match="^no model file at .*model.keras'$"):
        load_trained(moved / "model.keras")  # (the library's: a command says "not a run")
    assert load_trained(moved / "kept.keras").name == "tvhi_frames"


def test_another_store_at_the_recorded_place_is_warned_of(trained, tmp_path):
    """A store rebuilt (other samples: seed 7) where the run's store was: `trainers predict RUN`
    printed its accuracy, exit 0, with only "(the run's: ...)" in the summary to say it was
    not the run's store, where the README says the default prints the run's Table 2 figure
    (found by review). Named with --store, it is the user's choice, and not warned of."""
    _, run = trained
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    other = make_tiny_store(tmp_path / "tvhi.zarr", per_class=(3, 1, 3), seed=7)
    metrics = json.loads((moved / "metrics.json").read_text())
    metrics["store"]["path"] = str(other)
    (moved / "metrics.json").write_text(json.dumps(metrics))
    result = runner.invoke(app, ["predict", str(moved)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    fingerprint = flowstore.open(other).fingerprint
    assert result.stderr.splitlines()[0] == (
        f"warning: the store at {other} (fingerprint {fingerprint[:8]}) is not the one the run "
        f"trained on ({metrics['store']['fingerprint'][:8]}): rebuilt there since; this "
        f"accuracy is not the run's")
    named = runner.invoke(app, ["predict", str(moved), "--store", str(other)])
    assert named.exit_code == 0 and "warning" not in named.stderr, named.output


def test_a_recorded_store_that_cannot_be_looked_at_is_left_to_the_stores_refusal(
        trained, tmp_path, monkeypatch):
    """The hint's check met a folder without search permission as a PermissionError traceback
    (an internal error, where the store's own refusal said "Permission denied" in one line):
    only a path that is not there is "gone"; one under a file is not there either."""
    import errno

    from flowstore.store._zarr import ZarrStore

    store, run = trained
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    metrics = json.loads((moved / "metrics.json").read_text())

    def predict_recorded(location: Path):
        metrics["store"]["path"] = str(location)
        (moved / "metrics.json").write_text(json.dumps(metrics))
        return runner.invoke(app, ["predict", str(moved)])

    (tmp_path / "afile").write_text("")
    under_a_file = tmp_path / "afile" / "s.zarr"  # (NotADirectoryError)
    result = predict_recorded(under_a_file)
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        f"error: run {str(moved)!r} was trained on the store at {str(under_a_file)!r}, which "
        f"is not there now; name it with --store"]
    assert predict_recorded(store).exit_code == 0

    locked = tmp_path / "locked" / "s.zarr"
    exists = ZarrStore.exists

    def refused(location):
        if Path(location) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(location))
        return exists(location)

    monkeypatch.setattr(ZarrStore, "exists", staticmethod(refused))
    result = predict_recorded(locked)
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        f"error: cannot access store {str(locked)!r}: Permission denied"]


def test_another_flow_algorithm_is_said_once(trained, tmp_path):
    _, run = trained
    record = read_run(run)
    other = make_tiny_store(tmp_path / "t.zarr")
    tvl1 = {**record.store["params"], "flow_method": "tvl1", "tvl1": {"tau": 0.25}}
    flow_record = type(record)(record.path, {**record.metrics, "model": "flow", "store": {
        **record.store, "params": tvl1}})
    samples = open_run_samples(flow_record, other)
    try:
        assert extraction_differences(flow_record, samples) == (
            "flow_method 'farneback' (the default), not 'tvl1'",)
    finally:
        samples.store.close()


def test_accuracy_counts_only_the_samples_of_classes_the_run_knows():
    """Another store's samples of a class the run does not know (label -1) are in no accuracy:
    1 right of the 2 it knows is 0.5, not 1 of 4."""
    from trainers.predict import SplitPredictions

    predictions = SplitPredictions(
        classes=("a", "b"), ids=np.array(["s0", "s1", "s2", "s3"]),
        labels=np.array([0, 1, -1, -1]), predicted=np.array([0, 0, 1, 1]),
        probabilities=np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]),
        true_classes=np.array(["a", "b", "dance", "dance"]), splits=np.array(["test"] * 4))
    assert (predictions.correct, predictions.accuracy) == (1, 0.5)
    assert predictions.top_k_accuracy(1) == 0.5 and predictions.top_k_accuracy(2) == 1.0
    assert predictions.confusion.tolist() == [[1, 0], [1, 0]]
