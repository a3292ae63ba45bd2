"""What `done` promises beyond a killed process: `--fsync` (durable bytes before `done`), the
decoding settings recorded with the parameters (no two decodings in one store), and
`--check-source` (a clip replaced by another of the same size)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flowstore import params as params_module
from flowstore.build import BuildConfig, build
from flowstore.extraction import video
from flowstore.ledger import Ledger
from flowstore.params import (EXTRACTION_VERSION, ImageParams, VideoParams, canonical_json,
                              fingerprint, to_dict)
from flowstore.store import backend_for, failures_named, open_store
from flowstore.store.checksum import file_digest
from flowstore.verify import verify
from tests.conftest import (TINY_BUILD, assert_one_line_error, chunk_and_folders, chunk_file,
                            flowstore_cli)

FEATURES = ("middle_frame", "frames", "flow")


def _build(source, store, **options):
    return build(BuildConfig(dataset="tvhi", source=source, store=store,
                             params=VideoParams(size=32, steps=4), progress=False, workers=1,
                             **options))


# -- --fsync -------------------------------------------------------------------------------------
def test_fsync_makes_each_sample_durable_before_it_is_marked_done(tiny_tvhi_source, tmp_path,
                                                                  suffix, monkeypatch):
    store = tmp_path / f"s{suffix}"
    events: list[tuple[str, object]] = []
    real_fsync, real_complete = os.fsync, Ledger.complete
    backend = backend_for(store)
    real_write_sample = backend.write_sample

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def complete(self, index, digest):
        events.append(("done", index))
        real_complete(self, index, digest)

    def write_sample(self, index, arrays, **kwargs):
        events.append(("write", index))
        real_write_sample(self, index, arrays, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Ledger, "complete", complete)
    monkeypatch.setattr(backend, "write_sample", write_sample)

    first = _build(tiny_tvhi_source, store, max_per_split=1)
    assert first.computed == 3
    assert not [e for e in events if e[0] == "fsync"], "without --fsync nothing is fsynced"
    events.clear()
    rest = _build(tiny_tvhi_source, store, fsync=True)  # resumes: --fsync is no parameter
    assert rest.ok and rest.computed == 13
    with open_store(store) as s:
        assert "fsync" not in canonical_json(s.attrs["params"])
        assert s.attrs["fingerprint"] == rest.fingerprint

    order = {event: position for position, event in enumerate(events)}
    done = [index for kind, index in events if kind == "done"]
    assert len(done) == 13
    synced = [(position, path) for position, (kind, path) in enumerate(events) if kind == "fsync"]
    for index in done:
        started, marked = order[("write", index)], order[("done", index)]
        paths = {path for position, path in synced if started < position < marked}
        if suffix == ".zarr":
            for name in FEATURES:  # every chunk file of the sample, and its folder(s)
                assert chunk_and_folders(store, name, index) <= paths, (name, index)
        else:
            assert str(store) in paths, index
    if suffix == ".zarr":  # and nothing else of the feature arrays: flat keys, no folders
        for name in FEATURES:
            under = {path for _, path in synced if path.startswith(str(store / name) + "/")}
            assert under == {str(store / name / "zarr.json")}.union(
                *(chunk_and_folders(store, name, index) for index in done)) - {str(store / name)}
            assert {Path(path).parent for path in under} == {store / name}
    last_done = order[("done", done[-1])]
    ledger = {path for position, path in synced if position > last_done}
    if suffix == ".zarr":  # the done and checksum columns and the attributes, after the last done
        assert {str(chunk_file(store, "done", 0)), str(chunk_file(store, "checksum", 0)),
                str(store / "zarr.json")} <= ledger
    else:
        assert str(store) in ledger
    assert str(store.parent) in {path for _, path in synced}  # the store's entry in its folder


def _reset_and_kill(path: Path, monkeypatch, kill_at: int,
                    counted: tuple[str, ...] | None = None) -> tuple[int, list[str]]:
    """Unmark the first done sample of the store at `path` as `verify --repair` does, and
    write the ledger killed (a KeyboardInterrupt) before its `kill_at`-th column write, of the
    `counted` columns (every one when None): the sample's index and the columns counted."""
    with open_store(path, "r+") as store:
        ledger = Ledger.load(store)
        index = int(ledger.done.nonzero()[0][0])
        ledger.reset(index)
        real, written = store.write_changed, []

        def write_changed(name, column, indices):
            if counted is None or name in counted:
                written.append(name)
                if len(written) == kill_at:
                    raise KeyboardInterrupt  # the kill, before this column is written
            real(name, column, indices)

        monkeypatch.setattr(store, "write_changed", write_changed)
        with pytest.raises(KeyboardInterrupt):
            ledger.write(store)
    return index, written


def test_a_sample_to_extract_again_is_unmarked_before_its_checksum_is_cleared(
        tiny_tvhi_source, tmp_path, suffix, monkeypatch):
    """`verify --repair` resets a bad sample (not done, no checksum) and writes the ledger; a
    kill between the two columns' writes left it done with no checksum (checksum cleared
    first), which every later build took as complete and `verify` as damaged."""
    store_path = tmp_path / f"s{suffix}"
    _build(tiny_tvhi_source, store_path, max_per_split=1)
    index, written = _reset_and_kill(store_path, monkeypatch, 2, counted=("done", "checksum"))
    with open_store(store_path) as store:
        done, checksum = bool(store.read("done")[index]), str(store.read("checksum")[index])
    assert written == ["done", "checksum"] and not done and checksum, (written, done, checksum)


def test_a_repair_stopped_after_unmarking_a_sample_leaves_it_for_verify_and_repair(
        tiny_tvhi_source, tmp_path, suffix, monkeypatch):
    """`verify --repair` unmarks the samples it re-extracts before it extracts them; stopped
    in between, they were neither done nor failed: `verify` passed the store (it checks done
    samples) and `verify --repair` never came back to them. Killed at each of the reset's
    column writes, a sample is now either untouched (done, good) or one `verify` names, and
    the same `verify --repair` extracts it."""
    built = tmp_path / f"built{suffix}"
    _build(tiny_tvhi_source, built, max_per_split=1)
    with open_store(built) as store:
        ids, done_before = list(store.read("id")), int(store.read("done").sum())
    for kill_at in range(1, 4):  # (failure, done, checksum: all the reset changes)
        copy = tmp_path / f"k{kill_at}{suffix}"
        (shutil.copytree if built.is_dir() else shutil.copy2)(built, copy)
        index, calls = _reset_and_kill(copy, monkeypatch, kill_at)
        with open_store(copy) as store:
            still_done = bool(store.read("done")[index])
        problems = verify(copy).problems
        assert still_done or ids[index] in problems, (kill_at, calls, problems)
        if not still_done:
            out = flowstore_cli("verify", copy, "-q")
            assert out.returncode == 1
            assert (f"  {ids[index]}: not done: its re-extraction by verify --repair did not "
                    f"finish") in out.stderr
            fixed = flowstore_cli("verify", copy, "--repair", "--source", tiny_tvhi_source, "-q")
            assert fixed.returncode == 0 and "repaired 1 of 1 bad" in fixed.stdout, fixed.stderr
        assert verify(copy).ok
        with open_store(copy) as store:
            assert int(store.read("done").sum()) == done_before
            assert not failures_named(ids, store.read("failure"), store.read("done"))


# -- decoding settings in the parameters ---------------------------------------------------------
def test_params_record_the_decoder_threads_and_the_extraction_version(monkeypatch):
    recorded = to_dict(VideoParams())
    assert recorded["decoder_threads"] == 1 and recorded["extraction"] == EXTRACTION_VERSION
    assert to_dict(ImageParams())["extraction"] == EXTRACTION_VERSION

    def fp(p):
        return fingerprint(dataset="tvhi", params=to_dict(p), source_files={"a.avi": 1})

    assert fp(VideoParams(decoder_threads=2)) != fp(VideoParams())
    before = fp(VideoParams())
    monkeypatch.setattr(params_module, "EXTRACTION_VERSION", "another")
    assert fp(VideoParams()) != before
    with pytest.raises(ValueError, match="decoder_threads"):
        VideoParams(decoder_threads=0)


def test_video_capture_is_opened_with_the_recorded_decoder_threads(tiny_tvhi_source, monkeypatch):
    opened = []
    real = video.cv2.VideoCapture

    def capture(*args):
        opened.append(args)
        return real(*args)

    monkeypatch.setattr(video.cv2, "VideoCapture", capture)
    clip = tiny_tvhi_source / "hug_0001.avi"
    for threads in (1, 3):
        opened.clear()
        video.extract_video(clip, VideoParams(size=16, steps=2, decoder_threads=threads))
        assert opened and all(list(args[2]) == [video.cv2.CAP_PROP_N_THREADS, threads]
                              for args in opened)


def _set_params(store: Path, **changes) -> None:
    with open_store(store, "r+") as s:
        recorded = s.attrs["params"]
        for key, value in changes.items():
            if value is None:
                recorded.pop(key)
            else:
                recorded[key] = value
        s.update_attrs({"params": recorded})


def test_a_store_of_another_extraction_is_refused_on_resume_but_still_reads(tiny_tvhi_source,
                                                                             tmp_path, suffix):
    store = tmp_path / f"s{suffix}"
    args = ("build", "tvhi", "--source", tiny_tvhi_source, "--store", store, *TINY_BUILD, "-q")
    assert flowstore_cli(*args, "--max-per-split", "1").returncode == 0
    _set_params(store, extraction="0")
    line = assert_one_line_error(flowstore_cli(*args))
    assert "other parameters (extraction: store '0' vs asked '1')" in line

    _set_params(store, extraction=None, decoder_threads=None)  # as written before they existed
    assert flowstore_cli("inspect", store).returncode == 0
    checked = flowstore_cli("verify", store, "-q")
    assert checked.returncode == 0 and "checked 3 sample(s), 0 bad" in checked.stdout
    line = assert_one_line_error(flowstore_cli(*args))
    assert "decoder_threads: store (not recorded) vs asked 1" in line
    assert "extraction: store (not recorded) vs asked '1'" in line


# -- --check-source ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 5, (1 << 20) + 3], ids=["empty", "small", "two-blocks"])
def test_a_source_file_digest_is_the_xxh3_of_its_bytes(tmp_path, size):
    """The digest every done sample records of its clip (`source_hash`, which `--check-source`
    and `--reuse-from` compare, stores of older builds included) is XXH3-128 of the file's
    bytes, whatever blocks it is read in: a last block hashed whole, with the bytes past the
    file's end, would record another digest than every store made before holds."""
    import xxhash

    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    (tmp_path / "clip.avi").write_bytes(data)
    assert file_digest(tmp_path / "clip.avi") == f"xxh3_128:{xxhash.xxh3_128(data).hexdigest()}"


@pytest.mark.parametrize("digest", ["xxh3_128:" + "ab" * 15 + "00",
                                    "xxh3_128:" + "cd" * 14 + "0000",
                                    "xxh3_128:" + "00" * 16, "xxh3_128:" + "00ab" * 8])
def test_a_packed_digest_ending_in_zero_bytes_reads_back_whole(digest):
    """The ledger packs checksums into 16 raw bytes, and numpy drops a bytes value's trailing
    NULs: about one digest in 256 ends in one. Unpacked without putting them back, it read
    back cut short, written to the store as such and called damaged by verify (no test held
    the padding; found by a mutation review)."""
    import numpy as np

    from flowstore.ledger import _packed, _Unpacked, _unpack_digest

    packed = _packed(np.array([digest, "xxh3_128:" + "ef" * 16]))
    assert _unpack_digest(packed[0]) == digest
    assert _Unpacked(packed)[0:1].tolist() == [digest]


def test_the_columns_digest_is_the_one_stores_already_hold():
    """Every format-2 store records `columns_digest` of its classes and id, label and split
    columns, and a split is read only while they match it: another definition (the lengths
    in front of each part dropped, another separator or label type) makes every store made
    before read as damaged, by `verify` and by `flowstore.open`. Pinned, as stores hold it."""
    from flowstore.store.checksum import columns_digest

    assert columns_digest(("a", "b"), ["x", "y/z"], [0, 1], ["train", "test"]) == \
        "xxh3_128:d0363d46270aaecea1bbaa5033108622"


def test_check_source_refuses_a_clip_replaced_by_one_of_the_same_size(tvhi_source, tmp_path):
    store = tmp_path / "s.zarr"
    args = ("build", "tvhi", "--source", tvhi_source, "--store", store, *TINY_BUILD, "-q",
            "--max-per-split", "1")
    assert flowstore_cli(*args).returncode == 0
    with open_store(store) as s:
        done_ids = s.read("id")[s.read("done").astype(bool)]
        hashes = dict(zip(s.read("id").tolist(), s.read("source_hash").tolist()))
    assert len(done_ids) == 3
    for sample in done_ids:  # recorded always, without --check-source
        assert hashes[sample] == file_digest(tvhi_source / f"{sample}.avi")

    clip = tvhi_source / f"{done_ids[0]}.avi"
    original = clip.read_bytes()
    replaced = bytearray(original)
    replaced[len(replaced) // 2:] = bytes(len(replaced) - len(replaced) // 2)  # same size
    clip.write_bytes(bytes(replaced))

    plain = flowstore_cli(*args)  # names and sizes only: not noticed (README says so)
    assert plain.returncode == 0 and "0 computed, 3 already done" in plain.stdout
    line = assert_one_line_error(flowstore_cli(*args, "--check-source"))
    assert f"source file '{clip.name}' changed since it was written" in line
    assert "same size, other content" in line

    clip.write_bytes(original)
    again = flowstore_cli(*args, "--check-source")
    assert again.returncode == 0, again.stderr

    clip.unlink()  # gone: was said to have "changed"
    line = assert_one_line_error(flowstore_cli(*args))
    assert f"source file '{clip.name}' is gone since it was written" in line


def test_check_source_on_a_store_that_lost_its_hash_chunk_says_so(tvhi_source, tmp_path):
    """A done sample without a recorded digest is a store an older flowstore wrote (format 1
    kept none for some) or one that lost `source_hash`'s chunk (zarr reads it as "", without
    an error); the refusal said only the first, of a store this flowstore had written."""
    store = tmp_path / "s.zarr"
    args = ("build", "tvhi", "--source", tvhi_source, "--store", store, *TINY_BUILD, "-q",
            "--max-per-split", "1")
    assert flowstore_cli(*args).returncode == 0
    chunk_file(store, "source_hash", 0).unlink()
    line = assert_one_line_error(flowstore_cli(*args, "--check-source"))
    assert "has no recorded hash of source file" in line
    assert "(an older flowstore wrote none, or the store lost a chunk of it)" in line


@pytest.fixture
def synced(monkeypatch) -> list[str]:
    """The path of each file or folder this process fsyncs from here on (still fsynced)."""
    paths: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return paths


_FSYNC_REFUSED = """
import errno, os, stat, sys
real_fsync, refused = os.fsync, sys.argv[1]

def fsync(fd):  # (a file system that syncs no file, or no folder; a disk's error)
    if refused == "every" or stat.S_ISDIR(os.fstat(fd).st_mode):
        raise OSError(errno.EIO if refused == "eio" else errno.EINVAL, "refused")
    real_fsync(fd)

os.fsync = fsync
from flowstore.cli import main
sys.argv = ["flowstore", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("refused", ["every", "folders", "eio"])
def test_fsync_a_file_system_refuses_is_one_line_and_a_folder_it_cannot_sync_is_passed_over(
        tiny_tvhi_source, tmp_path, suffix, refused):
    """`--fsync` where the file system syncs nothing (EINVAL) or the disk fails (EIO) was
    "error: [Errno 22] Invalid argument": it names the file and what to do now. A folder that
    cannot be synced (EINVAL: some file systems sync no folder) is passed over, as PostgreSQL
    does: its files are synced all the same. The next build, without --fsync, builds it."""
    import subprocess
    import sys

    store = tmp_path / f"s{suffix}"
    build = ["build", "tvhi", "--source", str(tiny_tvhi_source), "--store", str(store),
             *TINY_BUILD, "-q"]
    out = subprocess.run([sys.executable, "-c", _FSYNC_REFUSED, refused, *build, "--fsync"],
                         capture_output=True, text=True, timeout=120)
    if refused == "folders":
        assert out.returncode == 0 and out.stderr == "", out.stderr
        return
    line = assert_one_line_error(out)
    assert line.startswith(f"error: --fsync: '{tmp_path}") and line.endswith(
        " cannot be synced to its disk (refused); build without --fsync, or on another disk"), \
        line
    assert flowstore_cli(*build).returncode == 0
    assert flowstore_cli("verify", str(store)).returncode == 0


def test_repair_passes_fsync_through_and_verify_alone_refuses_it(tiny_tvhi_source, tmp_path,
                                                                 synced):
    from flowstore.verify import repair

    store = tmp_path / "s.zarr"
    _build(tiny_tvhi_source, store)
    with open_store(store) as s:
        index = int(s.read("done").nonzero()[0][0])
        sample = str(s.read("id")[index])
    assert repair(store, tiny_tvhi_source, [sample], fsync=True).repaired == [sample]
    assert chunk_and_folders(store, "flow", index) <= set(synced)
    line = assert_one_line_error(flowstore_cli("verify", store, "--fsync"))
    assert "--fsync applies to --repair only" in line


def test_fsync_on_the_command_line_reaches_the_build_and_the_repair(tiny_tvhi_source, tmp_path,
                                                                     synced, monkeypatch):
    """The tests above call the API; the CLI could still drop `--fsync` on its way to it (a
    power cut would then lose samples marked done). In-process, so os.fsync can be watched."""
    from typer.testing import CliRunner

    from flowstore import malloc_tuning
    from flowstore.cli import app

    # the build tunes malloc for its process: not for the rest of this test session's
    monkeypatch.setattr(malloc_tuning, "keep_freed_memory", lambda *args: True)
    store = tmp_path / "s.zarr"

    def build_done(*options: str) -> set[int]:
        built = CliRunner().invoke(app, ["build", "tvhi", "--source", str(tiny_tvhi_source),
                                         "--store", str(store), *TINY_BUILD, *options, "-q"])
        assert built.exit_code == 0, built.output
        with open_store(store) as s:
            return set(s.read("done").nonzero()[0])

    first = build_done("--max-per-split", "1")
    assert len(first) == 3 and synced == []  # no --fsync, no fsync
    done = sorted(build_done("--max-per-split", "2", "--fsync") - first)
    assert done  # (a split of the tiny source has one sample only)
    for index in done:
        assert chunk_and_folders(store, "flow", index) <= set(synced), index

    chunk_file(store, "flow", done[0]).write_bytes(b"damaged")
    synced.clear()
    repaired = CliRunner().invoke(app, ["verify", str(store), "--repair", "--source",
                                        str(tiny_tvhi_source), "--fsync", "-q"])
    assert repaired.exit_code == 0, repaired.output
    assert "repaired 1 of 1" in repaired.stdout
    assert chunk_and_folders(store, "flow", done[0]) <= set(synced)
