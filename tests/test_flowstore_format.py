"""Store format 2 (issue 15, items 1, 2 and 7): format-1 stores open, read, verify and resume
across the change; the coordinator's writes and the root metadata do not grow with the number
of samples; opening a store reads a fixed number of metadata objects; the backend registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from zarr.storage import LocalStore

import flowstore
from flowstore.build import BuildConfig, build
from flowstore.errors import StoreError
from flowstore.inspect import format_summary, summarize
from flowstore.ledger import Ledger
from flowstore.manifest import Manifest, ManifestRow
from flowstore.params import VideoParams
from flowstore.store import (BACKENDS, Backend, backend_for, capabilities, create_store,
                             failures, open_store)
from flowstore.store import format1, layout
from flowstore.store.base import ArraySpec
from flowstore.verify import verify
from tests.conftest import chunk_file, flowstore_cli

FIXTURE = Path(__file__).parent / "fixtures" / "format1"
PARAMS = VideoParams(size=8, steps=2)
FAILED = "jumping jacks/clip_03"
FEATURES = ("middle_frame", "frames", "flow")


@pytest.fixture(params=[".zarr", ".h5"], ids=["zarr", "hdf5"])
def old(request, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(a copy of the format-1 fixture store, a copy of its source): 6 samples, 2 done, 1
    failed, 3 pending, written by flowstore before format 2 (tests/fixtures/format1).

    Columns are chunked 4 samples a chunk here, so that the upgrade rechunks the format-1
    one-chunk columns, as it does for any store of more than `COLUMN_CHUNK` samples."""
    monkeypatch.setattr(layout, "COLUMN_CHUNK", 4)
    store = tmp_path / f"format1{request.param}"
    copy = shutil.copytree if request.param == ".zarr" else shutil.copyfile
    copy(FIXTURE / store.name, store)
    return store, Path(shutil.copytree(FIXTURE / "source", tmp_path / "source"))


def _build(source: Path, store: Path, **options) -> object:
    return build(BuildConfig(dataset="videofolder", source=source, store=store, params=PARAMS,
                             workers=1, progress=False, **options))


def _contents(path: Path) -> dict:
    """What a store holds, sample by sample (its layout aside)."""
    with open_store(path) as store:
        done = store.read("done").astype(bool)
        out = {"fingerprint": store.attrs["fingerprint"], "ids": store.read("id").tolist(),
               "done": done.tolist(), "failures": failures(store),
               "checksum": [c if d else "" for c, d in zip(store.read("checksum").tolist(), done)]}
        for name in FEATURES:
            out[name] = [store.read(name, i).tolist() if d else None for i, d in enumerate(done)]
    return out


def _set_format1_attribute(store_path: Path, name: str, value) -> None:
    """A format-1 root attribute rewritten as the fixture's backend holds it."""
    if store_path.suffix == ".zarr":
        import zarr

        zarr.open_group(str(store_path), mode="r+").attrs[name] = value
    else:
        import h5py

        with h5py.File(store_path, "r+") as file:
            file.attrs[name] = json.dumps(value)


def _delete_array(store_path: Path, name: str) -> None:
    """An array deleted by hand from the fixture's backend."""
    if store_path.suffix == ".zarr":
        shutil.rmtree(store_path / name)
    else:
        import h5py

        with h5py.File(store_path, "r+") as f:
            del f[name]


def test_a_format1_store_without_checksums_is_refused_by_verify_in_one_line(old):
    """Format 1 allowed a store without `checksum` (trainers' test stores); verify raised a
    KeyError traceback on it."""
    from flowstore.errors import StoreError

    store_path, _ = old
    _delete_array(store_path, "checksum")
    with pytest.raises(StoreError, match="holds no checksums .* cannot be verified"):
        verify(store_path)


def test_a_format1_store_opens_reads_and_verifies_as_it_is(old):
    store_path, _ = old
    before = sorted(p.name for p in store_path.rglob("*")) if store_path.is_dir() else None
    with open_store(store_path) as store:
        assert store.format == 1 and store.read("done").tolist() == [True] + [False] * 3 + [True, False]
        first_flow = store.read("flow", 0)
    summary = summarize(store_path)
    assert (summary["format"], summary["done"], summary["failed"], summary["pending"]) == (1, 2, 1, 3)
    assert list(summary["failures"]) == [FAILED]
    assert f"  {FAILED}: cannot open video" in format_summary(summary)
    with flowstore.open(store_path) as reader:
        train = reader.split("train")
        assert len(train) == 1 and train[0]["id"] == "jumping jacks/clip_01"
        np.testing.assert_array_equal(train[0]["flow"], first_flow)
    result = verify(store_path)
    assert result.ok and result.checked == 2
    with open_store(store_path) as store:  # reading changes nothing
        assert store.format == 1 and "failures" in store.attrs
    if before is not None:
        assert sorted(p.name for p in store_path.rglob("*")) == before


def test_a_format1_failure_of_a_done_sample_is_not_counted(old):
    """A format-1 build wrote `done` before the `failures` attribute: killed between the two,
    it left a finished sample still listed as failed. `inspect` counted it failed (and so one
    pending sample fewer) and listed it under the failures. Nor is it a failure to the store's
    readers (`failures`), nor after an upgrade, whose `failure` column holds "" for every
    done sample."""
    store_path, _ = old
    with open_store(store_path) as store:
        ids, done = store.read("id").tolist(), store.read("done").astype(bool)
        stale = {**store.attrs["failures"], **{ids[i]: "stale" for i in np.flatnonzero(done)}}
    _set_format1_attribute(store_path, "failures", stale)
    summary = summarize(store_path)
    assert (summary["done"], summary["failed"], summary["pending"]) == (2, 1, 3)
    assert list(summary["failures"]) == [FAILED]
    with open_store(store_path) as store:
        assert list(failures(store)) == [FAILED]
    with open_store(store_path, "r+") as store:
        format1.upgrade(store, store.read("id").tolist())
    with open_store(store_path) as store:
        failure, done = store.read("failure"), store.read("done")
        assert store.format == 2 and failure[done].tolist() == ["", ""]
        assert list(failures(store)) == [FAILED]


def test_a_format1_done_sample_of_no_recorded_size_is_extracted_again_not_refused(old):
    """A done sample whose source file has no size in `source_files` has none recorded after
    the upgrade (-1), and a resume extracts it again; read as size 0, the resume refused the
    whole store ("changed since it was written ... use --overwrite")."""
    store_path, source = old
    with open_store(store_path) as store:
        sizes = dict(store.attrs["source_files"])
    del sizes["jumping jacks/clip_01.MP4"]
    _set_format1_attribute(store_path, "source_files", sizes)
    resumed = _build(source, store_path)
    assert (resumed.computed, resumed.already_done, list(resumed.failures)) == (4, 1, [FAILED])
    with open_store(store_path) as store:
        index = store.read("id").tolist().index("jumping jacks/clip_01")
        assert store.read("done")[index]
        clip = source / "jumping jacks/clip_01.MP4"
        assert store.read("source_size")[index] == clip.stat().st_size


def test_a_format1_store_without_its_done_array_is_damage_in_one_line(old):
    """Format 1 requires `done` as format 2 does: without it, `inspect` and `verify` ended in
    "KeyError: 'done'", said as a bug in flowstore."""
    store_path, _ = old
    _delete_array(store_path, "done")
    for command in ("inspect", "verify"):
        out = flowstore_cli(command, store_path)
        assert out.returncode == 2 and out.stderr.splitlines() == [
            f"error: store {str(store_path)!r} is damaged: it has no 'done' array; delete it "
            f"or rebuild it with --overwrite"], (command, out.stderr)


def test_a_format1_store_resumes_to_what_a_fresh_build_makes(old, tmp_path):
    """Half-done format 1 -> resumed by this flowstore -> complete, format 2, and equal to a
    fresh build of the same source: values, checksums, failures and fingerprint (the
    fingerprint hashes the samples' meaning, which format 2 did not change)."""
    store_path, source = old
    with open_store(store_path) as store:
        old_fingerprint = store.attrs["fingerprint"]
    resumed = _build(source, store_path)
    assert (resumed.computed, resumed.already_done, list(resumed.failures)) == (3, 2, [FAILED])
    fresh = _build(source, tmp_path / f"fresh{store_path.suffix}")
    assert resumed.fingerprint == fresh.fingerprint == old_fingerprint
    with open_store(store_path) as store:
        assert store.format == 2
        assert not set(format1.ATTRIBUTES) & set(store.attrs)
        assert store.info("done").chunks == (4,)  # rechunked as format 2 chunks columns
        sizes, hashes = store.read("source_size"), store.read("source_hash")
        assert (sizes[store.read("done")] > 0).all() and all(hashes[store.read("done")])
    assert _contents(store_path) == _contents(tmp_path / f"fresh{store_path.suffix}")
    assert verify(store_path).ok
    again = _build(source, store_path)
    assert again.computed == 0 and list(again.failures) == [FAILED]


@pytest.mark.parametrize("step", ["first column", "third column", "metadata swap", "commit"])
def test_an_upgrade_stopped_at_any_step_loses_nothing(old, tmp_path, monkeypatch, step):
    """An upgrade that dies part way (here: an exception at that step) leaves a store that
    still reads as format 1 with everything it held (or, after the commit, as format 2), and
    the next build upgrades and completes it."""
    store_path, source = old
    expected = _contents(store_path)
    backend = backend_for(store_path)
    calls = {"put_column": 0}

    class Killed(Exception):
        pass

    real_put, real_update = backend.put_column, backend.update_attrs

    def put_column(self, name, values):
        calls["put_column"] += 1
        if step == "first column" or (step == "third column" and calls["put_column"] == 3):
            raise Killed(step)
        return real_put(self, name, values)

    def update_attrs(self, values, remove=()):
        if step == "commit" and remove:
            raise Killed(step)
        return real_update(self, values, remove)

    monkeypatch.setattr(backend, "put_column", put_column)
    monkeypatch.setattr(backend, "update_attrs", update_attrs)
    if step == "metadata swap":  # the new metadata is written over the old column's last
        if backend.name == "zarr":
            real_copy = backend._copy_key

            def copy_key(self, source_key, target):
                if target.endswith("zarr.json"):
                    raise Killed(step)
                return real_copy(self, source_key, target)

            monkeypatch.setattr(backend, "_copy_key", copy_key)
        else:
            import h5py

            real_move = h5py.File.move

            def move(self, source_name, target):
                if source_name == "_upgrade_done":  # the new column into the old one's place
                    raise Killed(step)
                return real_move(self, source_name, target)

            monkeypatch.setattr(h5py.File, "move", move)
    with pytest.raises(Killed):
        _build(source, store_path)
    monkeypatch.undo()
    monkeypatch.setattr(layout, "COLUMN_CHUNK", 4)
    with open_store(store_path) as store:
        assert store.format == 1
    assert _contents(store_path) == expected
    assert verify(store_path).ok
    assert _build(source, store_path).computed == 3
    assert _contents(store_path) == _contents(_fresh(source, tmp_path, store_path.suffix))


def _fresh(source: Path, tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / f"fresh{suffix}"
    _build(source, path)
    return path


# -- the coordinator's cost and the root metadata do not grow with N --------------------------
# -- chunk keys: flat in new Zarr stores, nested ones kept --------------------------------------
def _tree(store: Path, name: str) -> tuple[list[Path], list[Path]]:
    """(files, folders) under an array's folder."""
    entries = sorted((store / name).rglob("*"))
    return [p for p in entries if p.is_file()], [p for p in entries if p.is_dir()]


def _nested(store: Path, name: str, index: int) -> bool:
    """The sample's chunk of `name` is where zarr's default nested keys put it (c/INDEX/0/...),
    and written."""
    chunk = chunk_file(store, name, index)
    return chunk.relative_to(store / name).parts[:2] == ("c", str(index)) and chunk.is_file()


def test_a_new_zarr_store_has_flat_chunk_keys(tmp_path):
    """Every array of a new store keeps its chunks as files in its own folder
    (`flow/c.3.0.0.0.0`): 3 inodes a sample for the three feature arrays, where zarr's default
    nested keys (`flow/c/3/0/0/0/0`) made 14 (benchmarks/README.md, "Chunk files at Kinetics
    scale")."""
    source = Path(shutil.copytree(FIXTURE / "source", tmp_path / "source"))
    store = _fresh(source, tmp_path, ".zarr")
    with open_store(store) as opened:
        done = np.flatnonzero(opened.read("done")).tolist()
        names = opened.array_names()
    assert len(done) == 5 and set(FEATURES) < set(names)
    for name in names:  # the columns too: one layout
        files, folders = _tree(store, name)
        assert folders == [], (name, folders)
        metadata = json.loads((store / name / "zarr.json").read_text())
        assert metadata["chunk_key_encoding"] == {"name": "default",
                                                  "configuration": {"separator": "."}}
    assert chunk_file(store, "flow", 3) == store / "flow" / "c.3.0.0.0.0"
    inodes = 0
    for name in FEATURES:
        files, folders = _tree(store, name)
        assert files == sorted([store / name / "zarr.json",
                                *(chunk_file(store, name, index) for index in done)])
        inodes += 1 + len(files) + len(folders)  # (1: the array's folder)
    assert inodes == 3 * len(done) + 6  # a file a sample and array; a folder and zarr.json each


def test_a_nested_key_zarr_store_reads_resumes_and_repairs_with_its_own_keys(tmp_path):
    """A store made before flat keys (the fixture: zarr's default nested keys) keeps them:
    the reader's fast path finds its chunks, a resume writes its new chunks nested too, `verify
    --repair` rewrites a damaged one in place, and it ends equal, fingerprint included, to a
    fresh (flat-key) build: the keys are layout, not content."""
    from flowstore.verify import repair

    store = Path(shutil.copytree(FIXTURE / "format1.zarr", tmp_path / "nested.zarr"))
    source = Path(shutil.copytree(FIXTURE / "source", tmp_path / "source"))
    with open_store(store) as opened:
        done = np.flatnonzero(opened.read("done")).tolist()
        fingerprint = opened.attrs["fingerprint"]
    assert done == [0, 4] and all(_nested(store, name, 0) for name in FEATURES)
    with flowstore.open(store) as reader:
        reader.split("train")[[0]]  # the fast path's one check against zarr, per array
        assert reader.store.fast_reads == dict.fromkeys(FEATURES, True)
    resumed = _build(source, store)
    assert resumed.computed == 3 and resumed.fingerprint == fingerprint
    with open_store(store) as opened:
        done = np.flatnonzero(opened.read("done")).tolist()
        sample = str(opened.read("id")[2])
    assert len(done) == 5 and all(_nested(store, name, index)
                                  for name in FEATURES for index in done)
    for name in FEATURES:  # and no flat chunk beside the nested ones
        assert [p.name for p in (store / name).iterdir() if p.is_file()] == ["zarr.json"]
    chunk_file(store, "flow", 2).write_bytes(b"damaged")
    assert not verify(store).ok
    assert repair(store, source, [sample]).repaired == [sample]
    assert _nested(store, "flow", 2) and verify(store).ok
    fresh = _fresh(source, tmp_path, ".zarr")
    assert chunk_file(fresh, "flow", 2).parent == fresh / "flow"  # (flat)
    assert _contents(store) == _contents(fresh)


# -- HDF5 ledger text: fixed-width in new stores, variable-length ones kept ---------------------
def _with_vlen_ledger_text(path: Path) -> None:
    """The ledger's text columns of an HDF5 store rewritten as flowstore wrote them before they
    were fixed-width: variable-length UTF-8, same chunks and values."""
    import h5py

    with h5py.File(path, "r+") as f:
        for name in ("checksum", "failure", "source_hash"):
            values, chunks = f[name].asstr()[:], f[name].chunks
            del f[name]
            f.create_dataset(name, data=values.astype(object), chunks=chunks,
                             dtype=h5py.string_dtype("utf-8"))


def _text_widths(path: Path) -> dict[str, int | None]:
    """{ledger text column in the HDF5 file at `path`: its width, None when variable-length}"""
    import h5py

    with h5py.File(path, "r", locking=False) as f:
        return {name: h5py.check_string_dtype(f[name].dtype).length
                for name in ("checksum", "failure", "source_hash") if name in f}


def test_an_hdf5_store_with_variable_length_ledger_text_resumes_as_it_is(tmp_path):
    """An HDF5 store made before the ledger's text was fixed-width reads, verifies and resumes
    with its variable-length columns, written as they are (how a column is written follows
    its dtype in the file), and ends equal to a fresh build, fingerprint included; the fresh
    build's columns are fixed-width."""
    import h5py

    source = Path(shutil.copytree(FIXTURE / "source", tmp_path / "source"))
    store = tmp_path / "vlen.h5"
    _build(source, store)
    _with_vlen_ledger_text(store)
    with h5py.File(store, "r+") as f:  # two done samples back to pending
        f["done"][1:3] = False
        f["checksum"][1:3] = np.array(["", ""], dtype=object)
    summary = summarize(store)
    assert (summary["done"], summary["pending"], list(summary["failures"])) == (3, 2, [FAILED])
    assert verify(store).ok
    resumed = _build(source, store)
    assert (resumed.computed, list(resumed.failures)) == (2, [FAILED])
    assert _text_widths(store) == dict.fromkeys(("checksum", "failure", "source_hash"))
    assert verify(store).ok
    fresh = _fresh(source, tmp_path, ".h5")
    assert _text_widths(fresh) == {"checksum": layout.DIGEST_WIDTH,
                                   "failure": layout.FAILURE_WIDTH,
                                   "source_hash": layout.DIGEST_WIDTH}
    assert _contents(store) == _contents(fresh)


def test_a_format1_hdf5_store_upgraded_by_a_build_gets_fixed_width_ledger_text(tmp_path):
    """The upgrade writes the ledger's text fixed-width, format 1's variable-length `checksum`
    included, so no ledger write of the upgraded store touches HDF5's heap."""
    store = Path(shutil.copyfile(FIXTURE / "format1.h5", tmp_path / "format1.h5"))
    source = Path(shutil.copytree(FIXTURE / "source", tmp_path / "source"))
    assert _text_widths(store)["checksum"] is None
    assert _build(source, store).computed == 3
    assert _text_widths(store) == {"checksum": layout.DIGEST_WIDTH,
                                   "failure": layout.FAILURE_WIDTH,
                                   "source_hash": layout.DIGEST_WIDTH}
    assert verify(store).ok
    assert _contents(store) == _contents(_fresh(source, tmp_path, ".h5"))


def _manifest(n: int) -> Manifest:
    classes = tuple(f"class_{k:03d}" for k in range(4))
    return Manifest.from_rows(classes, (
        ManifestRow(f"{classes[i % 4]}/clip_{i:07d}", i % 4, classes[i % 4],
                    ("train", "val", "test")[i % 3]) for i in range(n)))


def _ledger_store(path: Path, n: int) -> tuple[Manifest, Ledger]:
    manifest = _manifest(n)
    attrs = {"dataset": "imagefolder", "classes": list(manifest.classes), "fingerprint": "f" * 64,
             "params": {"size": 8}, "store_id": "0" * 32}
    create_store(path, attrs=attrs, specs=[ArraySpec("image", (8, 8, 3), "uint8")],
                 num_samples=n, columns={
                     "id": np.array([row.id for row in manifest.rows]),
                     "label": np.array([row.label for row in manifest.rows], np.int32),
                     "split": np.array([row.split for row in manifest.rows])}).close()
    with open_store(path) as store:
        return manifest, Ledger.load(store)


def _finish_all(ledger: Ledger, store, n: int) -> None:
    for index in range(n):
        if index % 10 == 9:
            ledger.fail(index, f"video file is missing: clip_{index:07d}.mp4")
        else:
            ledger.complete(index, f"xxh3_128:{index:032x}")
            ledger.record_source(index, 1000 + index, f"xxh3_128:{index:032x}")
    ledger.write(store)


def _root_metadata_bytes(path: Path) -> int:
    if path.suffix == ".zarr":
        return (path / "zarr.json").stat().st_size
    import h5py

    with h5py.File(path, "r", locking=False) as f:
        return sum(len(value) for value in f.attrs.values())


def test_root_metadata_stays_a_few_kb_at_any_size(tmp_path, suffix):
    """Every sample done (or failed) at 30 and at 3,000 samples: the root attributes are the
    same few hundred bytes; the per-sample record is in the columns."""
    sizes = {}
    for n in (30, 3000):
        path = tmp_path / f"s{n}{suffix}"
        _, ledger = _ledger_store(path, n)
        with open_store(path, "r+") as store:
            _finish_all(ledger, store, n)
        with open_store(path) as store:
            assert int(store.read("done").sum()) == n - n // 10
            assert len(failures(store)) == n // 10
        sizes[n] = _root_metadata_bytes(path)
    assert sizes[3000] == sizes[30] < 4096, sizes


def test_a_ledger_write_rewrites_only_the_chunks_that_changed(tmp_path, monkeypatch):
    """A coordinator tick writes the chunks of the samples finished since the last one, never
    the root metadata nor the other chunks (format 1 rewrote every column whole and the root
    zarr.json with every source file on every tick)."""
    monkeypatch.setattr(layout, "COLUMN_CHUNK", 100)
    path = tmp_path / "s.zarr"
    _, ledger = _ledger_store(path, 3000)
    written: list[str] = []
    real_set = LocalStore.set

    async def counting_set(self, key, value, *args, **kwargs):
        written.append(key)
        return await real_set(self, key, value, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "set", counting_set)
    with open_store(path, "r+") as store:
        def keys(*chunks: tuple[str, int]) -> list[str]:  # the store's keys of those chunks
            return sorted(f"{name}/{store.chunk_key(name, index)}" for name, index in chunks)

        for index in range(10):  # one tick: samples 0-9 (chunk 0) finished
            ledger.complete(index, f"xxh3_128:{index:032x}")
            ledger.record_source(index, 1000, "xxh3_128:" + "0" * 32)
        ledger.fail(250, "broken")  # and sample 250 (chunk 2) failed
        ledger.write(store)
        assert sorted(written) == keys(("checksum", 0), ("done", 0), ("failure", 250),
                                       ("source_hash", 0), ("source_size", 0))
        written.clear()
        ledger.complete(2999, "xxh3_128:" + "1" * 32)  # the next tick: the last chunk
        ledger.write(store)
        assert sorted(written) == keys(("checksum", 2999), ("done", 2999))
        written.clear()
        ledger.write(store)  # nothing changed: nothing written
        assert written == []
    with open_store(path) as store:
        assert np.flatnonzero(store.read("done")).tolist() == [*range(10), 2999]
        assert failures(store) == {"class_002/clip_0000250": "broken"}


def test_a_build_writes_the_root_metadata_only_when_it_creates_and_ends(tvhi_source, tmp_path,
                                                                        monkeypatch):
    """With a ledger write after every sample, the root zarr.json is still written only when
    the store is created (with the plan's fingerprint; at the end only where the files read
    made it another, as below)."""
    from flowstore import build as build_module

    monkeypatch.setattr(build_module, "DONE_FLUSH_SECONDS", 0.0)
    monkeypatch.setattr(build_module, "LEDGER_TIME_SHARE", 1.0)
    written: list[str] = []
    real_set = LocalStore.set

    async def counting_set(self, key, value, *args, **kwargs):
        written.append(key)
        return await real_set(self, key, value, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "set", counting_set)
    result = build(BuildConfig(dataset="tvhi", source=tvhi_source, store=tmp_path / "t.zarr",
                               params=VideoParams(size=32, steps=4), workers=1, progress=False))
    assert result.computed == 16
    with open_store(tmp_path / "t.zarr") as store:
        done_chunk = "done/" + store.chunk_key("done", 0)
        flow_chunks = {"flow/" + store.chunk_key("flow", index) for index in range(16)}
    first_sample = next(i for i, key in enumerate(written) if key in flow_chunks)
    assert [key for key in written[first_sample:] if key == "zarr.json"] == []
    # Ledger writes happened mid-build (how many depends on how samples finish together).
    assert written.count(done_chunk) >= 2


# -- layouts another tool wrote: read, never written into ------------------------------------
def _rechunked(path: Path, how: str, zero: int | list[int] | None = None) -> None:
    """The feature arrays of a store rewritten by plain zarr-python / h5py, their done samples'
    values kept (those of sample or samples `zero` set to zeros): `how` "chunks" (several
    samples a chunk) or "shard" (a sharded Zarr array, one sample an inner chunk). Zarr writes
    with its default `write_empty_chunks=False`: an all-zero sample gets no chunk of its own,
    a chunk or shard of zeros no file."""
    if path.suffix == ".zarr":
        import zarr

        group = zarr.open_group(str(path), mode="r+")
        done = group["done"][:]
        for name in FEATURES:
            old = group[name]
            data, shape, dtype = old[:], old.shape, old.dtype
            if zero is not None:
                data[zero] = 0
            del group[name]
            sizes = (dict(chunks=(1, *shape[1:]), shards=(4, *shape[1:])) if how == "shard"
                     else dict(chunks=(4, *shape[1:])))
            new = group.create_array(name, shape=shape, dtype=dtype, fill_value=0, **sizes)
            for index in np.flatnonzero(done):
                new[index] = data[index]
        return
    import h5py

    with h5py.File(path, "r+") as f:
        for name in FEATURES:
            data = f[name][:]
            del f[name]
            f.create_dataset(name, data=data, chunks=(2, *data.shape[1:]))


def _fixed_width_text(path: Path) -> None:
    """The text columns rewritten by plain zarr-python / h5py from numpy arrays: fixed-width,
    as wide as their longest value (a column of empty values: 1)."""
    if path.suffix == ".zarr":
        import zarr

        group = zarr.open_group(str(path), mode="r+")
        for name in ("id", "split", "checksum", "failure", "source_hash"):
            values = np.array(group[name][:].tolist())  # numpy '<U..'
            del group[name]
            with pytest.warns(Warning):  # (zarr: no Zarr v3 specification for the type)
                group.create_array(name, data=values)
        return
    import h5py

    with h5py.File(path, "r+") as f:
        for name in ("id", "split", "checksum", "failure", "source_hash"):
            values = np.array([s.encode() for s in f[name].asstr()[:]])  # numpy 'S..'
            del f[name]
            f.create_dataset(name, data=values)


def _bytes_of(path: Path) -> dict[str, bytes]:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return {str(file.relative_to(path.parent)): file.read_bytes()
            for file in files if file.is_file()}


def _pending_again(path: Path, count: int = 2, *, mismatch: bool = False) -> None:
    """The first `count` done samples back to pending, so that a resume has samples to write;
    with `mismatch`, the next one's checksum wrong, so that `verify --repair` has one to
    repair."""
    with open_store(path, "r+") as store:
        done = store.read("done").astype(bool)
        done[np.flatnonzero(done)[:count]] = False
        store.write("done", slice(None), done)
        if mismatch:
            checksum = store.read("checksum").astype(object)
            checksum[np.flatnonzero(done)[0]] = "xxh3_128:" + "0" * 32
            store.write("checksum", slice(None), checksum)


@pytest.mark.parametrize("suffix,how,refusal", [
    (".zarr", "chunks", "array 'flow' holds 4 samples a chunk"),
    (".zarr", "shard", "array 'flow' is sharded, 4 samples a shard"),
    (".h5", "chunks", "array 'flow' holds 2 samples a chunk"),
], ids=["zarr-chunks", "zarr-shard", "hdf5-chunks"])
def test_a_store_rechunked_by_another_tool_is_refused_for_writing_untouched(tmp_path, suffix,
                                                                           how, refusal):
    """Per-sample arrays rechunked several samples a chunk (or sharded) by zarr-python or h5py:
    two build workers rewrote the same chunk, each from what it read, and one's sample was lost
    while the ledger said both were done (Zarr; a sharded array's resume also failed samples on
    a missing chunk). A build resuming it and `verify --repair` are refused in one line naming
    the array, and leave the store byte for byte as it was."""
    source = Path(shutil.copytree(FIXTURE / "source", tmp_path / "source"))
    store = _fresh(source, tmp_path, suffix)
    _pending_again(store, mismatch=True)
    _rechunked(store, how)
    before = _bytes_of(store)
    from tests.conftest import assert_one_line_error

    for args in (("build", "videofolder", "--source", source, "--store", store, "--size", 8,
                  "--steps", 2, "--workers", 2, "-q"),
                 ("verify", store, "--repair", "--source", source, "-q")):
        result = flowstore_cli(*args)
        if args[0] == "build":
            line = assert_one_line_error(result)
        else:  # (the bad sample verify found listed first, then the one error line)
            assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
            line = errors[0]
        assert f"store {str(store)!r}: {refusal} (rewritten by another tool?)" in line, line
        assert "flowstore writes one sample a chunk" in line and "--overwrite" in line, line
        assert _bytes_of(store) == before
    with pytest.raises(StoreError, match="one sample a chunk"):
        open_store(store, "r+")
    assert _bytes_of(store) == before


@pytest.mark.parametrize("suffix", [".zarr", ".h5"], ids=["zarr", "hdf5"])
def test_ledger_text_columns_of_a_fixed_width_are_refused_for_writing_untouched(tmp_path,
                                                                               suffix):
    """Text columns rewritten fixed-width by zarr-python / h5py from numpy arrays: Zarr cut
    every checksum written there to the column's width without a word (`verify` then called
    every sample bad), HDF5 stopped the build with an internal error (exit 3), the extracted
    samples lost. Refused in one line before anything is written; the store unchanged."""
    source = Path(shutil.copytree(FIXTURE / "source", tmp_path / "source"))
    store = _fresh(source, tmp_path, suffix)
    _pending_again(store)
    _fixed_width_text(store)
    before = _bytes_of(store)
    from tests.conftest import assert_one_line_error

    line = assert_one_line_error(flowstore_cli(
        "build", "videofolder", "--source", source, "--store", store, "--size", 8, "--steps", 2,
        "--workers", 1, "-q"))
    assert (f"store {str(store)!r}: array 'checksum' holds text of a fixed width of 41 "
            f"(rewritten by another tool?)") in line, line
    assert _bytes_of(store) == before
    assert verify(store).ok  # (read as it is)


@pytest.mark.parametrize("how,whole", [("chunks", False), ("shard", False), ("chunks", True),
                                       ("shard", True)],
                         ids=["chunks", "shard", "chunk-of-zeros", "shard-of-zeros"])
def test_a_zarr_store_rechunked_by_another_tool_reads_right(tmp_path, how, whole):
    """Reading any layout stays zarr's: a rechunked or sharded store reads its samples' values
    through `flowstore.open`, an all-zero done sample included (which zarr wrote no chunk for:
    in a sharded array it was taken for a missing chunk, the shard's key not looked for), and
    done samples whose whole chunk or shard is zeros (`whole`: no file at all, rightly, where
    flowstore's own layout would be missing a chunk)."""
    source = Path(shutil.copytree(FIXTURE / "source", tmp_path / "source"))
    store = _fresh(source, tmp_path, ".zarr")
    with open_store(store) as opened:
        done = np.flatnonzero(opened.read("done")).tolist()
        expected = {name: {i: opened.read(name, i) for i in done} for name in FEATURES}
    # (not the first of its chunk, and no chunk's or shard's key is its own index: the key of
    # sample 2 is that of chunk 0, and a look for key 2 finds nothing)
    zero = next(index for index in done if index % 4 and index >= 2)
    zeros = [index for index in done if index // 4 == zero // 4] if whole else [zero]
    for name in FEATURES:
        for index in zeros:
            expected[name][index] = np.zeros_like(expected[name][index])
    _rechunked(store, how, zero=zeros)
    if whole:  # (zarr wrote no file for that chunk or shard)
        assert not any(chunk_file(store, name, zero).exists() for name in FEATURES)
    from flowstore.reader.dataset import ALL

    with flowstore.open(store) as reader:
        split = reader.split(ALL)
        assert sorted(int(i) for i in split.indices) == done
        batch = split[list(range(len(split)))]
        for position, index in enumerate(split.indices):
            for name in FEATURES:
                got, want = batch[name][position], expected[name][int(index)]
                assert np.array_equal(got.astype(want.dtype), want), (name, int(index))


# -- opening reads O(1) metadata objects ---------------------------------------------------------
class _Calls:
    """zarr LocalStore reads and listings, counted."""

    def __init__(self, monkeypatch) -> None:
        self.metadata: list[str] = []
        self.chunks = 0
        self.listings: list[tuple[str, str]] = []
        real_get, real_list_dir = LocalStore.get, LocalStore.list_dir
        calls = self

        async def get(self, key, *args, **kwargs):
            if key.endswith("zarr.json"):
                calls.metadata.append(key)
            else:
                calls.chunks += 1
            return await real_get(self, key, *args, **kwargs)

        def listing(kind, real=None):
            def method(self, prefix=""):
                calls.listings.append((kind, prefix))
                return real(self, prefix) if kind == "list_dir" else real(self) if kind == "list" \
                    else real(self, prefix)
            return method

        monkeypatch.setattr(LocalStore, "get", get)
        monkeypatch.setattr(LocalStore, "list_dir", listing("list_dir", real_list_dir))
        monkeypatch.setattr(LocalStore, "list", listing("list", LocalStore.list))
        monkeypatch.setattr(LocalStore, "list_prefix", listing("list_prefix", LocalStore.list_prefix))

    def clear(self) -> None:
        self.metadata.clear()
        self.listings.clear()
        self.chunks = 0


def test_opening_a_store_reads_a_fixed_number_of_metadata_objects(tmp_path, monkeypatch):
    """The reader (`flowstore.open`), inspect (without --bytes) and a resumed build's opening
    read the same metadata objects at 40 and at 400 samples, and list nothing but the root
    folder: no listing of the chunks, which are one file per sample and array."""
    monkeypatch.setattr(layout, "COLUMN_CHUNK", 16)
    seen = {}
    for n in (40, 400):
        path = tmp_path / f"s{n}.zarr"
        manifest, _ = _ledger_store(path, n)
        with open_store(path, "r+") as store:
            for index in range(n):
                store.write_sample(index, {"image": np.full((8, 8, 3), index % 256, np.uint8)})
            store.write_changed("done", np.ones(n, bool), range(n))
        calls = _Calls(monkeypatch)
        with flowstore.open(path) as reader:
            assert len(reader.split("train")) == len(range(0, n, 3))
        opened = (sorted(calls.metadata), sorted(calls.listings))
        calls.clear()
        summarize(path)
        inspected = (sorted(calls.metadata), sorted(calls.listings))
        calls.clear()
        with open_store(path, "r+") as store:
            Ledger.load(store)
            store.info("image")
        resumed = (sorted(calls.metadata), sorted(calls.listings))
        monkeypatch.undo()
        monkeypatch.setattr(layout, "COLUMN_CHUNK", 16)
        for what in (opened, inspected, resumed):
            assert all(kind == "list_dir" and prefix == "" for kind, prefix in what[1]), what[1]
        seen[n] = (opened, inspected, resumed)
    assert seen[40] == seen[400]


# -- the backend registry --------------------------------------------------------------------
def test_backends_are_chosen_by_suffix_and_url_with_their_capabilities():
    zarr_store, hdf5_store = (backend.load() for backend in BACKENDS)
    assert backend_for("a/x.zarr") is backend_for("s3://b/x.ZARR/") is zarr_store
    assert backend_for("x.h5") is backend_for("x.HDF5") is hdf5_store
    with pytest.raises(StoreError, match=r"HDF5 stores must be local files; use a \.zarr URL"):
        backend_for("s3://b/x.h5")
    with pytest.raises(StoreError, match=r"must end in \.zarr \(Zarr v3\) or \.h5/\.hdf5 \(HDF5\)"):
        backend_for("x.npz")
    local, remote, h5 = capabilities("x.zarr"), capabilities("s3://b/x.zarr"), capabilities("x.h5")
    assert local.writer_lock and local.rename and local.reads_during_build and local.parallel_writers
    assert not remote.writer_lock and not remote.rename and remote.parallel_writers
    assert h5.writer_lock and h5.rename and not h5.reads_during_build and not h5.parallel_writers


def test_a_new_backend_is_one_registry_entry(tmp_path, monkeypatch):
    """Registering a suffix is all it takes for every command to use a backend (here the Zarr
    module again, under another suffix)."""
    import flowstore.store as store_module

    monkeypatch.setattr(store_module, "BACKENDS", (
        *BACKENDS, Backend("zarr2", "Zarr again", (".zr",), "flowstore.store._zarr", urls=True)))
    path = tmp_path / "x.zr"
    _ledger_store(path, 5)
    out = flowstore_cli("inspect", path, "--json")  # (another process: the registry as shipped)
    assert out.returncode == 2 and "must end in .zarr" in out.stderr
    assert summarize(path)["samples"] == 5


def test_no_module_names_a_backend_class(tmp_path):
    """Callers ask `capabilities` and `Store.name`, never a class name (issue 15, item 7)."""
    root = Path(flowstore.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "store" not in p.parts[-2:-1]
                 and any(word in p.read_text() for word in ("HDF5Store", "ZarrStore"))]
    assert offenders == []


def test_the_format_1_attributes_are_gone_from_a_new_store(tmp_path):
    path = tmp_path / "s.zarr"
    _ledger_store(path, 3)
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    assert not set(format1.ATTRIBUTES) & set(attrs) and attrs["flowstore.format"] == 2


def test_ledger_digests_are_packed_bytes_written_back_as_text(tmp_path, suffix):
    """The digests live in one bytes array per column (no str per sample in a build's
    memory), read back as text by every reader, and a longer digest than any before (an older
    store's) widens the column instead of being cut. (A new HDF5 store's digest columns are
    64 bytes wide on disk and refuse a longer one: its test is in test_flowstore_store.py.)"""
    path = tmp_path / f"s{suffix}"
    _, ledger = _ledger_store(path, 5)
    # no wider than what they hold (a new store's: nothing yet), widened as digests come
    assert ledger.columns["checksum"].dtype == np.dtype("S1")
    assert ledger.columns["source_hash"].dtype == np.dtype("S1")
    # a blake2b hex digest, as the first stores recorded (in columns of any length)
    long_digest = "b" * (128 if suffix == ".zarr" else 60)
    ledger.complete(1, "xxh3_128:" + "1" * 32)
    ledger.record_source(1, 5, None)  # (as a build records it: a done sample without is lost)
    ledger.complete(3, long_digest)
    ledger.record_source(3, 7, "xxh3_128:" + "3" * 32)
    assert ledger.columns["checksum"].itemsize == len(long_digest)
    assert ledger.columns["source_hash"].itemsize == 17  # today's digests: a tag and 16 bytes
    # a digest whose last bytes are zero (numpy's bytes arrays drop trailing NULs) or whose hex
    # is not lowercase (kept as it was written) comes back as it went in
    for digest in ("xxh3_128:" + "ab" * 14 + "0000", "xxh3_128:" + "AB" * 16):
        ledger.record_source(4, 9, digest)
        assert ledger.text("source_hash", 4) == digest
    assert ledger.text("checksum", 3) == long_digest
    with open_store(path, "r+") as store:
        ledger.write(store)
    with open_store(path) as store:
        assert store.read("checksum").tolist() == ["", "xxh3_128:" + "1" * 32, "", long_digest,
                                                   ""]
        assert store.read("source_hash").tolist()[3] == "xxh3_128:" + "3" * 32
        assert store.read("source_hash").tolist()[4] == "xxh3_128:" + "AB" * 16
        again = Ledger.load(store)
    assert again.text("checksum", 3) == long_digest and again.text("checksum", 0) == ""
    assert again.text("checksum", 1) == "xxh3_128:" + "1" * 32
    assert again.text("source_hash", 4) == "xxh3_128:" + "AB" * 16


@pytest.mark.parametrize("options", [None, {"seed": 1, "split_file": "ab12"}])
def test_the_fingerprint_streams_the_source_list_and_hashes_the_canonical_json(options):
    """The source list is encoded in sorted order without a copy of it (a 300,000-clip list
    was held three times at the end of a build), and the bytes hashed are still exactly the
    canonical JSON of the whole record: stores keep their fingerprints."""
    import hashlib

    from flowstore.params import CONTENT_FORMAT, canonical_json, fingerprint

    files = {"b/clip \"2\".avi": 7, "a/clip_1.avi": None, "é/ü.mp4": 12_345_678_901, "a/0.avi": 0}
    params = {"size": 16, "flow": {"levels": 3, "poly_sigma": 1.2}, "list": [1, None]}
    whole = {"format": CONTENT_FORMAT, "dataset": "videofolder", "params": params,
             "source_files": files, **({"options": options} if options else {})}
    assert fingerprint(dataset="videofolder", params=params, source_files=files,
                       options=options) == hashlib.sha256(canonical_json(whole).encode()).hexdigest()
    assert fingerprint(dataset="videofolder", params=params, source_files={}, options=options) \
        == hashlib.sha256(canonical_json({**whole, "source_files": {}}).encode()).hexdigest()


def test_sample_paths_hold_a_shared_shape_and_give_back_every_path():
    from flowstore.datasets.base import SamplePaths

    paths = SamplePaths()
    given = {"walk/a_1": "walk/a_1.avi", "walk/b": "walk/b.avi", "b": "other/b.mp4",
             "x.avi": "x.avi", "odd": "elsewhere.avi", "é": "train/é/é.mp4"}
    paths.update(given)
    assert dict(paths) == given and len(paths) == 6 and "odd" in paths and "nope" not in paths
    assert len(paths._shapes) == 4  # ("", ".avi"), ("other/", ".mp4"), ("", ""), ("train/é/", ".mp4")
    paths["odd"] = "walk/odd.avi"  # set again: the new path, in the other form
    paths["walk/b"] = "moved.avi"
    assert paths["odd"] == "walk/odd.avi" and paths["walk/b"] == "moved.avi"
    del paths["odd"], paths["walk/b"]
    assert set(paths) == {"walk/a_1", "b", "x.avi", "é"}
    with pytest.raises(KeyError):
        paths["odd"]


def test_source_sizes_are_a_column_and_read_like_the_dict_they_replace():
    from flowstore.datasets.base import SourceSizes

    names = ["c/2.avi", "a/1.avi", "c/2.avi", "b/3.avi"]  # a file twice: one entry, as a dict
    sizes = SourceSizes(names.__getitem__, np.array([5, 7, 5, -1], dtype=np.int64))
    sizes["splits/test.txt"] = 11
    sizes.update({"b/3.avi": 9})  # a later value of a row's own name wins, as in a dict
    want = {"a/1.avi": 7, "b/3.avi": 9, "c/2.avi": 5, "splits/test.txt": 11}
    assert list(sizes.items_sorted()) == sorted(want.items()) and dict(sizes) == want
    assert len(sizes) == 4 and sizes["a/1.avi"] == 7 and sizes.row_size(3) is None
    changed = sizes.with_rows({1: None})
    assert changed["a/1.avi"] is None and sizes["a/1.avi"] == 7 and changed["splits/test.txt"] == 11
    with pytest.raises(KeyError):
        sizes["missing.avi"]


def test_a_ledger_hands_back_the_planned_sizes_unless_a_done_sample_read_another(tmp_path):
    from flowstore.datasets.base import SourceSizes

    _, ledger = _ledger_store(tmp_path / "s.zarr", 3)
    current = SourceSizes(lambda i: f"f{i}", np.array([10, 20, 30], dtype=np.int64))
    assert ledger.source_sizes(current) is current  # nothing done yet: no copy
    ledger.complete(1, "xxh3_128:" + "1" * 32)
    ledger.record_source(1, 20, "xxh3_128:" + "2" * 32)
    assert ledger.source_sizes(current) is current
    ledger.record_source(1, 21, "xxh3_128:" + "2" * 32)  # its task read 21 bytes
    read = ledger.source_sizes(current)
    assert dict(read) == {"f0": 10, "f1": 21, "f2": 30} and current["f1"] == 20
