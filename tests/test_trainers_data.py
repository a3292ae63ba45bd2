"""The tf.data input: per-sample streaming, done-only, seeded shuffles, flips, both backends."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from flowstore.errors import FlowstoreError, StoreError
from flowstore.store import open_store
from flowstore.reader import horizontal_flip
from trainers.data import InputOptions, make_dataset
from trainers.errors import NoSamplesError, WrongDatasetError
from trainers.samples import TF_ALIGNMENT, StoreSamples, aligned_empty, open_samples
from trainers.testing import make_tiny_store

BACKENDS = ["zarr", "h5"]
PER_SAMPLE_ARRAYS = ("middle_frame", "frames", "flow", "image")


class SpyStore:
    """Wraps a store and records every `read(name, index)` the trainers make."""

    def __init__(self, store):
        self._store = store
        self.reads: list[tuple[str, object]] = []

    def read(self, name, index=slice(None)):
        self.reads.append((name, index))
        return self._store.read(name, index)

    def read_into(self, name, index, out):
        self.reads.append((name, index))
        return self._store.read_into(name, index, out)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.fixture(params=BACKENDS)
def tvhi_store(request, tmp_path):
    return make_tiny_store(tmp_path / f"tvhi.{request.param}", per_class=(3, 1, 2),
                           not_done=(0, 5))


def _collect(ds):
    xs, ys = [], []
    for x, y in ds:
        xs.append(x)
        ys.append(y.numpy())
    return xs, np.concatenate(ys)


def test_only_done_samples_of_the_split_are_used(tvhi_store):
    with open_store(tvhi_store) as store:
        samples = StoreSamples(store, "two_stream")
        assert samples.indices("train").tolist() == [i for i in range(12) if i not in (0, 5)]
        _, labels = _collect(make_dataset(samples, "train", InputOptions(batch_size=3)))
        assert labels.tolist() == samples.labels[samples.indices("train")].tolist()


def test_store_is_opened_read_only(tvhi_store):
    samples = open_samples(tvhi_store, "tvhi_flow")
    try:
        assert samples.store.mode == "r"
    finally:
        samples.store.close()


def test_pipeline_reads_one_sample_per_call_never_a_whole_array(tvhi_store):
    with open_store(tvhi_store) as store:
        spy = SpyStore(store)
        samples = StoreSamples(spy, "two_stream")
        ds = make_dataset(samples, "train", InputOptions(batch_size=2, shuffle=True, seed=3))
        for _ in range(2):  # two epochs
            _collect(ds)
    big = [(name, index) for name, index in spy.reads if name in PER_SAMPLE_ARRAYS]
    # Every pixel read is one sample (an int index: exactly one chunk), only of arrays the model
    # uses, and each training sample is read once per epoch.
    assert all(isinstance(index, int) for _, index in big), big
    assert {name for name, _ in big} == {"middle_frame", "flow"}
    n_train = samples.indices("train").size
    assert len(big) == 2 * 2 * n_train


def test_shuffle_is_seeded_and_changes_every_epoch(tvhi_store):
    with open_store(tvhi_store) as store:
        samples = StoreSamples(store, "tvhi_frames")
        a = make_dataset(samples, "train", InputOptions(batch_size=1, shuffle=True, seed=1))
        b = make_dataset(samples, "train", InputOptions(batch_size=1, shuffle=True, seed=1))
        c = make_dataset(samples, "train", InputOptions(batch_size=1, shuffle=True, seed=2))

        def order(ds):
            return [float(tf.reduce_sum(tf.cast(x, tf.float32))) for x, _ in ds]

        first, second = order(a), order(a)
        assert first != second  # a new order each epoch
        assert sorted(first) == pytest.approx(sorted(second))  # the same samples
        assert order(b) == first  # the same seed gives the same sequence
        assert order(c) != first  # and another seed another one


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flow_dtype", ["float16", "float32", "uint8"])
def test_flow_comes_back_as_float32_pixels(tmp_path, backend, flow_dtype):
    path = make_tiny_store(tmp_path / f"t.{backend}", per_class=(1, 0, 0),
                           flow_dtype=flow_dtype, flow_bound=8.0)
    with open_store(path) as store:
        samples = StoreSamples(store, "tvhi_flow")
        (flow,), = [samples.read_sample(i) for i in samples.indices("train")[:1]]
        stored = store.read("flow", 0)
    assert flow.dtype == np.float32 and stored.dtype == np.dtype(flow_dtype)
    # Class 0 moves right by 2 px (see trainers.testing): mean dx ~ +2, dy ~ 0.
    assert flow[..., 0].mean() == pytest.approx(2.0, abs=0.1)
    assert flow[..., 1].mean() == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("flow_dtype", ["float16", "float32", "uint8"])
def test_batches_keep_narrow_dtypes_that_the_model_casts(tmp_path, flow_dtype):
    """Pixels arrive uint8 and flow float16 (float32 only if stored so), holding the same values
    as the float32 reader; a model fed them gives what it gives on float32 inputs."""
    from trainers.models import build_default

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0), flow_dtype=flow_dtype,
                           flow_bound=8.0)
    with open_store(path) as store:
        samples = StoreSamples(store, "two_stream")
        (inputs, _), = make_dataset(samples, "train", InputOptions(batch_size=4)).take(1)
        expected = [np.stack(arrays) for arrays in zip(
            *(samples.read_sample(i) for i in samples.indices("train")[:4]))]
    assert inputs["frame"].dtype == tf.uint8
    assert inputs["flow"].dtype == (tf.float32 if flow_dtype == "float32" else tf.float16)
    np.testing.assert_array_equal(inputs["frame"].numpy(), expected[0])
    # uint8 flow is mapped back in float32, then rounded to float16 (< 0.008 px at +-8 px)
    np.testing.assert_allclose(inputs["flow"].numpy().astype(np.float32), expected[1],
                               atol=0 if flow_dtype != "uint8" else 4e-3)
    model = build_default("two_stream", size=samples.info.size, steps=samples.info.steps,
                          num_classes=samples.num_classes)
    as_float32 = {name: tf.cast(value, tf.float32) for name, value in inputs.items()}
    np.testing.assert_allclose(model(inputs).numpy(), model(as_float32).numpy(), rtol=1e-6)


def flip_flow(flow):
    """A sample's (T, H, W, 2) flow mirrored left-right: dx negated, dy as it is."""
    flow = np.asarray(flow)
    return flow[..., ::-1, :] * np.array([-1, 1], dtype=flow.dtype)


def test_flip_mirrors_images_and_negates_flow_dx():
    image = np.arange(2 * 3 * 3 * 3, dtype=np.uint8).reshape(1, 2, 3, 3, 3)
    flow = np.random.default_rng(0).normal(size=(1, 4, 5, 6, 2)).astype(np.float32)
    batch = {"frames": image.copy(), "flow": flow.copy(), "label": np.zeros(1)}
    flipped = horizontal_flip(batch, np.random.default_rng(0), motion=("flow",), p=1.0)
    np.testing.assert_array_equal(flipped["frames"], image[..., ::-1, :])
    np.testing.assert_array_equal(flipped["flow"][..., 0], -flow[..., ::-1, 0])  # dx negated
    np.testing.assert_array_equal(flipped["flow"][..., 1], flow[..., ::-1, 1])   # dy mirrored


def test_augmented_pipeline_flips_frame_and_flow_together(tvhi_store):
    with open_store(tvhi_store) as store:
        samples = StoreSamples(store, "two_stream")
        plain, _ = _collect(make_dataset(samples, "train", InputOptions(batch_size=1)))
        aug, _ = _collect(make_dataset(samples, "train",
                                       InputOptions(batch_size=1, augment=True, seed=5)))
    flipped = 0
    for p, a in zip(plain, aug, strict=True):
        frame_flipped = np.array_equal(a["frame"].numpy(), p["frame"].numpy()[:, :, ::-1])
        flow_flipped = np.array_equal(a["flow"].numpy(), flip_flow(p["flow"][0])[None])
        if not frame_flipped:
            np.testing.assert_array_equal(a["frame"].numpy(), p["frame"].numpy())
            np.testing.assert_array_equal(a["flow"].numpy(), p["flow"].numpy())
        assert frame_flipped == flow_flipped
        flipped += frame_flipped
    assert 0 < flipped < len(plain)


def test_flips_are_per_sample_inside_a_batch(tvhi_store):
    with open_store(tvhi_store) as store:
        samples = StoreSamples(store, "two_stream")
        (plain, _), = make_dataset(samples, "train", InputOptions(batch_size=8)).take(1)
        (aug, _), = make_dataset(samples, "train",
                                 InputOptions(batch_size=8, augment=True, seed=5)).take(1)
    frames, flows = plain["frame"].numpy(), plain["flow"].numpy()
    flipped = []
    for k in range(frames.shape[0]):
        is_flipped = np.array_equal(aug["frame"][k].numpy(), frames[k][:, ::-1])
        want_flow = flip_flow(flows[k]) if is_flipped else flows[k]
        np.testing.assert_array_equal(aug["flow"][k].numpy(), want_flow)
        if not is_flipped:
            np.testing.assert_array_equal(aug["frame"][k].numpy(), frames[k])
        flipped.append(is_flipped)
    assert any(flipped) and not all(flipped), flipped


def test_batch_buffers_are_aligned_for_tensorflow():
    for shape, dtype in [((3, 5, 7, 2), "float16"), ((1, 9, 9, 3), "uint8"), ((2,), "float32")]:
        for _ in range(5):
            array = aligned_empty(shape, dtype)
            assert array.shape == shape and array.dtype == np.dtype(dtype)
            assert array.ctypes.data % TF_ALIGNMENT == 0 and array.flags.c_contiguous


def test_stanford40_store_streams_images(tmp_path):
    path = make_tiny_store(tmp_path / "s40.zarr", dataset="stanford40", size=32)
    with open_store(path) as store:
        samples = StoreSamples(store, "stanford40")
        xs, ys = _collect(make_dataset(samples, "val", InputOptions(batch_size=2)))
    assert tuple(xs[0].shape) == (2, 32, 32, 3) and xs[0].dtype == tf.uint8
    assert sorted(ys.tolist()) == [0, 1, 2]


def test_a_store_lacking_an_array_the_model_reads_is_one_clear_error(tmp_path):
    path = make_tiny_store(tmp_path / "s40.h5", dataset="stanford40")
    with pytest.raises(WrongDatasetError, match="dataset 'stanford40'.* lacks the array 'flow' "
                                                "that model 'flow' reads") as info:
        open_samples(path, "tvhi_flow")
    assert isinstance(info.value, FlowstoreError) and "\n" not in str(info.value)


def test_missing_or_foreign_store_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="no store"):
        open_samples(tmp_path / "absent.zarr", "tvhi_flow")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(StoreError):
        open_samples(tmp_path / "junk.h5", "tvhi_flow")


def test_a_split_without_done_samples_is_named(tmp_path):
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0), not_done=(0, 1, 2, 3))
    samples = open_samples(path, "tvhi_flow")
    try:
        with pytest.raises(NoSamplesError, match="no finished 'train' sample"):
            samples.require("train")
    finally:
        samples.store.close()


def _flip_state(frame: np.ndarray, flow: np.ndarray, store, index: int) -> bool:
    """Whether one sample of a batch is sample `index` of the store as stored (False) or
    mirrored left-right with flow dx negated and dy kept (True); anything else fails."""
    stored_frame, stored_flow = store.read("middle_frame", index), store.read("flow", index)
    mirrored_flow = stored_flow[:, :, ::-1].copy()
    mirrored_flow[..., 0] *= -1
    if np.array_equal(frame, stored_frame):
        np.testing.assert_array_equal(flow, stored_flow)  # frame as stored: flow as stored
        return False
    np.testing.assert_array_equal(frame, stored_frame[:, ::-1])  # else mirrored, both
    np.testing.assert_array_equal(flow, mirrored_flow)
    return True


@pytest.mark.parametrize("augment", [True, False])
def test_augment_flips_some_samples_of_a_batch_against_the_store_and_off_none(augment, tmp_path):
    """Checked against the stored arrays (not against the pipeline's own unflipped output): with
    `augment` some samples of each epoch's batch come mirrored, frame and flow together, with
    the flow's dx negated; without it, over the same epochs, none does."""
    path = make_tiny_store(tmp_path / "tvhi.zarr", per_class=(4, 1, 1))
    with open_store(path) as store:
        samples = StoreSamples(store, "two_stream")
        train = samples.indices("train")
        ds = make_dataset(samples, "train", InputOptions(batch_size=train.size, augment=augment,
                                                         seed=3))
        flips = []
        for _epoch in range(3):
            (batch, labels), = list(ds)
            np.testing.assert_array_equal(labels.numpy(), samples.labels[train])  # not shuffled
            flips += [_flip_state(batch["frame"][k].numpy(), batch["flow"][k].numpy(), store, i)
                      for k, i in enumerate(train)]
    if augment:
        assert 0 < sum(flips) < len(flips), flips
    else:
        assert not any(flips)
