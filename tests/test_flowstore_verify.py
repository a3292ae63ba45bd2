"""`flowstore verify`: corrupted chunks are found, `--repair` re-extracts just those."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from flowstore.ledger import Ledger
from flowstore.store import open_store
from flowstore.store.checksum import sample_digest
from tests.conftest import (TINY_BUILD, assert_one_line_error, chunk_file, flowstore_cli,
                            without_modules_env)


_PRISTINE: dict[tuple[str, str], Path] = {}


@pytest.fixture(scope="module", autouse=True)
def _pristine_folder(tmp_path_factory):
    """Where `_built` keeps the stores `flowstore build` made, one per source and backend."""
    _PRISTINE.clear()
    _PRISTINE[("", "")] = tmp_path_factory.mktemp("verify_pristine")
    yield
    _PRISTINE.clear()


def _built(source, tmp_path, suffix=".zarr"):
    """A private copy, at `tmp_path / s{suffix}`, of the store `flowstore build` makes of
    `source`: built once a module by the real command, copied for each test (the tests damage
    their copy; a copy is byte for byte the store the build wrote)."""
    key = (str(source), suffix)
    if key not in _PRISTINE:
        folder = _PRISTINE[("", "")] / str(len(_PRISTINE))
        folder.mkdir()
        built = folder / f"s{suffix}"
        out = flowstore_cli("build", "tvhi", "--source", source, "--store", built, *TINY_BUILD,
                            "-q")
        assert out.returncode == 0, out.stderr
        _PRISTINE[key] = built
    built = _PRISTINE[key]
    store = tmp_path / f"s{suffix}"
    tmp_path.mkdir(parents=True, exist_ok=True)
    if built.is_dir():
        shutil.copytree(built, store)
    else:
        shutil.copy2(built, store)
    lock = built.parent / f".{built.name}.lock"
    if lock.exists():
        shutil.copy2(lock, tmp_path / lock.name)
    return store


def test_a_clean_store_verifies(tiny_tvhi_source, tmp_path, suffix):
    store = _built(tiny_tvhi_source, tmp_path, suffix)
    out = flowstore_cli("verify", store, "-q")
    assert out.returncode == 0 and "checked 16 sample(s), 0 bad" in out.stdout
    with open_store(store) as s:
        assert all(re.fullmatch(r"xxh3_128:[0-9a-f]{32}", c) for c in s.read("checksum"))


def test_verify_and_inspect_work_without_opencv(tiny_tvhi_source, tmp_path):
    """Checking or describing a store extracts nothing, so neither imports OpenCV: importing
    it cost their start-up, and under a tight memory limit (`ulimit -v 500000`) it crashed
    them with a segfault and no word (OpenCV's import; `verify` imported it through `build`)."""
    store = _built(tiny_tvhi_source, tmp_path)
    no_opencv = without_modules_env(tmp_path / "no-cv2", "cv2")
    out = flowstore_cli("verify", store, "-q", env=no_opencv)
    assert out.returncode == 0 and "checked 16 sample(s), 0 bad" in out.stdout, out.stderr
    out = flowstore_cli("inspect", store, env=no_opencv)
    assert out.returncode == 0 and "16 done, 0 failed" in out.stdout, out.stderr


@pytest.mark.parametrize("option, said", [
    (("--fsync",), "--fsync applies to --repair only (verify writes nothing)"),
    (("--synthetic",), "--synthetic applies to --repair only"),
    (("--source", "{tmp}"), "--source applies to --repair only"),
    (("--split-file", "{tmp}/f.csv"), "dataset options apply to --repair only"),
])
def test_options_of_a_repair_without_repair_are_refused_not_ignored(tiny_tvhi_source, tmp_path,
                                                                    option, said):
    """Each takes effect only in a repair: given to a plain verify, it was believed to."""
    store = _built(tiny_tvhi_source, tmp_path)
    given = [arg.replace("{tmp}", str(tmp_path)) for arg in option]
    assert said in assert_one_line_error(flowstore_cli("verify", store, *given))


def test_checksums_of_older_stores_still_verify(tiny_tvhi_source, tmp_path):
    """Stores written before checksums named their algorithm hold bare blake2b digests."""
    store = _built(tiny_tvhi_source, tmp_path)
    with open_store(store) as s:
        features = ("middle_frame", "frames", "flow")
        legacy = [sample_digest({n: s.read(n, i) for n in features}, "blake2b")
                  for i in range(s.num_samples)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", c) for c in legacy)
    group = zarr.open_group(str(store), mode="r+")
    group["checksum"][:] = np.array(legacy)
    assert flowstore_cli("verify", store, "-q").returncode == 0
    group["flow"][3] = np.ones_like(group["flow"][3])  # (zeros: zarr would delete the chunk)
    group["checksum"][5] = "sha999:" + legacy[5]
    out = flowstore_cli("verify", store, "-q")
    assert out.returncode == 1
    assert out.stderr.count("checksum mismatch") == 1
    assert "unknown algorithm 'sha999'" in out.stderr


def test_corrupted_and_deleted_chunks_are_found_and_repaired(tiny_tvhi_source, tmp_path):
    store = _built(tiny_tvhi_source, tmp_path)
    ids = list(zarr.open_group(str(store), mode="r")["id"][:])
    a, b, c = ids.index("hug_0002"), ids.index("kiss_0001"), ids.index("highFive_0003")
    group = zarr.open_group(str(store), mode="r+")
    group["flow"][a] = np.ones_like(group["flow"][a])  # bytes changed behind flowstore's back
    chunk_file(store, "frames", b).write_bytes(b"garbage" * 10)  # a chunk file damaged on disk
    chunk_file(store, "middle_frame", c).unlink()  # a chunk deleted: done lies
    out = flowstore_cli("verify", store, "-q")
    assert out.returncode == 1
    bad = dict(re.findall(r"^  (\w+_\d{4}): (.+)$", out.stderr, re.M))
    assert set(bad) == {"hug_0002", "kiss_0001", "highFive_0003"}
    assert "checksum mismatch" in bad["hug_0002"] and "unreadable" in bad["kiss_0001"]
    assert bad["highFive_0003"] == "its chunk of 'middle_frame' is missing"
    line = assert_one_line_error(flowstore_cli("verify", store, "--repair"))
    assert "--source" in line
    line = assert_one_line_error(flowstore_cli("verify", store, "--source", tiny_tvhi_source))
    assert "--source applies to --repair only" in line  # not silently ignored
    # Another source (a done sample's clip gone) is refused with what verify can do: it has no
    # --overwrite or --store, which a build's refusal offers. (The bad samples are listed first.)
    other = Path(shutil.copytree(tiny_tvhi_source, tmp_path / "other"))
    next(clip for clip in sorted(other.rglob("*.avi")) if "hug_0002" not in clip.name).unlink()
    refused = flowstore_cli("verify", store, "--repair", "--source", other, "-q")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    line = refused.stderr.splitlines()[-1]
    assert line.startswith("error: ") and line.endswith("; --repair re-extracts from the source the store was built from "
                         "(--source), or rebuild it with flowstore build --overwrite"), line
    fixed = flowstore_cli("verify", store, "--repair", "--source", tiny_tvhi_source, "-q")
    assert fixed.returncode == 0, fixed.stderr
    assert "repaired 3 of 3 bad sample(s)" in fixed.stdout and "0 still bad" in fixed.stdout
    assert flowstore_cli("verify", store, "-q").returncode == 0


def test_an_interrupted_repair_says_that_the_same_command_finishes_it(tiny_tvhi_source,
                                                                      tmp_path):
    """Ctrl-C (or SIGTERM) in a repair said only "error: interrupted", where a build says how
    to go on; the same command finishes it (the samples it unmarked stay for `verify` to
    name: tests/test_flowstore_integrity.py)."""
    store = _built(tiny_tvhi_source, tmp_path)
    chunk_file(store, "flow", 0).unlink()
    stopped = subprocess.run(
        [sys.executable, "-c", "import sys, flowstore.verify as verify, flowstore.cli as cli\n"
         "def stop(*args, **kwargs): raise KeyboardInterrupt  # (Ctrl-C during the repair)\n"
         "verify.repair = stop\nsys.argv[0] = 'flowstore'\ncli.main()",
         "verify", str(store), "--repair", "--source", str(tiny_tvhi_source), "-q"],
        capture_output=True, text=True, timeout=120)
    assert stopped.returncode == -signal.SIGINT, stopped.stderr
    assert stopped.stderr.splitlines()[-1] == (
        "error: interrupted; run the same command again to finish the repair")
    assert flowstore_cli("verify", store, "--repair", "--source", tiny_tvhi_source,
                         "-q").returncode == 0


@pytest.mark.parametrize("stopped", [False, True], ids=["done", "left by a stopped repair"])
@pytest.mark.parametrize("swap", ["another clip", "same size, other bytes", "gone"])
def test_a_repair_from_a_swapped_clip_fails_the_sample_and_says_why(tiny_tvhi_source, tmp_path,
                                                                   swap, stopped):
    """A clip replaced by another (hug_0002's file copied over handShake_0002's) was
    re-extracted into the damaged sample and reported "repaired", exit 0: the store then held
    hug_0002's frames under handShake_0002 and a fingerprint no source of it had. So was one
    whose sample an earlier repair had unmarked and stopped (not done: compared with nothing)
    when the same command was run again to finish it."""
    store = _built(tiny_tvhi_source, tmp_path)
    group = zarr.open_group(str(store), mode="r+")
    index = list(group["id"][:]).index("handShake_0002")
    fingerprint = group.attrs["fingerprint"]
    group["flow"][index] = np.ones_like(group["flow"][index])
    if stopped:  # unmarked as `verify --repair` does, which then stopped
        with open_store(store, "r+") as opened:
            ledger = Ledger.load(opened)
            ledger.reset(index)
            ledger.write(opened)
    swapped = Path(shutil.copytree(tiny_tvhi_source, tmp_path / "swapped"))
    clip = swapped / "handShake_0002.avi"
    if swap == "another clip":
        shutil.copyfile(swapped / "hug_0002.avi", clip)
        why = r"is not the one the sample was extracted from \(\d+ bytes then, \d+ now\)"
    elif swap == "same size, other bytes":  # a byte of the AVI's JUNK padding: decodes the same
        data = bytearray(clip.read_bytes())
        data[data.index(b"JUNK") + 100] ^= 0xFF
        clip.write_bytes(bytes(data))
        why = r"is not the one the sample was extracted from \(same size, other content\)"
    else:
        clip.unlink()
        why = r"video file is missing"

    out = flowstore_cli("verify", store, "--repair", "--source", swapped, "-q")
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "repaired 0 of 1 bad sample(s)" in out.stdout and "1 still bad" in out.stdout
    reason = re.search(r"^  handShake_0002: could not re-extract it: (.+)$", out.stderr, re.M)
    assert reason and re.search(why, reason.group(1)), out.stderr
    if swap != "gone":
        assert reason.group(1).startswith("source file 'handShake_0002.avi'")
        assert "from that file if you put it back" in reason.group(1)
    assert not zarr.open_group(str(store), mode="r")["done"][index]  # failed, not "repaired"
    # The original clip back, a build makes the store it was.
    rebuilt = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                            *TINY_BUILD, "-q")
    assert rebuilt.returncode == 0 and "1 computed" in rebuilt.stdout, rebuilt.stderr
    assert zarr.open_group(str(store), mode="r").attrs["fingerprint"] == fingerprint
    assert flowstore_cli("verify", store, "-q").returncode == 0


def test_a_repair_that_failed_is_named_by_verify_and_the_same_command_finishes_it(
        tiny_tvhi_source, tmp_path):
    """A repair whose re-extraction failed (a disk too full, a clip missing) said "free some
    and run the same command again", but its sample was then a build's failed sample, which
    verify does not check: the same command found "0 bad" and repaired nothing (found by
    review). Verify names it now, and `verify --repair` takes it again."""
    store = _built(tiny_tvhi_source, tmp_path)
    group = zarr.open_group(str(store), mode="r+")
    index = list(group["id"][:]).index("handShake_0002")
    fingerprint = group.attrs["fingerprint"]
    group["flow"][index] = np.ones_like(group["flow"][index])
    source = Path(shutil.copytree(tiny_tvhi_source, tmp_path / "source"))
    (source / "handShake_0002.avi").unlink()
    repair = ("verify", store, "--repair", "--source", source, "-q")
    failed = flowstore_cli(*repair)
    assert failed.returncode == 1 and "repaired 0 of 1" in failed.stdout, failed.stderr
    assert "  handShake_0002: could not re-extract it: video file is missing" in failed.stderr
    assert "verify --repair failed" not in failed.stderr  # (said once, not twice)
    named = flowstore_cli("verify", store, "-q")
    assert named.returncode == 1 and "1 bad" in named.stdout, named.stderr
    assert re.search(r"^  handShake_0002: not done: its re-extraction by verify --repair "
                     r"failed: video file is missing", named.stderr, re.M), named.stderr
    shutil.copyfile(tiny_tvhi_source / "handShake_0002.avi", source / "handShake_0002.avi")
    again = flowstore_cli(*repair)
    assert again.returncode == 0 and "repaired 1 of 1" in again.stdout, again.stderr
    assert flowstore_cli("verify", store, "-q").returncode == 0
    assert zarr.open_group(str(store), mode="r").attrs["fingerprint"] == fingerprint


@pytest.mark.parametrize("column", ["id", "label", "split"])
def test_an_unreadable_manifest_column_is_damage_exit_1_whichever_it_is(tiny_tvhi_source,
                                                                       tmp_path, column):
    """The same damage gave exit 1 for `label` and `split` but 2 for `id` (read first, outside
    the check); the README says verify exits 1 on a damaged column."""
    store = _built(tiny_tvhi_source, tmp_path)
    chunk_file(store, column, 0).write_bytes(b"garbage")
    result = flowstore_cli("verify", store, "-q")
    assert result.returncode == 1, (result.stdout, result.stderr)
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line
    assert f"is damaged: array {column!r} cannot be read" in line
    # and standard output does not say the opposite ("checked 6 sample(s), 0 bad" alone)
    assert result.stdout.strip().endswith("bad; the store is damaged"), result.stdout


def test_a_repair_from_a_missing_source_is_refused_before_reading_the_store(
        tiny_tvhi_source, tmp_path, monkeypatch):
    """A mistyped --source was said only after every sample of the store had been read."""
    import flowstore.verify

    store = _built(tiny_tvhi_source, tmp_path)
    monkeypatch.setattr(flowstore.verify, "verify", lambda *a, **k: pytest.fail("store read"))
    from typer.testing import CliRunner

    from flowstore.cli import app

    result = CliRunner().invoke(app, ["verify", str(store), "--repair", "--source",
                                      str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "source folder does not exist" in result.output


def test_verify_of_a_non_store_is_one_line(tmp_path):
    assert_one_line_error(flowstore_cli("verify", tmp_path / "nothing.zarr"))


def test_a_repair_that_cannot_mend_names_the_sample_and_builds_nothing_else(tvhi_source, tmp_path):
    """Issue 12, item 1: on a store built with --max-per-split, a corrupted sample whose clip no
    longer decodes is named with why, the command exits 1, and no other pending sample of the
    dataset is built (repair used to build every pending one and report "0 bad")."""
    store = tmp_path / "s.zarr"
    out = flowstore_cli("build", "tvhi", "--source", tvhi_source, "--store", store, *TINY_BUILD,
                        "--max-per-split", "1", "-q")
    assert out.returncode == 0, out.stderr
    group = zarr.open_group(str(store), mode="r+")
    ids, done_before = list(group["id"][:]), group["done"][:].copy()
    assert done_before.sum() == 3
    broken, sound = [ids[i] for i in np.flatnonzero(done_before)][:2]
    index = ids.index(broken)
    group["flow"][index] = np.ones_like(group["flow"][index])  # a chunk corrupted ...
    (tvhi_source / f"{broken}.avi").write_bytes(b"\0junk")  # ... and its clip undecodable
    group["frames"][ids.index(sound)] = 0  # a second bad sample, whose clip is fine

    fixed = flowstore_cli("verify", store, "--repair", "--source", tvhi_source, "-q")
    assert fixed.returncode == 1, (fixed.stdout, fixed.stderr)
    assert "Traceback" not in fixed.stderr
    assert "checked 3 sample(s), 2 bad" in fixed.stdout
    assert "repaired 1 of 2 bad sample(s)" in fixed.stdout and "1 still bad" in fixed.stdout
    still = re.findall(rf"^  {broken}: (.+)$", fixed.stderr, re.M)
    assert any("could not re-extract" in line and f"{broken}.avi" in line for line in still), \
        fixed.stderr
    done_after = zarr.open_group(str(store), mode="r")["done"][:]
    assert done_after.sum() == 2, "only the asked samples are touched; no pending one is built"
    assert not done_after[index] and done_after[ids.index(sound)]
    assert np.array_equal(np.flatnonzero(done_after), np.flatnonzero(done_before & (
        np.arange(len(ids)) != index)))
    # what is marked done now is sound; the sample the repair could not mend is named still
    # (it said "0 bad" once the repair had failed, so that the same command found nothing)
    again = flowstore_cli("verify", store, "-q")
    assert again.returncode == 1 and "checked 3 sample(s), 1 bad" in again.stdout
    assert again.stderr.startswith(f"  {broken}: not done: its re-extraction by verify "
                                   f"--repair failed: cannot open video"), again.stderr


_VERIFY_WITH_A_BUG = """
import sys
from flowstore.store._zarr import ZarrStore
from flowstore.cli import main

def read_into_with_a_bug(self, name, index, out):
    raise TypeError("a bug in a read")

ZarrStore.read_into = read_into_with_a_bug
sys.argv = ["flowstore", *sys.argv[1:]]
main()
"""


def test_a_bug_in_verify_s_reads_is_an_internal_error_not_damaged_samples(tiny_tvhi_source,
                                                                           tmp_path):
    """Any exception of a sample's read was that sample's damage ("unreadable: TypeError"),
    exit 1, and `--repair` offered: a bug in flowstore is told as one (from review)."""
    import subprocess
    import sys

    store = tmp_path / "s.zarr"
    built = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                          *TINY_BUILD, "--max-per-split", "1", "-q")
    assert built.returncode == 0, built.stderr
    out = subprocess.run([sys.executable, "-c", _VERIFY_WITH_A_BUG, "verify", str(store)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)
    assert out.stderr.strip().splitlines()[-1].startswith(
        "internal error: a bug in flowstore (TypeError: a bug in a read)")
    assert "unreadable" not in out.stdout + out.stderr


def test_a_lost_chunk_of_the_labels_is_damage_that_every_command_names(tiny_tvhi_source, tmp_path,
                                                                       suffix):
    """A chunk of `label` lost in a copy read as class 0 for every sample in it: `verify` said
    0 bad, `inspect` counted them all in the first class, and the trainers trained on it. The
    manifest columns' digest, recorded when the store is made, is checked wherever they are read;
    a store made before the digest gets it at its next build."""
    import flowstore
    from flowstore.errors import StoreError
    from flowstore.store.checksum import COLUMNS_DIGEST

    store = _built(tiny_tvhi_source, tmp_path, suffix)
    with open_store(store, "r+") as opened:
        labels = opened.read("label")
        assert opened.attrs[COLUMNS_DIGEST].startswith("xxh3_128:")
        opened.write_changed("label", np.zeros_like(labels), list(range(len(labels))))
    out = flowstore_cli("verify", store, "-q")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"error: store {str(store)!r} is damaged: its class names or its id, label or split "
        f"column are not what it was built with")
    assert "DAMAGED      store" in flowstore_cli("inspect", store).stdout
    with pytest.raises(StoreError, match="is damaged"):
        flowstore.open(store)
    line = assert_one_line_error(flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source,
                                               "--store", store, *TINY_BUILD, "-q"))
    assert "is damaged" in line and "another split manifest" not in line

    # mended by hand, and the digest dropped as if the store were older: the next build
    # records it again, and it checks out
    with open_store(store, "r+") as opened:
        opened.write_changed("label", labels, list(range(len(labels))))
        attrs = opened.attrs
        recorded = attrs.pop(COLUMNS_DIGEST)
    _drop_attr(store, COLUMNS_DIGEST)
    assert flowstore_cli("verify", store, "-q").returncode == 0
    assert flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                         *TINY_BUILD, "-q").returncode == 0
    with open_store(store) as opened:
        assert opened.attrs[COLUMNS_DIGEST] == recorded


@pytest.mark.parametrize("label", [4, 2**31 - 1, -2, -7])
def test_a_label_that_names_no_class_is_damage_without_a_digest(tiny_tvhi_source, tmp_path,
                                                                  suffix, label):
    """A store from elsewhere need hold no digest (or one made again after an edit): a label
    beyond its classes passed `verify` (0 bad, exit 0), `trainers run` failed inside Keras
    (an internal error, traceback and all), `trainers predict` in an IndexError, and a label
    of -2 to -4 would have named a class from the end (found by review)."""
    import flowstore
    from flowstore.errors import StoreError
    from flowstore.store.checksum import COLUMNS_DIGEST

    store = _built(tiny_tvhi_source, tmp_path, suffix)
    with open_store(store, "r+") as opened:
        labels, ids = opened.read("label"), opened.read("id")
        labels[3] = label
        opened.write_changed("label", labels, [3])
    _drop_attr(store, COLUMNS_DIGEST)
    expected = (f"error: store {str(store)!r} is damaged: sample {str(ids[3])!r} has label "
                f"{label}, which names none of its 4 classes (1 such sample(s))")
    out = flowstore_cli("verify", store, "-q")
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith(expected), \
        out.stderr
    assert "DAMAGED      store" in flowstore_cli("inspect", store).stdout
    with pytest.raises(StoreError, match=f"has label {label}, which names none"):
        flowstore.open(store)
    line = assert_one_line_error(flowstore_cli("show", store, "--out", tmp_path / "pictures"))
    assert line.startswith(expected), line


def test_a_zarr_store_declaring_more_samples_than_it_holds_is_refused_at_once(tiny_tvhi_source,
                                                                            tmp_path):
    """Every array's zarr.json edited to declare 10**8 samples (a few kB store from elsewhere):
    each command read every column whole from fill values for minutes and then ran out of
    memory, said as the system's limit with advice to use fewer --workers (found by review)."""
    import json

    store = _built(tiny_tvhi_source, tmp_path)
    for metadata in store.glob("*/zarr.json"):
        declared = json.loads(metadata.read_text())
        declared["shape"][0] = 10**6  # (the check is the same at 10**8; without it, cheap)
        metadata.write_text(json.dumps(declared))
    _refused_at_once(store, tmp_path, 10**6, "id column holds none from sample ")


def test_an_hdf5_store_declaring_more_samples_than_its_id_column_holds_is_refused(
        tiny_tvhi_source, tmp_path):
    """Every array rewritten to declare 10**5 rows, only its first chunks written (a store
    from elsewhere: at 10**9 rows, 600 KB on disk, inspect read a 7 GiB id column; found by
    review): said at once."""
    import h5py

    store = _built(tiny_tvhi_source, tmp_path, ".h5")
    with h5py.File(store, "r+") as file:
        for name in list(file):
            values, dtype, chunks = file[name][()], file[name].dtype, file[name].chunks
            del file[name]
            file.create_dataset(name, shape=(10**5, *values.shape[1:]), dtype=dtype,
                                chunks=chunks)[:len(values)] = values
    _refused_at_once(store, tmp_path, 10**5, "id column holds ")


def _refused_at_once(store: Path, tmp_path: Path, declared: int, then: str) -> None:
    """Every command that reads the store, and the reader, refuse it in one line saying that
    it declares `declared` samples (and `then`)."""
    import flowstore
    from flowstore.errors import StoreError

    expected = (f"error: store {str(store)!r} is damaged: it declares {declared} samples, but "
                f"its {then}")
    for command in (("inspect", store), ("verify", store, "-q"),
                    ("show", store, "--out", tmp_path / "pictures")):
        out = flowstore_cli(*command)
        assert out.returncode in (1, 2) and out.stderr.strip().splitlines()[-1].startswith(
            expected), (command, out.stderr)
    with pytest.raises(StoreError, match=f"declares {declared} samples"):
        flowstore.open(store)
    with open_store(store) as opened:  # (any column read whole, before it is allocated)
        with pytest.raises(StoreError, match=f"declares {declared} samples"):
            opened.read("label")


@pytest.mark.parametrize("key, value, shown", [("classes", [1, 2, 3], "array([1, 2, 3])"),
                                               ("params", "{not json", "'{not json'")])
def test_an_hdf5_root_attribute_that_is_no_json_text_is_named(tiny_tvhi_source, tmp_path, key,
                                                              value, shown):
    """Written by another tool as an array, or as text that is no JSON: the store was "not a
    readable flowstore store (TypeError: the JSON object must be str ...)", naming no
    attribute (found by review)."""
    import h5py
    import numpy as np

    store = _built(tiny_tvhi_source, tmp_path, ".h5")
    with h5py.File(store, "r+") as file:
        file.attrs[key] = np.array(value) if isinstance(value, list) else value
    said = (f"error: store {str(store)!r} is damaged: its attribute {key!r} is not JSON text "
            f"({shown})")
    for command in ("inspect", "verify"):
        assert assert_one_line_error(flowstore_cli(command, store)).startswith(said), command


def _hdf5_edited(store: Path, edit) -> Path:
    import h5py

    with h5py.File(store, "r+") as file:
        edit(file)
    return store


def _external_frames(file) -> None:
    import h5py

    other = Path(file.filename).with_name("other.h5")
    with h5py.File(other, "w") as target:
        file.copy("frames", target, name="frames")
    del file["frames"]
    file["frames"] = h5py.ExternalLink(str(other), "/frames")


def _virtual_frames(file) -> None:
    import h5py

    other = Path(file.filename).with_name("other.h5")
    with h5py.File(other, "w") as target:
        file.copy("frames", target, name="frames")
    layout = h5py.VirtualLayout(shape=file["frames"].shape, dtype=file["frames"].dtype)
    layout[...] = h5py.VirtualSource(str(other), "frames", shape=file["frames"].shape)
    del file["frames"]
    file.create_virtual_dataset("frames", layout)


@pytest.mark.parametrize("edit, said", [
    (_external_frames, "'frames' is a link to '/frames' in the file "),
    (lambda file: (file.copy("frames", file, name="kept"), file.__delitem__("frames"),
                   file.__setitem__("frames", __import__("h5py").SoftLink("/kept"))),
     "'frames' is a link to '/kept', not an array"),
    (_virtual_frames, "'frames' is a virtual dataset, its data in other files"),
    (lambda file: (file.__delitem__("frames"), file.create_group("frames")),
     "'frames' is a group, not an array"),
    (lambda file: file.create_group("notes"), "'notes' is a group, not an array"),
    (lambda file: (file.__delitem__("source_hash"), file.__setitem__("source_hash",
                                                                     file["checksum"])),
     "'source_hash' and 'checksum' are one array under two names"),
])
def test_an_hdf5_store_whose_arrays_are_not_its_own_is_refused_by_every_command(
        tiny_tvhi_source, tmp_path, edit, said):
    """An HDF5 store from elsewhere: an external link made a build and `verify --repair`
    write samples into another file (HDF5 opens it as writable as the store), and the raw
    reads took its chunk offsets for the store's (zeros, without a word); a virtual dataset
    read other files; a group was an internal error; two columns under one array were
    written over each other by a build (found by review). Each is damage, said before any
    read or write, and nothing outside the store changes."""
    import flowstore
    from flowstore.errors import StoreError

    store = _hdf5_edited(_built(tiny_tvhi_source, tmp_path, ".h5"), edit)
    other = tmp_path / "other.h5"
    before = other.read_bytes() if other.exists() else None
    expected = f"error: store {str(store)!r} is damaged: {said}"
    for command in (("inspect", store), ("verify", store),
                    ("verify", store, "--repair", "--source", tiny_tvhi_source),
                    ("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                     *TINY_BUILD, "-q"),
                    ("show", store, "--out", tmp_path / "pictures")):
        line = assert_one_line_error(flowstore_cli(*command))
        assert line.startswith(expected), (command, line)
    with pytest.raises(StoreError, match="is damaged: " + re.escape(said)):
        flowstore.open(store)
    assert (other.read_bytes() if other.exists() else None) == before


def _drop_attr(store: Path, name: str) -> None:
    if store.suffix == ".h5":
        import h5py

        with h5py.File(store, "r+") as f:
            del f.attrs[name]
    else:
        group = zarr.open_group(str(store), mode="r+")
        del group.attrs[name]


def test_damaged_bytes_are_one_line_naming_what_and_the_remedy(tiny_tvhi_source, tmp_path):
    """A chunk whose bytes no codec accepts, a truncated chunk of the ledger, a truncated array
    metadata file: tracebacks from numcodecs / json in `show`, `trainers`, `verify`, `build` and
    `inspect` before; now one line naming the store and what could not be read."""
    import flowstore
    from flowstore.errors import StoreError

    store = _built(tiny_tvhi_source, tmp_path)
    with flowstore.open(store) as ds:
        sample = str(ds.split("train").ids[0])
        index = int(ds.split("train").indices[0])
    chunk = chunk_file(store, "flow", index)
    chunk.write_bytes(b"\x07" * 16 + chunk.read_bytes()[16:])  # its Blosc header destroyed
    with flowstore.open(store) as ds, pytest.raises(
            StoreError, match=f"is damaged: sample '{sample}' of 'flow' cannot be read .*"
                              f"`--repair` re-extracts them"):
        ds.split("train")[0]
    line = assert_one_line_error(flowstore_cli("show", store, sample, "--out", tmp_path / "p",
                                               "-q"))
    assert f"sample '{sample}' of 'flow' cannot be read" in line

    ledger = chunk_file(store, "checksum", 0)
    ledger.write_bytes(ledger.read_bytes()[:30])
    with flowstore.open(store) as ds:  # (a ledger chunk: mended by a build, no rebuild)
        ds.split("train", features=("flow",))
    verified = flowstore_cli("verify", store, "-q")
    assert verified.returncode == 1 and "its chunk of 'checksum' cannot be read" in \
        verified.stderr
    rebuilt = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                            *TINY_BUILD, "-q")
    assert rebuilt.returncode == 0 and "16 computed" in rebuilt.stdout, rebuilt.stderr
    assert "warning: store" in rebuilt.stderr and "array 'checksum' could not be read" in \
        rebuilt.stderr
    assert flowstore_cli("verify", store, "-q").returncode == 0

    meta = store / "frames" / "zarr.json"
    meta.write_text(meta.read_text()[:100])
    line = assert_one_line_error(flowstore_cli("inspect", store))
    assert "is not a readable flowstore store (JSONDecodeError" in line


def test_a_chunk_cut_short_is_damage_not_values_read_past_its_end(tiny_tvhi_source, tmp_path):
    """Blosc stores a frame it cannot compress (noisy flow) as it is, and trusts the length in
    its header: a chunk cut short by a partial copy was read past the end of its bytes (the
    sample came back as whatever memory followed: NaNs), where it must be one line."""
    import numcodecs

    import flowstore
    from flowstore.errors import StoreError

    store = _built(tiny_tvhi_source, tmp_path)
    with flowstore.open(store) as ds:
        split = ds.split("train")
        sample, index = str(split.ids[0]), int(split.indices[0])
        shape, dtype = split[0]["flow"].shape, split[0]["flow"].dtype
    noise = np.random.default_rng(0).bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    frame = numcodecs.blosc.compress(noise, b"lz4", 5, numcodecs.blosc.SHUFFLE)
    assert len(frame) > len(noise)  # (stored as it is: the case)
    chunk_file(store, "flow", index).write_bytes(frame[:64])
    with flowstore.open(store) as ds, pytest.raises(
            StoreError, match=f"is damaged: sample '{sample}' of 'flow' cannot be read"):
        ds.split("train")[0]


def test_inspect_shows_a_store_whose_columns_are_damaged_and_names_each(tiny_tvhi_source,
                                                                        tmp_path):
    """A chunk of `label` (or `done`, `id`) whose bytes no codec accepts made `inspect` exit 2
    with one line and show nothing else, where a lost one is a DAMAGED line above the rest:
    inspect is where one looks at a store that went wrong."""
    import json

    store = _built(tiny_tvhi_source, tmp_path)
    before = json.loads(flowstore_cli("inspect", store, "--json").stdout)
    for name in ("label", "split", "done"):
        chunk = chunk_file(store, name, 0)
        chunk.write_bytes(b"\x07" * len(chunk.read_bytes()))
    out = flowstore_cli("inspect", store)
    assert out.returncode == 1 and not out.stderr, out.stderr  # described, and not sound
    damaged = [line for line in out.stdout.splitlines() if line.startswith("DAMAGED")]
    assert [line.split("array ")[1].split(" cannot")[0] for line in damaged] == [
        "'label'", "'split'", "'done'"]
    assert all("rebuild it" in line for line in damaged[:2])  # (a manifest column's)
    assert "the next build, or `flowstore verify --repair --source DIR`, extracts" in damaged[2]
    assert "(unreadable)" in out.stdout and "(no class)" not in out.stdout  # not a clips store
    assert "arrays" in out.stdout  # the rest is still shown
    after = json.loads(flowstore_cli("inspect", store, "--json").stdout)
    assert after["samples"] == before["samples"] and after["done"] == 0
    assert list(after["counts"]) == ["train", "val", "test", "(unreadable)"]  # not "(split '')"
    assert sum(after["counts"]["(unreadable)"].values()) == after["samples"]
    assert after["arrays"] == before["arrays"] and after["damaged"].count("\n") == 2
    assert flowstore_cli("verify", store, "-q").returncode != 0


def test_inspect_loses_only_the_damaged_chunks_of_a_column(tiny_tvhi_source, tmp_path,
                                                           monkeypatch):
    """A column was read whole, so one damaged chunk of `done` showed every sample not done (a
    large store's 4,096 samples a chunk hid all the others), and one of `id` lost every
    failure. Here columns are 4 samples a chunk: only the damaged chunks' samples are stood in
    for, each chunk is named by its samples, and a failure whose id is lost is still listed,
    named by its position."""
    from flowstore.build import BuildConfig, build
    from flowstore.inspect import format_summary, summarize
    from flowstore.params import VideoParams
    from flowstore.store import layout

    monkeypatch.setattr(layout, "COLUMN_CHUNK", 4)
    store = tmp_path / "s.zarr"
    build(BuildConfig(dataset="tvhi", source=tiny_tvhi_source, store=store,
                      params=VideoParams(size=32, steps=4), workers=1, progress=False))
    with open_store(store, "r+") as opened:  # sample 9 failed, as a bad clip's build leaves it
        done, reasons = opened.read("done"), opened.read("failure").astype(object)
        done[9], reasons[9] = False, "cannot decode the video"
        opened.write_changed("done", done, [9])
        opened.write_changed("failure", reasons, [9])
        opened.flush()
        assert opened.info("done").chunks == (4,) and done.size == 16
    before, failed_id = summarize(store), str(store_ids(store)[9])
    for name, index in (("done", 4), ("id", 8)):
        chunk = chunk_file(store, name, index)
        chunk.write_bytes(b"\x07" * len(chunk.read_bytes()))
    after = summarize(store)
    damaged = after["damaged"].splitlines()
    assert len(damaged) == 2 and all(
        f"is damaged: array {name!r}, samples {first}-{last} of 16, cannot be read (" in line
        for line, (name, first, last) in zip(damaged, (("id", 8, 11), ("done", 4, 7))))
    assert (before["done"], after["done"]) == (15, 11)  # the four of samples 4-7 only
    assert before["failures"] == {failed_id: "cannot decode the video"}
    assert after["failures"] == {"(sample 9: id unreadable)": "cannot decode the video"}
    assert after["samples"] == 16 and sum(after["done_per_split"].values()) == 11
    assert "(sample 9: id unreadable)" in format_summary(after)


def test_inspect_of_a_damaged_column_still_compares_the_manifest_and_lists_failures(
        tiny_tvhi_source, tmp_path):
    """A damaged `done` chunk turned off the check that `id`, `label` and `split` are as built
    (only their own stand-ins must), and a format-1 store's failures, kept by id in an
    attribute, were lost with a damaged `id` chunk."""
    from flowstore.inspect import summarize

    store = _built(tiny_tvhi_source, tmp_path)
    with open_store(store, "r+") as opened:  # an edit of the split column, no checksum sees it
        splits = opened.read("split").astype(object)
        splits[0] = "train" if splits[0] != "train" else "test"
        opened.write_changed("split", splits, [0])
        opened.flush()
    chunk = chunk_file(store, "done", 0)
    chunk.write_bytes(b"\x07" * len(chunk.read_bytes()))
    damaged = summarize(store)["damaged"].splitlines()
    assert len(damaged) == 2 and "array 'done' cannot be read" in damaged[0]
    assert "id, label or split column" in damaged[1], damaged

    old = Path(shutil.copytree(Path(__file__).parent / "fixtures" / "format1" / "format1.zarr",
                               tmp_path / "format1.zarr"))
    failed = summarize(old)["failures"]
    assert list(failed) == ["jumping jacks/clip_03"]
    chunk = chunk_file(old, "id", 0)
    chunk.write_bytes(b"\x07" * len(chunk.read_bytes()))
    after = summarize(old)
    assert after["failures"] == failed and after["failed"] == 1
    assert "array 'id' cannot be read" in after["damaged"]


def store_ids(store) -> np.ndarray:
    with open_store(store) as opened:
        return opened.read("id")


def test_inspect_raises_a_column_the_system_refuses_to_read(tiny_tvhi_source, tmp_path,
                                                            monkeypatch):
    """Only damage is shown as DAMAGED: a column the system refuses (a permission, an I/O
    error) is the store's condition, one error line. (As root no mode stops a read: the read is
    made to fail.)"""
    from flowstore.errors import DamagedStoreError, StoreError
    from flowstore.inspect import summarize
    from flowstore.store import _zarr
    from flowstore.store.base import unreadable_part

    store = _built(tiny_tvhi_source, tmp_path)
    read = _zarr.ZarrStore.read

    def refused(self, name, *args):
        if name == "label":
            raise unreadable_part(self.path, "array 'label'",
                                  PermissionError(13, "Permission denied"), sample=False)
        return read(self, name, *args)

    monkeypatch.setattr(_zarr.ZarrStore, "read", refused)
    with pytest.raises(StoreError, match="array 'label' cannot be read .Permission denied") as got:
        summarize(store)
    assert not isinstance(got.value, DamagedStoreError)


def test_repair_of_a_store_it_may_not_write_is_one_line(tiny_tvhi_source, tmp_path, monkeypatch):
    """`verify --repair` on a read-only store: the bad samples were listed, then a PermissionError
    traceback from the ledger write. (As root no mode stops a write: the write is made to fail.)"""
    from typer.testing import CliRunner

    import flowstore.verify
    from flowstore.cli import app

    store = _built(tiny_tvhi_source, tmp_path)
    chunk_file(store, "flow", 0).write_bytes(b"garbage")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(store / "done" / "c.0"))

    monkeypatch.setattr(flowstore.verify, "repair", read_only)
    result = CliRunner().invoke(app, ["verify", str(store), "--repair", "--source",
                                      str(tiny_tvhi_source), "-q"])
    assert result.exit_code == 2, result.exception  # (an uncaught exception: exit code 1)
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: Permission denied: {str(store / 'done' / 'c.0')!r}")


def test_hand_edited_root_attributes_are_damage_not_tracebacks(tiny_tvhi_source, tmp_path):
    """A `classes` list cut short made `inspect` an IndexError and the trainers a Keras
    label-range traceback; `params` set to null made `verify` an AttributeError."""
    store = _built(tiny_tvhi_source, tmp_path)
    group = zarr.open_group(str(store), mode="r+")
    group.attrs["classes"] = list(group.attrs["classes"])[:2]
    shown = flowstore_cli("inspect", store)
    assert shown.returncode == 1 and "DAMAGED      store" in shown.stdout
    assert "(label 3)" in shown.stdout  # its samples still counted, under their number
    assert "is damaged: its class names" in assert_one_line_error(
        flowstore_cli("show", store, "--out", tmp_path / "p"))
    group.attrs["params"] = None
    assert "its attribute 'params' is not an object of parameters (None)" in (
        assert_one_line_error(flowstore_cli("verify", store)))


def test_a_class_name_that_is_no_text_is_damage_not_a_bug(tiny_tvhi_source, tmp_path):
    """`classes` of the right length holding a number: `inspect` ended in a TypeError."""
    store = _built(tiny_tvhi_source, tmp_path)
    group = zarr.open_group(str(store), mode="r+")
    group.attrs["classes"] = [7, *list(group.attrs["classes"])[1:]]
    for command in ("inspect", "verify"):
        assert "is damaged: its attribute 'classes' is not a list of class names ([7, " in \
            assert_one_line_error(flowstore_cli(command, store)), command


def test_a_fingerprint_of_other_than_hexadecimal_digits_is_damage(tiny_tvhi_source, tmp_path):
    """A run folder's name holds a store's first 8 fingerprint digits: `"/../../x"` (a store
    from elsewhere) trained a whole model, then failed to write its run in words that blamed
    --runs-dir (found by review)."""
    import flowstore
    from flowstore.errors import StoreError

    store = _built(tiny_tvhi_source, tmp_path)
    zarr.open_group(str(store), mode="r+").attrs["fingerprint"] = "/../../x"
    said = "is damaged: its attribute 'fingerprint' is not hexadecimal digits ('/../../x')"
    for command in ("inspect", "verify"):
        assert said in assert_one_line_error(flowstore_cli(command, store)), command
    with pytest.raises(StoreError, match="is not hexadecimal digits"):
        flowstore.open(store)


@pytest.mark.parametrize("unrecorded", [("size",), ("steps", "flow_dtype")])
def test_params_that_record_no_shape_are_said_so_not_blamed_on_an_array(tiny_tvhi_source,
                                                                       tmp_path, unrecorded):
    """A field left out of `params` stood for its default: a 32 px store whose params lost
    `size` "had shape (200, 32, 32, 3) for array 'middle_frame' (200, 224, 224, 3)" (found by
    review). Every store has recorded them."""
    store = _built(tiny_tvhi_source, tmp_path)
    group = zarr.open_group(str(store), mode="r+")
    group.attrs["params"] = {k: v for k, v in group.attrs["params"].items()
                             if k not in unrecorded}
    said = (f"describes itself wrongly: its params record no "
            f"{', '.join(map(repr, unrecorded))}, which every store records")
    for command in ("verify", "show"):
        assert said in assert_one_line_error(flowstore_cli(command, store, "--out", tmp_path / "p")
                                             if command == "show" else
                                             flowstore_cli(command, store)), command
    shown = flowstore_cli("inspect", store)
    assert shown.returncode == 1 and said in shown.stdout, shown.stdout


def test_an_array_of_another_dataset_is_damage_not_changed_bytes(tiny_tvhi_source, tmp_path):
    """A video store holding an image store's array (two stores merged by hand) is no store
    of its dataset: said so, not "bytes changed since written" of every sample, which sends
    the user to a --repair that cannot mend it."""
    store = _built(tiny_tvhi_source, tmp_path)
    group = zarr.open_group(str(store), mode="r+")
    extra = group.create_array("image", shape=(16, 8, 8, 3), dtype="uint8", chunks=(1, 8, 8, 3))
    extra[:] = 1
    said = "says dataset 'tvhi' but has array(s) image of another dataset"
    assert said in assert_one_line_error(flowstore_cli("verify", store))
    shown = flowstore_cli("inspect", store)
    assert shown.returncode == 1 and f"DAMAGED      store '{store}' {said}" in shown.stdout


def test_a_lost_done_column_is_noted_not_passed_in_silence(tiny_tvhi_source, tmp_path):
    """`done` deleted by hand: verify said "checked 0 sample(s), 0 bad" and nothing else."""
    store = _built(tiny_tvhi_source, tmp_path)
    chunk_file(store, "done", 0).unlink()
    out = flowstore_cli("verify", store, "-q")
    assert out.returncode == 0 and "checked 0 sample(s), 0 bad" in out.stdout
    assert out.stderr.startswith("note: 16 sample(s) have a checksum but are not marked done")
    assert "note:" not in flowstore_cli("verify", _built(tiny_tvhi_source, tmp_path / "b"),
                                        "-q").stderr


def test_a_ledger_chunk_a_power_cut_left_empty_costs_its_samples_not_the_store(
        tiny_tvhi_source, tmp_path):
    """A power cut can leave a `done` chunk an empty file (the README says so): build, verify
    and --repair all stopped with "rebuild it (--overwrite)", which throws every sample away.
    Now verify names its samples (exit 1), --repair re-extracts them, and a build takes them
    as not extracted, warns, and writes the chunk anew. (HDF5 keeps its ledger columns
    uncompressed: lost bytes read as not done, which verify's "unmarked" note covers.)"""
    store = _built(tiny_tvhi_source, tmp_path)
    cut = tmp_path / "cut.zarr"

    def power_cut() -> None:
        shutil.rmtree(cut, ignore_errors=True)
        shutil.copytree(store, cut)
        chunk_file(cut, "done", 0).write_bytes(b"")

    power_cut()
    verified = flowstore_cli("verify", cut)
    assert verified.returncode == 1, verified.stderr
    named = [line for line in verified.stderr.splitlines() if "its chunk of 'done'" in line]
    assert len(named) == 16 and "note:" not in verified.stderr  # (not also "unmarked")
    # its `checksum` chunk lost instead: the samples are named by that chunk, not as done
    # samples with no checksum (the chunk of `done` read, the checksums did not)
    power_cut()
    shutil.copy2(chunk_file(store, "done", 0), chunk_file(cut, "done", 0))
    chunk_file(cut, "checksum", 0).write_bytes(b"")
    verified = flowstore_cli("verify", cut)
    assert verified.returncode == 1, verified.stderr
    named = [line for line in verified.stderr.splitlines() if "its chunk of 'checksum'" in line]
    assert len(named) == 16 and "no checksum" not in verified.stderr, verified.stderr
    repaired = flowstore_cli("verify", cut, "--repair", "--source", tiny_tvhi_source, "-q")
    assert repaired.returncode == 0 and "repaired 16 of 16" in repaired.stdout, repaired.stderr
    assert flowstore_cli("verify", cut, "-q").returncode == 0

    power_cut()
    rebuilt = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", cut,
                            *TINY_BUILD, "--max-per-split", "1", "-q")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "array 'done' could not be read" in rebuilt.stderr
    inspected = flowstore_cli("inspect", cut)
    assert inspected.returncode == 0 and "DAMAGED" not in inspected.stdout  # written anew
    resumed = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", cut,
                            *TINY_BUILD, "-q")
    assert resumed.returncode == 0 and "warning" not in resumed.stderr, resumed.stderr
    assert flowstore_cli("verify", cut, "-q").returncode == 0
    for name in ("frames", "flow", "checksum", "done"):
        with open_store(cut, "r") as mended, open_store(store, "r") as whole:
            np.testing.assert_array_equal(mended.read(name), whole.read(name))
    lost = chunk_file(cut, "failure", 0)  # a column verify does not read: a build mends it
    lost.write_bytes(b"")
    shown = flowstore_cli("inspect", cut)
    assert shown.returncode == 1
    line = next(line for line in shown.stdout.splitlines() if line.startswith("DAMAGED"))
    assert line.endswith("array 'failure' cannot be read (RuntimeError: Zstd decompression "
                         "error: invalid input data); the next build extracts its samples "
                         "again and writes the chunk anew")


def test_a_lost_source_size_chunk_is_shown_by_inspect_and_mended_by_the_next_build(
        tiny_tvhi_source, tmp_path):
    """Zarr reads a missing chunk as the fill value without an error, and `source_size`'s is -1,
    no record: a copy cut short (or a power cut without --fsync) that lost that chunk made
    every later build refuse the store ("source file ... changed since it was written ...
    use --overwrite"), a file nobody touched, while inspect called the store sound (found by
    review). A done sample always has its file's size recorded, so none is a lost chunk:
    inspect shows it, once, and the next build takes its samples as not extracted."""
    store = _built(tiny_tvhi_source, tmp_path)
    cut = tmp_path / "cut.zarr"
    shutil.copytree(store, cut)
    chunk_file(cut, "source_size", 0).unlink()
    shown = flowstore_cli("inspect", cut)
    damaged = [line for line in shown.stdout.splitlines() if line.startswith("DAMAGED")]
    assert shown.returncode == 1 and len(damaged) == 1, shown.stdout
    assert damaged[0].endswith("array 'source_size' cannot be read (SizeNotRecorded: 16 done "
                               "sample(s) with no recorded size of their source file (a chunk "
                               "lost, or an older flowstore wrote none)); the next build extracts its samples again and "
                               "writes the chunk anew")
    rebuilt = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", cut,
                            *TINY_BUILD, "-q")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "array 'source_size' could not be read (SizeNotRecorded" in rebuilt.stderr
    assert "16 computed, 0 already done" in rebuilt.stdout
    assert "DAMAGED" not in flowstore_cli("inspect", cut).stdout
    with open_store(cut, "r") as mended, open_store(store, "r") as whole:
        for name in ("source_size", "source_hash", "checksum", "done", "flow"):
            np.testing.assert_array_equal(mended.read(name), whole.read(name))
    chunk_file(cut, "source_size", 0).write_bytes(b"")  # unreadable: named once, as that
    damaged = [line for line in flowstore_cli("inspect", cut).stdout.splitlines()
               if line.startswith("DAMAGED")]
    assert len(damaged) == 1 and "Zstd decompression error" in damaged[0], damaged


def test_a_synthetic_store_repairs_from_its_cached_source(tmp_path):
    """`--repair --synthetic`: a store built with --synthetic took `--source` the cache folder
    that build wrote, named by a hash nothing showed (found by review)."""
    env = {"FLOWSTORE_CACHE": str(tmp_path / "cache")}
    store = tmp_path / "v.zarr"
    built = flowstore_cli("build", "videofolder", "--synthetic", "--store", store, "--size", "16",
                          "--steps", "2", "--max-per-split", "1", "-q", env=env)
    assert built.returncode == 0, built.stderr
    with open_store(store) as opened:
        index = int(np.flatnonzero(opened.read("done"))[0])
    chunk_file(store, "flow", index).write_bytes(b"garbage" * 10)
    repaired = flowstore_cli("verify", store, "--repair", "--synthetic", "-q", env=env)
    assert repaired.returncode == 0 and "repaired 1 of 1" in repaired.stdout, repaired.stderr
    assert flowstore_cli("verify", store, "-q").returncode == 0
    assert "--repair needs one of --source DIR or --synthetic" in assert_one_line_error(
        flowstore_cli("verify", store, "--repair", "--synthetic", "--source", tmp_path))
    assert "--synthetic applies to --repair only" in assert_one_line_error(
        flowstore_cli("verify", store, "--synthetic"))


def test_a_done_sample_whose_checksum_was_cleared_is_named_as_such(tiny_tvhi_source, tmp_path):
    """Marked done with no checksum (a ledger edited or half-written) is its own problem, not
    "bytes changed since written": its bytes were never compared with anything."""
    from flowstore.verify import verify

    store = _built(tiny_tvhi_source, tmp_path)
    group = zarr.open_group(str(store), mode="r+")
    index = list(group["id"][:]).index("handShake_0002")
    group["checksum"][index] = ""
    assert verify(store).problems == {"handShake_0002": "marked done but has no checksum"}


def test_a_store_whose_split_column_was_edited_does_not_verify_ok(tiny_tvhi_source, tmp_path):
    """`verify(...).ok` (the Python API's verdict) is false for a store damaged as a whole,
    though no sample's own bytes changed: its manifest no longer matches its digest."""
    from flowstore.verify import verify

    store = _built(tiny_tvhi_source, tmp_path)
    assert verify(store).ok
    with open_store(store, "r+") as opened:  # an edit of the split column, no checksum sees it
        splits = opened.read("split").astype(object)
        splits[0] = "train" if splits[0] != "train" else "test"
        opened.write_changed("split", splits, [0])
        opened.flush()
    result = verify(store)
    assert not result.problems and "id, label or split column" in result.damaged
    assert not result.ok


def test_verify_of_named_samples_reports_only_those_of_a_lost_ledger_chunk(tiny_tvhi_source,
                                                                          tmp_path):
    """`verify(samples=...)` (what `--repair` re-checks) checks exactly the samples named: a
    lost ledger chunk makes each named sample in it a problem, not every sample the chunk
    holds (a repair of one sample would be told of fifteen it was not asked about)."""
    from flowstore.verify import verify

    store = _built(tiny_tvhi_source, tmp_path)
    with open_store(store, "r") as opened:
        ids = list(opened.read("id"))
    chunk_file(store, "done", 0).write_bytes(b"")
    assert len(verify(store).problems) == len(ids) == 16
    named = verify(store, samples=ids[:2])
    assert sorted(named.problems) == sorted(ids[:2])
    # each for that chunk, not "not marked done" (a lost chunk's samples read as not done)
    assert all(reason.startswith("its chunk of 'done' cannot be read")
               for reason in named.problems.values()), named.problems


def test_an_hdf5_ledger_column_whose_chunk_index_is_damaged_is_written_anew(
        tiny_tvhi_source, tmp_path):
    """An HDF5 ledger column whose chunk index (B-tree) no longer reads can be neither read nor
    written in place: a build took its samples as not extracted, as meant, then stopped at its
    first ledger write with HDF5's "Can't synchronously write data (bad coordinate offset)",
    exit 2, having unmarked them, and so did every later build and `verify --repair`. Now the
    column is written anew (a new dataset) before any task runs: the build extracts the lost
    samples again and the store verifies."""
    from tests.conftest import break_chunk_index

    store = _built(tiny_tvhi_source, tmp_path, ".h5")
    damaged = tmp_path / "damaged.h5"
    shutil.copy(store, damaged)
    break_chunk_index(store, "source_size")  # (a column verify does not read: a build mends it)
    rebuilt = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                            *TINY_BUILD, "-q")
    assert rebuilt.returncode == 0 and "16 computed" in rebuilt.stdout, rebuilt.stderr
    assert "array 'source_size' could not be read" in rebuilt.stderr
    resumed = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                            *TINY_BUILD, "-q")
    assert resumed.returncode == 0 and "16 already done" in resumed.stdout, resumed.stderr
    assert "warning" not in resumed.stderr
    assert flowstore_cli("verify", store, "-q").returncode == 0
    with open_store(store) as mended:
        assert (mended.read("source_size") > 0).all()

    break_chunk_index(damaged, "done")  # (every sample unreadable to verify: repaired)
    verified = flowstore_cli("verify", damaged, "-q")
    assert verified.returncode == 1 and "its chunk of 'done' cannot be read" in verified.stderr
    repaired = flowstore_cli("verify", damaged, "--repair", "--source", tiny_tvhi_source, "-q")
    assert repaired.returncode == 0 and "repaired 16 of 16" in repaired.stdout, repaired.stderr
    assert flowstore_cli("verify", damaged, "-q").returncode == 0


@pytest.mark.parametrize("edit", ["done", "label", "failure", "flow", "params.steps"])
def test_an_array_declaring_another_shape_is_damage_every_command_names(tiny_tvhi_source,
                                                                         tmp_path, edit):
    """A zarr.json edited (or damaged) to declare one sample fewer, or root params that no
    longer describe the arrays: inspect, verify and show stopped with numpy's or zarr's error
    ("a bug in flowstore", exit 3) on a short column, and verify passed a short feature array
    or other params (exit 0) that a build refused as damaged."""
    import json

    import flowstore
    from flowstore.errors import StoreError

    store = _built(tiny_tvhi_source, tmp_path)
    if edit == "params.steps":
        path = store / "zarr.json"
        metadata = json.loads(path.read_text())
        metadata["attributes"]["params"]["steps"] = 5
        said = "it has shape (16, 4, 32, 32, 3) for array 'frames' (16, 5, 32, 32, 3)"
    else:
        path = store / edit / "zarr.json"
        metadata = json.loads(path.read_text())
        metadata["shape"][0] = 15
        shape = tuple(metadata["shape"])
        said = (f"it has shape {shape} for array {edit!r} "
                + ("(16,)" if len(shape) == 1 else "(16, 4, 32, 32, 2)"))
    path.write_text(json.dumps(metadata))
    damaged = f"store {str(store)!r} is damaged: {said}"
    inspected = flowstore_cli("inspect", store)
    assert inspected.returncode == 1 and "Traceback" not in inspected.stderr, inspected.stderr
    assert damaged in inspected.stdout
    assert assert_one_line_error(flowstore_cli("verify", store)) == f"error: {damaged}"
    if edit != "params.steps":  # (the reader reads what the arrays hold, whatever the params)
        shown = flowstore_cli("show", store, "--out", tmp_path / "pictures")
        assert assert_one_line_error(shown).startswith(f"error: store {str(store)!r} is damaged")
        with pytest.raises(StoreError, match="is damaged: it has shape"):
            flowstore.open(store)


def _retype(store: Path, name: str, dtype: str) -> None:
    """Array `name` of `store` of another type: its zarr.json's `data_type` edited (its chunks
    then read as bytes of that type), or the HDF5 dataset rewritten as that type (its values
    converted: `done` as the text "0"/"1")."""
    import json

    if store.suffix == ".zarr":
        path = store / name / "zarr.json"
        metadata = json.loads(path.read_text())
        metadata["data_type"] = dtype
        path.write_text(json.dumps(metadata))
        return
    import h5py

    with h5py.File(store, "r+") as file:
        values, chunks = file[name][()], file[name].chunks
        del file[name]
        file.create_dataset(name, data=values.astype(int).astype(dtype), chunks=chunks)


def _contents(store: Path) -> dict[str, bytes]:
    files = sorted(store.rglob("*")) if store.is_dir() else [store]
    return {str(f): f.read_bytes() for f in files if f.is_file()}


@pytest.mark.parametrize("suffix, name, dtype, said", [
    (".zarr", "label", "float32", "float32, not int32"),
    (".h5", "label", "float32", "float32, not int32"),
    (".zarr", "flow", "int8", "int8, not float16"),
    (".h5", "done", "S1", "text, not bool"),
], ids=["zarr-label", "hdf5-label", "zarr-flow", "hdf5-done"])
def test_an_array_of_another_type_is_damage_every_command_names(tiny_tvhi_source, tmp_path,
                                                                suffix, name, dtype, said):
    """An array's type edited, as a changed shape is (`check_array_shapes`): a float `label`
    stopped `inspect` with a TypeError (exit 3), and on HDF5 passed `verify` and `show`; a
    Zarr `flow` of int8 passed `inspect`, made `verify` list every sample and a build record
    failures into the damaged store; an HDF5 `done` of text counted every sample done and
    made a build blame a changed source file."""
    store = _built(tiny_tvhi_source, tmp_path, suffix)
    _retype(store, name, dtype)
    damaged = f"store {str(store)!r} is damaged: its array {name!r} holds {said}"
    inspected = flowstore_cli("inspect", store)
    assert inspected.returncode == 1, (inspected.stdout, inspected.stderr)
    assert "Traceback" not in inspected.stderr
    assert f"DAMAGED      {damaged}" in inspected.stdout.splitlines()
    if name == "done":  # (its stand-ins: not done)
        assert "samples      16: 0 done" in inspected.stdout
    assert assert_one_line_error(flowstore_cli("verify", store)) == f"error: {damaged}"
    shown = flowstore_cli("show", store, "--out", tmp_path / "pictures")
    assert assert_one_line_error(shown).startswith(f"error: store {str(store)!r} is damaged")
    before = _contents(store)
    built = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                          *TINY_BUILD, "-q")
    assert assert_one_line_error(built).startswith(f"error: {damaged}; ")
    assert _contents(store) == before  # nothing written to the damaged store


def test_an_hdf5_array_whose_object_header_is_damaged_is_one_line(tiny_tvhi_source, tmp_path):
    """h5py's KeyError ("bad object header version number") went out as a bug, exit 3."""
    import h5py

    store = _built(tiny_tvhi_source, tmp_path, ".h5")
    with h5py.File(store, "r") as file:
        header = h5py.h5o.get_info(file["flow"].id).addr
    with open(store, "r+b") as file:
        file.seek(header)
        byte = file.read(1)
        file.seek(header)
        file.write(bytes([byte[0] ^ 0x55]))
    for command in (("verify", store), ("show", store, "--out", tmp_path / "p")):
        line = assert_one_line_error(flowstore_cli(*command))
        assert f"store {str(store)!r} is damaged: array 'flow' cannot be read" in line, line
    inspected = flowstore_cli("inspect", store)
    assert inspected.returncode in (1, 2) and "Traceback" not in inspected.stderr


def test_samples_asked_of_verify_that_are_not_done_are_problems(tiny_tvhi_source, tmp_path):
    """Asked for by name (as a repair re-checks what it re-extracted), a sample not marked done
    is a problem: checking only the done ones among those asked said nothing of it, and a
    repair would report an unfinished sample repaired (from the mutation review)."""
    from flowstore.verify import verify

    store = tmp_path / "s.zarr"
    out = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                        *TINY_BUILD, "--max-per-split", "1", "-q")
    assert out.returncode == 0, out.stderr
    with open_store(store) as s:
        ids, done = list(s.read("id")), s.read("done").astype(bool)
    finished = ids[int(np.flatnonzero(done)[0])]
    unfinished = ids[int(np.flatnonzero(~done)[0])]
    result = verify(store, samples=[finished, unfinished])
    assert result.checked == 2
    assert result.problems == {unfinished: "not marked done"}


def test_a_repair_whose_re_extraction_still_mismatches_its_checksum_is_still_bad(
        tiny_tvhi_source, tmp_path, monkeypatch):
    """The re-check after re-extraction takes every problem verify finds, a checksum mismatch
    as a missing chunk: one passed over would be reported repaired (from the mutation review)."""
    import flowstore.verify as verify_module

    store = _built(tiny_tvhi_source, tmp_path)
    group = zarr.open_group(str(store), mode="r+")
    sample = "hug_0002"
    index = list(group["id"][:]).index(sample)
    group["flow"][index] = np.ones_like(group["flow"][index])
    built = verify_module.build

    def build_then_mismatch(*args, **kwargs):  # the re-extraction's bytes: still not its sum
        result = built(*args, **kwargs)
        monkeypatch.setattr(verify_module, "matches", lambda arrays, checksum: False)
        return result

    monkeypatch.setattr(verify_module, "build", build_then_mismatch)
    result = verify_module.repair(store, tiny_tvhi_source, [sample], workers=1)
    assert result.repaired == [] and not result.ok
    assert result.still_bad == {sample: "still bad after re-extraction: bytes changed since "
                                        "written (checksum mismatch)"}
