"""Segment views (TSN): on a store built with `--sampling segments`, train on one random
segment of each clip per epoch and score a clip by the mean of its segments' logits.

The reader half (`random_segment`, `segment_views`, `Split.segmented_keys`) is plain numpy any
training loop can call; the trainers half (`trainers run --segment-views`) is checked against a
by-hand consensus of the saved model's logits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import flowstore
from flowstore.reader import random_segment, segment_views
from tests.reference import smoothed_cross_entropy
from trainers.cli import app
from trainers.html_report import predict_test
from trainers.run import RunConfig
from trainers.runs import HISTORY_FILE, list_runs
from trainers.testing import TINY_FLOW, make_tiny_store

runner = CliRunner()
K, L = 3, 2
S = TINY_FLOW["size"]  # the frame side of the stores the tests train on


def _segmented_batch(count: int = 5) -> dict[str, np.ndarray]:
    """Each value says where it came from: flow step j of sample b holds 100 b + j, frame k of
    sample b holds 100 b + 10 k, the middle frame 100 b."""
    b = np.arange(count)
    flow = np.empty((count, K * L, 4, 4, 2), np.float32)
    flow[...] = (100 * b[:, None] + np.arange(K * L)[None])[:, :, None, None, None]
    frames = np.empty((count, K, 4, 4, 3), np.float32)
    frames[...] = (10 * b[:, None] + np.arange(K)[None])[:, :, None, None, None]
    middle = np.empty((count, 4, 4, 3), np.float32)
    middle[...] = (10 * b)[:, None, None, None]
    return {"flow": flow, "frames": frames, "frame": middle, "label": b % 4,
            "id": np.array([f"clip{i}" for i in b])}


def test_random_segment_takes_one_whole_segment_the_same_in_every_per_step_feature():
    batch = _segmented_batch(64)
    out = random_segment(dict(batch), np.random.default_rng(0), segments=K,
                         keys=("flow", "frames"))
    assert out["flow"].shape == (64, L, 4, 4, 2) and out["frames"].shape == (64, 1, 4, 4, 3)
    chosen = []
    for b in range(64):
        first = int(out["flow"][b, 0, 0, 0, 0]) - 100 * b
        k, offset = divmod(first, L)
        assert offset == 0  # a segment starts at a multiple of L
        assert out["flow"][b, :, 0, 0, 0].tolist() == [100 * b + k * L + j for j in range(L)]
        assert int(out["frames"][b, 0, 0, 0, 0]) == 10 * b + k  # the frame of that segment
        chosen.append(k)
    assert set(chosen) == set(range(K))  # every segment gets drawn
    np.testing.assert_array_equal(out["frame"], batch["frame"])  # not per-step: as it was
    again = random_segment(dict(batch), np.random.default_rng(0), segments=K,
                           keys=("flow", "frames"))
    np.testing.assert_array_equal(again["flow"], out["flow"])  # seeded


def test_segment_views_are_sample_major_and_repeat_everything_else():
    batch = _segmented_batch(4)
    views = segment_views(batch, segments=K, keys=("flow", "frames"))
    assert views["flow"].shape == (4 * K, L, 4, 4, 2)
    assert np.shares_memory(views["flow"], batch["flow"])  # a reshape, not a copy
    for b in range(4):
        for k in range(K):
            row = b * K + k
            assert views["flow"][row, :, 0, 0, 0].tolist() == [100 * b + k * L + j
                                                               for j in range(L)]
            assert int(views["frames"][row, 0, 0, 0, 0]) == 10 * b + k
            assert int(views["frame"][row, 0, 0, 0]) == 10 * b
            assert views["label"][row] == batch["label"][b] and views["id"][row] == f"clip{b}"


def test_a_feature_that_is_not_k_segments_is_refused():
    batch = _segmented_batch(2)
    with pytest.raises(ValueError, match="not a multiple of 4 segments"):
        random_segment(batch, np.random.default_rng(0), segments=4, keys=("flow",))


def test_only_a_segments_store_has_segmented_keys(tmp_path):
    segmented = make_tiny_store(tmp_path / "seg.zarr", steps=K * L, segments=K, size=S)
    linspace = make_tiny_store(tmp_path / "lin.zarr", steps=K * L, size=S)
    with flowstore.open(segmented) as ds:
        assert ds.segments == K
        split = ds.split("train", features={"frame": "middle_frame", "flow": "flow",
                                            "frames": "frames"})
        assert split.segmented_keys == ("flow", "frames")
    with flowstore.open(linspace) as ds:
        assert ds.segments is None and ds.split("train").segmented_keys == ()


def test_segment_views_apply_only_to_models_that_read_steps(tmp_path):
    config = RunConfig(model="two_stream", store=tmp_path / "x.zarr", recipe_set="tuned",
                       segment_views=True)
    assert config.recipe_for("flow").segment_views
    assert config.recipe_for("two_stream").segment_views
    assert not config.recipe_for("frames").segment_views  # a middle frame has no segments
    assert "segment_views" not in config.recipe_for("frames").to_dict()


def test_segment_views_for_a_model_without_steps_is_one_error_line(tmp_path):
    store = make_tiny_store(tmp_path / "seg.zarr", steps=K * L, segments=K, size=S)
    result = runner.invoke(app, ["run", "frames", "--store", str(store), "--segment-views"])
    assert result.exit_code == 2
    assert "--segment-views: frames reads middle_frame, no per-step array" in result.output


def test_segment_views_of_a_model_reading_no_segmented_array_are_refused(tmp_path):
    """`ClipViews.of`, where training asks for the views (a recipe given to `train_model`
    directly, past `RunConfig`'s check): a model whose inputs hold no segments is refused, not
    trained on "views" of nothing."""
    from trainers.data import ClipViews
    from trainers.errors import ModelConfigError
    from trainers.samples import open_samples

    store = make_tiny_store(tmp_path / "seg.zarr", steps=K * L, segments=K, size=S)
    frames, flow = open_samples(store, "frames"), open_samples(store, "flow")
    try:
        assert ClipViews.of(frames, segment_views=False) is None
        with pytest.raises(ModelConfigError, match="frames reads no per-step array"):
            ClipViews.of(frames, segment_views=True)
        assert ClipViews.of(flow, segment_views=True) == ClipViews(K, ("flow",))
    finally:
        frames.store.close()
        flow.store.close()


def test_a_flow_run_on_segment_views_trains_on_one_segment_and_scores_the_mean_of_all(tmp_path):
    import keras

    store = make_tiny_store(tmp_path / "seg.zarr", steps=K * L, segments=K, size=S)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir", str(runs),
                                 "--recipe", "tuned", "--epochs", "2", "--segment-views",
                                 "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    record, = list_runs(runs)
    assert record.metrics["recipe"]["segment_views"] is True
    model = keras.saving.load_model(record.model_file, compile=False)
    assert model.input_shape == (None, L, S, S, 2)  # one segment: an L-step model
    history = json.loads((record.path / HISTORY_FILE).read_text())
    assert len(history["val_loss"]) == 2  # scored every epoch without Keras' validation

    # The test score is the consensus of the K segments, by hand from the saved weights.
    with flowstore.open(store) as ds:
        test = ds.split("test", features=("flow",), float_dtype="float32")
        batch = test[list(range(len(test)))]
    clips = batch["flow"].reshape(len(test) * K, L, S, S, 2)
    logits = keras.ops.convert_to_numpy(model(clips, training=False)).reshape(len(test), K, -1)
    mean = logits.mean(axis=1)
    assert record.metrics["test"]["views"] == K
    assert record.metrics["test"]["accuracy"] == pytest.approx(
        float((mean.argmax(1) == batch["label"]).mean()))
    assert record.metrics["test"]["loss"] == pytest.approx(
        smoothed_cross_entropy(mean, batch["label"], 0.1), rel=1e-4)
    # The report's confusion matrix predicts the clips the same way.
    predictions = predict_test(record)
    np.testing.assert_array_equal(predictions.predicted, mean.argmax(1))


def test_segment_views_on_a_linspace_store_is_one_error_line(tmp_path, monkeypatch):
    make_tiny_store(tmp_path / "lin.zarr", steps=K * L, size=S)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "flow", "--store", "lin.zarr", "--runs-dir", "runs",
                                 "--segment-views", "--epochs", "1"])
    assert result.exit_code == 2
    # The store as the user typed it, as the other refusals name it, not resolved.
    assert ("segment views need a store built with --sampling segments; 'lin.zarr' has "
            "linspace sampling") in result.output
    assert "Traceback" not in result.output


def test_a_two_stream_chain_on_segment_views_fuses_a_flow_stream_of_one_segment(tmp_path):
    store = make_tiny_store(tmp_path / "seg.zarr", steps=K * L, segments=K, size=S)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "two_stream", "--store", str(store), "--runs-dir",
                                 str(runs), "--recipe", "tuned", "--epochs", "1",
                                 "--segment-views", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    records = {record.model: record for record in list_runs(runs)}
    assert set(records) == {"frames", "flow", "two_stream"}
    assert "segment_views" not in records["frames"].metrics["recipe"]
    assert "views" not in records["frames"].metrics["test"]
    for name in ("flow", "two_stream"):
        assert records[name].metrics["recipe"]["segment_views"] is True
        assert records[name].metrics["test"]["views"] == K
    # Asked again, the same chain is found, not trained again.
    again = runner.invoke(app, ["run", "two_stream", "--store", str(store), "--runs-dir",
                                str(runs), "--recipe", "tuned", "--epochs", "1",
                                "--segment-views", "--quiet"])
    assert again.exit_code == 0 and again.output.count("reusing") == 2
