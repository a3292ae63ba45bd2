"""The contract every store backend passes (issue 15, item 7).

A backend is one module (a `flowstore.store.base.Store` subclass, named in
`flowstore.store.BACKENDS`) and one subclass of `StoreContract` giving a `location` fixture: a
fresh place for a store of that backend. `tests/test_flowstore_store.py` runs it against
Zarr on a local disk, HDF5, and Zarr on S3 (a moto server).
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from flowstore.errors import MissingChunkError, StoreError
from flowstore.store import (BACKENDS, ArraySpec, Capabilities, backend_for, capabilities,
                             create_store, open_store, remove_store, store_exists)
from flowstore.store import layout

SPECS = [ArraySpec("pixels", (4, 4, 3), "uint8"), ArraySpec("flow", (2, 4, 4, 2), "float16")]
COLUMNS = {"id": np.array(["a_001", "b_002", "c_003"]), "label": np.array([0, 1, 0], np.int32),
           "split": np.array(["train", "val", "test"])}
ATTRS = {"dataset": "toy", "classes": ["a", "b"], "params": {"size": 4, "nested": {"k": 1.5}}}


class StoreContract:
    """What `open_store`, `create_store` and the build need of a backend."""

    @pytest.fixture
    def location(self):
        raise NotImplementedError("a backend's test class gives a fresh store location")

    @pytest.fixture
    def store_path(self, location):
        create_store(location, attrs=ATTRS, specs=SPECS, columns=COLUMNS, num_samples=3).close()
        return location

    def test_columns_and_attrs_round_trip(self, store_path):
        with open_store(store_path) as store:
            assert store.num_samples == 3 and store.format == layout.FORMAT == 2
            assert store.read("id").tolist() == ["a_001", "b_002", "c_003"]
            assert store.read("split", 1) == "val"
            assert store.read("label").tolist() == [0, 1, 0]
            for column in layout.COLUMNS:  # every column, the ledger at its fill
                info = store.info(column.name)
                assert info.shape == (3,) and info.chunks == (3,), column.name
                assert info.dtype == column.dtype, column.name
                if not column.given:
                    assert store.read(column.name).tolist() == [column.fill] * 3, column.name
            attrs = store.attrs
            assert attrs["flowstore.format"] == 2
            assert attrs["params"] == {"size": 4, "nested": {"k": 1.5}}
            assert attrs["classes"] == ["a", "b"]

    def test_per_sample_chunks_and_dtypes(self, store_path):
        with open_store(store_path) as store:
            info = store.info("flow")
            assert info.shape == (3, 2, 4, 4, 2) and info.chunks == (1, 2, 4, 4, 2)
            assert info.dtype == "float16" and info.nbytes == 3 * 2 * 4 * 4 * 2 * 2
            assert store.info("id").dtype == layout.STRING
            assert set(store.array_names()) == {*layout.COLUMN_NAMES, "pixels", "flow"}

    def test_storage_size_counts_chunks_not_metadata(self, store_path):
        """An array of no chunk written takes 0 bytes (Zarr counted its zarr.json, about 550
        bytes: `inspect --bytes` showed small arrays 10-100x larger on disk than in memory)."""
        with open_store(store_path) as store:
            assert store.storage_size("flow") == 0

    def test_write_then_reopen(self, store_path):
        value = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
        with open_store(store_path, "r+") as store:
            store.write("pixels", 1, value)
            store.write_changed("done", np.array([False, True, False]), [1])
            store.write_changed("failure", np.array(["", "", "bad"], dtype=object), [2])
            store.flush()
        with open_store(store_path) as store:
            np.testing.assert_array_equal(store.read("pixels", 1), value)
            assert not store.read("pixels", 0).any()  # unwritten samples read as zeros
            assert store.read("done").tolist() == [False, True, False]
            assert store.read("failure").tolist() == ["", "", "bad"]
            assert store.storage_size("pixels") > 0

    def test_write_changed_writes_the_changed_values_only(self, location, monkeypatch):
        monkeypatch.setattr(layout, "COLUMN_CHUNK", 4)  # 10 samples: chunks of 4, 4 and 2
        ids = np.array([f"s{i}" for i in range(10)])
        create_store(location, attrs=ATTRS, specs=SPECS, num_samples=10,
                     columns={"id": ids, "label": np.zeros(10, np.int32),
                              "split": np.full(10, "train")}).close()
        checksums = np.array([""] * 10, dtype=object)
        checksums[[1, 9]] = "x1", "x9"
        sizes = np.full(10, -1, np.int64)
        sizes[5] = 5
        with open_store(location, "r+") as store:
            assert store.info("checksum").chunks == (4,)
            store.write_changed("checksum", checksums, [1, 9])
            store.write_changed("source_size", sizes, [5])
            store.flush()
        with open_store(location) as store:
            assert store.read("checksum").tolist() == ["", "x1", "", "", "", "", "", "", "", "x9"]
            assert store.read("source_size").tolist() == [-1] * 5 + [5] + [-1] * 4

    def test_rewrite_column_writes_every_value(self, location, monkeypatch):
        """What a build writes of a ledger column a chunk of which could not be read
        (`Ledger.mend`): the whole column, the store's arrays as they were."""
        monkeypatch.setattr(layout, "COLUMN_CHUNK", 4)  # 10 samples: chunks of 4, 4 and 2
        ids = np.array([f"s{i}" for i in range(10)])
        create_store(location, attrs=ATTRS, specs=SPECS, num_samples=10,
                     columns={"id": ids, "label": np.zeros(10, np.int32),
                              "split": np.full(10, "train")}).close()
        sizes = np.arange(10, dtype=np.int64)
        checksums = np.array([f"x{i}" for i in range(10)], dtype=object)
        with open_store(location, "r+") as store:
            store.rewrite_column("source_size", sizes)
            store.rewrite_column("checksum", checksums)
            store.rewrite_column("checksum", checksums[::-1])  # (twice: as a second build's)
            store.flush()
        with open_store(location) as store:
            assert store.read("source_size").tolist() == list(range(10))
            assert store.read("checksum").tolist() == [f"x{i}" for i in range(9, -1, -1)]
            assert store.info("checksum").chunks == (4,)
            assert set(store.array_names()) == {*layout.COLUMN_NAMES, "pixels", "flow"}

    def test_put_column_replaces_a_column_of_another_chunking(self, location, monkeypatch):
        """What upgrading a format-1 store does: the column keeps its name and gets the values
        and the chunking of format 2, and nothing else changes."""
        monkeypatch.setattr(layout, "COLUMN_CHUNK", 2)
        create_store(location, attrs=ATTRS, specs=SPECS, columns=COLUMNS, num_samples=3).close()
        monkeypatch.setattr(layout, "COLUMN_CHUNK", 4096)
        with open_store(location, "r+") as store:
            assert store.info("done").chunks == (2,)
            store.put_column("done", np.array([True, False, True]))
            store.put_column("checksum", np.array(["a", "", "c"], dtype=object))
            store.flush()
        with open_store(location) as store:
            assert store.info("done").chunks == store.info("checksum").chunks == (3,)
            assert store.read("done").tolist() == [True, False, True]
            assert store.read("checksum").tolist() == ["a", "", "c"]
            assert set(store.array_names()) == {*layout.COLUMN_NAMES, "pixels", "flow"}

    def test_update_attrs_merges_and_removes_in_one_call(self, store_path):
        with open_store(store_path, "r+") as store:
            store.update_attrs({"extra": [1, 2], "gone": "soon"})
            store.update_attrs({"fingerprint": "f"}, remove=["gone", "classes"])
        with open_store(store_path) as store:
            attrs = store.attrs
            assert attrs["extra"] == [1, 2] and attrs["fingerprint"] == "f"
            assert "gone" not in attrs and "classes" not in attrs and attrs["dataset"] == "toy"

    def test_read_into_fills_a_given_buffer_with_one_sample(self, store_path):
        value = np.arange(64, dtype=np.float16).reshape(2, 4, 4, 2)
        with open_store(store_path, "r+") as store:
            store.write_sample(2, {"flow": value})
        with open_store(store_path) as store:
            batch = np.full((2, 2, 4, 4, 2), 9, np.float16)
            store.read_into("flow", 2, batch[1])  # a view into a larger buffer
            np.testing.assert_array_equal(batch[1], value)
            assert (batch[0] == 9).all()  # nothing else touched
            if str(store_path).endswith(".h5"):  # chunks inside one file: never lost alone
                store.read_into("flow", 0, batch[0])
                assert not batch[0].any()  # an unwritten sample reads as zeros
            else:  # a chunk file each: missing is a damaged store (or a sample not done)
                with pytest.raises(MissingChunkError, match="chunk of sample 0 of 'flow'"):
                    store.read_into("flow", 0, batch[0])

    def test_numbers_stored_big_endian_are_the_same_type_read_and_written_native(
            self, store_path):
        """An array copied with its numbers big-endian by the backend's own library
        (`_store_big_endian`: h5py `create_dataset(..., dtype='>f2')`, zarr's `bytes` codec
        with `endian: big`) is of the declared type: `info` says float16, `read` and
        `read_into` hand back native values and a native sample is written there. HDF5's was
        "of another type" to the reader and the build, and `verify` (hashing what `read`
        gave, `>f2` bytes) called every sample changed."""
        value = np.arange(64, dtype=np.float16).reshape(2, 4, 4, 2)
        with open_store(store_path, "r+") as store:
            store.write_sample(1, {"flow": value})
        _store_big_endian(store_path, "flow")
        with open_store(store_path, "r+") as store:
            assert store.info("flow").dtype == "float16"
            back = store.read("flow", 1)
            assert back.dtype == np.float16 and back.dtype.isnative
            np.testing.assert_array_equal(back, value)
            out = np.empty_like(value)
            store.read_into("flow", 1, out)
            np.testing.assert_array_equal(out, value)
            store.write_sample(2, {"flow": value + 1})
        with open_store(store_path) as store:
            everything = store.read("flow")
            assert everything.dtype == np.float16 and everything.dtype.isnative
            np.testing.assert_array_equal(everything[1:], [value, value + 1])

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

    def test_other_format_version_is_refused(self, store_path):
        with open_store(store_path, "r+") as store:
            store.update_attrs({"flowstore.format": 99})
        with pytest.raises(StoreError, match="format 99"):
            open_store(store_path)

    def test_read_only_store_refuses_writes(self, store_path):
        """Every kind of write to a store opened "r" is the same StoreError on every backend
        (not zarr's ValueError or h5py's OSError), and changes nothing."""
        pixels = np.full((4, 4, 3), 7, np.uint8)
        writes = {"write": lambda store: store.write("pixels", 0, pixels),
                  "write_sample": lambda store: store.write_sample(0, {"pixels": pixels}),
                  "write_changed": lambda store: store.write_changed("done", np.ones(3, bool), [0]),
                  "put_column": lambda store: store.put_column("done", np.ones(3, bool)),
                  "update_attrs": lambda store: store.update_attrs({"dataset": "x"})}
        for what, write in writes.items():
            with open_store(store_path, "r") as store:
                with pytest.raises(StoreError, match=r"is open read-only \(mode 'r'\)") as error:
                    write(store)
                assert str(store_path) in str(error.value), what
        with open_store(store_path) as store:
            assert not store.read("pixels", 0).any() and not store.read("done").any()
            assert store.attrs["dataset"] == "toy"

    def test_capabilities_and_removal(self, store_path):
        assert isinstance(capabilities(store_path), Capabilities)
        assert backend_for(store_path).name in {backend.name for backend in BACKENDS}
        assert store_exists(store_path)
        remove_store(store_path)
        assert not store_exists(store_path)
        with pytest.raises(StoreError, match="no store at"):
            open_store(store_path)

    def test_a_failed_creation_leaves_nothing(self, location, monkeypatch):
        """Creating is all or nothing: a store whose creation failed is not there at all (a
        backend that renames makes it under a temporary name; one that cannot writes the
        attributes that make it a store last, and the failure removes what was written)."""
        backend = backend_for(location)
        real_create = backend.create

        def create_then_fail(*args, **kwargs):
            real_create(*args, **kwargs).close()
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(backend, "create", create_then_fail)
        with pytest.raises(StoreError, match="cannot create store .*No space left"):
            create_store(location, attrs=ATTRS, specs=SPECS, columns=COLUMNS, num_samples=3)
        assert not store_exists(location)
        if capabilities(location).rename:
            parent = Path(location).parent
            assert [p.name for p in parent.iterdir() if ".creating-" in p.name] == []

    @pytest.mark.parametrize("limit", [OSError(errno.EMFILE, "Too many open files"),
                                       OSError(errno.ENOMEM, "Cannot allocate memory")])
    def test_a_limit_of_the_systems_is_raised_as_it_is_not_as_the_stores_fault(
            self, location, monkeypatch, limit):
        """No descriptor or memory left (`ulimit -n`, `-v`) while a store is made or opened is
        no refusal of that store's: "cannot create store 'x': Too many open files" sent users
        to the store, where a limit is to be raised (the commands say so, found by review)."""
        backend = backend_for(location)
        real_create, real_open = backend.create, backend.open

        def create_out_of(*args, **kwargs):
            real_create(*args, **kwargs).close()
            raise limit

        monkeypatch.setattr(backend, "create", create_out_of)
        with pytest.raises(OSError) as raised:
            create_store(location, attrs=ATTRS, specs=SPECS, columns=COLUMNS, num_samples=3)
        assert raised.value is limit
        assert not store_exists(location)
        monkeypatch.setattr(backend, "create", real_create)
        create_store(location, attrs=ATTRS, specs=SPECS, columns=COLUMNS, num_samples=3).close()

        def open_out_of(*args, **kwargs):
            raise limit

        monkeypatch.setattr(backend, "open", open_out_of)
        with pytest.raises(OSError) as raised:
            open_store(location)
        assert raised.value is limit
        monkeypatch.setattr(backend, "open", real_open)
        open_store(location).close()  # (and no reader's lock left held)


def _store_big_endian(location, name: str) -> None:
    """Array `name` of the store at `location` copied anew with its numbers big-endian, as a
    user's script does with the backend's own library."""
    if str(location).endswith(".h5"):
        import h5py

        with h5py.File(location, "r+") as file:
            data, chunks = file[name][()], file[name].chunks
            del file[name]
            file.create_dataset(name, data=data, dtype=data.dtype.newbyteorder(">"),
                                chunks=chunks)
        return
    import zarr
    from zarr.codecs import BytesCodec

    group = zarr.open_group(str(location), mode="r+")
    data, chunks = group[name][:], group[name].chunks
    del group[name]
    group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype, fill_value=0,
                       serializer=BytesCodec(endian="big"), compressors=None)[:] = data
