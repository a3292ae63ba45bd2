"""`flowstore build --reuse-from OLD`: samples another store holds are copied, not computed,
when their id, parameters, OpenCV, arrays and source bytes are the same; the store that results
is the one a build from scratch writes, and anything else in OLD is refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from flowstore.store import open_store
from tests.conftest import assert_one_line_error, chunk_file, flowstore_cli

BUILD = ("--size", "32", "--steps", "4", "-q")


def _contents(path: Path) -> dict:
    """Every sample's id, done, checksum, source hash and arrays."""
    with open_store(path) as store:
        ids = store.read("id").tolist()
        out = {name: store.read(name).tolist() for name in ("id", "done", "checksum",
                                                            "source_hash", "split", "label")}
        out["arrays"] = {name: [store.read(name, k) for k in range(len(ids))]
                         for name in ("middle_frame", "frames", "flow")}
        out["fingerprint"] = store.attrs["fingerprint"]
    return out


def _same(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k != "arrays"} == \
        {k: v for k, v in b.items() if k != "arrays"}
    for name, samples in a["arrays"].items():
        for left, right in zip(samples, b["arrays"][name], strict=True):
            np.testing.assert_array_equal(left, right)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A folder of 6 clips of no class (`flowstore synth clips`), written once: read-only (a
    test that changes clips changes a copy)."""
    source = tmp_path_factory.mktemp("clips") / "src"
    out = flowstore_cli("synth", "clips", source, "--classes", "2", "--clips-per-class", "3")
    assert out.returncode == 0, out.stderr
    return source


@pytest.fixture(scope="module")
def built_old(clips, tmp_path_factory) -> Path:
    """`flowstore build` of `clips` (BUILD), made once; tests that refuse it take a copy."""
    old = tmp_path_factory.mktemp("old") / "old.zarr"
    assert flowstore_cli("build", "clips", "--source", clips, "--store", old, *BUILD).returncode == 0
    return old


def test_a_grown_source_reuses_what_an_older_store_holds(clips, tmp_path):
    """After OLD was built, a clip was replaced (same name, other bytes), one added, one moved
    to another folder (another id, the same bytes) and one copied under a new name: a new
    store, of the other backend, copies the 6 whose bytes OLD extracted, whatever their id,
    computes the 2 others, and holds what a build from scratch holds, byte for byte; OLD is
    untouched."""
    old = tmp_path / "old.zarr"
    assert flowstore_cli("build", "clips", "--source", clips, "--store", old, *BUILD).returncode == 0
    before = _contents(old)
    others = tmp_path / "others"  # clips of other bytes than any of OLD's
    assert flowstore_cli("synth", "clips", others, "--classes", "1", "--clips-per-class", "3",
                         "--seed", "1").returncode == 0
    grown = Path(shutil.copytree(clips, tmp_path / "grown"))
    shutil.copyfile(others / "clip_000.avi", grown / "clip_000.avi")  # replaced
    shutil.copyfile(others / "clip_002.mkv", grown / "new_clip.mkv")  # added
    (grown / "moved").mkdir()
    (grown / "more" / "clip_001.MP4").rename(grown / "moved" / "renamed.MP4")
    shutil.copyfile(grown / "clip_004.avi", grown / "copy_of_4.avi")

    new = tmp_path / "new.h5"
    built = flowstore_cli("build", "clips", "--source", grown, "--store", new, *BUILD,
                          "--reuse-from", old)
    assert built.returncode == 0, built.stderr
    assert (f"2 computed, 6 reused from {old}, 0 already done, 0 failed of 8 selected"
            in built.stdout)
    scratch = tmp_path / "scratch.zarr"
    assert flowstore_cli("build", "clips", "--source", grown, "--store", scratch,
                         *BUILD).returncode == 0
    _same(_contents(new), _contents(scratch))
    _same(_contents(old), before)
    assert flowstore_cli("verify", new, "-q").returncode == 0


def test_a_task_hashes_its_source_file_once_and_compares_every_candidate(clips, tmp_path,
                                                                        monkeypatch):
    """A task is sent the OLD samples whose file had its size; it hashes its own file once,
    copies from the candidate of that hash (not the first), and, when none matches, extracts
    and records that same hash (it hashed the file again before)."""
    from flowstore import reuse as reuse_module
    from flowstore import worker
    from flowstore.worker import StoreKey, extract_and_write
    from flowstore.params import VideoParams

    old = tmp_path / "old.zarr"
    assert flowstore_cli("build", "clips", "--source", clips, "--store", old, *BUILD).returncode == 0
    with open_store(old) as store:
        ids = store.read("id").tolist()
        hashes, checksums = store.read("source_hash"), store.read("checksum")
        store_id = store.attrs["store_id"]
    k = ids.index("clip_004")
    candidates = tuple(reuse_module.Candidate(j, str(hashes[j]), str(checksums[j]))
                       for j in (ids.index("clip_000"), k))
    hashed = []
    digest = reuse_module.file_digest
    monkeypatch.setattr(reuse_module, "file_digest", lambda p: hashed.append(p) or digest(p))
    monkeypatch.setattr(worker, "file_digest", lambda p: hashed.append(p) or digest(p))
    new = tmp_path / "new.zarr"
    assert flowstore_cli("build", "clips", "--source", clips, "--store", new, *BUILD,
                         "--max-per-split", "1").returncode == 0  # (a store to write into)
    with open_store(new) as store:
        key = StoreKey(str(new), str(store.attrs["store_id"]))
    arrays, params = ("middle_frame", "frames", "flow"), VideoParams(size=32, steps=4)
    for source, expected in ((clips / "clip_004.avi", True), (clips / "clip_002.mkv", False)):
        hashed.clear()
        reuse = reuse_module.ReuseSource(str(old), store_id, candidates, arrays)
        outcome = extract_and_write(key, "clips", params, str(source), 0, reuse)
        assert outcome.reason is None and outcome.reused is expected
        assert hashed == [str(source)] and outcome.source_hash == digest(source)


def test_a_fifo_or_device_in_a_clips_place_is_not_hashed(built_old, tmp_path):
    """A FIFO (or a link to /dev/zero) named like a clip OLD holds: its hash read forever, a
    `--reuse-from` build that never ended, where the same build without it failed the sample
    ("video file is not a regular file"). It is not reused, and not hashed."""
    import os
    import threading

    from flowstore import reuse as reuse_module

    with open_store(built_old) as store:
        hashes, checksums = store.read("source_hash"), store.read("checksum")
        store_id = store.attrs["store_id"]
    candidates = (reuse_module.Candidate(0, str(hashes[0]), str(checksums[0])),)
    reuse = reuse_module.ReuseSource(str(built_old), store_id, candidates,
                                     ("middle_frame", "frames", "flow"))
    fifo = tmp_path / "clip_000.avi"
    os.mkfifo(fifo)
    zero = tmp_path / "clip_001.avi"
    zero.symlink_to("/dev/zero")
    for place in (fifo, zero):
        answers = []
        reader = threading.Thread(target=lambda: answers.append(
            reuse_module.reused_arrays(reuse, str(place))), daemon=True)
        reader.start()
        reader.join(timeout=20)
        if reader.is_alive() and place == fifo:
            with open(fifo, "wb"):  # (lets the blocked open go on: the thread ends)
                pass
        assert answers == [reuse_module.Copied(None, None)], place


def test_a_store_put_in_the_older_ones_place_after_the_plan_is_not_read(built_old, clips,
                                                                        tmp_path):
    """The tasks read OLD by its location, and only a store of the id the plan read there:
    another put in its place since (another build's `--overwrite`) is not read, its samples
    extracted instead (a smaller one ended the task in zarr's BoundsCheckError)."""
    import zarr

    from flowstore import reuse as reuse_module
    from flowstore.store.checksum import file_digest

    old = Path(shutil.copytree(built_old, tmp_path / "old.zarr"))
    with open_store(old) as store:
        hashes, checksums = store.read("source_hash"), store.read("checksum")
        store_id = store.attrs["store_id"]
    clip = next(path for path in sorted(clips.rglob("*")) if path.is_file()
                and file_digest(path) == hashes[0])
    reuse = reuse_module.ReuseSource(str(old), store_id,
                                     (reuse_module.Candidate(0, str(hashes[0]),
                                                             str(checksums[0])),),
                                     ("middle_frame", "frames", "flow"))
    try:
        assert reuse_module.reused_arrays(reuse, str(clip)).arrays is not None  # (OLD: copied)
    finally:
        reuse_module.close_readers()
    zarr.open_group(str(old), mode="r+").attrs["store_id"] = "another"  # the same bytes
    try:
        assert reuse_module.reused_arrays(reuse, str(clip)) == \
            reuse_module.Copied(None, str(hashes[0]))
    finally:
        reuse_module.close_readers()


def test_a_damaged_sample_of_the_older_store_is_computed_not_copied(clips, tmp_path):
    """A sample whose arrays no longer match OLD's checksum of them (a chunk edited) is
    extracted again; the others are copied."""
    old = tmp_path / "old.zarr"
    assert flowstore_cli("build", "clips", "--source", clips, "--store", old, *BUILD).returncode == 0
    with open_store(old) as store:
        flow = store.read("flow", 2)
    with open_store(old, "r+") as store:  # readable, other values: only the checksum sees it
        store.write("flow", 2, (flow + 1).astype(flow.dtype))
        store.flush()
    new = tmp_path / "new.zarr"
    built = flowstore_cli("build", "clips", "--source", clips, "--store", new, *BUILD,
                          "--reuse-from", old)
    assert built.returncode == 0 and "1 computed, 5 reused" in built.stdout, built.stdout
    scratch = tmp_path / "scratch.zarr"
    assert flowstore_cli("build", "clips", "--source", clips, "--store", scratch,
                         *BUILD).returncode == 0
    _same(_contents(new), _contents(scratch))
    garbage = chunk_file(old, "frames", 3)  # unreadable: extracted too, not a failure
    garbage.write_bytes(b"\x07" * len(garbage.read_bytes()))
    again = tmp_path / "again.zarr"
    built = flowstore_cli("build", "clips", "--source", clips, "--store", again, *BUILD,
                          "--reuse-from", old)
    assert built.returncode == 0 and "2 computed, 4 reused" in built.stdout, built.stdout
    _same(_contents(again), _contents(scratch))


@pytest.mark.parametrize("other, message", [
    (("--size", "16"), "was built with other parameters (size: store 32 vs asked 16): its "
                       "samples are not this build's"),
    (("--store-itself",), "is the store being built; name another store"),
    (("--missing",), "missing.zarr"),
    (("--opencv",), "was extracted with OpenCV 4.0.1 and this build extracts with OpenCV "),
    (("--no-opencv",), "records no OpenCV release (made by an older flowstore): its samples "
                       "cannot be told to be this build's"),
    (("--damaged",), "--reuse-from: store '{tmp}/old.zarr' is damaged: array 'source_hash' "
                     "cannot be read"),
    (("--format-1",), "is of flowstore format 1, which records no OpenCV release: its samples "
                      "cannot be told to be this build's"),
    (("--no-frames",), "holds no array 'frames' of samples of shape (4, 32, 32, 3) and dtype "
                       "uint8 (another dataset kind or layout)"),
])
def test_a_store_whose_samples_are_not_this_builds_is_refused_in_one_line(clips, built_old,
                                                                           tmp_path, other,
                                                                           message):
    old = Path(shutil.copytree(built_old, tmp_path / "old.zarr"))  # the build's store, a copy
    lock = built_old.parent / f".{built_old.name}.lock"
    if lock.exists():
        shutil.copy2(lock, tmp_path / lock.name)
    new, reuse = tmp_path / "new.zarr", old
    args = ["--size", "32"]
    if other == ("--store-itself",):
        new = old
    elif other == ("--missing",):
        reuse = tmp_path / "missing.zarr"
    elif other in {("--opencv",), ("--no-opencv",)}:  # the same parameters, other bytes
        with open_store(old, "r+") as store:
            opencv = "4.0.1" if other == ("--opencv",) else None
            store.update_attrs({"software": {**store.attrs["software"], "opencv": opencv}})
    elif other == ("--damaged",):  # read before anything is made, not after
        chunk = chunk_file(old, "source_hash", 0)
        chunk.write_bytes(b"\x07" * len(chunk.read_bytes()))
    elif other == ("--format-1",):  # (a store of flowstore before format 2)
        shutil.rmtree(old)
        shutil.copytree(Path(__file__).parent / "fixtures" / "format1" / "format1.zarr", old)
    elif other == ("--no-frames",):  # (a partial copy)
        shutil.rmtree(old / "frames")
    else:
        args = list(other)
    result = flowstore_cli("build", "clips", "--source", clips, "--store", new, *args,
                           "--steps", "4", "-q", "--reuse-from", reuse)
    assert message.replace("{tmp}", str(tmp_path)) in assert_one_line_error(result)
    if new != old:
        assert not new.exists()  # refused before the new store was made


@pytest.mark.parametrize("spelling", ["{tmp}/./old.zarr", "{tmp}/old.zarr/", "link.zarr"])
def test_the_store_being_built_named_otherwise_is_refused_and_kept(clips, built_old, tmp_path,
                                                                    spelling):
    """`--reuse-from` naming the store being built by another spelling (a `./`, a trailing
    slash, a link to it): with `--overwrite`, the store asked to be reused would be deleted
    first and its samples all computed again."""
    old = Path(shutil.copytree(built_old, tmp_path / "old.zarr"))
    lock = built_old.parent / f".{built_old.name}.lock"
    if lock.exists():
        shutil.copy2(lock, tmp_path / lock.name)
    if spelling == "link.zarr":
        (tmp_path / spelling).symlink_to(old)
    reuse = spelling.format(tmp=tmp_path) if "{tmp}" in spelling else tmp_path / spelling
    before = _contents(old)
    result = flowstore_cli("build", "clips", "--source", clips, "--store", old, *BUILD,
                           "--overwrite", "--reuse-from", reuse)
    assert "is the store being built; name another store" in assert_one_line_error(result)
    _same(_contents(old), before)


def test_the_candidates_are_the_same_id_first_then_files_of_its_size(monkeypatch):
    """A task is sent OLD's sample of its id, then OLD's samples whose file had its size, one
    per content hash and at most `MAX_CANDIDATES` in all (many files share a size where frames
    are stored uncompressed); a sample of no candidate is not sent any (it is extracted)."""
    import contextlib

    from flowstore import reuse as reuse_module

    count = reuse_module.MAX_CANDIDATES + 4
    old_ids = [f"old_{k}" for k in range(count)] + ["same", "twin"]
    hashes = np.array([f"h{k}" for k in range(count)] + ["h_same", "h0"])  # twin = old_0's
    sizes = np.array([100] * count + [7, 100])

    class Old:
        attrs = {"store_id": "s"}

    monkeypatch.setattr(reuse_module, "open_store",
                        lambda *args: contextlib.nullcontext(Old()))
    monkeypatch.setattr(reuse_module, "_refuse_other_samples", lambda *args: None)
    monkeypatch.setattr(reuse_module, "_reusable_samples", lambda old: (
        {sample: k for k, sample in enumerate(old_ids)}, hashes,
        np.array([f"c{k}" for k in range(len(old_ids))]), sizes))
    plan = reuse_module.plan_reuse("old.zarr", params={}, specs=(), opencv="",
                                   ids=["same", "new", "other"],
                                   sizes=np.array([100, 100, 55]), todo=np.arange(3),
                                   absolute="/old.zarr")
    same = [c.index for c in plan[0].candidates]
    assert same[0] == old_ids.index("same") and len(same) == reuse_module.MAX_CANDIDATES
    assert [c.source_hash for c in plan[1].candidates] == [f"h{k}" for k in range(
        reuse_module.MAX_CANDIDATES)]  # (twin's hash is old_0's: sent once)
    assert plan[0].candidates[1] == reuse_module.Candidate(0, "h0", "c0")
    assert 2 not in plan


def test_an_older_store_rebuilt_with_other_parameters_after_its_check_is_refused(
        clips, built_old, tmp_path, monkeypatch):
    """OLD is checked before the new store is made, and read for the plan after, under the new
    store's lock: another build's `--overwrite` of OLD with other parameters (frames cropped,
    not stretched: the same shapes, other values) in between had its samples copied into the
    new store as this build's. They are checked again on the handle the plan reads."""
    from flowstore import build as build_module
    from flowstore.build import BuildConfig, build
    from flowstore.errors import StoreMismatchError
    from flowstore.params import VideoParams

    old = Path(shutil.copytree(built_old, tmp_path / "old.zarr"))
    make_folder = build_module._make_store_folder

    def rebuilt_in_between(store):
        rebuilt = flowstore_cli("build", "clips", "--source", clips, "--store", old, *BUILD,
                                "--resize", "center-crop", "--overwrite")
        assert rebuilt.returncode == 0, rebuilt.stderr
        make_folder(store)

    monkeypatch.setattr(build_module, "_make_store_folder", rebuilt_in_between)
    new = tmp_path / "new.zarr"
    config = BuildConfig("clips", clips, new, VideoParams(size=32, steps=4), progress=False,
                         reuse_from=old)
    with pytest.raises(StoreMismatchError, match="was built with other parameters "
                                                 r"\(resize: store 'center-crop' vs asked"):
        build(config)
    with open_store(new) as store:
        assert not store.read("done").any()  # nothing copied, nothing computed
