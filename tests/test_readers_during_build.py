"""Readers while a build appends: Zarr stores are read as they grow (trainers, `inspect`);
an HDF5 store, which HDF5 cannot read while another process writes it, is refused in one line
naming the build, and a build is refused while a reader holds the HDF5 file open."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import flowstore

from flowstore.errors import StoreError
from flowstore.store import open_store
from flowstore.synth.tvhi import SynthTVHIConfig, write_synthetic_tvhi
from tests.conftest import TINY_BUILD, assert_one_line_error, flowstore_cli


#: Clips of the build the readers race: enough that it is still running seconds after its third
#: sample (32 were all done while `flowstore inspect` started, on a 2-core AVX-512 EPYC).
VIDEOS_PER_CLASS = 24
CLIPS = 4 * VIDEOS_PER_CLASS


@pytest.fixture(scope="module")
def race_source(tmp_path_factory):
    """The source of the build the readers race, written once (the builds only read it)."""
    return write_synthetic_tvhi(tmp_path_factory.mktemp("race") / "src", SynthTVHIConfig(
        videos_per_class=VIDEOS_PER_CLASS, negatives=0, min_frames=60, max_frames=90,
        resolution=(320, 240)))


def _start_build(tmp_path, suffix, source):
    store = tmp_path / f"s{suffix}"
    builder = subprocess.Popen([sys.executable, "-m", "flowstore", "build", "tvhi", "--source",
                                str(source), "--store", str(store), "--size", "96", "--workers",
                                "1", "-q"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return store, builder


def test_zarr_trainer_input_and_inspect_work_during_a_build(tmp_path, race_source):
    pytest.importorskip("tensorflow")
    from trainers.data import InputOptions, make_dataset
    from trainers.samples import open_samples

    store, builder = _start_build(tmp_path, ".zarr", race_source)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while done < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                with open_store(store) as s:
                    done = int(s.read("done").sum())
            except Exception:  # not created yet
                continue
        assert builder.poll() is None, "the build should still be running"
        summary = json.loads(flowstore_cli("inspect", store, "--json").stdout)
        assert 3 <= summary["done"] < CLIPS
        samples = open_samples(store, "tvhi_flow")
        try:
            ready = len(samples.indices("train"))
            seen = sum(int(y.shape[0]) for _, y in make_dataset(samples, "train", InputOptions(batch_size=2)))
            assert seen == ready  # only samples marked done when the reader opened the store
        finally:
            samples.store.close()
        assert builder.poll() is None or builder.returncode == 0
    finally:
        _, err = builder.communicate(timeout=300)
    assert builder.returncode == 0, err
    with open_store(store) as s:
        assert s.read("done").all()


def test_hdf5_readers_are_refused_in_one_line_while_a_build_writes(tmp_path, race_source):
    from trainers.samples import open_samples

    store, builder = _start_build(tmp_path, ".h5", race_source)
    try:
        deadline = time.monotonic() + 120
        refusal = None
        while refusal is None and time.monotonic() < deadline and builder.poll() is None:
            time.sleep(0.05)
            try:
                open_store(store).close()
            except StoreError as exc:
                if "being written" in str(exc):
                    refusal = str(exc)
        assert refusal is not None, "the build ended (or never began) before a reader was refused"
        assert f"pid {builder.pid} on " in refusal and "try again when the build ends" in refusal
        with pytest.raises(StoreError, match=f"being written by a flowstore build \\(pid {builder.pid} "):
            open_samples(store, "tvhi_flow")
        for command in (("inspect", store), ("verify", store, "-q")):
            line = assert_one_line_error(flowstore_cli(*command))
            assert f"pid {builder.pid}" in line and "cannot be read while it is written" in line
        assert builder.poll() is None, "the build should still be running"
    finally:
        _, err = builder.communicate(timeout=300)
    assert builder.returncode == 0, err
    with open_store(store) as s:  # once the build has ended, the store reads
        assert s.read("done").all()
    assert flowstore_cli("verify", store, "-q").returncode == 0


def test_an_hdf5_build_is_refused_while_a_reader_holds_the_file(tiny_tvhi_source, tmp_path):
    store = tmp_path / "s.h5"
    args = ("build", "tvhi", "--source", tiny_tvhi_source, "--store", store, *TINY_BUILD, "-q",
            "--max-per-split", "1")
    assert flowstore_cli(*args).returncode == 0
    with open_store(store) as reader:
        done = reader.read("done").copy()
        line = assert_one_line_error(flowstore_cli(*args[:-2]))  # the rest of the store
        assert "is open for reading" in line and "cannot be written while it is read" in line
        assert (reader.read("done") == done).all()  # the refused build wrote nothing
    finished = flowstore_cli(*args[:-2])  # the reader closed: the build goes on
    assert finished.returncode == 0, finished.stderr
    with open_store(store) as reader:
        assert reader.read("done").all()


def _build_is_refused_while(path) -> str:
    """What a build in another process is told of HDF5 store `path` (it takes the writer lock
    as `flowstore build` does, and lets go at once)."""
    held = subprocess.run([sys.executable, "-c",
                           "import sys\nfrom flowstore.errors import StoreError\n"
                           "from flowstore.store.lock import writer_lock\n"
                           "try:\n"
                           f"    with writer_lock({str(path)!r}):\n"
                           "        print('built')\n"
                           "except StoreError as exc:\n"
                           "    print(exc)\n"],
                          capture_output=True, text=True, timeout=60)
    assert held.returncode == 0, held.stderr
    return held.stdout


@pytest.mark.parametrize("before", ["own-build-ended", "lock-file-gone"])
def test_an_hdf5_reader_holds_the_lock_after_its_own_build_and_without_a_lock_file(tmp_path,
                                                                                  before):
    """The reader lock is skipped only while this process's own build holds the store: after
    that build ended (its writer lock released), or with no lock file beside the store (a
    copied store, a deleted lock file: the reader makes it), a reader that took no lock let
    another process build the HDF5 file it was reading (from the mutation review)."""
    from flowstore.store.lock import lock_path, writer_lock
    from trainers.testing import make_tiny_store

    path = make_tiny_store(tmp_path / "t.h5", per_class=(1, 1, 1))
    if before == "own-build-ended":
        with writer_lock(path):
            pass
    else:
        lock_path(path).unlink(missing_ok=True)
    with flowstore.open(path) as ds:
        ds.split("train")[0]
        refusal = _build_is_refused_while(path)
        assert "is open for reading" in refusal and "cannot be written while it is read" in refusal
        assert "run the command again when they end" in refusal  # (a repair's too, not "build")
    assert _build_is_refused_while(path).strip() == "built"  # the reader closed: let go of
