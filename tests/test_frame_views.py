"""Frame views: a single-frame model fed from the clip's per-step `frames`, one random frame a
step in training, every frame when scored (the clip's logits the mean of its frames').

The reader half (`random_frame`, `frame_views`) is plain numpy any training loop can call; the
trainers half (`trainers run --frame-views`) is checked against a by-hand consensus of the saved
model's logits on a store whose frames all differ.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import flowstore
from flowstore.reader import frame_views, random_frame
from flowstore.store import open_store
from tests.reference import smoothed_cross_entropy
from trainers.cli import app
from trainers.html_report import predict_test
from trainers.predict import PREDICT_BATCH
from trainers.recipes import Recipe
from trainers.run import RunConfig
from trainers.runs import HISTORY_FILE, list_runs
from trainers.testing import TINY_FLOW, make_tiny_store, write_untrained_run

runner = CliRunner()
T = 4


def _batch(count: int = 5) -> dict[str, np.ndarray]:
    """Frame t of sample b holds 10 b + t; the flow of sample b holds 100 b."""
    b = np.arange(count)
    frames = np.empty((count, T, 4, 4, 3), np.int32)
    frames[...] = (10 * b[:, None] + np.arange(T)[None])[:, :, None, None, None]
    flow = np.empty((count, T, 4, 4, 2), np.float32)
    flow[...] = (100 * b)[:, None, None, None, None]
    return {"frame": frames, "flow": flow, "label": b % 4,
            "id": np.array([f"clip{i}" for i in b])}


def test_random_frame_takes_one_frame_of_each_clip_as_a_single_image():
    batch = _batch(64)
    out = random_frame(dict(batch), np.random.default_rng(0), keys=("frame",))
    assert out["frame"].shape == (64, 4, 4, 3)  # one image per clip, no step axis
    chosen = [int(out["frame"][b, 0, 0, 0]) - 10 * b for b in range(64)]
    assert set(chosen) == set(range(T))  # every frame gets drawn
    for b, t in enumerate(chosen):
        np.testing.assert_array_equal(out["frame"][b], batch["frame"][b, t])
    np.testing.assert_array_equal(out["flow"], batch["flow"])  # not a key: as it was
    again = random_frame(dict(batch), np.random.default_rng(0), keys=("frame",))
    np.testing.assert_array_equal(again["frame"], out["frame"])  # seeded


def test_frame_views_are_clip_major_and_repeat_everything_else():
    batch = _batch(3)
    views = frame_views(batch, keys=("frame",))
    assert views["frame"].shape == (3 * T, 4, 4, 3)
    assert np.shares_memory(views["frame"], batch["frame"])  # a reshape, not a copy
    for b in range(3):
        for t in range(T):
            row = b * T + t
            assert int(views["frame"][row, 0, 0, 0]) == 10 * b + t
            assert int(views["flow"][row, 0, 0, 0, 0]) == 100 * b  # the clip's whole stack
            assert views["label"][row] == batch["label"][b] and views["id"][row] == f"clip{b}"


def test_frame_views_apply_only_to_models_that_read_a_middle_frame(tmp_path):
    config = RunConfig(model="two_stream", store=tmp_path / "x.zarr", recipe_set="tuned",
                       frame_views=True)
    assert config.recipe_for("frames").frame_views
    assert config.recipe_for("two_stream").frame_views
    assert not config.recipe_for("flow").frame_views  # the flow stream reads no frame
    assert "frame_views" not in config.recipe_for("flow").to_dict()


def test_frame_views_for_a_model_without_a_middle_frame_is_one_error_line(tmp_path):
    store = make_tiny_store(tmp_path / "s40.zarr", dataset="stanford40")
    result = runner.invoke(app, ["run", "image", "--store", str(store), "--frame-views"])
    assert result.exit_code == 2
    assert "--frame-views: image reads image, no middle frame" in result.output
    assert "Traceback" not in result.output


def test_frame_views_with_segment_views_is_refused():
    with pytest.raises(Exception, match="segment_views and frame_views"):
        Recipe(1e-4, 2, 1, segment_views=True, frame_views=True)


def test_frame_views_on_a_store_without_frames_is_one_error_line(tmp_path):
    store = make_tiny_store(tmp_path / "x.zarr", arrays=("middle_frame", "flow"))
    result = runner.invoke(app, ["run", "frames", "--store", str(store), "--runs-dir",
                                 str(tmp_path / "runs"), "--frame-views", "--epochs", "1"])
    assert result.exit_code == 2
    assert "frame views need the store's per-step 'frames'" in result.output
    assert "Traceback" not in result.output


def _distinct_frames(path) -> None:
    """Give every frame of every clip its own noise, so that scoring one frame (or the middle
    frame) and scoring the mean of all T give different logits."""
    rng = np.random.default_rng(7)
    store = open_store(path, mode="r+")
    try:
        for index in range(store.num_samples):
            frames = store.read("frames", index).copy()
            frames += rng.integers(0, 60, size=frames.shape, dtype=np.uint8)
            store.write("frames", index, frames)
        store.flush()
    finally:
        store.close()


def test_a_frames_run_on_frame_views_trains_on_one_frame_and_scores_the_mean_of_all(tmp_path,
                                                                                  monkeypatch):
    import keras

    import trainers.data
    import trainers.fit

    size = TINY_FLOW["size"]  # (the tiny stores' side)
    store = make_tiny_store(tmp_path / "x.zarr", steps=T, per_class=(3, 1, 3), size=size)
    _distinct_frames(store)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "frames", "--store", str(store), "--runs-dir", str(runs),
                                 "--recipe", "tuned", "--epochs", "2", "--frame-views",
                                 "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    record, = list_runs(runs)
    assert record.metrics["recipe"]["frame_views"] is True
    model = keras.saving.load_model(record.model_file, compile=False)
    assert model.input_shape == (None, size, size, 3)  # one frame: the report's model
    history = json.loads((record.path / HISTORY_FILE).read_text())
    assert len(history["val_loss"]) == 2  # scored every epoch without Keras' validation

    # The test score is the consensus of the T frames, by hand from the saved weights.
    with flowstore.open(store) as ds:
        test = ds.split("test", features=("frames", "middle_frame"))
        batch = test[list(range(len(test)))]
    frames = batch["frames"].reshape(len(test) * T, size, size, 3)
    logits = keras.ops.convert_to_numpy(model(frames, training=False)).reshape(len(test), T, -1)
    mean = logits.mean(axis=1)
    middle = keras.ops.convert_to_numpy(model(batch["middle_frame"], training=False))
    assert not np.allclose(mean, middle, atol=1e-3)  # the views are not the middle frame
    assert record.metrics["test"]["views"] == T
    assert record.metrics["test"]["accuracy"] == pytest.approx(
        float((mean.argmax(1) == batch["label"]).mean()))
    assert record.metrics["test"]["loss"] == pytest.approx(
        smoothed_cross_entropy(mean, batch["label"], 0.1), rel=1e-4)
    # The report's confusion matrix predicts the clips the same way, in batches of no more
    # rows than a plain run's (they were PREDICT_BATCH clips of T rows each)
    batch_rows, make_dataset = [], trainers.data.make_dataset
    monkeypatch.setattr(trainers.data, "make_dataset", lambda samples, split, options: (
        batch_rows.append(options.batch_size * T), make_dataset(samples, split, options))[1])
    np.testing.assert_array_equal(predict_test(record).predicted, mean.argmax(1))
    assert batch_rows == [PREDICT_BATCH]
    monkeypatch.undo()
    # Asked without the flag, the frames model is trained again (not this run reused) and
    # reads the middle frame. (Only the frames run is asked about: the chain's flow and
    # two_stream runs are written, not trained.)
    real_train_model = trainers.fit.train_model

    def train_model(model, *args, **kwargs):
        return (real_train_model if model == "frames" else write_untrained_run)(
            model, *args, **kwargs)

    monkeypatch.setattr(trainers.fit, "train_model", train_model)
    plain = runner.invoke(app, ["run", "two_stream", "--store", str(store), "--runs-dir",
                                str(runs), "--recipe", "tuned", "--epochs", "1", "--quiet"])
    assert plain.exit_code == 0, plain.output + repr(plain.exception)
    frames_runs = [r for r in list_runs(runs) if r.model == "frames"]
    assert len(frames_runs) == 2 and "frame_views" not in frames_runs[1].metrics["recipe"]
    assert "views" not in frames_runs[1].metrics["test"]


def test_a_two_stream_chain_on_frame_views_views_the_frames_of_both(tmp_path):
    store = make_tiny_store(tmp_path / "x.zarr", steps=T, size=TINY_FLOW["size"])
    runs = tmp_path / "runs"
    args = ["run", "two_stream", "--store", str(store), "--runs-dir", str(runs), "--recipe",
            "tuned", "--epochs", "1", "--frame-views", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    records = {record.model: record for record in list_runs(runs)}
    assert set(records) == {"frames", "flow", "two_stream"}
    assert "frame_views" not in records["flow"].metrics["recipe"]
    assert "views" not in records["flow"].metrics["test"]
    for name in ("frames", "two_stream"):
        assert records[name].metrics["recipe"]["frame_views"] is True
        assert records[name].metrics["test"]["views"] == T
    again = runner.invoke(app, args)  # the same chain is found, not trained again
    assert again.exit_code == 0 and again.output.count("reusing") == 2


def test_frame_views_without_keys_leaves_the_batch_as_random_frame_does():
    from flowstore.reader import frame_views, random_frame

    batch = {"flow": np.zeros((2, 3, 4, 4, 2), np.float16), "label": np.arange(2)}
    assert frame_views(batch, keys=()) is batch
    assert random_frame(batch, np.random.default_rng(0), keys=()) is batch


def test_frame_views_read_the_done_samples_the_command_found(tiny_tvhi_source, tmp_path):
    """Under a frame-views recipe a model's samples read the per-step `frames` through the
    reader the command opened (`StoreSamples.for_recipe`): a build that appended since does
    not add samples to it, as it does not to the other runs of the chain (`for_model`)."""
    from tests.conftest import TINY_BUILD, flowstore_cli
    from trainers.samples import StoreSamples

    store_path = tmp_path / "tvhi.zarr"
    build = ("build", "tvhi", "--source", tiny_tvhi_source, "--store", store_path, *TINY_BUILD,
             "-q")
    assert flowstore_cli(*build, "--max-per-split", "1").returncode == 0
    store = open_store(store_path)
    try:
        samples = StoreSamples(store, "frames")
        found = samples.done_samples()
        assert flowstore_cli(*build).returncode == 0  # the build appends meanwhile
        viewed = samples.for_recipe(Recipe(1e-4, 2, 1, frame_views=True))
        assert viewed.frame_views and viewed.inputs != samples.inputs
        assert viewed.done_samples() == found
        assert sum(found.counts.values()) == 3  # (one a split, as the command found it)
        assert StoreSamples(store, "frames").done_samples() != found  # (it did append)
    finally:
        store.close()
