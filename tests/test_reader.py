"""The public reader (`flowstore.open`) and its adapters: every one hands back the same samples,
labels and values as a plain zarr / h5py read decoded by hand (the README's recipe), in the order
asked, on both backends and on an s3:// store."""

from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import traceback

import h5py
import numpy as np
import pytest
import zarr

import flowstore
from flowstore.errors import StoreError
from flowstore.reader import (colour_jitter, compose, horizontal_flip, random_crop,
                              random_resized_crop)
from flowstore.store.lock import lock_path
from trainers.testing import make_tiny_store

from tests.conftest import REPO, TINY_BUILD, chunk_file, flowstore_cli

NOT_DONE = (0, 5)  # two train samples left unfinished: never read


# -- the reference: a plain zarr / h5py read, decoded by hand --------------------------------------


def plain_read(path, split: str) -> list[dict]:
    """Done samples of `split` in store order, read with zarr or h5py alone, uint8 flow decoded
    with the README's formula (pixels = (stored - 127) * 2 * bound / 255)."""
    if str(path).endswith(".h5"):
        with h5py.File(path, "r") as f:
            params = json.loads(f.attrs["params"])
            columns = {name: f[name][()] for name in ("id", "label", "split", "done")}
            keep = np.flatnonzero((columns["split"].astype(str) == split) & columns["done"])
            rows = [{"id": columns["id"][i].decode(), "label": int(columns["label"][i]),
                     **{name: f[name][i] for name in ("middle_frame", "frames", "flow")}}
                    for i in keep]
    else:
        g = zarr.open_group(str(path), mode="r")
        params = g.attrs["params"]
        ids, splits = g["id"][:], g["split"][:]
        keep = np.flatnonzero((np.asarray(splits) == split) & g["done"][:])
        rows = [{"id": str(ids[i]), "label": int(g["label"][i]),
                 **{name: g[name][i] for name in ("middle_frame", "frames", "flow")}}
                for i in keep]
    for row in rows:
        flow = row["flow"]
        if params["flow_dtype"] == "uint8":
            row["flow"] = ((flow.astype(np.float32) - np.float32(127))
                           * np.float32(2 * params["flow_bound"] / 255))
        else:
            row["flow"] = flow.astype(np.float32)
    return rows


def assert_same_batch(batch: dict, expected: list[dict], keys=("middle_frame", "frames", "flow"),
                      with_ids: bool = True) -> None:
    assert [int(v) for v in np.asarray(batch["label"])] == [row["label"] for row in expected]
    if with_ids:
        assert [str(v) for v in batch["id"]] == [row["id"] for row in expected]
    for key in keys:
        got = np.asarray(batch[key])
        want = np.stack([row[key] for row in expected])
        if key == "flow":
            np.testing.assert_allclose(got.astype(np.float32), want, atol=4e-3)  # float16 output
        else:
            np.testing.assert_array_equal(got, want)


@pytest.fixture(params=[("zarr", "float16"), ("zarr", "uint8"), ("h5", "float16"), ("h5", "uint8")],
                ids=lambda p: "-".join(p))
def store(request, tmp_path):
    backend, flow_dtype = request.param
    return make_tiny_store(tmp_path / f"t.{backend}", per_class=(3, 1, 1), not_done=NOT_DONE,
                           flow_dtype=flow_dtype)


@pytest.fixture(params=[("zarr", "uint8"), ("h5", "float16")], ids=lambda p: "-".join(p))
def adapter_store(request, tmp_path):
    """Both backends and both flow encodings, in two stores (the adapters cost more per test)."""
    backend, flow_dtype = request.param
    return make_tiny_store(tmp_path / f"t.{backend}", per_class=(3, 1, 1), not_done=NOT_DONE,
                           flow_dtype=flow_dtype)


# -- the reader --------------------------------------------------------------------------------------


def test_open_describes_the_store_and_reads_in_the_order_asked(store):
    expected = plain_read(store, "train")
    with flowstore.open(store) as ds:
        assert ds.dataset == "tvhi" and ds.classes[0] == "handShake" and ds.fingerprint
        assert set(ds.features) == {"middle_frame", "frames", "flow"}
        assert ds.features["flow"] == (4, 32, 32, 2) and ds.params["steps"] == 4
        train = ds.split("train")
        assert len(train) == len(expected) == 12 - len(NOT_DONE)
        order = [5, 0, 9, 2]
        batch = train[order]
        assert batch["flow"].dtype == np.float16 and batch["frames"].dtype == np.uint8
        assert batch["label"].dtype == np.int64
        assert_same_batch(batch, [expected[i] for i in order])
        one = train[-1]
        assert one["id"] == expected[-1]["id"] and int(one["label"]) == expected[-1]["label"]
        np.testing.assert_allclose(one["flow"].astype(np.float32), expected[-1]["flow"], atol=4e-3)
        exact = ds.split("train", features=("flow",), float_dtype="float32")[[3]]
        assert set(exact) == {"flow", "label", "id"} and exact["flow"].dtype == np.float32
        np.testing.assert_allclose(exact["flow"][0], expected[3]["flow"], rtol=0, atol=1e-6)
        assert train[2:4]["id"].tolist() == [expected[2]["id"], expected[3]["id"]]


def test_columns_digest_tells_apart_stores_of_one_fingerprint_with_other_splits(tmp_path):
    """The fingerprint hashes a dataset's own split files by name and size: `columns_digest`
    is of the classes, ids, labels and splits themselves, computed for a store made before it
    was recorded, and the recorded one (checked) where it was."""
    from flowstore.store import open_store
    from flowstore.store.checksum import COLUMNS_DIGEST, columns_digest

    a = make_tiny_store(tmp_path / "a.zarr", classes=("hug", "kiss"))
    b = make_tiny_store(tmp_path / "b.zarr", classes=("kiss", "hug"))
    root = zarr.open_group(str(a), mode="r")
    by_hand = columns_digest(("hug", "kiss"), root["id"][:], root["label"][:], root["split"][:])
    with flowstore.open(a) as ds_a, flowstore.open(b) as ds_b:
        assert ds_a.columns_digest == by_hand
        assert ds_a.columns_digest != ds_b.columns_digest
    with open_store(a, mode="r+") as store:  # recorded as a build records it
        store.update_attrs({COLUMNS_DIGEST: by_hand})
    with flowstore.open(a) as ds_a:
        assert ds_a.columns_digest == by_hand


def test_split_all_is_every_done_sample_in_store_order(store):
    expected = [row for split in ("train", "val", "test") for row in plain_read(store, split)]
    with flowstore.open(store) as ds:
        every = ds.split(flowstore.reader.ALL)
        assert every.indices.tolist() == np.flatnonzero(ds.done).tolist()  # store order
        assert len(every) == 20 - len(NOT_DONE) and every.ids.tolist() == [
            row["id"] for row in expected]  # (the tiny store lists its splits in this order)
        assert_same_batch(every[list(range(len(every)))], expected)
        assert pickle.loads(pickle.dumps(every)).ids.tolist() == every.ids.tolist()


def test_split_all_of_a_store_holding_a_split_named_all_is_refused(tmp_path):
    """`split("all")` is every sample: of a store whose `split` column names a split "all" (a
    hand edit of a store made before the columns' digest was recorded) it would be either,
    and is refused as damage."""
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 1, 1))
    column = zarr.open_group(str(path), mode="r+")["split"]
    splits = column[:]
    column[:] = np.where(splits == "val", "all", splits)
    with flowstore.open(path) as ds:
        assert ds.split_names == ("train", "all", "test")
        with pytest.raises(ValueError, match="holds a split named 'all'.* the store is damaged"):
            ds.split("all")


def test_batch_buffers_are_aligned(store):
    with flowstore.open(store) as ds:
        batch = ds.split("train")[[1, 2, 3]]
    for key in ("middle_frame", "frames", "flow"):
        assert batch[key].ctypes.data % 64 == 0 and batch[key].flags.c_contiguous


def test_bad_requests_are_clear_errors(store):
    with flowstore.open(store) as ds:
        with pytest.raises(ValueError, match="no split 'training'.*train, val, test"):
            ds.split("training")
        with pytest.raises(ValueError, match="no feature 'image'"):
            ds.split("train", features=("image",))
        with pytest.raises(ValueError, match="float_dtype"):
            ds.split("train", float_dtype="int8")
        with pytest.raises(IndexError):
            ds.split("val")[[4]]


def test_positions_that_are_not_integers_are_refused_not_misread(store):
    """Cast to int64, a boolean mask, floats or digit strings read other samples than asked,
    silently (a mask [True, False, ...] read samples 1, 0, ...)."""
    with flowstore.open(store) as ds:
        val = ds.split("val")
        ids = val.ids.tolist()
        mask = np.array([True, False, True, False])
        assert val[mask]["id"].tolist() == [ids[0], ids[2]]  # a mask, as numpy reads one
        assert val[np.zeros(4, bool)]["id"].size == 0
        assert val[np.array(2)]["id"] == ids[2]  # a 0-d integer array is a scalar index
        torch = pytest.importorskip("torch")  # (a sampler of torch.randperm hands 0-d tensors)
        assert val[torch.tensor(3)]["id"] == ids[3]
        for bad in (torch.tensor(1.0), torch.tensor(True)):
            with pytest.raises(TypeError):
                val[bad]
        assert val.read(i for i in (3, 1))["id"].tolist() == [ids[3], ids[1]]
        # (a 0-d boolean inside a list was read as position 1)
        for bad in ([np.array(True), 0], [torch.tensor(True), 0]):
            with pytest.raises(TypeError, match="not both"):
                val[bad]
        for bad in (1.7, [0.9, 2.99], ["1", "3"], "a", None, True, [True, 0], [1, np.True_],
                    {0: 1}, bytearray(b"\x00\x01"), memoryview(b"\x00"), b"\x00", {3, 1},
                    frozenset({3, 1})):
            with pytest.raises(TypeError):  # (a dict read its keys, a bytearray its bytes, a
                val[bad]                    # set its hash table's order)
        with pytest.raises(TypeError, match=r"sorted\(\{"):
            val.read({17, 1})
        for bad in (np.array([2 ** 64 - 1], np.uint64), 2 ** 70, 4, [4], np.ones(3, bool)):
            with pytest.raises(IndexError):
                val[bad]
        # a batch position out of range is named as a single one is (was numpy's "index 4 is
        # out of bounds for axis 0"), and a 2-d array is no batch (was flattened into one)
        for bad in ([0, 4], [-5], np.array([[0, 1], [2, 3]])):
            with pytest.raises(IndexError, match="split 'val'"):
                val[bad]
        with pytest.raises(IndexError, match="position 4 is out of range for split 'val'"):
            val.__getitems__([1, 4])
        assert val.read(np.array(3))["id"].tolist() == [ids[3]]  # a 0-d array: one position
        # a mask as torch's batch of positions: one sample a row read (was an IndexError)
        assert [s["id"] for s in val.__getitems__(mask)] == [ids[0], ids[2]]


def test_an_empty_path_is_said_to_be_empty():
    with pytest.raises(StoreError, match="^flowstore.open was given an empty path$"):
        flowstore.open("")  # (was "... got '.'": `Path("")`)


def test_odd_indices_and_arguments_are_refused_in_the_conventional_error(tmp_path):
    """Found by review: a 0-d bool array read as a mask (IndexError) where `True` is a
    TypeError; `[[]]` read as no position where `[[0]]` is refused; a Keras batch index of 2.0
    failed in Python's words from a slice inside; `to_tf_dataset(epoch=tf.Variable(0))` (an
    int32 Variable) failed inside TensorFlow's graph."""
    import tensorflow as tf

    train = flowstore.open(make_tiny_store(tmp_path / "t.zarr", per_class=(3, 1, 1))).split(
        "train")
    with pytest.raises(TypeError, match="indexed by position, not by a bool"):
        train[np.array(True)]
    with pytest.raises(IndexError, match="must be one-dimensional, got shape \\(1, 0\\)"):
        train[[[]]]
    # (numpy's own "setting an array element with a sequence" from inside; and an empty float
    # array read as no position, where a non-empty one is refused: found by review)
    with pytest.raises(IndexError, match="must be one-dimensional, got rows of other lengths"):
        train[[[0], [0, 1]]]
    for empty in (np.array([], float), np.array([], str)):
        with pytest.raises(TypeError, match="positions must be integers"):
            train[empty]
    assert train[[]]["id"].size == 0 and train[np.array([], np.int64)]["id"].size == 0
    with pytest.raises(TypeError, match="a batch is indexed by an integer, got float"):
        train.to_keras_dataset(2)[2.0]
    assert len(train.to_keras_dataset(2)[np.int64(1)][1]) == 2
    epoch = tf.Variable(1)  # (int32)
    by_variable = [label.numpy().tolist()
                   for _, label in train.to_tf_dataset(4, shuffle=True, seed=3, epoch=epoch)]
    assert by_variable == [batch["label"].tolist()
                           for batch in train.batches(4, shuffle=True, seed=3, epoch=1)]
    with pytest.raises(TypeError, match="epoch: a tf.Variable of an integer dtype, got float32"):
        train.to_tf_dataset(4, epoch=tf.Variable(1.0))


def test_augmentations_refuse_an_rng_that_is_no_generator_and_floats_out_of_range(tmp_path):
    """Found by review: an int, None or `random.Random` as `rng` failed deep inside with an
    AttributeError (a legacy RandomState passed some); `motion=None` failed on iterating it;
    colour_jitter clipped float pixels of 0..255 (a uint8 batch cast to float) to 0..1,
    at strength 0 too."""
    import random

    from flowstore.reader import colour_jitter, random_resized_crop, random_segment

    train = flowstore.open(make_tiny_store(tmp_path / "t.zarr", per_class=(3, 1, 1))).split(
        "train")
    batch = train[[0, 1]]
    for bad in (0, None, random.Random(0), np.random.RandomState(0)):
        for call in (lambda: horizontal_flip(batch, bad, motion=("flow",)),
                     lambda: random_crop(batch, bad, size=8),
                     lambda: random_resized_crop(batch, bad, motion=("flow",)),
                     lambda: colour_jitter(batch, bad, motion=("flow",)),
                     lambda: random_segment(batch, bad, segments=1, keys=("frames",))):
            with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
                call()
    with pytest.raises(TypeError, match="motion names the batch's motion fields"):
        horizontal_flip(batch, np.random.default_rng(0), motion=None)
    floats = {"middle_frame": batch["middle_frame"].astype(np.float32), "label": batch["label"]}
    with pytest.raises(ValueError, match="colour_jitter takes float pixels in \\[0, 1\\]"):
        colour_jitter(floats, np.random.default_rng(0), strength=0.0)
    scaled = {"middle_frame": floats["middle_frame"] / 255, "label": batch["label"]}
    unchanged = scaled["middle_frame"].copy()
    colour_jitter(scaled, np.random.default_rng(0), strength=0.0)
    np.testing.assert_allclose(scaled["middle_frame"], unchanged, atol=1e-6)


def test_split_arguments_are_taken_as_meant_or_refused_at_once(store):
    with flowstore.open(store) as ds:
        assert list(ds.split("val", features="flow").features) == ["flow"]  # not 'f', 'l'...
        with pytest.raises(ValueError, match="at least one array"):
            ds.split("val", features=())
        assert ds.split("val", float_dtype=np.float32).dtypes["flow"] == np.float32
        val = ds.split("val")
        with pytest.raises(ValueError, match="batch_size"):
            val.batches(0)  # when called, not at the first batch
        with pytest.raises(ValueError, match="seed must be >= 0"):
            val.batches(2, shuffle=True, seed=-1)
        # a float or None as a number: refused at the call, in words naming it (was at the
        # first batch, deep in numpy or Keras, or in TensorFlow's words)
        for call, message in [(lambda: val.batches(8.0), "batch_size must be a whole number"),
                              (lambda: val.batches(2, seed=None), "seed must be a whole number"),
                              (lambda: val.to_keras_dataset(8.0), "batch_size must be a whole"),
                              (lambda: val.to_keras_dataset(2, seed=None), "seed must be a whole"),
                              (lambda: val.to_tf_dataset(8.0), "batch_size must be a whole"),
                              (lambda: val.to_keras_dataset(2, workers=2.5),
                               "workers must be a whole"),
                              # (from review: TensorFlow's words, Python's, and epoch 1)
                              (lambda: val.to_tf_dataset(2, parallel_reads=2.0),
                               r"parallel_reads \(or tf.data.AUTOTUNE\) must be a whole"),
                              (lambda: val.to_tf_dataset(2, parallel_reads=-1.0),  # (not AUTOTUNE)
                               r"parallel_reads \(or tf.data.AUTOTUNE\) must be a whole"),
                              (lambda: val.to_keras_dataset(2, workers=1, max_queue_size=2.5),
                               "max_queue_size must be a whole"),
                              (lambda: val.to_keras_dataset(2).set_epoch(1.9),
                               "epoch must be a whole")]:
            with pytest.raises(TypeError, match=message):
                call()
        with pytest.raises(ValueError, match="workers must be >= 0, got -1"):  # (was 0)
            val.to_keras_dataset(2, workers=-1)
        with pytest.raises(ValueError, match="max_queue_size must be >= 1, got -3"):  # (was 1)
            val.to_keras_dataset(2, workers=1, max_queue_size=-3)
        with pytest.raises(ValueError, match=r"parallel_reads \(or tf.data.AUTOTUNE\) must be "
                                             r">= 1, got 0"):
            val.to_tf_dataset(2, parallel_reads=0)
        import tensorflow as tf

        assert len(list(val.to_tf_dataset(2, parallel_reads=tf.data.AUTOTUNE))) == len(val) // 2
        with pytest.raises(TypeError, match="augment must be"):
            val.batches(2, augment="flip")
        for bad in (1, {"f": ["flow"]}, ["flow", ["frames"]]):  # (were Python's own words)
            with pytest.raises(TypeError, match="features must be feature names"):
                ds.split("val", features=bad)
        kept = val[[0, 1]]
    # A split outlives its dataset's `with` block on both backends (HDF5 raised an h5py
    # KeyError): it reopens the store, as an unpickled split does.
    again = val[[0, 1]]
    np.testing.assert_array_equal(again["frames"], kept["frames"])


def test_a_feature_named_label_or_id_is_refused_not_overwritten(tmp_path):
    """A batch's `label` and `id` are its samples' own: a feature given either name would be
    read and then replaced by them, without a word."""
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 1, 1))
    with flowstore.open(path) as ds:
        for named in ({"label": "flow"}, {"id": "middle_frame"}):
            with pytest.raises(ValueError, match="not 'label' or 'id'"):
                ds.split("train", features=named)


def test_a_standard_split_with_no_samples_is_empty_not_an_error(tmp_path):
    """A store from a split file without val rows: `split("val")` was a ValueError, where a val
    split with rows but none done is an empty split."""
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 1))
    with flowstore.open(path) as ds:
        assert ds.split_names == ("train", "test")
        val = ds.split("val")
        assert len(val) == 0 and val[[]]["label"].shape == (0,)
        with pytest.raises(ValueError, match="has no split 'valid' .it has train, test."):
            ds.split("valid")


def test_a_split_pickles_as_location_and_selection(store):
    with flowstore.open(store) as ds:
        train = ds.split("train", features={"frame": "middle_frame"})
        data = pickle.dumps(train)
        assert len(data) < 2000  # no pixels, no open store
        want = train[[1, 0]]
        labels = train.labels
    again = pickle.loads(data)
    # What the split knows of its store is there before any read (it reopens the store)...
    np.testing.assert_array_equal(again.labels, labels)
    assert again.shapes == train.shapes and again.dtypes == train.dtypes
    assert again.to_tf_dataset(2).element_spec[0].shape[1:] == train.shapes["frame"]
    # ... and so are its samples.
    got = pickle.loads(data)[[1, 0]]
    assert set(got) == {"frame", "label", "id"}
    np.testing.assert_array_equal(got["frame"], want["frame"])
    assert got["id"].tolist() == want["id"].tolist()



def test_an_unpickled_split_reads_the_float_dtype_it_was_made_with(tmp_path):
    """A split is unpickled in each DataLoader worker (and Keras worker process): one that came
    back with another `float_dtype` handed the workers' batches another dtype than the main
    process reads (from the mutation review)."""
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 1, 1), flow_dtype="float16")
    with flowstore.open(path) as ds:
        for float_dtype, want in ((None, np.float16), ("float16", np.float16),
                                  ("float32", np.float32)):
            split = ds.split("train", features=("flow",), float_dtype=float_dtype)
            again = pickle.loads(pickle.dumps(split))
            assert split[[0]]["flow"].dtype == again[[0]]["flow"].dtype == want, float_dtype
            assert again.dtypes == split.dtypes
            again.close()

@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_split_of_a_store_since_rebuilt_is_refused_not_read_as_other_rows(
        tiny_tvhi_source, tmp_path, suffix):
    """A split reopens its store by location (after its `with` block, unpickled, in each
    DataLoader worker): a store rebuilt there since (`--overwrite`, or another copied over) has
    other samples at its positions, which were read as the split's, with their labels."""
    path = tmp_path / f"s{suffix}"
    build = ("build", "tvhi", "--source", tiny_tvhi_source, "--store", path, *TINY_BUILD, "-q")
    assert flowstore_cli(*build, "--max-per-split", "1").returncode == 0
    with flowstore.open(path) as ds:
        train = ds.split("train")
        first = train[0]["id"]
    pickled = pickle.dumps(train)
    assert train[0]["id"] == first  # reopened: the same store
    train.source.close()  # (an HDF5 store is not rebuilt while it is read)
    assert flowstore_cli(*build, "--overwrite").returncode == 0  # the same parameters
    for split in (train, pickle.loads(pickled)):  # reopening, as after a with block, a worker
        with pytest.raises(StoreError, match=r"is not the one split 'train' was made from \(it "
                                             r"was rebuilt or replaced since"):
            split[0]


def test_a_split_of_a_store_without_id_replaced_by_another_is_told_by_its_fingerprint(tmp_path):
    """Stores written before store ids have none to compare: a split reopening one that was
    replaced by another (other parameters) tells them apart by the fingerprint, not by the
    empty id both have."""
    first = make_tiny_store(tmp_path / "a.zarr", per_class=(2, 0, 0), flow_dtype="uint8",
                            flow_bound=20.0)
    other = make_tiny_store(tmp_path / "b.zarr", per_class=(2, 0, 0), flow_dtype="uint8",
                            flow_bound=10.0)
    for path in (first, other):  # (as those stores: `make_tiny_store` writes no id)
        assert "store_id" not in zarr.open_group(str(path), mode="r").attrs
    with flowstore.open(first) as ds:
        pickled = pickle.dumps(ds.split("train"))
    shutil.rmtree(first)
    shutil.copytree(other, first)
    with pytest.raises(StoreError, match=r"is not the one split 'train' was made from .* "
                                         r"fingerprint"):
        pickle.loads(pickled)[0]


def _damaged_beyond_repair(path, source, sample: str, *, clip_deleted: bool = False) -> None:
    """Damage `sample`'s middle frame in the store and its clip in `source` (zeroed, keeping
    its size and the fingerprint; or deleted, which changes it), so a repair cannot mend it."""
    from flowstore.store import open_store

    with open_store(path, "r+") as store:
        index = list(store.read("id")).index(sample)
        store.write("middle_frame", index, store.read("middle_frame", index + 1))
    clip = source / f"{sample}.avi"
    if clip_deleted:
        clip.unlink()
    else:
        clip.write_bytes(bytes(clip.stat().st_size))


@pytest.mark.parametrize("clip_deleted", [False, True], ids=["clip zeroed", "clip deleted"])
def test_a_split_reopened_after_a_repair_unmarked_its_sample_refuses_to_read_it(tvhi_source,
                                                                                  tmp_path,
                                                                                  suffix,
                                                                                  clip_deleted):
    """A `verify --repair` that cannot mend a sample (its clip no longer decodes) unmarks it and
    leaves its damaged bytes; the store keeps its id. A split made before, reopened (after its
    `with` block, unpickled in each epoch's DataLoader workers), read them on under the
    sample's label, without a word (found by review). A clip deleted changes the fingerprint
    (its size is no longer known): that split was told its store was "rebuilt or replaced"."""
    path = tmp_path / f"s{suffix}"
    build = ("build", "tvhi", "--source", tvhi_source, "--store", path, *TINY_BUILD, "-q",
             "--max-per-split", "2")
    assert flowstore_cli(*build).returncode == 0
    with flowstore.open(path) as ds:
        train = ds.split("train", features=("middle_frame",))
        broken = str(train[0]["id"])
    pickled = pickle.dumps(train)
    _damaged_beyond_repair(path, tvhi_source, broken, clip_deleted=clip_deleted)
    repair = flowstore_cli("verify", path, "--repair", "--source", tvhi_source, "-q")
    assert repair.returncode == 1 and "1 still bad" in repair.stdout, repair.stdout
    for split in (train, pickle.loads(pickled)):
        with pytest.raises(StoreError, match=rf"no longer has 1 sample\(s\) of split 'train' "
                                             rf"done \(e.g. '{broken}': a repair under way"):
            split[[0]]
    with flowstore.open(path) as ds:  # made again, it holds the samples still done
        assert broken not in ds.split("train").ids


def test_an_open_split_refuses_a_sample_a_repair_unmarked_and_reads_the_others(tvhi_source,
                                                                               tmp_path):
    """A split whose dataset stayed open (a training run's, `to_tf_dataset`'s) learned which
    samples were done only when it was made: after a `verify --repair` that could not mend a
    sample it read the damaged bytes on, under the sample's label (found by review). A repair
    records a new `done_revision` as it unmarks and as it marks again, and an open split reads
    `done` again when it changes."""
    from flowstore.store import open_store

    path = tmp_path / "s.zarr"
    build = ("build", "tvhi", "--source", tvhi_source, "--store", path, *TINY_BUILD, "-q",
             "--max-per-split", "2")
    assert flowstore_cli(*build).returncode == 0
    with flowstore.open(path) as ds:
        train = ds.split("train", features=("middle_frame",))
        broken, kept = str(train[0]["id"]), train[1]
        _damaged_beyond_repair(path, tvhi_source, broken)
        repair = flowstore_cli("verify", path, "--repair", "--source", tvhi_source, "-q")
        assert repair.returncode == 1 and "1 still bad" in repair.stdout, repair.stdout
        with open_store(path, "r") as store:
            assert store.attrs["done_revision"] == 2  # (unmarked, then marked what it mended)
        for positions in ([0], [1, 0]):
            with pytest.raises(StoreError, match=rf"no longer has 1 sample\(s\) of split "
                                                 rf"'train' done \(e.g. '{broken}': a repair"):
                train[positions]
        again = train[[1]]
        assert again["id"][0] == kept["id"]  # the other samples read on
        np.testing.assert_array_equal(again["middle_frame"][0], kept["middle_frame"])


def test_an_open_split_reads_a_sample_again_once_a_repair_marks_it_done(tmp_path):
    """Between a repair's unmarking of a sample and its marking it again (each a new
    `done_revision`, as `flowstore.build` writes them), an open split refuses the sample, and
    reads it once it is done again; a split that read nothing in between reads on."""
    from flowstore.build import _new_done_revision
    from flowstore.store import open_store

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    with flowstore.open(path) as ds:
        during, after = ds.split("train"), ds.split("train")
        before = during[[0, 1]]
        index = int(during.indices[0])
        with open_store(path, "r+") as store:
            done = store.read("done").astype(bool)
            done[index] = False
            store.write("done", slice(None), done)
            _new_done_revision(store)
        with pytest.raises(StoreError, match=r"no longer has 1 sample\(s\) of split 'train'"):
            during[[1, 0]]
        with open_store(path, "r+") as store:
            done[index] = True
            store.write("done", slice(None), done)
            _new_done_revision(store)
        for split in (during, after):
            np.testing.assert_array_equal(split[[0, 1]]["flow"], before["flow"])


def test_a_split_whose_open_store_is_rebuilt_under_it_refuses_to_read(tiny_tvhi_source,
                                                                        tmp_path):
    """Its dataset still open, a split read the rebuilt store's chunks (zarr opens chunk files
    by name) at the old store's positions: another flow, without a word, its dataset's params
    still the old ones'. A resumed build writes into the same store, and reads go on."""
    path = tmp_path / "s.zarr"
    build = ("build", "tvhi", "--source", tiny_tvhi_source, "--store", path, *TINY_BUILD, "-q")
    assert flowstore_cli(*build, "--max-per-split", "2").returncode == 0
    with flowstore.open(path) as ds:
        train = ds.split("train", features=("flow",))
        before = train[[0, 1]]["flow"]
        assert flowstore_cli(*build).returncode == 0  # resumed: the same store, grown
        np.testing.assert_array_equal(train[[0, 1]]["flow"], before)
        assert flowstore_cli(*build, "--overwrite", "--flow", "tvl1").returncode == 0
        with pytest.raises(StoreError, match=r"was rebuilt, replaced or deleted since split "
                                             r"'train' was made; open it again"):
            train[[0, 1]]


def test_an_hdf5_store_a_split_reopened_for_itself_leaves_no_descriptor_open(tmp_path):
    """A split read after its `with` block reopens the store for itself, and nothing closes
    that one: each such store kept its raw-read descriptor open for the life of the process."""
    import gc

    path = make_tiny_store(tmp_path / "t.h5", per_class=(2, 1, 1))

    def descriptors() -> int:
        return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(path.resolve())
                   for fd in os.listdir("/proc/self/fd"))

    for _ in range(3):
        with flowstore.open(path) as ds:
            split = ds.split("train")
        split[0]  # reopens it
        del split, ds
        gc.collect()
    assert descriptors() == 0


def test_a_split_closes_the_store_it_reopened_for_itself(tiny_tvhi_source, tmp_path):
    """Read after its `with` block, a split reopens an HDF5 store, whose reader lock kept every
    build out until the split was collected, with no way to let go of it."""
    path = tmp_path / "s.h5"
    build = ("build", "tvhi", "--source", tiny_tvhi_source, "--store", path, *TINY_BUILD, "-q",
             "--max-per-split", "1")
    assert flowstore_cli(*build).returncode == 0
    with flowstore.open(path) as ds:
        split = ds.split("train")
    with split:
        first = split[0]["id"]  # reopens the store
        assert "open for reading" in flowstore_cli(*build).stderr
    assert flowstore_cli(*build).returncode == 0  # let go of
    assert split[0]["id"] == first  # and reopened when read again
    split.close()


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_copied_or_pickled_dataset_is_the_store_opened_again(tmp_path, suffix):
    """A shallow copy shared the dataset's store: closing the copy closed it under the
    original, whose reads then failed (on HDF5 as damage: "rebuild it"); a pickle failed on
    a lock inside (found by review)."""
    import copy
    import pickle

    path = make_tiny_store(tmp_path / f"t{suffix}", per_class=(1, 0, 1))
    with flowstore.open(path) as original:
        train = original.split("train")
        first = train[0]
        for made in (copy.copy(original), copy.deepcopy(original),
                     pickle.loads(pickle.dumps(original))):
            assert made.store is not original.store and made.location == original.location
            assert made.split("train")[0]["id"] == first["id"]
            made.close()
            again = original.split("train")[0]  # the original reads on, the same bytes
            assert again["id"] == first["id"]
            np.testing.assert_array_equal(again["flow"], first["flow"])


def test_a_tf_pipeline_lets_go_of_its_split_once_it_and_all_made_of_it_are_gone(tmp_path):
    """TensorFlow keeps a pipeline's read function for the life of the process (tied to its
    default graph): the function held the split, and so an HDF5 store's file and lock stayed
    open, two descriptors a pipeline, and every build was refused, however the pipeline was
    deleted (found by review). A dataset made of it, and an iterator, still read it."""
    import gc
    import weakref

    import tensorflow as tf

    from flowstore.store.lock import writer_lock

    path = make_tiny_store(tmp_path / "t.h5", per_class=(3, 1, 1))
    with flowstore.open(path) as ds:
        split = ds.split("train")
    pipeline = split.to_tf_dataset(4)  # (read after the `with`: the split reopens the store)
    derived = pipeline.map(lambda x, y: (x, y)).repeat(2)
    iterator = iter(pipeline)
    split_of = weakref.ref(split)
    del pipeline, split
    gc.collect()
    assert split_of() is not None
    assert sum(int(y.shape[0]) for _, y in derived) == 2 * 12
    assert int(next(iterator)[1].shape[0]) == 4
    del derived, iterator
    gc.collect()
    assert split_of() is None
    with writer_lock(path):  # no reader holds the file: a build may write it
        pass
    # made where a function is traced (a flat_map's), the pipeline lives only while it is:
    # its split is kept for the graph, which reads it long after (found by review)
    with flowstore.open(path) as ds:
        train = ds.split("train")
        nested = tf.data.Dataset.range(2).flat_map(lambda _: train.to_tf_dataset(4))
        gc.collect()
        assert sum(int(y.shape[0]) for _, y in nested) == 2 * 12


def test_a_dataset_closed_while_a_read_is_in_flight_lets_go_of_its_store_after_it(tmp_path,
                                                                                    suffix):
    """tf.data and Keras (`to_keras_dataset(workers=N)`) read ahead in threads of their own: a
    `with` block left meanwhile closed the handles under those reads, and a healthy HDF5 store
    read as damaged ("... --repair"), a Zarr store a TypeError (found by review). The read in
    flight ends on the store it began with, which is let go of after it; the next read reopens
    the store, as a split read after its `with` block does."""
    import threading

    path = make_tiny_store(tmp_path / f"t{suffix}", per_class=(2, 1, 1))
    with flowstore.open(path) as ds:
        train = ds.split("train", features=("flow",))
        expected = train[[0, 1]]["flow"].copy()
    with flowstore.open(path) as ds:
        train = ds.split("train", features=("flow",))
        store, began, go_on = ds.store, threading.Event(), threading.Event()
        read_into = store.read_into

        def slow_read_into(*args, **kwargs):
            began.set()
            assert go_on.wait(30)
            return read_into(*args, **kwargs)

        store.read_into = slow_read_into
        closes, close = [], store.close
        store.close = lambda: closes.append(1) or close()
        got = {}
        reader = threading.Thread(target=lambda: got.update(train[[0, 1]]))
        reader.start()
        assert began.wait(30)
    assert ds.closed and not closes  # (the read in flight holds it)
    go_on.set()
    reader.join(30)
    np.testing.assert_array_equal(got["flow"], expected)
    assert closes == [1]
    np.testing.assert_array_equal(train[[0, 1]]["flow"], expected)  # reopened
    assert train.source is not ds
    train.close()


def _counting_closes(ds) -> list[int]:
    closes, close = [], ds.store.close
    ds.store.close = lambda: closes.append(1) or close()
    return closes


def test_a_dataset_lets_go_of_its_store_after_the_last_of_its_reads_and_begins_none_closed(
        tmp_path):
    """(From a mutation review: one read in one thread was all the test above held it to.)"""
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 1, 1))
    ds = flowstore.open(path)
    closes = _counting_closes(ds)
    assert ds.begin_read() and ds.begin_read()
    ds.close()
    assert ds.begin_read() is False  # (none begins on a closed dataset)
    ds.end_read()
    assert closes == []  # (one read is still in flight)
    ds.end_read()
    assert closes == [1]


def test_a_dataset_closed_between_finding_the_source_and_counting_the_read_is_reopened(tmp_path):
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 1, 1))
    with flowstore.open(path) as ds:
        expected = ds.split("train", features=("flow",))[[0, 1]]["flow"].copy()
    ds = flowstore.open(path)
    train = ds.split("train", features=("flow",))
    begin = ds.begin_read

    def closed_meanwhile():  # (a `with` block left by another thread just then)
        ds.close()
        return begin()

    ds.begin_read = closed_meanwhile
    np.testing.assert_array_equal(train[[0, 1]]["flow"], expected)
    assert train.source is not ds
    train.close()


def test_threads_that_find_the_dataset_closed_at_once_reopen_the_store_once(tmp_path,
                                                                           monkeypatch):
    """Each would keep a store of its own open, never closed (an HDF5 store's reader lock)."""
    import threading
    import time

    from flowstore.reader.dataset import StoreDataset

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 1, 1))
    with flowstore.open(path) as ds:
        train = ds.split("train", features=("flow",))
    opened, open_ = [], StoreDataset.open.__func__

    def slow_open(cls, location):
        time.sleep(0.2)
        dataset = open_(cls, location)
        opened.append(dataset)
        return dataset

    monkeypatch.setattr(StoreDataset, "open", classmethod(slow_open))
    readers = [threading.Thread(target=lambda: train[[0]]) for _ in range(4)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(30)
    assert len(opened) == 1
    train.close()


def test_closing_a_split_leaves_the_store_it_shares_with_its_dataset_open(tmp_path):
    """A split closes only a store it reopened for itself: one it shares with its dataset is
    the dataset's to close, and stays open for the dataset's other reads."""
    path = make_tiny_store(tmp_path / "t.h5", per_class=(2, 1, 1))
    with flowstore.open(path) as ds:
        with ds.split("train") as train:
            train[0]
        assert not ds.closed
        np.testing.assert_array_equal(ds.store.read("label"), ds.labels)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_split_that_reopens_a_store_which_lost_its_array_says_so(tmp_path, suffix):
    """Reopened (after its `with` block, unpickled, in a DataLoader worker) on a store that lost
    an array it reads (a partial copy, a sync under way), a split failed with a bare
    `KeyError: 'flow'`; the same loss under the open split was already a MissingChunkError."""
    path = make_tiny_store(tmp_path / f"t{suffix}", per_class=(2, 1, 1))
    with flowstore.open(path) as ds:
        train = ds.split("train", features=("flow", "middle_frame"))
    pickled = pickle.dumps(train)
    if suffix == ".zarr":
        shutil.rmtree(path / "flow")
    else:
        with h5py.File(path, "a") as file:
            del file["flow"]
    held = {str(path.resolve()), str(lock_path(path).resolve())}
    for split in (train, pickle.loads(pickled)):
        with pytest.raises(StoreError, match=rf"store '.*t\{suffix}' lacks the array 'flow' that "
                                             r"split 'train' reads \(it had it when the split "
                                             r"was made\); `flowstore verify` says what else") \
                as refused:
            split[[0]]
        # the store it reopened is closed, not left to the collector while the error lives
        # (an HDF5 store's reader lock keeps builds out)
        assert refused.value and not [fd for fd in os.listdir("/proc/self/fd")
                                      if os.path.realpath(f"/proc/self/fd/{fd}") in held]
    # a split made anew is told the store is damaged, not that its kind never held flow
    with flowstore.open(path) as ds, pytest.raises(
            ValueError, match=r"has no feature 'flow' \(it has .*\): the store is damaged \(.*"
                              r"lacks array\(s\) flow\); rebuild it with --overwrite"):
        ds.split("train", features=("flow",))


def test_open_takes_a_path_or_url_and_says_so_of_anything_else():
    """`flowstore.open(None)` failed inside pathlib ("expected str, bytes or os.PathLike
    object, not NoneType"), naming neither the argument nor what it takes."""
    for wrong, named in ((None, "NoneType None"), (123, "int 123"), (b"x.zarr", "bytes b'x.zarr'")):
        with pytest.raises(TypeError, match=r"flowstore.open takes a store's path or URL \(a str "
                                            rf"or os.PathLike\), got {named}"):
            flowstore.open(wrong)


def test_a_zarr_store_moved_while_open_is_said_gone_not_damaged(tmp_path):
    """Reading on after the store folder was moved said 'the store is damaged, partly copied
    ...; flowstore verify lists what is missing', of a store that is fine where it went."""
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 1, 1))
    with flowstore.open(path) as ds:
        split = ds.split("train")
        split[0]
        path.rename(tmp_path / "moved.zarr")
        with pytest.raises(StoreError, match=r"t\.zarr' is gone \(moved or deleted while "
                                             r"open\): open it where it is now"):
            split[1]


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_store_opened_by_a_relative_path_reads_on_after_a_change_of_folder(tmp_path,
                                                                             monkeypatch,
                                                                             suffix):
    """A Zarr store kept its relative path: after `os.chdir` (Hydra changes the working folder
    of every run) a split said the store was "rebuilt, replaced or deleted", and zarr would
    have read another folder's files."""
    path = make_tiny_store(tmp_path / f"t{suffix}", per_class=(2, 1, 1))
    expected = plain_read(path, "train")
    monkeypatch.chdir(tmp_path)
    with flowstore.open(path.name) as ds:
        split = ds.split("train")
        split[0]
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert_same_batch(split[[1, 0]], [expected[1], expected[0]])


# -- decoding follows the store's declared encoding, not the array's name ---------------------------


def _add_array(path, name, values, params_update):
    g = zarr.open_group(str(path), mode="r+")
    arr = g.create_array(name, shape=values.shape, dtype=values.dtype,
                         chunks=(1, *values.shape[1:]))
    arr[:] = values
    g.attrs["params"] = {**g.attrs["params"], **params_update}


def test_decoding_is_decided_by_the_declared_encoding(tmp_path):
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0), flow_dtype="uint8")
    stored = np.full((4, 2, 2, 2), 200, dtype=np.uint8)
    _add_array(path, "motion", stored, {"motion_dtype": "uint8", "motion_bound": 10.0,
                                        "motion_quantization": "255-bins-centred"})
    _add_array(path, "flow_mask", np.full((4, 2, 2, 1), 200, dtype=np.uint8), {})
    with flowstore.open(path) as ds:
        batch = ds.split("train", float_dtype="float32")[[0]]
    # declared under another name: decoded; undeclared, though named like flow: left as stored
    np.testing.assert_allclose(batch["motion"], (200 - 127) * 20.0 / 255, rtol=1e-6)
    assert batch["flow_mask"].dtype == np.uint8 and (batch["flow_mask"] == 200).all()
    assert batch["frames"].dtype == np.uint8


def test_a_store_from_before_the_255_bin_quantization_decodes_as_it_was_written(tmp_path):
    """uint8 stores written before `flow_quantization` existed rounded to 0..255: decoded with
    that scheme's centre (127.5), as `flowstore.flow_encoding.decode_flow` does."""
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0), flow_dtype="uint8")
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["params"] = {k: v for k, v in g.attrs["params"].items() if k != "flow_quantization"}
    stored = g["flow"][0]
    with flowstore.open(path) as ds:
        flow = ds.split("train", features=("flow",), float_dtype="float32")[0]["flow"]
    np.testing.assert_allclose(flow, (stored.astype(np.float32) - 127.5) * (16.0 / 255), atol=1e-6)


def test_a_feature_of_another_shape_or_type_than_its_parameters_give_is_refused(tmp_path):
    """`flowstore.open` checked each array's leading axis alone: a `frames` declared 10**6 steps
    long (a store from elsewhere) made a 6 GB batch buffer a sample, and float64 frames were
    handed out as they were, where verify and show refuse both (found by review)."""
    import json

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0))
    metadata = path / "frames" / "zarr.json"
    declared = json.loads(metadata.read_text())
    shape = list(declared["shape"])
    declared["shape"] = [shape[0], 10**6, *shape[2:]]
    metadata.write_text(json.dumps(declared))
    with pytest.raises(StoreError, match=rf"has shape \({shape[0]}, 1000000, "):
        flowstore.open(path)
    declared["shape"], declared["data_type"] = shape, "float64"
    metadata.write_text(json.dumps(declared))
    with pytest.raises(StoreError, match="'frames'"):
        flowstore.open(path)


def test_a_declaration_the_store_does_not_hold_is_refused(tmp_path):
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0), flow_dtype="float16")
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["params"] = {**g.attrs["params"], "flow_dtype": "uint8"}
    with pytest.raises(StoreError, match="is damaged: its array 'flow' holds float16, not uint8"):
        flowstore.open(path)  # (said as verify says it)
    # an array of the user's own declared as what it does not hold: the encodings' own check
    g.attrs["params"] = {**g.attrs["params"], "flow_dtype": "float16"}
    _add_array(path, "motion", np.zeros((4, 2, 2, 2), np.float16), {"motion_dtype": "uint8"})
    with pytest.raises(StoreError, match="declares 'motion' as uint8 but holds float16"):
        flowstore.open(path)


def test_a_uint8_feature_without_its_bound_is_a_store_error_not_a_bug(tmp_path):
    """Its values cannot be mapped back to pixels: a store's fault, said as one (it was a bare
    KeyError, which the CLIs report as a bug in flowstore)."""
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0), flow_dtype="uint8")
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["params"] = {k: v for k, v in g.attrs["params"].items() if k != "flow_bound"}
    with pytest.raises(StoreError, match=r"t\.zarr' is damaged: it has uint8 'flow' but no "
                                         r"'flow_bound' parameter"):
        flowstore.open(path)


@pytest.mark.parametrize("bound, why", [
    (0, "must be a number of pixels"),       # (read as still flow)
    (-5.0, "must be a number of pixels"),    # (read as mirrored flow)
    (1e308, "must be a number of pixels"),   # (read as inf)
    ("x", "must be a number of pixels"),
    (None, "must be a number of pixels"),
])
def test_a_uint8_bound_no_build_takes_is_refused_not_decoded(tmp_path, bound, why):
    """A store from elsewhere whose `flow_bound` no build would record: refused as damaged, in
    one message naming the store, where the reader decoded by it without a word (0: every
    value 0; -5: the flow's sign flipped; 1e308: every value inf; found by review)."""
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0), flow_dtype="uint8")
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["params"] = {**g.attrs["params"], "flow_bound": bound}
    with pytest.raises(StoreError, match=rf"t\.zarr' describes itself wrongly: flow_bound {why}"):
        flowstore.open(path)  # (as verify says it)
    # an array of the user's own declared with such a bound: the encodings' own check
    g.attrs["params"] = {**g.attrs["params"], "flow_bound": 16.0}
    _add_array(path, "motion", np.zeros((4, 2, 2, 2), np.uint8),
               {"motion_dtype": "uint8", "motion_bound": bound})
    with pytest.raises(StoreError, match=rf"t\.zarr' is damaged: it declares how 'motion' maps "
                                         rf"back wrongly: motion_bound {why}"):
        flowstore.open(path)


def test_an_unknown_uint8_quantization_is_refused_naming_the_store(tmp_path):
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0), flow_dtype="uint8")
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["params"] = {**g.attrs["params"], "flow_quantization": "foo"}
    with pytest.raises(StoreError, match=r"t\.zarr' is damaged: it declares how 'flow' maps "
                                         r"back wrongly: unknown uint8 flow quantization 'foo'"):
        flowstore.open(path)


# -- the fast path checks its assumptions and falls back ----------------------------------------------


def test_zarr_fast_path_falls_back_when_the_chunk_layout_is_not_what_it_assumed(tmp_path,
                                                                                monkeypatch):
    """Were zarr to lay chunk files out otherwise, the reader's own file name would point at
    another sample's chunk: the first read is checked against zarr's and the array falls back."""
    from flowstore.store._zarr import ZarrStore

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    expected = plain_read(path, "train")
    # where the reader's file names now lead: each array's chunk files, rotated by one sample
    rotated = tmp_path / "rotated"
    for name in ("middle_frame", "frames", "flow"):
        files = sorted((path / name).glob("c.*"), key=lambda f: int(f.name.split(".")[1]))
        (rotated / name).mkdir(parents=True)
        for i, file in enumerate(files):
            shutil.copyfile(files[(i + 1) % len(files)], rotated / name / file.name)
    original = ZarrStore._plan_fast_read

    def misplaced(self, name):
        plan = original(self, name)
        return plan._replace(prefix=plan.prefix.replace(str(path), str(rotated)))

    monkeypatch.setattr(ZarrStore, "_plan_fast_read", misplaced)
    with flowstore.open(path) as ds:
        assert_same_batch(ds.split("train")[[3, 0, 1]], [expected[i] for i in (3, 0, 1)])
        assert ds.store.fast_reads == {"middle_frame": False, "frames": False, "flow": False}


def test_zarr_fast_path_is_used_and_checked_on_a_store_as_flowstore_writes_it(tmp_path):
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0))
    with flowstore.open(path) as ds:
        ds.split("train")[[0, 1]]
        assert ds.store.fast_reads == {"middle_frame": True, "frames": True, "flow": True}


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "zarr-read"])
def test_a_done_sample_whose_chunk_is_missing_is_an_error_not_zeros(tmp_path, monkeypatch, fast):
    """A partly copied store, or one rebuilt (`--overwrite`) while a reader had it open: zarr
    reads a missing chunk as the fill value, and the reader handed back zeros to train on. A
    sample that really is all zeros (its chunk written) still reads."""
    from flowstore.store import open_store
    from flowstore.store._zarr import ZarrStore

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    if not fast:  # zarr's own read, as on an object store
        monkeypatch.setattr(ZarrStore, "_fast_read", lambda self, name, out: None)
    with open_store(path, "r+") as writer:
        index = int(np.flatnonzero(writer.read("done"))[1])
        writer.write_sample(index, {"flow": np.zeros(writer.layout("flow")[0][1:], "float16")})
    with flowstore.open(path) as ds:
        split = ds.split("train")
        assert not split[1]["flow"].any()  # a real all-zero sample: no error
        (path / "flow" / ds.store.chunk_key("flow", int(split.indices[0]))).unlink()
        with pytest.raises(StoreError, match=f"chunk of sample '{split.ids[0]}' of 'flow' is "
                                             f"missing"):  # (by its id, not its position)
            split[[2, 0]]
        split[[2, 1]]  # the others still read
    # A store made before every chunk was written (no EVERY_CHUNK_WRITTEN): an all-zero sample
    # may have no chunk, and reads as zeros, as it always did.
    from flowstore.store._zarr import EVERY_CHUNK_WRITTEN

    group = zarr.open_group(str(path), mode="r+")
    del group.attrs[EVERY_CHUNK_WRITTEN]
    with flowstore.open(path) as ds:
        assert not ds.split("train")[0]["flow"].any()


def test_zarr_store_with_other_chunk_keys_and_codec_reads_right(tmp_path):
    """A Zarr store written by other tools: zarr's default nested chunk keys (flowstore's are
    flat), gzip: zarr's own read, same values."""
    from zarr.codecs import GzipCodec

    source = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0), flow_dtype="uint8")
    src = zarr.open_group(str(source), mode="r")
    path = tmp_path / "other.zarr"
    out = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name, arr in src.arrays():
        if arr.ndim == 1:
            new = out.create_array(name, shape=arr.shape, chunks=arr.chunks,
                                   dtype=str if arr.dtype.kind in "OTU" else arr.dtype)
        else:
            new = out.create_array(name, shape=arr.shape, chunks=arr.chunks, dtype=arr.dtype,
                                   compressors=[GzipCodec()],
                                   chunk_key_encoding={"name": "default", "separator": "/"})
        new[:] = arr[:]
    out.attrs.update(src.attrs.asdict())
    assert (path / "flow" / "c" / "0" / "0" / "0" / "0" / "0").is_file()
    expected = plain_read(source, "train")
    with flowstore.open(path) as ds:
        assert_same_batch(ds.split("train")[[2, 0]], [expected[2], expected[0]])


@pytest.mark.parametrize("damage", ["cut short", "bytes changed"])
def test_a_damaged_gzip_chunk_of_a_store_rewritten_by_zarr_is_damage_not_a_bug(tmp_path,
                                                                               damage):
    """numcodecs' gzip raises EOFError (cut short) and zlib.error (bytes changed), which
    flowstore did not take as damage: `show` and the reader were "a bug in flowstore"."""
    from zarr.codecs import GzipCodec

    from flowstore.errors import DamagedStoreError

    source = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0))
    src = zarr.open_group(str(source), mode="r")
    path = tmp_path / "gzip.zarr"
    out = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name, arr in src.arrays():
        kind = {"dtype": str if arr.dtype.kind in "OTU" else arr.dtype}
        if arr.ndim > 1:
            kind["compressors"] = [GzipCodec()]
        out.create_array(name, shape=arr.shape, chunks=arr.chunks, **kind)[:] = arr[:]
    out.attrs.update(src.attrs.asdict())
    chunk = chunk_file(path, "flow", 0)
    data = chunk.read_bytes()
    chunk.write_bytes(data[:100] if damage == "cut short" else
                      data[:40] + bytes(20) + data[60:])
    with flowstore.open(path) as ds:
        every = ds.split("all")  # (sample 0's chunk among them)
        with pytest.raises(DamagedStoreError, match="of 'flow' cannot be read"):
            every[list(range(len(every)))]


def uncompressed_h5(source, path):
    """A copy of an HDF5 store without filters: the chunks flowstore reads raw."""
    with h5py.File(source, "r") as f, h5py.File(path, "w") as out:
        for name, dataset in f.items():
            if dataset.ndim > 1:
                out.create_dataset(name, data=dataset[()], chunks=dataset.chunks)
            else:
                out.create_dataset(name, data=dataset[()], dtype=dataset.dtype)
        out.attrs.update(dict(f.attrs))
    return path


def test_hdf5_raw_reads_are_used_on_unfiltered_chunks(tmp_path):
    path = uncompressed_h5(make_tiny_store(tmp_path / "t.h5", per_class=(1, 0, 0)),
                           tmp_path / "raw.h5")
    expected = plain_read(path, "train")
    with flowstore.open(path) as ds:
        assert_same_batch(ds.split("train")[[1, 0]], [expected[1], expected[0]])
        assert ds.store.fast_reads == {"middle_frame": True, "frames": True, "flow": True}


def test_hdf5_raw_reads_fall_back_when_they_disagree_with_h5py(tmp_path, monkeypatch):
    from flowstore.store._hdf5 import HDF5Store

    path = uncompressed_h5(make_tiny_store(tmp_path / "t.h5", per_class=(2, 0, 0)),
                           tmp_path / "raw.h5")
    expected = plain_read(path, "train")
    original = HDF5Store._chunk_offset

    def shifted(self, name, index, out):
        offset = original(self, name, index, out)
        return None if offset is None else offset + 1  # a layout it misread

    monkeypatch.setattr(HDF5Store, "_chunk_offset", shifted)
    with flowstore.open(path) as ds:
        assert_same_batch(ds.split("train")[[4, 1]], [expected[4], expected[1]])
        assert ds.store.fast_reads == {"middle_frame": False, "frames": False, "flow": False}


def test_an_hdf5_store_already_open_by_hand_in_the_process_opens(tmp_path):
    """h5py's default file locking and the reader's `locking=False` disagree, and HDF5 refused
    the second open in one process: a notebook that had read the store with plain h5py was told
    the store is "not a readable flowstore store"."""
    h5py = pytest.importorskip("h5py")
    path = make_tiny_store(tmp_path / "t.h5", per_class=(2, 0, 0))
    expected = plain_read(path, "train")
    with h5py.File(path, "r") as by_hand:
        with flowstore.open(path) as ds:
            assert_same_batch(ds.split("train")[[1, 0]], [expected[1], expected[0]])
        assert by_hand["done"].shape == (8,)  # still open, still readable


# -- augmentations --------------------------------------------------------------------------------


def test_augmentations_are_seeded_and_keep_frame_and_flow_together(tmp_path):
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    with flowstore.open(path) as ds:
        train = ds.split("train", features=("middle_frame", "flow"), float_dtype="float32")
        plain = train[list(range(8))]
        augment = compose(lambda b, rng: horizontal_flip(b, rng, motion=train.motion_keys),
                          lambda b, rng: random_crop(b, rng, size=24))
        first = augment(train[list(range(8))], np.random.default_rng(7))
        again = augment(train[list(range(8))], np.random.default_rng(7))
    assert train.motion_keys == ("flow",)
    for key in ("middle_frame", "flow"):
        np.testing.assert_array_equal(first[key], again[key])
        assert first[key].shape[-3:-1] == (24, 24)
    # a numpy integer size, as an array of sizes yields it (was a TypeError: cannot unpack)
    assert random_crop(plain, np.random.default_rng(0), size=np.int64(24))["flow"].shape[-3:-1] \
        == (24, 24)
    flipped = 0
    for k in range(8):  # find each sample's window and flip in the plain frame
        found = None
        for flip in (False, True):
            frame = plain["middle_frame"][k][:, ::-1] if flip else plain["middle_frame"][k]
            for top in range(9):
                for left in range(9):
                    if np.array_equal(frame[top:top + 24, left:left + 24],
                                      first["middle_frame"][k]):
                        found = (flip, top, left)
        assert found is not None
        flip, top, left = found
        flow = plain["flow"][k]
        if flip:
            flow = flow[..., ::-1, :] * np.array([-1, 1], np.float32)
        np.testing.assert_array_equal(first["flow"][k], flow[:, top:top + 24, left:left + 24])
        flipped += flip
    assert 0 < flipped < 8


def test_augmentations_write_into_the_batch_as_the_readme_says_and_a_copy_is_kept(tmp_path):
    """README: flip, scale jitter and colour jitter write into the batch given and return it (no
    copy of every batch); random_crop makes new arrays; a copy made first is untouched. A user
    averaging outputs on a batch and on its mirror got two mirrored batches, unwarned (found
    by review): what is documented now is pinned here."""
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    with flowstore.open(path) as ds:
        train = ds.split("train", features=("middle_frame", "flow"))
        batch = train[list(range(4))]
    kept = {key: value.copy() for key, value in batch.items()}
    rng = np.random.default_rng(0)
    for augment in (lambda b: horizontal_flip(b, rng, motion=train.motion_keys, p=1.0),
                    lambda b: random_resized_crop(b, rng, motion=train.motion_keys,
                                                  scale=(1.5, 1.5)),
                    lambda b: colour_jitter(b, rng, strength=0.5)):
        before = batch["middle_frame"].copy()
        out = augment(batch)
        assert out["middle_frame"] is batch["middle_frame"]
        assert not np.array_equal(batch["middle_frame"], before)
    cropped = random_crop(batch, rng, size=8)
    assert not np.shares_memory(cropped["flow"], batch["flow"])
    for key in ("middle_frame", "flow"):
        assert not np.array_equal(kept[key], batch[key])
    np.testing.assert_array_equal(kept["middle_frame"],
                                  train[list(range(4))]["middle_frame"])


def test_numpy_batches_cover_an_epoch_in_a_seeded_order(adapter_store):
    expected = {row["id"]: row for row in plain_read(adapter_store, "train")}
    with flowstore.open(adapter_store) as ds:
        train = ds.split("train")
        epoch0 = list(train.batches(3, shuffle=True, seed=4, epoch=0))
        again = list(train.batches(3, shuffle=True, seed=4, epoch=0))
        epoch1 = list(train.batches(3, shuffle=True, seed=4, epoch=1))
        in_order = list(train.batches(4))
        whole = list(train.batches(3, shuffle=True, seed=4, epoch=0, drop_remainder=True))
    ids = [str(i) for b in epoch0 for i in b["id"]]
    assert sorted(ids) == sorted(expected) and [len(b["id"]) for b in epoch0] == [3, 3, 3, 1]
    # drop_remainder: the same order, its last partial batch left out
    assert [[str(i) for i in b["id"]] for b in whole] == [ids[:3], ids[3:6], ids[6:9]]
    assert ids == [str(i) for b in again for i in b["id"]]
    assert ids != [str(i) for b in epoch1 for i in b["id"]]
    for batch in epoch0:
        assert_same_batch(batch, [expected[str(i)] for i in batch["id"]])
    assert [str(i) for b in in_order for i in b["id"]] == list(expected)


def test_a_large_seed_orders_and_augments_as_no_other_seed_and_epoch_do():
    """A seed sequence splits a number past 2**32 into 32-bit words and pads short entropy with
    zeros: seed 2**32 + 5's epoch 0 was seed 5's epoch 1, order and augmentation alike (found by
    review; `time.time_ns()` is such a seed). Seeds below 2**32 keep the orders they had."""
    from flowstore.reader.batches import batch_rng, epoch_order

    def order(seed, epoch):
        return epoch_order(1000, shuffle=True, seed=seed, epoch=epoch).tolist()

    def draws(seed, epoch, batch):
        return batch_rng(seed, epoch, batch).integers(0, 2**62, 4).tolist()

    assert order(2**32 + 5, 0) != order(5, 1)
    assert order(5, 2**32) != order(2**32 + 5, 0) != order(5, 0)
    assert draws(2**32 + 5, 0, 0) != draws(5, 1, 0)
    assert draws(5, 0, 2**32) != draws(5, 0, 0)
    assert order(2**32, 0) != order(0, 1) and draws(2**32, 0, 0) != draws(0, 1, 0)  # (the edge)
    # as numpy gives them for [seed, epoch] (and [seed, epoch, 1, batch]), unchanged
    assert order(5, 1) == np.random.default_rng([5, 1]).permutation(1000).tolist()
    assert draws(5, 1, 2) == np.random.default_rng([5, 1, 1, 2]).integers(0, 2**62, 4).tolist()


# -- adapters --------------------------------------------------------------------------------------


@pytest.mark.parametrize("framework, method, adapter", [
    ("tensorflow", "to_tf_dataset", "flowstore.reader.tf"),
    ("keras", "to_keras_dataset", "flowstore.reader.keras")])
def test_an_adapter_whose_framework_is_not_installed_says_which(store, monkeypatch, framework,
                                                                method, adapter):
    """"No module named 'tensorflow'" raised from inside flowstore read like a fault of its
    install: a split says which of its methods needs which framework, and how to get it (still
    a ModuleNotFoundError of that module, for code that catches it)."""
    monkeypatch.setitem(sys.modules, framework, None)  # (its import fails, as where it is not)
    monkeypatch.delitem(sys.modules, adapter, raising=False)
    with flowstore.open(store) as ds:
        with pytest.raises(ModuleNotFoundError,
                           match=rf"^split\.{method} needs {framework}, which is not installed "
                                 rf"here: pip install ") as raised:
            getattr(ds.split("train"), method)(4)
    assert raised.value.name == framework


def test_tf_dataset_matches_the_plain_read(adapter_store):
    expected = plain_read(adapter_store, "train")
    with flowstore.open(adapter_store) as ds:
        train = ds.split("train", features=("middle_frame", "flow"))
        got = [(x, y) for x, y in train.to_tf_dataset(4)]
        shuffled = [y.numpy() for _, y in train.to_tf_dataset(4, shuffle=True, seed=1)]
    assert [int(y.shape[0]) for _, y in got] == [4, 4, 2]
    for number, (x, y) in enumerate(got):
        rows = expected[number * 4:number * 4 + 4]
        assert_same_batch({"label": y.numpy(), **{k: v.numpy() for k, v in x.items()}}, rows,
                          keys=("middle_frame", "flow"), with_ids=False)
    assert sorted(np.concatenate(shuffled).tolist()) == sorted(r["label"] for r in expected)


def test_tf_dataset_seeds_tensorflow_would_take_as_one_read_apart(adapter_store):
    """TensorFlow takes an op seed modulo 2**31 - 1: without an `epoch`, seeds 0 and 2**31 - 1
    (1 and 2**31, ...) read the same orders and the same augmentations (found by review), where
    `batches` and `epoch=` keep them apart. A seed below the modulus keeps its order."""
    import tensorflow as tf

    with flowstore.open(adapter_store) as ds:
        train = ds.split("train", features=("flow",))

        def read(seed: int) -> tuple[np.ndarray, list[int]]:
            seen: list[tuple[list[str], int]] = []
            data = train.to_tf_dataset(2, shuffle=True, seed=seed,
                                       augment=_recording_augmentation(seen))
            return np.concatenate([x.numpy() for x, _ in data]), [draw for _, draw in seen]

        for seed in (0, 1, 6):
            (flow, draws), (aliased_flow, aliased_draws) = read(seed), read(seed + 2**31 - 1)
            assert not np.array_equal(flow, aliased_flow), seed
            assert draws != aliased_draws, seed
        assert np.array_equal(read(6)[0], read(6)[0])
        order = [int(i) for i in tf.data.Dataset.range(len(train)).shuffle(
            len(train), seed=6).as_numpy_iterator()]
        assert np.array_equal(read(6)[0], np.stack([train[i]["flow"] for i in order]))


def _recording_augmentation(seen: list[tuple[list[str], int]]):
    """An augmentation that changes nothing and appends each batch's ids and a draw of its
    random generator to `seen`."""
    def record(batch, rng):
        seen.append(([str(i) for i in batch["id"]], int(rng.integers(1 << 30))))
        return batch

    return record


def test_tf_dataset_shuffles_and_augments_each_epoch_anew_and_repeats_with_its_seed(
        adapter_store):
    """Each iteration of `to_tf_dataset(shuffle=True)` (an epoch of `fit`) reads a new order
    of every sample and gives its augmentation new draws; the same seed repeats them. Drawn
    once, every epoch trained on the first one's order and crops (a mutation of either
    passed every test)."""
    def epochs(seed: int) -> list[list[tuple[list[str], int]]]:
        seen: list[tuple[list[str], int]] = []
        record = _recording_augmentation(seen)
        with flowstore.open(adapter_store) as ds:
            data = ds.split("train", features=("middle_frame",)).to_tf_dataset(
                3, shuffle=True, seed=seed, augment=record, parallel_reads=1)
            out = []
            for _ in range(3):
                start = len(seen)  # (after the probe `to_tf_dataset` augments once)
                for _ in data:
                    pass
                out.append(seen[start:])
        return out

    first = epochs(5)
    every_id = sorted(row["id"] for row in plain_read(adapter_store, "train"))
    for epoch in first:
        assert sorted(i for ids, _ in epoch for i in ids) == every_id
    orders = [[i for ids, _ in epoch for i in ids] for epoch in first]
    draws = [[draw for _, draw in epoch] for epoch in first]
    assert orders[0] != orders[1] != orders[2] and draws[0] != draws[1] != draws[2]
    assert epochs(5) == first and epochs(6) != first


def test_tf_dataset_given_an_epoch_reads_that_epochs_order_and_augmentation(adapter_store):
    """`to_tf_dataset(epoch=e)` reads epoch e as `split.batches(epoch=e)` does (order and
    augmentation seeded by (seed, e)), however many iterators were made of it before; an
    int64 `tf.Variable` is read as each iterator is made, so a training loop that sets it
    as each epoch begins reads epoch e in epoch e, also when it goes on from a stop (Keras
    makes two iterators an epoch: counted by tf.data, `fit(initial_epoch=k)` read others)."""
    import tensorflow as tf

    def flipped(batch, rng):  # (a draw of the batch's stream, as its first flow value)
        batch = dict(batch)
        batch["flow"] = batch["flow"] + rng.integers(0, 100)
        return batch

    with flowstore.open(adapter_store) as ds:
        train = ds.split("train", features=("flow",))

        def expected(epoch: int) -> list:
            return [(b["label"].tolist(), b["flow"]) for b in train.batches(
                3, shuffle=True, seed=4, epoch=epoch, augment=flipped)]

        def read(data) -> list:
            return [(y.numpy().tolist(), x.numpy()) for x, y in data]

        def same(got: list, want: list) -> bool:
            return len(got) == len(want) and all(
                g[0] == w[0] and np.array_equal(g[1], w[1]) for g, w in zip(got, want))

        assert same(read(train.to_tf_dataset(3, shuffle=True, seed=4, augment=flipped,
                                             epoch=2)), expected(2))
        number = tf.Variable(0, dtype=tf.int64)
        data = train.to_tf_dataset(3, shuffle=True, seed=4, augment=flipped, epoch=number)
        assert data.cardinality().numpy() == -(-len(train) // 3)
        for epoch in (3, 3, 1, 0):
            for _ in range(2):
                iter(data)  # (iterators made and dropped change nothing)
            number.assign(epoch)
            assert same(read(data), expected(epoch))
        assert not same(expected(3), expected(1))


def test_keras_pydataset_augments_each_epoch_anew_and_repeats_with_its_seed(adapter_store):
    """Each epoch of `to_keras_dataset` (moved on by `on_epoch_end`, as Keras does, or by
    `set_epoch`) gives its augmentation new draws for the same batches; the same seed repeats
    them. Drawn from epoch 0's stream every epoch, each sample got the same crop and flip
    every epoch (a mutation doing so passed every test)."""
    def epochs(seed: int, move_on: str) -> list[list[tuple[list[str], int]]]:
        seen: list[tuple[list[str], int]] = []
        record = _recording_augmentation(seen)
        with flowstore.open(adapter_store) as ds:
            data = ds.split("train", features=("middle_frame",)).to_keras_dataset(
                3, seed=seed, augment=record)  # (not shuffled: the same batches each epoch)
            out = []
            for epoch in range(3):
                if move_on == "set_epoch":
                    data.set_epoch(epoch)
                start = len(seen)
                for index in range(len(data)):
                    data[index]
                out.append(seen[start:])
                if move_on == "on_epoch_end":
                    data.on_epoch_end()
        return out

    first = epochs(5, "on_epoch_end")
    orders = [[ids for ids, _ in epoch] for epoch in first]
    draws = [[draw for _, draw in epoch] for epoch in first]
    assert orders[0] == orders[1] == orders[2] and len(orders[0]) > 1
    assert draws[0] != draws[1] != draws[2] != draws[0]
    assert epochs(5, "set_epoch") == first and epochs(6, "on_epoch_end") != first


def test_keras_pydataset_reads_and_draws_as_the_numpy_batches_of_each_epoch(adapter_store):
    """Every reader gives batch b of epoch e the same samples and the same augmentation draws
    (a resumed training relies on it): the PyDataset's epoch and batch numbers swapped gave
    other draws than `batches` and `to_tf_dataset` give."""
    with flowstore.open(adapter_store) as ds:
        train = ds.split("train", features=("middle_frame",))
        data = train.to_keras_dataset(3, shuffle=True, seed=4,
                                      augment=_recording_augmentation(keras_seen := []))
        for epoch in range(3):
            data.set_epoch(epoch)
            for index in range(len(data)):
                data[index]
            numpy_seen: list = []
            list(train.batches(3, shuffle=True, seed=4, epoch=epoch,
                               augment=_recording_augmentation(numpy_seen)))
            assert keras_seen[-len(numpy_seen):] == numpy_seen, epoch
        # set_epoch starts a pass afresh: batches served before it do not count toward it
        # (the first half of epoch 0 and the second of epoch 1 made a "whole" pass: epoch 2)
        data.set_epoch(0)
        half = len(data) // 2
        for index in range(half):
            data[index]
        data.set_epoch(1)
        for index in range(half, len(data)):
            data[index]
        data.on_epoch_end()
        assert data.epoch == 1
        # out of range as a sequence is (an empty batch was read at len(data))
        with pytest.raises(IndexError):
            data[len(data)]
        # a queue asked for without reading threads reads nothing ahead (it was a
        # ThreadPoolExecutor of no thread: "max_workers must be greater than 0")
        queued = train.to_keras_dataset(2, max_queue_size=4)
        assert queued.read_ahead == 0 and len(queued[0][1]) == 2


def test_tf_dataset_takes_soft_labels_from_an_augmentation_and_refuses_no_batch(store):
    """A mixup gives float (B, classes) labels: TensorFlow refused them against a hard-coded
    int64 ("2-th value returned by pyfunc_4 is double"); an augmentation that returns nothing
    failed inside TensorFlow at the first batch."""
    def mixup(batch, rng):
        soft = np.eye(4)[batch["label"]]
        return {**batch, "label": 0.9 * soft + 0.1 * soft[::-1]}

    with flowstore.open(store) as ds:
        train = ds.split("train", features=("flow",))
        (flow, labels), *_ = train.to_tf_dataset(2, augment=mixup)
        assert labels.dtype.name == "float64" and tuple(labels.shape) == (2, 4)
        with pytest.raises(TypeError, match=r"augment must return the batch it is given \(a "
                                            r"dict of flow and label\), got NoneType"):
            train.to_tf_dataset(2, augment=lambda batch, rng: None)


def test_torch_dataloader_with_two_workers_matches_the_plain_read(adapter_store):
    torch = pytest.importorskip("torch")
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

    expected = {row["id"]: row for row in plain_read(adapter_store, "train")}
    with flowstore.open(adapter_store) as ds:
        train = ds.split("train")
        generator = torch.Generator().manual_seed(0)
        loader = DataLoader(train, batch_size=4, num_workers=2, shuffle=True,
                            generator=generator)
        seen = []
        for batch in loader:
            assert isinstance(batch["flow"], torch.Tensor) and batch["flow"].dtype == torch.float16
            assert batch["label"].dtype == torch.int64
            rows = [expected[i] for i in batch["id"]]
            assert_same_batch({k: (v.numpy() if hasattr(v, "numpy") else v)
                               for k, v in batch.items()}, rows)
            seen += batch["id"]
        plain = next(iter(DataLoader(train, batch_size=3)))  # no workers, in order
        # whole batches as the split reads them: no collate copy
        sampler = BatchSampler(SequentialSampler(train), batch_size=4, drop_last=False)
        batched = list(DataLoader(train, batch_size=None, sampler=sampler, num_workers=2))
    assert sorted(seen) == sorted(expected)
    assert list(plain["id"]) == list(expected)[:3]
    rows = list(expected.values())
    for number, batch in enumerate(batched):
        assert isinstance(batch["flow"], torch.Tensor)
        assert_same_batch({k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in batch.items()},
                          rows[number * 4:number * 4 + 4])


def test_torch_collate_keeps_what_a_collate_function_changed_in_the_samples(adapter_store,
                                                                             monkeypatch):
    """Samples changed on their way to default collate (a value replaced, one added, a wrapper
    dataset's relabelling) were dropped for the batch they were read in: flow stayed float16 and
    the labels as stored, silently."""
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, default_collate

    def collate(samples):
        for sample in samples:
            sample["flow"] = sample["flow"].astype(np.float32) / 20
            sample["label"] = np.int64(0)
            sample["weight"] = np.float32(0.5)
        return default_collate(samples)

    expected = plain_read(adapter_store, "train")[:4]
    with flowstore.open(adapter_store) as ds:
        train = ds.split("train", features=("flow",))
        for workers in (0, 2):
            batch = next(iter(DataLoader(train, batch_size=4, collate_fn=collate,
                                         num_workers=workers)))
            assert batch["flow"].dtype == torch.float32 and batch["label"].tolist() == [0] * 4
            assert batch["weight"].tolist() == [0.5] * 4
            np.testing.assert_allclose(batch["flow"].numpy(),
                                       np.stack([r["flow"] for r in expected]) / 20, atol=1e-3)
        # a collate that only adds a value, or only removes one (zip stopped at the shorter,
        # and a sample with `id` deleted counted as left as read): its batch, not the read one
        def add_only(samples):
            for sample in samples:
                sample["weight"] = np.float32(0.5)
            return default_collate(samples)

        def without_id(samples):
            for sample in samples:
                del sample["id"]
            return default_collate(samples)

        added = next(iter(DataLoader(train, batch_size=4, collate_fn=add_only)))
        assert added["weight"].tolist() == [0.5] * 4
        assert "id" not in next(iter(DataLoader(train, batch_size=4, collate_fn=without_id)))
        # samples left as read are still passed on as their batch, uncopied: collate unused
        import flowstore.reader.torch as adapter

        copies = []
        monkeypatch.setattr(adapter, "collate", lambda *a, **k: copies.append(a) or 1 / 0)
        unchanged = next(iter(DataLoader(train, batch_size=4)))
        assert unchanged["label"].tolist() == [r["label"] for r in expected] and not copies


def test_the_default_augmentation_pickles_for_spawned_workers(adapter_store):
    """`augment=True` was a closure: Keras' worker processes under spawn (macOS, Windows, and
    Linux from Python 3.14) failed to pickle it, with a traceback."""
    import pickle

    with flowstore.open(adapter_store) as ds:
        train = ds.split("train")
        flip = pickle.loads(pickle.dumps(train.augmentation(True)))
        batch = train[[0, 1]]
        flipped = flip(dict(batch), np.random.default_rng(0))
        again = train.augmentation(True)(dict(batch), np.random.default_rng(0))
    for key in ("frames", "flow"):
        np.testing.assert_array_equal(flipped[key], again[key])


def test_keras_pydataset_matches_the_plain_read(adapter_store):
    expected = plain_read(adapter_store, "train")
    with flowstore.open(adapter_store) as ds:
        train = ds.split("train", features={"frame": "middle_frame"})
        pydataset = train.to_keras_dataset(4, shuffle=True, seed=3)
        assert len(pydataset) == 3
        pydataset.on_epoch_begin()  # (as Keras calls them: each epoch's start and end)
        batches = [pydataset[i] for i in range(len(pydataset))]
        pydataset.on_epoch_end()
        pydataset.on_epoch_begin()
        next_epoch = [pydataset[i][1].tolist() for i in range(len(pydataset))]
    labels = [y.tolist() for _, y in batches]
    assert sorted(sum(labels, [])) == sorted(r["label"] for r in expected)
    assert next_epoch != labels
    order = np.random.default_rng([3, 0]).permutation(len(expected))
    for number, (x, y) in enumerate(batches):  # a single feature comes as its array
        rows = [expected[i] for i in order[number * 4:number * 4 + 4]]
        np.testing.assert_array_equal(x, np.stack([r["middle_frame"] for r in rows]))
        assert y.tolist() == [r["label"] for r in rows]


def test_keras_fit_reads_epoch_e_in_epoch_e_order(adapter_store):
    """Keras calls a PyDataset's `on_epoch_end` once before training (TensorFlow), so counting
    those calls made `fit`'s first epoch read epoch 1's order; `fit`'s epoch e reads
    `epoch_order(e)` now. (On PyTorch: `test_keras_fit_trains_each_epoch_on_the_whole_...`.)"""
    import keras

    from flowstore.reader.batches import epoch_order
    from flowstore.reader.keras import SplitPyDataset

    seen: list[tuple[int, list[int]]] = []

    class Recording(SplitPyDataset):
        def __getitem__(self, index):
            seen.append((self.epoch, self._order.tolist()))
            return super().__getitem__(index)

    with flowstore.open(adapter_store) as ds:
        train = ds.split("train", features={"frame": "middle_frame"})
        data = Recording(train, 4, shuffle=True, seed=3)
        model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(len(ds.classes))])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.fit(data, epochs=3, verbose=0)
        size = len(train)
    trained = seen[-3 * len(data):]  # before them, Keras's TensorFlow backend peeks at batches
    assert [epoch for epoch, _ in trained] == [e for e in range(3) for _ in range(len(data))]
    for epoch, order in seen:
        assert order == epoch_order(size, shuffle=True, seed=3, epoch=epoch).tolist()
    # the pass that ended with fit's last epoch has moved on already: another end does not
    data.on_epoch_end()
    assert data.epoch == 3 and data._order.tolist() == epoch_order(
        size, shuffle=True, seed=3, epoch=3).tolist()


def test_keras_fit_with_fewer_steps_per_epoch_than_batches_moves_on_each_pass(adapter_store):
    """`fit(steps_per_epoch=N)` with N below the batches reads one pass over several of Keras'
    epochs, calling `on_epoch_begin`/`on_epoch_end` mid-pass; forgetting the batches served at
    each call kept every pass in epoch 0's order and flips. Each pass is the next epoch now."""
    import keras

    from flowstore.reader.keras import SplitPyDataset

    seen: list[tuple[int, int]] = []

    class Recording(SplitPyDataset):
        def __getitem__(self, index):
            seen.append((self.epoch, index))
            return super().__getitem__(index)

    with flowstore.open(adapter_store) as ds:
        train = ds.split("train", features={"frame": "middle_frame"})
        # a batch size giving an even number of batches (Keras warns on a pass cut short)
        size = next(b for b in range(1, len(train)) if -(-len(train) // b) % 2 == 0)
        data = Recording(train, size, shuffle=True, seed=3)
        model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(len(ds.classes))])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.fit(data, epochs=6, steps_per_epoch=len(data) // 2, verbose=0, shuffle=False)
    trained = seen[-3 * len(data):]  # three passes, two of Keras' epochs each
    assert [epoch for epoch, _ in trained] == [e for e in range(3) for _ in range(len(data))]
    assert [index for _, index in trained] == list(range(len(data))) * 3
    assert data.epoch == 3


FIT_RECORDING_EACH_STEP = """
import json, sys

import keras
import numpy as np

import flowstore

seen = []
with flowstore.open(sys.argv[1]) as ds:
    train = ds.split("train", features={"frame": "middle_frame"})
    rows = train.read(np.arange(len(train)))["frame"]
    position = {row.tobytes(): i for i, row in enumerate(rows)}

    class Record(keras.layers.Layer):
        # the positions of the samples each training step gets (run eagerly)
        def call(self, x):
            try:
                values = keras.ops.convert_to_numpy(x)
            except Exception:  # the symbolic pass that builds the model
                values = None
            if values is not None:
                seen.extend(position[row.tobytes()] for row in values)
            return keras.ops.cast(x, "float32")

    model = keras.Sequential([keras.Input(rows.shape[1:], dtype="uint8"), Record(),
                              keras.layers.Flatten(), keras.layers.Dense(len(ds.classes))])
    model.compile(optimizer="sgd", metrics=["accuracy"], run_eagerly=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = train.to_keras_dataset(2, shuffle=True, seed=3, workers=2, max_queue_size=4)
    model.fit(data, epochs=3, verbose=0, shuffle=False)  # (else Keras shuffles the batches)
    print(json.dumps({"seen": seen, "size": len(train), "unique": len(position)}))
"""


def test_keras_fit_trains_each_epoch_on_the_whole_split_with_reading_threads(adapter_store):
    """`fit` on a model whose loss and metrics are not built yet takes one batch to build them,
    then starts the epoch again (on the JAX and PyTorch backends). Keras' own reading threads
    (`workers` > 1) kept what they had read ahead of that pass and handed it out first, so each
    epoch began with leftovers and ended before its own last batches. Each epoch is one pass
    in its epoch's order now."""
    pytest.importorskip("torch")
    from flowstore.reader.batches import epoch_order

    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", FIT_RECORDING_EACH_STEP, str(adapter_store)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    size = result["size"]
    assert result["unique"] == size >= 8
    assert result["seen"] == sum((epoch_order(size, shuffle=True, seed=3, epoch=e).tolist()
                                  for e in range(3)), [])
    with flowstore.open(adapter_store) as ds:
        with pytest.raises(ValueError, match="use_multiprocessing"):
            ds.split("train").to_keras_dataset(2, use_multiprocessing=True)


def test_keras_pydataset_reads_max_queue_size_batches_ahead(tmp_path):
    """`max_queue_size` is how many batches the reading threads read ahead of the one asked
    for (its default, `workers`, is one here)."""
    import threading
    import time

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(3, 1, 1))
    with flowstore.open(path) as ds:
        train = ds.split("train", features="middle_frame")
        read, asked, lock = train.read, [], threading.Lock()

        def counted(positions):
            with lock:
                asked.append(list(positions))
            return read(positions)

        train.read = counted
        data = train.to_keras_dataset(1, workers=1, max_queue_size=4)
        data[0]  # read ahead: batches 1 to 4
        deadline = time.monotonic() + 10
        while len(asked) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # (and no more than those)
        assert len(asked) == 5


def readme_examples() -> list[str]:
    """The README's PyTorch loop and custom Keras model, as users copy them."""
    import re

    text = (REPO / "README.md").read_text()
    section = text.split("### Reading a store in your own training loop", 1)[1]
    section = section.split("### Reading a store without flowstore", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readmes_plain_zarr_example_reads_a_built_sample(tmp_path):
    """"Reading a store without flowstore" read sample 3, whatever it was: zeros, and no error,
    where that sample was not built yet (found by review). It reads a done one now."""
    import re

    section = (REPO / "README.md").read_text().split("### Reading a store without flowstore")[1]
    example = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    path = make_tiny_store(tmp_path / "t.zarr", not_done=range(4))
    scope: dict = {}
    exec(example.replace('"tvhi.zarr"', repr(str(path))), scope)
    first = int(scope["ok"].nonzero()[0][0])
    assert first >= 4 and np.abs(scope["flow"]).max() > 0
    with flowstore.open(path) as ds:
        train = ds.split("train", features=("flow",))
        np.testing.assert_array_equal(scope["flow"], train[0]["flow"])


def test_readme_examples_run_and_keras_fits_on_the_torch_backend(tmp_path):
    """The README's two examples, on a tiny store, in one process with Keras's PyTorch backend:
    `model.fit` on a PyDataset with no TensorFlow in the loop."""
    pytest.importorskip("torch")
    examples = readme_examples()
    assert len(examples) == 2 and "DataLoader" in examples[0] and "model.fit" in examples[1]
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    script = "\n".join(example.replace('"tvhi.zarr"', repr(str(path)))
                       .replace("range(5)", "range(1)").replace("epochs=5", "epochs=1, verbose=0")
                       for example in examples)
    script += textwrap.dedent("""
        import sys
        print(keras.backend.backend(), float(loss), "tensorflow" in sys.modules)
    """)
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    backend, loss, tensorflow_loaded = out.stdout.split()
    assert backend == "torch" and np.isfinite(float(loss)) and tensorflow_loaded == "False"


def test_the_store_error_raised_is_the_one_that_stopped_tensorflow(tmp_path):
    """`store_errors_raised` raised the last store error any read had met: with reads ahead
    (parallel reads, prefetch), another sample's, of another kind, and in place of an op error
    that no read caused. Read ahead errors are stood in for by ones recorded after TensorFlow
    stopped."""
    import tensorflow as tf

    from flowstore.errors import DamagedStoreError
    from flowstore.reader import tf as tf_reader

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    with flowstore.open(path) as ds:
        split = ds.split("train")
        (path / "flow" / ds.store.chunk_key("flow", int(split.indices[1]))).unlink()
        dataset = split.to_tf_dataset(2)
        ahead = DamagedStoreError("store 't.zarr' is damaged: sample 'read ahead' ...")
        with pytest.raises(StoreError, match="chunk of sample .* of 'flow' is missing"):
            with tf_reader.store_errors_raised():
                try:
                    for _ in dataset:
                        pass
                except tf.errors.OpError:
                    tf_reader.record_read_error(ahead)
                    raise
        with pytest.raises(tf.errors.ResourceExhaustedError):
            with tf_reader.store_errors_raised():
                tf_reader.record_read_error(ahead)
                raise tf.errors.ResourceExhaustedError(None, None, "out of memory")
    # The iterator the failed loop left (its traceback's frames hold it) reads ahead in
    # TensorFlow's threads until it is collected: here, not at interpreter exit, where a read
    # met zarr's shut-down executor ("cannot schedule new futures after shutdown") and a
    # `pytest -n 0` run of this file after others once hung on leaving.
    gc.collect()


def test_read_errors_are_kept_few_and_without_the_buffers_their_frames_held(tmp_path):
    """Every read error of a `to_tf_dataset` pipeline was kept for the life of the process, its
    traceback's frames holding the batch's buffers: a notebook's failed runs piled them up. The
    last 64 are kept, their frames cleared; the error that stops TensorFlow is still raised."""
    import tensorflow as tf

    from flowstore.reader import tf as tf_reader

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    with flowstore.open(path) as ds:
        split = ds.split("train")
        (path / "flow" / ds.store.chunk_key("flow", int(split.indices[1]))).unlink()
        for _ in range(70):
            tf_reader.record_read_error(StoreError("an earlier run's"))
        with pytest.raises(StoreError, match="chunk of sample .* of 'flow' is missing"):
            with tf_reader.store_errors_raised():
                for _ in split.to_tf_dataset(2):
                    pass
    gc.collect()
    assert len(tf_reader._READ_ERRORS) == 64
    _, error = next(entry for entry in reversed(tf_reader._READ_ERRORS)
                    if "is missing" in str(entry[1]))
    frames = []
    link = error
    while link is not None:
        frames += [frame for frame, _ in traceback.walk_tb(link.__traceback__)]
        link = link.__cause__ or link.__context__
    assert any(frame.f_code.co_name == "read" for frame in frames)  # where it failed, still
    def holds_samples(value) -> bool:  # (a batch's buffers; the read's positions are 1-D)
        values = value.values() if isinstance(value, dict) else [value]
        return any(isinstance(item, np.ndarray) and item.ndim > 1 for item in values)

    assert not [name for frame in frames for name, value in frame.f_locals.items()
                if holds_samples(value)]


def test_a_batch_augmentation_stream_is_not_its_epoch_order():
    """numpy's seed sequence pads entropy with zeros: batch 0's augmentation generator
    ([seed, epoch, 0]) was the epoch order's ([seed, epoch]), the same numbers drawn twice."""
    from flowstore.reader.batches import batch_rng, epoch_order

    for seed, epoch in ((7, 3), (0, 0)):
        order = epoch_order(50, shuffle=True, seed=seed, epoch=epoch)
        assert not np.array_equal(batch_rng(seed, epoch, 0).permutation(50), order)
        assert np.array_equal(batch_rng(seed, epoch, 2).random(4),
                              batch_rng(seed, epoch, 2).random(4))  # still seeded
