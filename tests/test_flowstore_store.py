"""One contract, two backends: every test here runs against Zarr v3 and HDF5."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from flowstore.errors import StoreError
from flowstore.store import STRING, ArraySpec, create_store, open_store, remove_store

SPECS = [ArraySpec("pixels", (4, 4, 3), "uint8"), ArraySpec("flow", (2, 4, 4, 2), "float16")]
COLUMNS = {"id": np.array(["a_001", "b_002", "c_003"]), "label": np.array([0, 1, 0], np.int32),
           "split": np.array(["train", "val", "test"])}
ATTRS = {"dataset": "toy", "classes": ["a", "b"], "params": {"size": 4, "nested": {"k": 1.5}},
         "failures": {}}


@pytest.fixture
def store_path(tmp_path, suffix):
    path = tmp_path / f"toy{suffix}"
    create_store(path, attrs=ATTRS, specs=SPECS, columns=COLUMNS, num_samples=3).close()
    return path


class TestStoreContract:
    def test_columns_and_attrs_round_trip(self, store_path):
        with open_store(store_path) as store:
            assert store.num_samples == 3
            assert store.read("id").tolist() == ["a_001", "b_002", "c_003"]
            assert store.read("split", 1) == "val"
            assert store.read("label").tolist() == [0, 1, 0]
            assert store.read("done").tolist() == [False, False, False]
            attrs = store.attrs
            assert attrs["flowstore.format"] == 1
            assert attrs["params"] == {"size": 4, "nested": {"k": 1.5}}
            assert attrs["classes"] == ["a", "b"]

    def test_per_sample_chunks_and_dtypes(self, store_path):
        with open_store(store_path) as store:
            info = store.info("flow")
            assert info.shape == (3, 2, 4, 4, 2) and info.chunks == (1, 2, 4, 4, 2)
            assert info.dtype == "float16"
            assert store.info("id").dtype == STRING
            assert set(store.array_names()) >= {"id", "label", "split", "done", "pixels", "flow"}

    def test_write_then_reopen(self, store_path):
        value = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
        with open_store(store_path, "r+") as store:
            store.write("pixels", 1, value)
            store.write("done", slice(None), np.array([False, True, False]))
            store.update_attrs({"failures": {"c_003": "bad"}})
            store.flush()
        with open_store(store_path) as store:
            np.testing.assert_array_equal(store.read("pixels", 1), value)
            assert not store.read("pixels", 0).any()  # unwritten samples read as zeros
            assert store.read("done").tolist() == [False, True, False]
            assert store.attrs["failures"] == {"c_003": "bad"}
            assert store.info("pixels").nbytes_stored > 0

    def test_read_into_fills_a_given_buffer_with_one_sample(self, store_path):
        value = np.arange(64, dtype=np.float16).reshape(2, 4, 4, 2)
        with open_store(store_path, "r+") as store:
            store.write_sample(2, {"flow": value})
        with open_store(store_path) as store:
            batch = np.full((2, 2, 4, 4, 2), 9, np.float16)
            store.read_into("flow", 2, batch[1])  # a view into a larger buffer
            np.testing.assert_array_equal(batch[1], value)
            assert (batch[0] == 9).all()  # nothing else touched
            store.read_into("flow", 0, batch[0])
            assert not batch[0].any()  # an unwritten sample reads as zeros

    @pytest.mark.parametrize("name,value", [
        ("flow", np.ones((2, 4, 4, 2), np.float32)),  # another dtype: zarr would cast it
        ("flow", np.ones((2, 4, 5, 2), np.float16)),  # another shape: zarr would write it
        ("pixels", np.ones((4, 4), np.uint8)),
    ], ids=["dtype", "shape", "rank"])
    def test_a_sample_of_another_layout_is_refused_and_nothing_written(self, store_path, name,
                                                                       value):
        """Issue 12, item 2: a writer whose arrays do not match the store fails the sample."""
        good = np.full((4, 4, 3), 7, np.uint8)
        with open_store(store_path, "r+") as store:
            with pytest.raises(StoreError, match=f"array '{name}' is .* but the store holds"):
                store.write_sample(1, {"pixels": good, name: value})
        with open_store(store_path) as store:
            assert not store.read("pixels", 1).any() and not store.read("flow", 1).any()

    def test_missing_and_foreign_paths_are_store_errors(self, tmp_path, suffix):
        with pytest.raises(StoreError, match="no store at"):
            open_store(tmp_path / f"nothing{suffix}")
        foreign = tmp_path / f"foreign{suffix}"
        if suffix == ".zarr":
            zarr.open_group(str(foreign), mode="w")
        else:
            h5py.File(foreign, "w").close()
        with pytest.raises(StoreError, match="not a flowstore store"):
            open_store(foreign)
        with pytest.raises(StoreError, match="not a flowstore store"):
            remove_store(foreign)  # --overwrite must not delete what it did not write
        assert foreign.exists()

    def test_other_format_version_is_refused(self, store_path):
        with open_store(store_path, "r+") as store:
            store.update_attrs({"flowstore.format": 99})
        with pytest.raises(StoreError, match="format 99"):
            open_store(store_path)

    def test_read_only_store_refuses_writes(self, store_path):
        """Every kind of write to a store opened "r" is the same StoreError on both backends
        (not zarr's ValueError or h5py's OSError), and changes nothing."""
        pixels = np.full((4, 4, 3), 7, np.uint8)
        writes = {"write": lambda store: store.write("pixels", 0, pixels),
                  "write_sample": lambda store: store.write_sample(0, {"pixels": pixels}),
                  "update_attrs": lambda store: store.update_attrs({"failures": {"a": "x"}})}
        for what, write in writes.items():
            with open_store(store_path, "r") as store:
                with pytest.raises(StoreError, match=r"is open read-only \(mode 'r'\)") as error:
                    write(store)
                assert str(store_path) in str(error.value), what
        with open_store(store_path) as store:
            assert not store.read("pixels", 0).any()
            assert store.attrs["failures"] == {}


def test_a_reopened_zarr_store_writes_all_zero_samples_as_chunks(store_path_zarr):
    """Every sample's chunk is written even when it equals the fill value (a black clip, zero
    flow): zarr's default would compare each chunk with the fill value first and skip it, a
    setting zarr keeps out of the metadata, so it must hold for reopened stores too."""
    with open_store(store_path_zarr, "r+") as store:
        store.write_sample(1, {"pixels": np.zeros((4, 4, 3), np.uint8),
                               "flow": np.arange(64, dtype=np.float16).reshape(2, 4, 4, 2)})
    assert [p.name for p in (store_path_zarr / "pixels" / "c").iterdir()] == ["1"]
    with open_store(store_path_zarr) as store:
        assert store.read("flow", 1)[1, 3, 3, 1] == 63 and not store.read("flow", 0).any()


@pytest.fixture
def store_path_zarr(tmp_path):
    path = tmp_path / "toy.zarr"
    create_store(path, attrs=ATTRS, specs=SPECS, columns=COLUMNS, num_samples=3).close()
    return path


def _unfiltered_copy(src, dst, written):
    """`src` (HDF5) rewritten without filters, same chunks; only samples `written` stored."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as out:
        for name, ds in f.items():
            if ds.ndim == 1:
                out.create_dataset(name, data=ds[()], dtype=ds.dtype)
                continue
            new = out.create_dataset(name, shape=ds.shape, dtype=ds.dtype, chunks=ds.chunks)
            for i in written:
                new[i] = np.arange(int(np.prod(ds.shape[1:]))).reshape(ds.shape[1:]) + i
        for key, value in f.attrs.items():
            out.attrs[key] = value


def test_unfiltered_hdf5_samples_are_read_raw_and_in_parallel(tmp_path):
    """Uncompressed HDF5 chunks are read with os.preadv (no GIL held), with the same bytes
    h5py returns; anything else (filtered, unwritten, a writable store) goes through h5py."""
    create_store(tmp_path / "c.h5", attrs=ATTRS, specs=SPECS, columns=COLUMNS,
                 num_samples=3).close()
    _unfiltered_copy(tmp_path / "c.h5", tmp_path / "u.h5", written=(0, 2))
    with open_store(tmp_path / "c.h5") as filtered:
        assert not filtered.concurrent_reads
    with open_store(tmp_path / "u.h5", "r+") as writable:
        assert not writable.concurrent_reads
    with open_store(tmp_path / "u.h5") as store, h5py.File(tmp_path / "u.h5", "r", locking=False) as plain:
        assert store.concurrent_reads
        for name in ("pixels", "flow"):
            batch = np.full((4, *plain[name].shape[1:]), 9, plain[name].dtype)
            for row, index in enumerate((2, 0, 1)):
                store.read_into(name, index, batch[row])
                np.testing.assert_array_equal(batch[row], plain[name][index])
            assert (batch[3] == 9).all()
            assert not batch[2].any()  # sample 1 was never written: zeros, through h5py
        assert ("flow", 2) in store._chunk_offsets and ("flow", 1) not in store._chunk_offsets


ZSTD_SPECS = [*SPECS, ArraySpec("quantized", (2, 4, 4, 2), "uint8", codec="zstd")]


def _sample(shape, i, dtype):
    return (np.arange(int(np.prod(shape))).reshape(shape) % 251 + i).astype(dtype)


@pytest.mark.parametrize("compressed", [True, False])
def test_local_zarr_chunks_are_decoded_outside_zarr(tmp_path, compressed):
    """Chunks of a local read-only Zarr store are read and decoded by flowstore itself (plain
    bytes, Blosc, Zstd: the chains it writes) into `out`, with the values zarr returns;
    unwritten samples and writable stores go through zarr."""
    path = tmp_path / "s.zarr"
    create_store(path, attrs=ATTRS, specs=ZSTD_SPECS, columns=COLUMNS, num_samples=3).close()
    if not compressed:  # the same store rewritten without compressors
        src = zarr.open_group(str(path), mode="r")
        path = tmp_path / "u.zarr"
        out = zarr.open_group(str(path), mode="w", zarr_format=3)
        for name, arr in src.arrays():
            text = arr.dtype.kind in "OTU"
            new = out.create_array(name, shape=arr.shape, chunks=arr.chunks, compressors=None,
                                   dtype=str if text else arr.dtype)
            new[:] = arr[:]
        out.attrs.update(src.attrs.asdict())
    plain = zarr.open_group(str(path), mode="r+")
    for name in ("pixels", "flow", "quantized"):
        for i in (0, 2):
            plain[name][i] = _sample(plain[name].shape[1:], i, plain[name].dtype)
    with open_store(path) as store:
        for name in ("pixels", "flow", "quantized"):
            batch = np.full((4, *plain[name].shape[1:]), 9, plain[name].dtype)
            for row, index in enumerate((2, 0, 1)):
                store.read_into(name, index, batch[row])
                np.testing.assert_array_equal(batch[row], plain[name][index])
            assert (batch[3] == 9).all() and not batch[2].any()  # sample 1: the fill value
        used = {name: decode.__name__ for name, decode in store._decoders.items()}
        assert used == ({"pixels": "_decode_blosc", "flow": "_decode_blosc",
                         "quantized": "_decode_zstd"} if compressed else
                        {"pixels": "_decode_plain", "flow": "_decode_plain",
                         "quantized": "_decode_plain"})
    with open_store(path, "r+") as writable:
        writable.read_into("flow", 0, np.empty((2, 4, 4, 2), np.float16))
        assert writable._decoders == {"flow": None}


@pytest.mark.parametrize("codec", ["blosc", "zstd", "none"])
def test_local_zarr_chunk_of_another_size_is_refused(tmp_path, codec):
    """A chunk file that decodes to fewer or more bytes than one sample (one copied in from
    another array, say) is an error naming the sample, as it is in zarr: never a batch row
    filled in part, or with the first bytes of a longer chunk."""
    path = tmp_path / "s.zarr"
    create_store(path, attrs=ATTRS, specs=ZSTD_SPECS, columns=COLUMNS, num_samples=3).close()
    group = zarr.open_group(str(path), mode="r+")
    compressors = {"blosc": group["pixels"].compressors, "zstd": group["quantized"].compressors,
                   "none": None}[codec]
    for name, rows in (("target", 4), ("shorter", 3), ("longer", 5)):
        arr = group.create_array(name, shape=(1, rows, 4, 3), chunks=(1, rows, 4, 3),
                                 dtype="uint8", compressors=compressors)
        arr[0] = 7
    chunk = Path(arr.metadata.encode_chunk_key((0, 0, 0, 0)))
    for donor in ("shorter", "longer"):
        shutil.copyfile(path / donor / chunk, path / "target" / chunk)
        with open_store(path) as store:
            out = np.full((4, 4, 3), 9, np.uint8)
            with pytest.raises(ValueError, match=r"chunk of sample 0 of 'target' holds"):
                store.read_into("target", 0, out)
            assert store._decoders["target"] is not None  # flowstore's own decoder said so


def test_unknown_suffix_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match=r"must end in \.zarr"):
        open_store(tmp_path / "store.npz")


def test_plain_libraries_read_the_stores(tmp_path):
    """Any reader with plain zarr or h5py can use a store without importing flowstore."""
    for suffix in (".zarr", ".h5"):
        create_store(tmp_path / f"s{suffix}", attrs=ATTRS, specs=SPECS, columns=COLUMNS,
                     num_samples=3).close()
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group.attrs["dataset"] == "toy" and group["flow"].shape == (3, 2, 4, 4, 2)
    assert list(group["id"][:]) == ["a_001", "b_002", "c_003"]
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert json.loads(f.attrs["dataset"]) == "toy" and f["flow"].shape == (3, 2, 4, 4, 2)
        assert list(f["id"].asstr()[:]) == ["a_001", "b_002", "c_003"]


def test_codec_presets_reach_each_backend(tmp_path):
    specs = [ArraySpec("flow", (2, 4, 4, 2), "float16"),
             ArraySpec("pixels", (4, 4, 3), "uint8"),
             ArraySpec("quantized", (2, 4, 4, 2), "uint8", codec="zstd")]
    for suffix in (".zarr", ".h5"):
        create_store(tmp_path / f"c{suffix}", attrs=ATTRS, specs=specs, columns=COLUMNS,
                     num_samples=3).close()
    group = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    for name in ("flow", "pixels"):
        (codec,) = group[name].compressors
        assert codec.cname.value == "lz4" and codec.shuffle.value == "bitshuffle"
    assert "zstd" in str(group["quantized"].compressors).lower()
    with h5py.File(tmp_path / "c.h5", "r") as f:
        # byte shuffle is pointless for one-byte values
        assert f["flow"].shuffle and not f["pixels"].shuffle and not f["quantized"].shuffle
    with pytest.raises(ValueError, match="codec"):
        ArraySpec("x", (1,), "uint8", codec="gzip")
