"""`flowstore build tvhi`: values, reuse, resume after SIGKILL, bad input, real clips."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import patch

import h5py
import numpy as np
import pytest
import zarr

from flowstore.build import BuildConfig, build
from flowstore.params import EXTRACTION_VERSION, VideoParams
from flowstore.store import failures, open_store
from flowstore.synth.tvhi import SynthTVHIConfig, write_avi, write_synthetic_tvhi
from tests.conftest import TINY_BUILD, assert_one_line_error, chunk_file, flowstore_cli
from tests.reference import reference_tvhi

FEATURES = ("middle_frame", "frames", "flow")


def _build(source, store, **kwargs):
    params = VideoParams(size=kwargs.pop("size", 32), steps=kwargs.pop("steps", 4))
    return build(BuildConfig(dataset="tvhi", source=source, store=store, params=params,
                             progress=False, workers=kwargs.pop("workers", 2), **kwargs))


def _arrays(path) -> dict[str, np.ndarray]:
    with open_store(path) as store:
        return {name: store.read(name) for name in store.array_names()}


def test_store_holds_what_the_contract_gives_in_both_backends(tiny_tvhi_source, tmp_path):
    stores = {}
    for suffix in (".zarr", ".h5"):
        result = _build(tiny_tvhi_source, tmp_path / f"s{suffix}", size=40, steps=5)
        assert result.ok and result.computed == 16
        stores[suffix] = _arrays(tmp_path / f"s{suffix}")
    zarr_arrays, h5_arrays = stores[".zarr"], stores[".h5"]
    assert zarr_arrays.keys() == h5_arrays.keys() >= {"id", "label", "split", "done", *FEATURES}
    for name in zarr_arrays:  # the two backends hold the same values
        np.testing.assert_array_equal(zarr_arrays[name], h5_arrays[name])
    ids = list(zarr_arrays["id"])
    assert zarr_arrays["done"].all()
    for clip in ("handShake_0001", "highFive_0004", "kiss_0002"):
        i = ids.index(clip)
        want = reference_tvhi(tiny_tvhi_source / f"{clip}.avi", size=40, steps=5)
        np.testing.assert_array_equal(zarr_arrays["middle_frame"][i], want["middle_frame"])
        np.testing.assert_array_equal(zarr_arrays["frames"][i], want["frames"])
        np.testing.assert_allclose(zarr_arrays["flow"][i].astype(np.float32),
                                   want["flow"].astype(np.float32), rtol=1e-3, atol=1e-3)
    assert zarr_arrays["flow"].dtype == np.float16 and zarr_arrays["flow"].shape == (16, 5, 40, 40, 2)


def test_plain_zarr_and_h5py_read_a_built_store(tiny_tvhi_source, tmp_path):
    _build(tiny_tvhi_source, tmp_path / "s.zarr", max_per_split=1)
    _build(tiny_tvhi_source, tmp_path / "s.h5", max_per_split=1)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group.attrs["dataset"] == "tvhi" and group.attrs["classes"][0] == "handShake"
    assert group["flow"].chunks == (1, 4, 32, 32, 2)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        np.testing.assert_array_equal(f["middle_frame"][0], group["middle_frame"][0])
        assert f["done"][:].sum() == 3


def test_max_per_split_builds_the_first_rows_and_the_rest_later(tiny_tvhi_source, tmp_path):
    store = tmp_path / "s.zarr"
    first = _build(tiny_tvhi_source, store, max_per_split=1)
    assert (first.selected, first.computed) == (3, 3)
    with open_store(store) as s:
        assert s.read("done").sum() == 3 and s.num_samples == 16
    rest = _build(tiny_tvhi_source, store)
    assert (rest.computed, rest.already_done) == (13, 3)


def test_a_resume_that_changes_the_fingerprint_says_so(tiny_tvhi_source, tmp_path):
    """A source file not built yet that changed size (a clip downloaded again) changes the
    store's fingerprint on a resume that computes nothing: the trainers' runs made on the store
    before stopped matching it without a word."""
    source = tmp_path / "src"
    shutil.copytree(tiny_tvhi_source, source)
    store = tmp_path / "s.zarr"
    args = ["build", "tvhi", "--source", source, "--store", store, *TINY_BUILD,
            "--max-per-split", "1", "-q"]
    assert flowstore_cli(*args).returncode == 0
    again = flowstore_cli(*args)
    assert again.returncode == 0 and again.stderr == ""  # nothing changed: nothing said
    with open_store(store) as opened:
        was = opened.attrs["fingerprint"]
        pending = [i for i, done in zip(opened.read("id"), opened.read("done")) if not done]
    with open(source / f"{pending[0]}.avi", "ab") as clip:
        clip.write(b"downloaded again")
    changed = flowstore_cli(*args)
    assert changed.returncode == 0 and "0 computed, 3 already done" in changed.stdout
    assert changed.stderr.splitlines() == [
        f"warning: the store's fingerprint changed from {was[:12]}: the source's files (names "
        f"or sizes) are not those of its last build; trainers runs made on it before are of "
        f"the old fingerprint, no longer taken as this store's"]
    # the store records the new one (the trainers match runs against it), said once only
    with open_store(store) as opened:
        assert opened.attrs["fingerprint"] not in ("", was)
    after = flowstore_cli(*args)
    assert after.returncode == 0 and after.stderr == ""


def test_a_source_file_that_changes_while_it_is_read_fails_and_is_computed_again(
        tvhi_source, tmp_path, monkeypatch):
    """A clip still being written (a download under way) grew while its task decoded it:
    stored, its sample would hold frames of the part read under the size and hash of the file
    after, which no later build, nor `--check-source`, could tell. It fails instead, and the
    next build computes it."""
    from flowstore.datasets.tvhi import TVHI

    extract = TVHI.extract

    def growing(self, path, params):
        arrays = extract(self, path, params)
        if Path(path).stem == "kiss_0004":
            with open(path, "ab") as clip:
                clip.write(bytes(1000))
        return arrays

    monkeypatch.setattr(TVHI, "extract", growing)
    store = tmp_path / "s.zarr"
    result = _build(tvhi_source, store)
    assert result.failures == {"kiss_0004": "the source file changed while it was being read"}
    monkeypatch.undo()
    again = _build(tvhi_source, store)
    assert again.ok and again.computed == 1


def test_same_command_is_a_fast_no_op_and_other_parameters_are_refused(tiny_tvhi_source, tmp_path):
    store = tmp_path / "s.zarr"
    args = ["build", "tvhi", "--source", tiny_tvhi_source, "--store", store, *TINY_BUILD, "-q"]
    assert flowstore_cli(*args).returncode == 0
    before = _arrays(store)
    written = {path: path.stat().st_mtime_ns for path in store.rglob("*")}
    started = time.perf_counter()
    again = flowstore_cli(*args)
    assert again.returncode == 0 and "0 computed, 16 already done" in again.stdout
    assert time.perf_counter() - started < 15
    # nothing written (it rewrote the root's zarr.json, and a read-only store refused it:
    # "Permission denied: '.../zarr.<uuid>.partial'")
    assert {path: path.stat().st_mtime_ns for path in store.rglob("*")} == written
    line = assert_one_line_error(flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source,
                                               "--store", store, "--size", "48", "--steps", "4"))
    assert "other parameters" in line and "size: store 32 vs asked 48" in line and "--overwrite" in line
    for name, value in _arrays(store).items():  # the refused build touched nothing
        np.testing.assert_array_equal(value, before[name])
    rebuilt = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                            "--size", "48", "--steps", "4", "--overwrite", "-q")
    assert rebuilt.returncode == 0 and "16 computed" in rebuilt.stdout
    with open_store(store) as s:
        assert s.attrs["params"]["size"] == 48 and s.read("middle_frame").shape[1] == 48


def test_a_changed_source_file_of_a_done_sample_is_refused(tvhi_source, tmp_path):
    store = tmp_path / "s.zarr"
    _build(tvhi_source, store)
    write_avi(tvhi_source / "hug_0002.avi", np.zeros((5, 72, 96, 3), np.uint8))
    line = assert_one_line_error(flowstore_cli("build", "tvhi", "--source", tvhi_source,
                                               "--store", store, *TINY_BUILD))
    assert "hug_0002.avi" in line and "changed" in line


@pytest.mark.parametrize("make_bad", ["missing", "empty", "file", "no_clips", "nested"])
def test_a_wrong_source_is_one_line_and_exit_2(tmp_path, tiny_tvhi_source, make_bad):
    source = tmp_path / "src"
    if make_bad == "empty":
        source.mkdir()
    elif make_bad == "file":
        source.write_text("not a folder")
    elif make_bad == "no_clips":
        source.mkdir()
        (source / "notes.txt").write_text("hello")
    elif make_bad == "nested":  # clips one level too deep, as after unpacking into a subfolder
        shutil.copytree(tiny_tvhi_source, source / "tvhi")
    line = assert_one_line_error(flowstore_cli("build", "tvhi", "--source", source, "--store",
                                               tmp_path / "s.zarr", *TINY_BUILD))
    assert str(source) in line
    assert not (tmp_path / "s.zarr").exists()


def test_cli_usage_errors_are_one_line(tmp_path, tiny_tvhi_source):
    out = flowstore_cli("build", "nosuch", "--source", tiny_tvhi_source, "--store", tmp_path / "s.zarr")
    assert "known datasets: " in assert_one_line_error(out) and "tvhi" in out.stderr
    out = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", tmp_path / "s.npy")
    assert ".zarr" in assert_one_line_error(out)
    out = flowstore_cli("build", "tvhi", "--store", tmp_path / "s.zarr")
    assert "--synthetic" in assert_one_line_error(out)
    out = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store",
                        tmp_path / "s.zarr", "--flow-dtype", "int8")
    assert "flow_dtype" in assert_one_line_error(out)


def test_bad_clips_are_recorded_and_retried_without_stopping_the_others(tvhi_source, tmp_path, suffix):
    (tvhi_source / "handShake_0001.avi").write_bytes(np.random.default_rng(0).bytes(20_000))
    truncated = tvhi_source / "highFive_0002.avi"
    truncated.write_bytes(truncated.read_bytes()[:4000])
    write_avi(tvhi_source / "hug_0003.avi", np.full((1, 72, 96, 3), 128, np.uint8))
    (tvhi_source / "kiss_0004.avi").unlink()
    store = tmp_path / f"s{suffix}"
    args = ["build", "tvhi", "--source", tvhi_source, "--store", store, *TINY_BUILD, "-q"]
    first = flowstore_cli(*args)
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    assert "12 computed" in first.stdout and "4 failed" in first.stdout
    reasons = dict(re.findall(r"^  (\w+_\d{4}): (.+)$", first.stderr, re.M))
    assert set(reasons) == {"handShake_0001", "highFive_0002", "hug_0003", "kiss_0004"}
    assert "missing" in reasons["kiss_0004"] and "1 decodable frame" in reasons["hug_0003"]
    with open_store(store) as s:
        assert s.read("done").sum() == 12
        assert set(failures(s)) == set(reasons)
    retry = flowstore_cli(*args)  # retries only the four
    assert retry.returncode == 1 and "0 computed, 12 already done, 4 failed" in retry.stdout
    shutil.copy(tvhi_source / "kiss_0002.avi", tvhi_source / "kiss_0004.avi")
    fixed = flowstore_cli(*args)  # a fixed file of a failed sample is picked up
    assert fixed.returncode == 1 and "1 computed, 12 already done, 3 failed" in fixed.stdout
    inspected = flowstore_cli("inspect", store)
    assert "13 done, 3 failed" in inspected.stdout and "handShake_0001:" in inspected.stdout


@pytest.fixture(scope="module")
def slow_source(tmp_path_factory):
    """Clips long enough to kill a build among, written once (the builds only read them)."""
    config = SynthTVHIConfig(videos_per_class=6, negatives=0, min_frames=60, max_frames=90,
                             resolution=(320, 240), seed=5)
    return write_synthetic_tvhi(tmp_path_factory.mktemp("slow") / "slow", config)


def _done_count(store) -> int:
    """How many samples a store being built has marked done, read past flowstore's lock."""
    if store.suffix == ".h5":
        with h5py.File(store, "r", locking=False) as raw:
            return int(raw["done"][:].sum())
    import zarr

    return int(zarr.open_group(store, mode="r")["done"][:].sum())


def _kill_after_four_done(source, store, args) -> None:
    """SIGKILL a build of `store` once it has marked 4 samples done."""
    process = subprocess.Popen([sys.executable, "-m", "flowstore", "build", "tvhi", "--source",
                                str(source), "--store", str(store), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:  # a raw reader beside the running build, only to time the kill: flowstore's own
            # readers refuse an HDF5 store while it is written, and a torn read here is harmless
            if _done_count(store) >= 4:
                break
        except Exception:  # not created yet
            continue
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_sigkill_mid_build_resumes_to_the_uninterrupted_store(tmp_path, suffix, slow_source):
    source = slow_source
    args = ["--size", "128", "--steps", "16", "--workers", "1", "-q"]
    reference = tmp_path / f"reference{suffix}"
    assert flowstore_cli("build", "tvhi", "--source", source, "--store", reference, *args).returncode == 0
    want = _arrays(reference)
    for attempt in range(3):  # (a starved poller, on a loaded machine, saw the build end first)
        store = tmp_path / f"killed{attempt}{suffix}"
        _kill_after_four_done(source, store, args)
        got = _arrays(store)
        done = got["done"]
        if not done.all():
            break
    assert 4 <= done.sum() < len(done), "the kill should land mid-build"
    for name in ("middle_frame", "frames", "flow"):  # every sample marked done is complete
        np.testing.assert_array_equal(got[name][done], want[name][done])
    resumed = flowstore_cli("build", "tvhi", "--source", source, "--store", store, *args)
    assert resumed.returncode == 0
    assert f"{len(done) - done.sum()} computed, {done.sum()} already done" in resumed.stdout
    final = _arrays(store)
    for name, value in want.items():
        np.testing.assert_array_equal(final[name], value)


def test_real_clips_build_with_none_failed(real_tvhi, tmp_path):
    """All 200 real TV-HI class clips (mixed codecs, lying frame counts) at a small size."""
    result = _build(real_tvhi, tmp_path / "real.zarr", size=32, steps=4)
    assert result.failures == {}
    assert result.computed == 200
    with open_store(tmp_path / "real.zarr") as s:
        assert s.read("done").all()
        assert s.read("flow").shape == (200, 4, 32, 32, 2)


# -- issue 12, item 4: the free-space check holds with any number of workers ---------------------
def test_concurrent_writers_never_share_the_free_space_they_saw(tiny_tvhi_source, tmp_path,
                                                                monkeypatch):
    """The disk has room for one sample's write. Four workers extract at once; the first to
    write holds its write open until the three others have looked at the free space. Only one
    write may be in flight at any moment; the others fail with the no-space reason."""
    import collections
    import threading

    from flowstore import worker
    from flowstore.store._zarr import ZarrStore

    sample_bytes = 32 * 32 * 3 + 4 * 32 * 32 * 3 + 4 * 32 * 32 * 2 * 2  # middle, frames, flow
    one_write = 2 * sample_bytes + worker.FREE_SPACE_MARGIN  # what the check asks for
    usage = collections.namedtuple("usage", "total used free")
    checks = []
    monkeypatch.setattr(worker.shutil, "disk_usage",
                        lambda path: checks.append(path) or usage(1 << 40, 0, one_write * 3 // 2))
    lock, in_flight, peak = threading.Lock(), [0], [0]
    real_write = ZarrStore.write_sample

    def slow_write(self, index, arrays, **options):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            deadline = time.monotonic() + 10
            while len(checks) < 4 and time.monotonic() < deadline:  # the others look meanwhile
                time.sleep(0.005)
            real_write(self, index, arrays, **options)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(ZarrStore, "write_sample", slow_write)
    result = _build(tiny_tvhi_source, tmp_path / "s.zarr", workers=4)
    assert len(checks) >= 4
    assert peak[0] == 1, f"{peak[0]} writes were in flight on room for one"
    assert result.failures and result.computed >= 1
    assert result.computed + len(result.failures) == 16
    assert all(reason.startswith("not enough free space") for reason in result.failures.values())


# -- issue 12, item 5: a bug in flowstore is an internal error, never a bad clip ----------------
_BUGGY_BUILD = """
import sys
from flowstore.datasets.tvhi import TVHI
from flowstore.cli import main

real_extract = TVHI.extract

def extract_with_a_bug(self, path, params):
    if path.stem == "hug_0002":
        None.shape  # a flowstore bug: AttributeError
    return real_extract(self, path, params)

TVHI.extract = extract_with_a_bug
sys.argv = ["flowstore", *sys.argv[1:]]
main()
"""


def test_a_bug_in_a_task_is_an_internal_error_with_a_logged_traceback(tvhi_source, tmp_path):
    (tvhi_source / "kiss_0003.avi").write_bytes(b"not a video")  # a bad clip, as before
    store = tmp_path / "s.zarr"
    args = ["build", "tvhi", "--source", str(tvhi_source), "--store", str(store), *TINY_BUILD,
            "-q"]
    out = subprocess.run([sys.executable, "-c", _BUGGY_BUILD, *args], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)  # README: exit 3
    assert "Traceback" not in out.stderr
    assert "14 computed, 0 already done, 1 failed, 1 internal error(s) of 16" in out.stdout
    log = tmp_path / "s.zarr.errors.log"
    assert re.search(r"^internal error: .* tracebacks in " + re.escape(str(log)), out.stderr,
                     re.M), out.stderr
    assert re.search(r"^  hug_0002: AttributeError: .*shape", out.stderr, re.M), out.stderr
    assert re.search(r"^  kiss_0003: cannot open video", out.stderr, re.M), out.stderr
    text = log.read_text()
    assert "sample hug_0002" in text and "Traceback (most recent call last)" in text
    assert "in extract_with_a_bug" in text and "AttributeError" in text
    with open_store(store) as built:  # not recorded as a bad clip: the sample stays pending
        assert set(failures(built)) == {"kiss_0003"}
        done = dict(zip(built.read("id").tolist(), built.read("done").tolist()))
        assert not done["hug_0002"] and sum(done.values()) == 14
    again = flowstore_cli(*args)  # the bug gone, the same command completes the sample
    assert again.returncode == 1 and "1 computed, 14 already done, 1 failed" in again.stdout


def test_a_bug_in_a_repaired_sample_leaves_it_for_verify_to_name(tvhi_source, tmp_path):
    """A repair unmarks its samples first; one whose task meets a bug stays not done, and
    `verify` must still name it (it checks done samples), not pass the store as if the repair
    had nothing left to do; nor is the bug said to be the sample's failure."""
    store = tmp_path / "s.zarr"
    assert flowstore_cli("build", "tvhi", "--source", tvhi_source, "--store", store,
                         *TINY_BUILD, "-q").returncode == 0
    with open_store(store) as built:
        index = built.read("id").tolist().index("hug_0002")
    chunk_file(store, "flow", index).unlink()
    repair = ["verify", str(store), "--repair", "--source", str(tvhi_source), "-q"]
    out = subprocess.run([sys.executable, "-c", _BUGGY_BUILD, *repair], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 3, (out.stdout, out.stderr)
    assert "repaired 0 of 1 bad sample(s)" in out.stdout
    assert "0 still bad, 1 internal error(s)" in out.stdout, out.stdout
    checked = flowstore_cli("verify", store, "-q")
    assert checked.returncode == 1
    assert "  hug_0002: not done: its re-extraction by verify --repair did not finish" in (
        checked.stderr)
    again = flowstore_cli(*repair)  # the bug gone, the same command mends it
    assert again.returncode == 0 and "repaired 1 of 1 bad sample(s)" in again.stdout
    assert flowstore_cli("verify", store, "-q").returncode == 0


def test_an_internal_error_whose_log_cannot_be_written_is_still_told_as_one(tvhi_source,
                                                                            tmp_path):
    """The log's OSError escaped the task callback: the build stopped with exit 2 and the bug
    was lost. Now its traceback goes to stderr, and the build finishes with exit 3."""
    store = tmp_path / "s.zarr"
    log = tmp_path / "s.zarr.errors.log"
    log.mkdir()  # (as a full disk would refuse it)
    args = ["build", "tvhi", "--source", str(tvhi_source), "--store", str(store), *TINY_BUILD,
            "-q"]
    out = subprocess.run([sys.executable, "-c", _BUGGY_BUILD, *args], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)
    assert "15 computed, 0 already done, 0 failed, 1 internal error(s) of 16" in out.stdout
    assert f"cannot write {str(log)!r} (Is a directory); the traceback:" in out.stderr
    assert "in extract_with_a_bug" in out.stderr
    assert re.search(r"^internal error: .* tracebacks above; please report it:", out.stderr,
                     re.M), out.stderr


_BUG_OUTSIDE_A_BUILD = """
import sys
import {module} as target
from {cli} import main

def with_a_bug(*args, **kwargs):
    return None.shape  # a bug: AttributeError

target.{function} = with_a_bug
sys.argv = ["{prog}", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("prog, module, function, args", [
    ("flowstore", "flowstore.estimate", "estimate", ["estimate", "tvhi", "--source", "{source}"]),
    ("trainers", "trainers.report", "table_1", ["report", "{runs}"]),
])
def test_a_bug_outside_a_build_is_an_internal_error_exit_3(prog, module, function, args,
                                                           tvhi_source, tmp_path):
    """It was Python's traceback and exit code 1, which reads as "samples failed"."""
    runs = tmp_path / "runs" / "flow-x"
    runs.mkdir(parents=True)
    (runs / "model.keras").write_bytes(b"")
    (runs / "metrics.json").write_text('{"model": "flow", "store": {"fingerprint": "f"}}')
    code = _BUG_OUTSIDE_A_BUILD.format(module=module, function=function, prog=prog,
                                       cli=f"{prog}.cli")
    out = subprocess.run([sys.executable, "-c", code, *(a.format(source=tvhi_source,
                                                                 runs=runs.parent)
                                                        for a in args)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)
    assert "Traceback (most recent call last)" in out.stderr and "in with_a_bug" in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"internal error: a bug in {prog} (AttributeError: 'NoneType' object has no attribute "
        f"'shape'); please report it with the traceback above")


@pytest.mark.parametrize("where,kind", [
    ("decode", "failure"),  # OpenCV failing on the file's bytes: the clip's problem
    ("flow", "internal"),  # OpenCV failing on frames flowstore made: a bug
    ("write", "failure"),  # the disk failing: the environment's problem, retried next run
    ("extract", "internal"),  # a TypeError in flowstore's own code
])
def test_which_exceptions_are_a_samples_failure_and_which_a_bug(where, kind, tiny_tvhi_source,
                                                                 tmp_path, monkeypatch):
    import cv2

    from flowstore import worker
    from flowstore.extraction import video

    store = tmp_path / "s.zarr"
    _build(tiny_tvhi_source, store, max_per_split=1)

    def raise_(exc):
        def fail(*args, **kwargs):
            raise exc
        return fail

    if where == "decode":
        monkeypatch.setattr(video, "decode_resized", raise_(cv2.error("bad frame")))
    elif where == "flow":
        monkeypatch.setattr(video, "optical_flow", raise_(cv2.error("bad argument")))
    elif where == "write":
        monkeypatch.setattr(worker, "_writer", raise_(OSError(5, "Input/output error")))
    else:
        monkeypatch.setattr(video, "select_frames", raise_(TypeError("a bug")))
    with open_store(store) as built:
        index = built.read("id").tolist().index("kiss_0004")
        key = worker.StoreKey(str(store), built.attrs["store_id"])
    outcome = worker.extract_and_write(key, "tvhi", VideoParams(size=32, steps=4),
                                       str(tiny_tvhi_source / "kiss_0004.avi"), index)
    if kind == "failure":
        assert outcome.reason and outcome.internal_error is None
        assert ("cannot decode kiss_0004.avi" if where == "decode" else "Input/output") \
            in outcome.reason
    else:
        assert outcome.reason is None and "Traceback" in outcome.internal_error


def test_coordinator_cpu_is_the_calling_threads_not_the_workers(tiny_tvhi_source, tmp_path,
                                                                 monkeypatch):
    """`coordinator_cpu_seconds` (what benchmarks/build_scale.py reports per sample) leaves
    out extraction: here each task burns 50 ms of CPU on a worker thread."""
    import time

    from flowstore.extraction import video

    extract = video.extract_video

    def burning(path, params):
        until = time.thread_time() + 0.05
        while time.thread_time() < until:
            pass
        return extract(path, params)

    monkeypatch.setattr(video, "extract_video", burning)
    result = _build(tiny_tvhi_source, tmp_path / "s.zarr")
    assert result.computed == 16
    assert 0 < result.coordinator_cpu_seconds < 16 * 0.05 / 2


def test_threads_get_the_tasks_in_bounded_unoptimized_graphs(monkeypatch):
    """One Dask graph of a whole build grows superlinearly in cost (cull, then the scheduler:
    100,000 samples spent 40 minutes in cull); batches keep it per sample."""
    import dask

    from flowstore import parallel

    monkeypatch.setattr(parallel, "THREAD_BATCH_PER_WORKER", 3)
    graphs: list[tuple[int, bool]] = []
    compute = dask.compute

    def recording(*tasks, **kwargs):
        graphs.append((len(tasks), kwargs.get("optimize_graph", True)))
        return compute(*tasks, **kwargs)

    monkeypatch.setattr(dask, "compute", recording)
    done: list[int] = []
    parallel.run_on_threads(2, lambda i: i * i, [(i,) for i in range(20)], done.append)
    assert sorted(done) == [i * i for i in range(20)]  # every task, reported once
    assert graphs == [(6, False), (6, False), (6, False), (2, False)]

    # the tasks' arguments may be a generator, taken one graph's worth at a time: a list of
    # every sample's arguments was memory per sample held for the whole build
    taken: list[int] = []

    def arguments():
        for i in range(20):
            taken.append(i)
            yield (i,)

    graphs.clear()
    sizes_seen: list[int] = []
    parallel.run_on_threads(2, lambda i: sizes_seen.append(len(taken)), arguments(),
                            lambda _: None)
    assert graphs == [(6, False), (6, False), (6, False), (2, False)]
    assert max(sizes_seen[:6]) == 6  # the first graph ran before the next was taken


def test_a_stop_inside_finished_returns_only_after_the_running_tasks_end():
    """Its caller closes the store once it returns: a task still running would write into a
    closed (or, after `--overwrite`, another) store."""
    import threading
    import time

    from flowstore import parallel

    running, lock = set(), threading.Lock()

    def task(index):
        with lock:
            running.add(index)
        time.sleep(0.2)
        with lock:
            running.discard(index)
        return index

    def stop(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        parallel.run_on_threads(4, task, [(i,) for i in range(40)], stop)
    with lock:
        assert running == set()


#: Ctrl-C arriving while the pool starts a worker thread: `Thread.start` returns into a
#: KeyboardInterrupt, as it does when SIGINT lands in its wait for the new thread.
_CTRL_C_IN_THREAD_START = """
import signal, threading, time
from flowstore import parallel

# as a terminal's Ctrl-C is taken; a parent (a pytest-xdist worker) may have left it ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
real_start = threading.Thread.start

def start(self):
    real_start(self)
    threading.Thread.start = real_start
    signal.raise_signal(signal.SIGINT)
    time.sleep(0.5)  # the KeyboardInterrupt is raised here, before the pool records the thread

threading.Thread.start = start
tasks_seen = []
try:
    parallel.run_on_threads(2, lambda i: time.sleep(0.2), [(i,) for i in range(8)],
                            tasks_seen.append)
except KeyboardInterrupt:
    print("interrupted after", len(tasks_seen), "tasks", flush=True)
"""


def test_ctrl_c_while_a_worker_thread_starts_neither_hangs_nor_is_lost(tmp_path):
    """A KeyboardInterrupt inside `Thread.start` left a started thread the pool had not recorded;
    the interpreter's exit waited for it forever (1 in 10 builds interrupted under load hung).
    Held back while the pool submits, it arrives after, and the process ends."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(_CTRL_C_IN_THREAD_START)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, cwd=str(tmp_path.parent))
    assert result.returncode == 0, result.stderr
    # the interrupt was delivered (not swallowed), before the remaining tasks ran
    assert result.stdout.startswith("interrupted after"), result.stdout
    assert int(result.stdout.split()[2]) < 8


def test_a_store_is_resumed_only_with_the_opencv_that_extracted_it(tiny_tvhi_source, tmp_path,
                                                                    suffix):
    """OpenCV releases extract other bytes from the same clip: a store records the one that
    extracted it, shows it, and refuses a resume (or a repair) with another; a store made
    before this was recorded resumes as before. A cluster worker with another OpenCV fails
    its samples, writing nothing, rather than mix two extractions."""
    import flowstore
    from flowstore.worker import StoreKey, extract_and_write
    from flowstore.errors import StoreMismatchError
    from flowstore.extraction._cv import OPENCV_VERSION
    from flowstore.verify import repair

    store = tmp_path / f"s{suffix}"
    args = ("build", "tvhi", "--source", tiny_tvhi_source, "--store", store, *TINY_BUILD, "-q")
    assert flowstore_cli(*args, "--max-per-split", "1").returncode == 0
    with open_store(store) as s:
        assert s.attrs["software"] == {"flowstore": flowstore.__version__,
                                       "opencv": OPENCV_VERSION}
    assert f"extracted by flowstore {flowstore.__version__}, opencv {OPENCV_VERSION}" in \
        flowstore_cli("inspect", store).stdout
    with open_store(store, "r+") as s:
        s.update_attrs({"software": {"flowstore": "0.0.9", "opencv": "4.0.1"}})
    line = assert_one_line_error(flowstore_cli(*args))
    assert (f"was extracted with OpenCV 4.0.1 and this build would extract with OpenCV "
            f"{OPENCV_VERSION}, which extracts other bytes from the same source: resume it where "
            f"OpenCV 4.0.1 is installed; use --overwrite") in line, line
    with open_store(store) as s:
        first = str(s.read("id")[0])
    with pytest.raises(StoreMismatchError, match="extracted with OpenCV 4.0.1"):
        repair(store, tiny_tvhi_source, [first])

    with open_store(store, "r+") as s:
        s.update_attrs({"software": None})  # as written before it was recorded
    assert flowstore_cli(*args).returncode == 0

    outcome = extract_and_write(StoreKey(str(tmp_path / "none.zarr"), "-"), "tvhi",
                                VideoParams(size=32, steps=4),
                                str(tiny_tvhi_source / "hug_0001.avi"), 0, opencv="4.0.1")
    assert outcome.reason == (f"this worker has OpenCV {OPENCV_VERSION} and the store is "
                              f"extracted with OpenCV 4.0.1") and not outcome.digest
    # (a worker joining later, of a flowstore that extracts otherwise)
    outcome = extract_and_write(StoreKey(str(tmp_path / "none.zarr"), "-"), "tvhi",
                                VideoParams(size=32, steps=4),
                                str(tiny_tvhi_source / "hug_0001.avi"), 0, extraction="0")
    assert outcome.reason == (f"this worker's flowstore extracts as version "
                              f"{EXTRACTION_VERSION} and the store as version 0")


def test_a_cluster_build_extracts_with_its_workers_opencv():
    """On a cluster the workers extract: a store records their OpenCV, not the coordinator's
    (whose other release made every task of a new store fail), and workers of several
    releases are refused before anything is written."""
    from flowstore.build import extraction_opencv
    from flowstore.errors import FlowstoreError
    from flowstore.extraction._cv import OPENCV_VERSION

    workers = {}

    class Cluster:  # what `extraction_opencv` asks of a cluster
        address = "tcp://x:1"

        def on_each_worker(self, fn):
            return workers

    assert extraction_opencv(None) == OPENCV_VERSION
    assert extraction_opencv(Cluster()) == OPENCV_VERSION  # no worker yet
    workers.update({"tcp://a:1": (EXTRACTION_VERSION, "4.0.1"),
                    "tcp://b:1": (EXTRACTION_VERSION, "4.0.1")})
    assert extraction_opencv(Cluster()) == "4.0.1"
    workers["tcp://c:1"] = (EXTRACTION_VERSION, "5.1.0")
    with pytest.raises(FlowstoreError, match="the workers of Dask scheduler 'tcp://x:1' have "
                                             "OpenCV 4.0.1, 5.1.0: a store is extracted with "
                                             "one release"):
        extraction_opencv(Cluster())
    # Workers of a flowstore that extracts otherwise (their middle frame, say) wrote their
    # bytes under this one's extraction version, resumed and verified as one store.
    workers.clear()
    workers["tcp://a:1"] = ("0", OPENCV_VERSION)
    with pytest.raises(FlowstoreError, match=f"the workers of Dask scheduler 'tcp://x:1' run a "
                                             f"flowstore that extracts as version 0, this one "
                                             f"as version {EXTRACTION_VERSION}"):
        extraction_opencv(Cluster())


def test_an_overwrite_through_a_symlink_replaces_the_store_it_names(tiny_tvhi_source, tmp_path,
                                                                    suffix):
    """`--overwrite` of a store named through a symlink (on another disk, say) moved the link
    aside, not the store: Zarr's was left as it was, hidden under another name, and the build
    stopped; HDF5's link became a second store, the real one untouched."""
    real, link = tmp_path / f"real{suffix}", tmp_path / f"link{suffix}"
    assert _build(tiny_tvhi_source, real, steps=4).ok
    link.symlink_to(real)
    result = _build(tiny_tvhi_source, link, steps=2, overwrite=True)
    assert result.ok and result.computed == 16
    assert link.is_symlink() and link.resolve() == real
    with open_store(real) as store:
        assert store.attrs["params"]["steps"] == 2 and store.read("done").all()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [real.name, link.name, f".{real.name}.lock"])


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_build_into_an_empty_folder_or_file_of_the_stores_name_makes_the_store_there(
        tiny_tvhi_source, tmp_path, suffix):
    """`mkdir out.zarr` (or a mount point) and `touch out.h5` first: the build was refused,
    "not a readable flowstore store (GroupNotFoundError ...)", even with --overwrite (found
    by review). Nothing is there to lose: it is no store, and the build makes one."""
    store = tmp_path / f"out{suffix}"
    store.mkdir() if suffix == ".zarr" else store.touch()
    assert "error: no store at " in assert_one_line_error(flowstore_cli("inspect", store))
    assert _build(tiny_tvhi_source, store, steps=4).ok
    with open_store(store) as opened:
        assert opened.read("done").all()


def test_an_overwrite_where_the_store_cannot_be_moved_aside_deletes_it_in_place(
        tiny_tvhi_source, tmp_path, monkeypatch):
    """An overlay mount (a container's image) renames no folder of its lower layer: `--overwrite`
    of a Zarr store there failed "Invalid cross-device link" every time (found by review)."""
    import errno

    import flowstore.store

    store = tmp_path / "s.zarr"
    assert _build(tiny_tvhi_source, store, steps=4).ok
    rename = os.replace

    def overlay(source, target, *args, **kwargs):
        if Path(source) == store and ".removing" in str(target):
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(source))
        return rename(source, target, *args, **kwargs)

    monkeypatch.setattr(flowstore.store.os, "replace", overlay)
    result = _build(tiny_tvhi_source, store, steps=2, overwrite=True)
    assert result.ok and result.computed == 16
    with open_store(store) as opened:
        assert opened.attrs["params"]["steps"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.zarr.lock", "s.zarr"]


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_sample_left_done_with_its_old_failure_is_not_a_failure(tiny_tvhi_source, tmp_path,
                                                                  suffix):
    """The ledger wrote `done` before clearing `failure`: a kill between the two left a sample
    that had failed, then succeeded, done and failed for good (every build said "1 failed, run
    the command again", exit 1, and never retried it: it was done; inspect counted -1 pending).
    `failure` is written first now, and a stale failure of a done sample is cleared."""
    from flowstore.ledger import Ledger

    store = tmp_path / f"s{suffix}"
    config = BuildConfig("tvhi", tiny_tvhi_source, store, VideoParams(size=32, steps=4),
                         progress=False, workers=1)
    assert build(config).ok
    with open_store(store, "r+") as opened:  # the state such a kill left
        reasons = opened.read("failure").astype(object)
        reasons[3] = "video file is truncated"
        opened.write_changed("failure", reasons, [3])
    again = build(config)
    assert again.ok and not again.failures and again.computed == 0
    with open_store(store, "r") as opened:
        assert failures(opened) == {} and opened.read("failure")[3] == ""
    shown = flowstore_cli("inspect", store, "--json")
    assert '"failed": 0' in shown.stdout and '"pending": 0' in shown.stdout

    written = []

    class Recording:
        def write_changed(self, name, values, indices):
            written.append(name)

        def flush(self):
            pass

    ledger = Ledger({name: np.zeros(1, bool if name == "done" else object) for name in
                     ("done", "checksum", "failure", "source_size", "source_hash")})
    ledger.complete(0, "xxh3_128:" + "0" * 32)
    ledger.record_source(0, 1234, "xxh3_128:" + "1" * 32)
    ledger.write(Recording())
    assert written.index("failure") < written.index("done")
    # a sample's checksum and source record go before it is marked done: a kill between them
    # left done samples without them (a lost source_size said as damage, computed again)
    assert max(map(written.index, ("checksum", "source_size", "source_hash"))) < \
        written.index("done")


@pytest.mark.parametrize("stop", [KeyboardInterrupt, "lost scheduler"])
def test_samples_finished_before_a_build_stopped_are_recorded(tiny_tvhi_source, tmp_path,
                                                             monkeypatch, stop):
    """The ledger is written once a second, and was not written when Ctrl-C or a lost
    scheduler stopped the build: every sample finished since (a tiny build: all of them) was
    computed again by the next run, its chunks already on disk."""
    import itertools

    import flowstore.build as build_module
    from flowstore.errors import FlowstoreError

    ran = build_module.run_on_threads

    def five_then_stopped(workers, fn, arguments, finished):
        ran(workers, fn, itertools.islice(arguments, 5), finished)
        raise KeyboardInterrupt if stop is KeyboardInterrupt else FlowstoreError("lost")

    monkeypatch.setattr(build_module, "run_on_threads", five_then_stopped)
    store = tmp_path / "s.zarr"
    config = BuildConfig("tvhi", tiny_tvhi_source, store, VideoParams(size=32, steps=4),
                         progress=False, workers=1)
    with pytest.raises((KeyboardInterrupt, FlowstoreError)):
        build(config)
    with open_store(store, "r") as opened:
        assert int(opened.read("done").sum()) == 5
    monkeypatch.setattr(build_module, "run_on_threads", ran)
    resumed = build(config)
    assert (resumed.computed, resumed.already_done) == (11, 5)


def test_a_kept_handle_refuses_to_write_into_a_store_rebuilt_since(tiny_tvhi_source, tmp_path):
    """A worker keeps a store open between tasks; its task still running after a Ctrl-C'd
    build wrote into the store rebuilt at once with --overwrite: the old layout's chunks into
    the new store's files. The store's id is checked at each write, not only at the open."""
    from flowstore.worker import _OPEN_STORES, StoreKey, _writer
    from flowstore.errors import StoreError

    store = tmp_path / "s.zarr"
    assert _build(tiny_tvhi_source, store, steps=4).ok
    with open_store(store) as opened:
        key = StoreKey(str(store), opened.attrs["store_id"])
    try:
        assert _writer(key) is _writer(key)  # (kept open between tasks)
        assert _build(tiny_tvhi_source, store, steps=2, overwrite=True).ok
        with pytest.raises(StoreError, match="was replaced while this build ran"):
            _writer(key)
        assert key not in _OPEN_STORES
    finally:
        for kept in [k for k in _OPEN_STORES if k.path == str(store)]:
            _OPEN_STORES.pop(kept).close()


# -- a limit of the system's (memory, threads, open files) is neither bad input nor a bug -------
_NO_THREAD_FOR_ZARR = """
import sys, threading
start = threading.Thread.start

def start_unless_zarrs(self):
    if self.name == "zarr_io":  # as under a memory or thread limit
        raise RuntimeError("can't start new thread")
    start(self)

threading.Thread.start = start_unless_zarrs
from flowstore.cli import main
sys.argv = ["flowstore", *sys.argv[1:]]
main()
"""

_OUT_OF_MEMORY_IN_A_TASK = """
import sys
from flowstore.datasets.tvhi import TVHI
from flowstore.cli import main

real_extract = TVHI.extract

def extract_out_of_memory(self, path, params):
    if path.stem == "hug_0002":
        raise MemoryError()
    return real_extract(self, path, params)

TVHI.extract = extract_out_of_memory
sys.argv = ["flowstore", *sys.argv[1:]]
main()
"""

_OUT_OF_MEMORY_IN_FARNEBACK = """
import sys
import cv2
import flowstore.extraction.video as video
from flowstore.cli import main

def farneback_out_of_memory(*args):
    raise cv2.error("std::bad_alloc")  # (what OpenCV says under `ulimit -v`)

video.optical_flow = farneback_out_of_memory
sys.argv = ["flowstore", *sys.argv[1:]]
main()
"""


def test_what_the_system_refuses_is_said_as_its_limit_not_a_bug_nor_a_bad_store(
        tiny_tvhi_source, tmp_path):
    """Under `ulimit -v` a build hung for good at 0% CPU (zarr's loop thread could not start,
    and every later call into zarr waited on a loop nobody ran), read commands called a sound
    store "not a readable flowstore store (RuntimeError: can't start new thread)", and a
    MemoryError was "internal error: a bug in flowstore" or a reason of "MemoryError: " and
    nothing else (found by review)."""
    said = ("the system gave no more {} ({}): raise the limit (ulimit -v, -n, -u) or ask for "
            "less (fewer --workers, a smaller --size)")
    store = tmp_path / "s.zarr"
    build = ["build", "tvhi", "--source", str(tiny_tvhi_source), "--store", str(store),
             *TINY_BUILD, "-q"]

    def flowstore_with(script: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                              text=True, timeout=120)  # (a hang fails here)

    refused = flowstore_with(_NO_THREAD_FOR_ZARR, *build)
    assert assert_one_line_error(refused) == "error: " + said.format(
        "threads", "RuntimeError: can't start new thread")
    assert flowstore_cli(*build).returncode == 0
    for command in ("verify", "inspect"):
        refused = flowstore_with(_NO_THREAD_FOR_ZARR, command, str(store))
        assert assert_one_line_error(refused) == "error: " + said.format(
            "threads", "RuntimeError: can't start new thread"), command
    store2 = tmp_path / "t.zarr"
    out = flowstore_with(_OUT_OF_MEMORY_IN_A_TASK, *build[:5], str(store2), *build[6:])
    assert out.returncode == 1, out.stderr
    assert f"  hug_0002: {said.format('memory', 'MemoryError')}" in out.stderr.splitlines()
    # OpenCV's allocation failing in Farneback, after the clip decoded: an internal error was
    # reported, tracebacks and all, "please report it"
    out = flowstore_with(_OUT_OF_MEMORY_IN_FARNEBACK, *build[:5], str(tmp_path / "u.zarr"),
                         *build[6:])
    assert out.returncode == 1 and "internal error" not in out.stderr, out.stderr
    assert f"  16 x {said.format('memory', 'cv2.error: std::bad_alloc')}" in out.stderr, \
        out.stderr


_FEW_DESCRIPTORS_LEFT = """
import os, resource, sys
from flowstore.cli import main
import h5py, zarr  # (what any command imports, before the limit)

lowest_free = os.open(os.devnull, os.O_RDONLY)
os.close(lowest_free)
resource.setrlimit(resource.RLIMIT_NOFILE,
                   (lowest_free + int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
sys.argv = ["flowstore", *sys.argv[2:]]
main()
"""


def test_a_descriptor_limit_met_anywhere_is_one_line_that_says_to_raise_it(tiny_tvhi_source,
                                                                          tmp_path):
    """`ulimit -n` met while a command opens a store: read commands said "cannot open store
    ...: Too many open files", a build "Too many open files: '.../source_hash/zarr.json'" (as if
    that file were at fault), and where zarr's event loop found no descriptor for its
    self-pipe, an "Exception ignored" traceback and two "never awaited" warnings followed the
    error (found by review). With 1 to 4 descriptors left past the imports, each command either
    works or says the one limit line; a store a refused build began is built by the next."""
    said = re.compile(r"^error: the system gave no more open files \(OSError: \[Errno 24\] .*\)"
                      r": raise the limit \(ulimit -v, -n, -u\) or ask for less")
    store = tmp_path / "s.zarr"
    build = ["build", "tvhi", "--source", str(tiny_tvhi_source), "--store", str(store),
             *TINY_BUILD, "-q"]
    assert flowstore_cli(*build).returncode == 0
    refused = set()
    for left in range(1, 5):
        for command in (["inspect", str(store)], ["verify", str(store)],
                        [*build[:5], str(tmp_path / f"b{left}.zarr"), *build[6:]]):
            out = subprocess.run([sys.executable, "-c", _FEW_DESCRIPTORS_LEFT, str(left),
                                  *command], capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                assert said.match(assert_one_line_error(out)), (left, command)
                refused.add(command[0])
    assert refused == {"inspect", "verify", "build"}
    assert flowstore_cli(*build[:5], str(tmp_path / "b1.zarr"), *build[6:]).returncode == 0
    assert flowstore_cli("verify", str(tmp_path / "b1.zarr")).returncode == 0


@pytest.mark.parametrize("exc, what", [
    (MemoryError(), "memory"), (OSError(errno.ENOMEM, "Cannot allocate memory"), "memory"),
    (RuntimeError("can't start new thread"), "threads"),
    (OSError(errno.EMFILE, "Too many open files"), "open files"),
    (OSError(errno.ENFILE, "Too many open files in system"), "open files"),
    (OSError(errno.ENOENT, "No such file"), None), (RuntimeError("other"), None),
    ("cv2: std::bad_alloc", "memory"), ("cv2: (-4:Insufficient memory) Failed to allocate 24 "
                                        "bytes", "memory"),
    ("cv2: (-215:Assertion failed) !_src.empty()", None),
    ("SystemError from MemoryError", "memory"), ("SystemError from ValueError", None),
    (SystemError("error return without exception set"), None),
    (ImportError("cv2.abi3.so: failed to map segment from shared object"), None),
    (ImportError("cannot import name 'x'"), None)])
def test_each_system_refusal_is_told_as_a_limit_and_nothing_else_is(exc, what):
    """A process's limit (`ulimit -v`, `-n`) and the system's whole table (ENFILE) alike; and
    where a library wraps it: OpenCV's allocation failing in Farneback (an internal error), a
    binding's MemoryError raised as a SystemError (OpenCV's `retrieve`: an internal error).
    A library that cannot be mapped is no limit where the process has none (a noexec mount
    says the same words)."""
    import cv2

    from flowstore.errors import resource_advice, resource_exhaustion

    if isinstance(exc, str) and exc.startswith("cv2: "):
        exc = cv2.error(exc[5:])
    elif isinstance(exc, str):
        wrapped = SystemError("<method 'retrieve' of 'cv2.VideoCapture' objects> returned a "
                              "result with an exception set")
        wrapped.__cause__ = MemoryError() if exc.endswith("MemoryError") else ValueError()
        exc = wrapped
    assert resource_exhaustion(exc) == what
    if what is not None:  # said by what it is, under the builtin it derives from
        cause = exc.__cause__ if isinstance(exc, SystemError) else exc
        name = "cv2.error" if isinstance(cause, cv2.error) else type(cause).__name__
        assert resource_advice(exc).startswith(f"the system gave no more {what} ({name}")


_UNDER_AN_ADDRESS_SPACE_LIMIT = """
import resource, sys
from flowstore.errors import resource_exhaustion, short_of_memory

unmapped = ImportError("x.so: failed to map segment from shared object")
print(short_of_memory(), resource_exhaustion(unmapped))
vm_kib = next(int(line.split()[1]) for line in open("/proc/self/status")
              if line.startswith("VmSize:"))
limit = (vm_kib + int(sys.argv[1])) * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
print(short_of_memory(), resource_exhaustion(unmapped))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_short_of_memory_is_said_only_under_a_limit_with_no_room_left():
    """What tells a decoder's silent stop under `ulimit -v` from a damaged clip: the room left
    under the process's limit, probed without touching a page."""
    from flowstore.errors import MEMORY_MARGIN

    for room_kib, short in ((MEMORY_MARGIN // 2048, "True"),
                            (4 * MEMORY_MARGIN // 1024, "False")):
        out = subprocess.run(
            [sys.executable, "-c", _UNDER_AN_ADDRESS_SPACE_LIMIT, str(room_kib)],
            capture_output=True, text=True, timeout=120)
        assert out.stdout.split() == ["False", "None", short, "memory"], (room_kib, out.stderr)


def test_a_decoder_out_of_memory_or_descriptors_is_no_fault_of_the_clip(tiny_tvhi_source,
                                                                       tmp_path):
    """OpenCV's allocation failures and FFmpeg's open without a descriptor left were the
    clip's fault ("OpenCV cannot decode", "cannot open video (not a video...)"), recorded in
    the store as its failure (found by review): they are the system's refusals now."""
    import cv2

    from flowstore.errors import resource_exhaustion
    from flowstore.extraction._cv import decoding

    with pytest.raises(MemoryError, match=r"^OpenCV, decoding x.avi: .*Insufficient memory"):
        with decoding(Path("x.avi")):
            raise cv2.error("OpenCV(5.1.0) alloc.cpp:73: error: (-4:Insufficient memory) "
                            "Failed to allocate 792576 bytes in function 'OutOfMemoryError'")
    with pytest.raises(Exception, match="OpenCV cannot decode x.avi") as raised:
        with decoding(Path("x.avi")):
            raise cv2.error("(-215:Assertion failed) !_src.empty()")
    assert resource_exhaustion(raised.value) is None
    # FFmpeg's allocations fail silently: a clip that stops decoding early, with no room left
    # under the process's limit, is the system's refusal (it read as damaged or cut short)
    from flowstore.errors import SampleError

    damaged = "frame 12 of x.avi does not decode, and a later one does: the file is damaged"
    for short, kind in ((True, MemoryError), (False, SampleError)):
        with patch("flowstore.extraction._cv.short_of_memory", return_value=short):
            with pytest.raises(kind, match=re.escape(damaged)):
                with decoding(Path("x.avi")):
                    raise SampleError(damaged)
    # and an image OpenCV gives nothing for (its decoders catch their own failures)
    from flowstore.extraction.image import read_image

    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"no image" * 50)
    for short, kind in ((True, MemoryError), (False, SampleError)):
        with patch("flowstore.extraction._cv.short_of_memory", return_value=short):
            with pytest.raises(kind, match=r"not a decodable image \(400 bytes\): garbage.jpg"):
                read_image(garbage)
    # Every descriptor taken before the clip is opened, or by FFmpeg's open itself (a stub in
    # its place: it fails as FFmpeg does without one, saying no more than that it failed).
    script = ("import os, sys\n"
              "from pathlib import Path\n"
              "import flowstore.extraction.video as video\n"
              "from flowstore.params import VideoParams\n"
              "held = []\n"
              "def take_every_descriptor():\n"
              "    try:\n"
              "        while True:\n"
              "            held.append(os.open(os.devnull, os.O_RDONLY))\n"
              "    except OSError:\n"
              "        pass\n"
              "class FFmpegWithoutADescriptor:\n"
              "    def __init__(self, *args):\n"
              "        take_every_descriptor()\n"
              "    def isOpened(self):\n"
              "        return False\n"
              "if sys.argv[2] == 'before':\n"
              "    take_every_descriptor()\n"
              "else:\n"
              "    video.cv2.VideoCapture = FFmpegWithoutADescriptor\n"
              "try:\n"
              "    video.extract_video(Path(sys.argv[1]), VideoParams(size=16, steps=2))\n"
              "except Exception as exc:\n"
              "    print(type(exc).__name__, getattr(exc, 'errno', None))\n")
    import resource

    for when in ("before", "in FFmpeg's open"):
        out = subprocess.run(
            [sys.executable, "-c", script, str(tiny_tvhi_source / "hug_0001.avi"), when],
            capture_output=True, text=True, timeout=120,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)))
        assert out.stdout.split() == ["OSError", "24"], (when, out.stdout, out.stderr)
