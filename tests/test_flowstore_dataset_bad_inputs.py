"""Bad input to the datasets of issue 14 (item 8), held to the README's promises like
tests/test_flowstore_bad_inputs.py: a usage or layout error is one ``error: `` line, exit 2 and
nothing written; a bad sample fails alone (exit 1) and the others build; what is legal but odd
(class names with spaces, parentheses, apostrophes, non-ASCII letters) just works.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from flowstore.datasets import get_dataset
from flowstore.store import open_store
from flowstore.synth.clips import SynthClipsConfig, write_clip
from tests.conftest import assert_one_line_error, flowstore_cli
from tests.test_flowstore_bad_inputs import _unprivileged, failures_listed

TINY = SynthClipsConfig(classes=2, clips_per_class=4, min_frames=4, max_frames=6, width=32,
                        height=32, seed=7)
TINY_ARGS = ("--size", "16", "--steps", "2", "-q")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    return {name: get_dataset(name).write_synthetic(root / name, TINY)
            for name in ("ucf101", "hmdb51", "kinetics", "videofolder")}


@pytest.fixture
def copy(pristine, tmp_path):
    def make(name: str) -> Path:
        return Path(shutil.copytree(pristine[name], tmp_path / f"{name}-source"))
    return make


def build_cli(dataset: str, source: Path, store: Path, *options: str):
    return flowstore_cli("build", dataset, "--source", source, "--store", store, *options,
                         *TINY_ARGS)


def refused(result, store: Path, *expected: str) -> str:
    line = assert_one_line_error(result)
    for text in expected:
        assert text in line
    assert not store.exists() and not list(store.parent.glob(f".{store.stem}*"))
    return line


# -- a split file naming a clip that is absent: that sample fails, the build goes on ---------------
@pytest.mark.parametrize("dataset", ["tvhi", "stanford40", "ucf101", "videofolder", "clips"])
def test_an_empty_source_folder_is_said_to_be_empty(dataset, tmp_path):
    """Not "none of the 200 clips its split lists is in ...": the folder holds nothing at all
    (a mount not there, a copy not made yet)."""
    (tmp_path / "empty").mkdir()
    store = tmp_path / "s.zarr"
    out = flowstore_cli("build", dataset, "--source", tmp_path / "empty", "--store", store)
    assert assert_one_line_error(out) == f"error: source folder is empty: '{tmp_path}/empty'"
    assert not store.exists()


def test_ucf101_list_naming_an_absent_clip_fails_that_clip_alone(copy, tmp_path):
    source = copy("ucf101")
    train = source / "ucfTrainTestlist" / "trainlist01.txt"
    _append_crlf(train, "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 1")
    result = build_cli("ucf101", source, tmp_path / "u.zarr")
    failed = failures_listed(result)
    assert len(failed) == 1
    (sample, reason), = failed.items()
    assert sample.endswith("_g09_c01") and reason.startswith("video file is missing")
    with open_store(tmp_path / "u.zarr", "r") as store:
        assert int(store.read("done").sum()) == len(store.read("done")) - 1


def test_hmdb51_split_file_naming_an_absent_clip_fails_that_clip_alone(copy, tmp_path):
    source = copy("hmdb51")
    split = next((source / "testTrainMulti_7030_splits").glob("*_test_split1.txt"))
    split.write_text(split.read_text() + "Gone_(HQ)_clip_0.avi 1 \n")
    failed = failures_listed(build_cli("hmdb51", source, tmp_path / "h.h5"))
    assert failed == {"Gone_(HQ)_clip_0": "video file is missing: Gone_(HQ)_clip_0.avi"}


def _built_kinetics(source: Path, store_path: Path) -> tuple:
    """A synthetic Kinetics copy built: its ids, `done` and flow bytes, once its one missing
    clip (the synthetic copy lacks one, as real ones do) is the only failure."""
    failed = failures_listed(build_cli("kinetics", source, store_path))
    (sample, reason), = failed.items()
    assert reason == f"video file is missing: {sample}.mp4"
    with open_store(store_path, "r") as store:
        return (store.read("id").tolist(), store.read("done").tolist(),
                store.read("flow")[:].tobytes())


def test_kinetics_label_folders_renamed_by_mmaction2_build_as_the_csv_spelling(tmp_path):
    """MMAction2's `rename_classnames.sh` writes label folders with `_` for spaces (`-` for
    parentheses in some versions); every clip of those labels failed as "missing". They are
    read where they are: the same store as the CSV's spelling."""
    config = dataclasses.replace(TINY, classes=3)  # the third: "... football (in game)"
    listed = get_dataset("kinetics").write_synthetic(tmp_path / "listed", config)
    assert any("(" in p.name for p in listed.glob("train/*"))
    stores = {}
    for spelling in ("as-listed", "underscored", "dashed"):
        source = Path(shutil.copytree(listed, tmp_path / spelling))
        for folder in [p for p in source.glob("*/*") if p.parent.name != "annotations"]:
            renamed = folder.name.replace(" ", "_") if spelling != "as-listed" else folder.name
            if spelling == "dashed":
                renamed = renamed.replace("(", "-").replace(")", "-")
            folder.rename(folder.with_name(renamed))
        assert (spelling == "as-listed") != any("_" in p.name for p in source.glob("train/*"))
        stores[spelling] = _built_kinetics(source, tmp_path / f"{spelling}.zarr")
    assert stores["underscored"] == stores["as-listed"] == stores["dashed"]


def test_kinetics_clips_flat_in_their_split_folder_build_as_in_label_folders(tmp_path):
    """The CVD Foundation's archives (the Kinetics copy most people download) extract a split's
    clips straight into `train/` and `val/`, no label folders: the build was refused ("none of
    the clips its split lists is in ..."). They are read where they are, the same store; a
    copy half sorted into label folders reads each clip from where it is."""
    config = dataclasses.replace(TINY, classes=3)
    listed = get_dataset("kinetics").write_synthetic(tmp_path / "listed", config)
    stores = {}
    for layout in ("label-folders", "flat", "half-sorted"):
        source = Path(shutil.copytree(listed, tmp_path / layout))
        folders = sorted(p for p in source.glob("*/*") if p.parent.name != "annotations")
        for folder in folders[1:] if layout == "half-sorted" else folders * (layout == "flat"):
            for clip in folder.glob("*.mp4"):
                clip.rename(folder.parent / clip.name)
            folder.rmdir()
        assert any(source.glob("train/*.mp4")) == (layout != "label-folders")
        stores[layout] = _built_kinetics(source, tmp_path / f"{layout}.zarr")
    assert stores["flat"] == stores["label-folders"] == stores["half-sorted"]


def test_kinetics_laid_out_by_mmaction2_or_deepmind_builds_as_the_official_layout(tmp_path):
    """MMAction2's scripts rename the CSVs (`annotations/kinetics_train.csv`, `kinetics_val.csv`)
    and download into `videos_train/` and `videos_val/`; DeepMind's archive names the val CSV
    `validate.csv`. Such a copy was refused ("no annotation CSV at .../train.csv"); it builds,
    the same store, and its fingerprint hashes the CSVs read. A copy with no CSV of a split
    is one error naming each name looked for."""
    config = dataclasses.replace(TINY, classes=3)
    listed = get_dataset("kinetics").write_synthetic(tmp_path / "listed", config)
    renames = {"mmaction2": {"annotations/train.csv": "annotations/kinetics_train.csv",
                             "annotations/val.csv": "annotations/kinetics_val.csv",
                             "train": "videos_train", "val": "videos_val"},
               "deepmind": {"annotations/val.csv": "annotations/validate.csv"}}
    stores = {"official": _built_kinetics(listed, tmp_path / "official.zarr")}
    for layout, moves in renames.items():
        source = Path(shutil.copytree(listed, tmp_path / layout))
        for old, new in moves.items():
            (source / old).rename(source / new)
        stores[layout] = _built_kinetics(source, tmp_path / f"{layout}.zarr")
        dataset = get_dataset("kinetics")
        read = {name for name in dataset.source_files(source, dataset.manifest(source))
                if name.startswith("annotations/")}
        assert read == {moves.get(name, name) for name in ("annotations/train.csv",
                                                           "annotations/val.csv")}
    assert stores["mmaction2"] == stores["official"] == stores["deepmind"]
    (tmp_path / "mmaction2" / "annotations" / "kinetics_val.csv").unlink()
    store = tmp_path / "none.zarr"
    line = refused(build_cli("kinetics", tmp_path / "mmaction2", store), store)
    assert line.endswith("/mmaction2/annotations/val.csv' (nor validate.csv or kinetics_val.csv, "
                         "as others name it)"), line


def test_kinetics_split_folder_named_otherwise_is_told_on_a_warning_line(copy, tmp_path):
    """Kinetics' `val/` named `validation/` built a store without test samples, each failing
    as "missing" by its file name alone; a split none of whose clips is there is told."""
    source = copy("kinetics")
    (source / "val").rename(source / "validation")
    result = build_cli("kinetics", source, tmp_path / "k.zarr")
    failures_listed(result)
    warning, = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: none of the 4 clips of the test split is in ")
    assert f"{source / 'val'}/" in warning


def test_a_class_folder_named_otherwise_is_told_on_a_warning_line(copy, tmp_path):
    """A class folder spelt otherwise than the split lists spell it (or not copied) made its
    clips fail as "video file is missing: v_...avi", each named by its file alone, like clips
    the copy lacks: the absent folder is named, apart from the missing clips of folders that
    are there."""
    source = copy("ucf101")
    (source / "UCF-101" / "HandstandPushups").rename(source / "UCF-101" / "Handstand Pushups")
    (source / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi").unlink()
    result = build_cli("ucf101", source, tmp_path / "u.zarr")
    assert set(failures_listed(result).values()) == {
        f"video file is missing: {name}.avi" for name in (
            "v_ApplyEyeMakeup_g01_c01", *(f"v_HandStandPushups_g0{g}_c0{c}"
                                          for g in (1, 2) for c in (1, 2)))}
    warning, = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning == (f"warning: 1 folder(s) the split lists name are not in {str(source)!r}: "
                       f"'UCF-101/HandstandPushups' (4 clips in all, failing as missing): named "
                       f"otherwise, or not copied?")


def test_hmdb51_class_folders_in_two_places_are_one_line(copy, tmp_path):
    """The clips' folder was found from the first class alone: `brush_hair/` left at the top,
    the rest one folder down in `hmdb51/`, built with every other class's clips "missing"."""
    source = copy("hmdb51")
    first, second = sorted(p.name for p in (source / "hmdb51").iterdir())
    (source / "hmdb51" / first).rename(source / first)
    store = tmp_path / "h.zarr"
    refused(build_cli("hmdb51", source, store), store,
            f"class folders in two places: {second!r} in {str(source / 'hmdb51')!r}, the "
            f"others in {str(source)!r}")
    # two whole copies (`hmdb51_org/` beside `hmdb51_sta/`) are no split: the first is read
    (source / first).rename(source / "hmdb51" / first)
    shutil.copytree(source / "hmdb51", source / "hmdb51_sta")
    assert build_cli("hmdb51", source, store).returncode == 0
    with open_store(store) as built:
        assert built.read("done").all()


def test_videofolder_split_csv_naming_an_absent_clip_fails_that_clip_alone(copy, tmp_path):
    source = copy("videofolder")
    csv = tmp_path / "splits.csv"
    csv.write_text("path,label,split\njumping jacks/clip_01.MP4,jump,train\n"
                   "elsewhere/missing.mp4,jump,test\nrock'n'roll/clip_02.mkv,rock,val\n")
    failed = failures_listed(build_cli("videofolder", source, tmp_path / "v.zarr",
                                       "--split-file", str(csv)))
    assert failed == {"elsewhere/missing": "video file is missing: missing.mp4"}



def test_videofolder_symlink_loops_and_broken_links_named_like_clips_fail_alone(
        copy, tmp_path):
    """`entry.is_file()` raised ELOOP while the class folders were listed: build refused the
    whole source ("error: Too many levels of symbolic links", nothing built) and estimate
    ended in a traceback as an internal error (exit 3); a broken link was silently left out.
    Each is a sample that fails with its reason, as in TV-HI; the others build."""
    source = copy("videofolder")
    (source / "rock'n'roll" / "loop.mp4").symlink_to("loop.mp4")
    (source / "rock'n'roll" / "ping.mp4").symlink_to("pong.mp4")  # a cycle of two links
    (source / "rock'n'roll" / "pong.mp4").symlink_to("ping.mp4")
    (source / "rock'n'roll" / "gone.mp4").symlink_to("/nonexistent/gone.mp4")  # was not listed
    store = tmp_path / "v.zarr"
    failed = failures_listed(build_cli("videofolder", source, store))
    loops = {"rock'n'roll/loop", "rock'n'roll/ping", "rock'n'roll/pong"}
    assert set(failed) == {*loops, "rock'n'roll/gone"}, failed
    assert all(".mp4" in why for why in failed.values()), failed
    # (each said as what it is: both were "video file is missing")
    assert failed["rock'n'roll/gone"] == ("video file is missing (a broken link to "
                                          "'/nonexistent/gone.mp4'): gone.mp4")
    assert failed["rock'n'roll/loop"] == "video file is a symlink loop: loop.mp4"
    with open_store(store) as built:
        assert int(built.read("done").sum()) == TINY.classes * TINY.clips_per_class
    estimated = flowstore_cli("estimate", "videofolder", "--source", source, *TINY_ARGS)
    assert estimated.returncode == 0, (estimated.returncode, estimated.stderr[-2000:])
    assert "Traceback" not in estimated.stderr
    for sample in loops:
        assert f"failed: {sample}: " in estimated.stdout, estimated.stdout


# -- split files that name unknown classes, or are unreadable or malformed: one line, exit 2 -------
def _append_crlf(path: Path, line: str) -> None:
    path.write_bytes(path.read_bytes() + line.encode() + b"\r\n")


@pytest.mark.parametrize("damage, expected", [
    (lambda s: _append_crlf(s / "ucfTrainTestlist" / "trainlist01.txt",
                            "Juggling/v_Juggling_g01_c01.avi 3"),
     "trainlist01.txt line 5: class 'Juggling' is not in classInd.txt"),
    (lambda s: _append_crlf(s / "ucfTrainTestlist" / "testlist01.txt",
                            "Juggling/v_Juggling_g01_c01.avi"),
     "testlist01.txt line 5: class 'Juggling' is not in classInd.txt"),
    (lambda s: _append_crlf(s / "ucfTrainTestlist" / "trainlist01.txt", "just some words here"),
     "trainlist01.txt line 5: expected 'Class/clip.avi INDEX'"),
    (lambda s: _append_crlf(s / "ucfTrainTestlist" / "trainlist01.txt",
                            "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi first"),
     "trainlist01.txt line 5: index first is not that of 'ApplyEyeMakeup' in "
     "classInd.txt (1)"),
    # a clip without its class folder was a traceback (ValueError unpacking the path)
    (lambda s: _append_crlf(s / "ucfTrainTestlist" / "testlist01.txt",
                            "v_ApplyEyeMakeup_g01_c01.avi"),
     "testlist01.txt line 5: expected 'Class/clip.avi', got 'v_ApplyEyeMakeup_g01_c01.avi'"),
    (lambda s: (s / "ucfTrainTestlist" / "classInd.txt").write_bytes(b"1 A\r\n3 B\r\n"),
     "classInd.txt line 2: index 3 out of order"),
    # '²' passed `str.isdigit` and int() refused it: a traceback and exit 3, an internal error
    (lambda s: (s / "ucfTrainTestlist" / "classInd.txt").write_text("1 A\n\u00b2 B\n"),
     "classInd.txt line 2: expected 'INDEX CLASS', got '\u00b2 B'"),
    (lambda s: _append_crlf(s / "ucfTrainTestlist" / "trainlist01.txt",
                            "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi \u00b9"),
     "trainlist01.txt line 5: index \u00b9 is not that of 'ApplyEyeMakeup'"),
    (lambda s: (s / "ucfTrainTestlist" / "trainlist01.txt").write_bytes(b"\xff\xfe\x00junk"),
     "is not UTF-8 text"),
    (lambda s: (s / "ucfTrainTestlist" / "testlist01.txt").unlink(),
     "no testlist01.txt at"),
    (lambda s: shutil.rmtree(s / "UCF-101"), "expected UCF-101/ and ucfTrainTestlist/"),
    (lambda s: (s / "ucfTrainTestlist" / "classInd.txt").write_bytes(b"\r\n"),
     "classInd.txt lists no classes"),
    (lambda s: [(s / "ucfTrainTestlist" / f"{name}list01.txt").write_bytes(b"")
                for name in ("train", "test")],
     "classes 'ApplyEyeMakeup', 'HandstandPushups' have no samples in any split"),
], ids=["train-unknown-class", "test-unknown-class", "malformed-line", "index-not-a-number",
        "no-class-folder",
        "classind-order", "classind-superscript-index", "superscript-index",
        "not-utf8", "missing-list", "no-clips-folder", "classind-empty", "lists-empty"])
def test_ucf101_bad_split_files_are_one_line_and_write_nothing(damage, expected, copy, tmp_path):
    source = copy("ucf101")
    damage(source)
    refused(build_cli("ucf101", source, tmp_path / "u.zarr"), tmp_path / "u.zarr", expected)


def test_an_unreadable_split_file_is_one_line_and_writes_nothing(copy, tmp_path):
    source = copy("ucf101")
    preexec = _unprivileged(tmp_path)
    (source / "ucfTrainTestlist" / "trainlist01.txt").chmod(0)
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "flowstore", "build", "ucf101", "--source",
                             str(source), "--store", str(tmp_path / "u.zarr"), *TINY_ARGS],
                            capture_output=True, text=True, preexec_fn=preexec, timeout=300)
    refused(result, tmp_path / "u.zarr", "cannot read trainlist01.txt", "Permission denied")


@pytest.mark.parametrize("dataset, damage, expected", [
    ("hmdb51", lambda s: next((s / "testTrainMulti_7030_splits").glob("*_split1.txt"))
     .write_text("clip.avi 7 \n"), "line 1: expected 'clip.avi N' with N 0, 1 or 2"),
    ("hmdb51", lambda s: shutil.rmtree(s / "testTrainMulti_7030_splits"),
     "no testTrainMulti_7030_splits/"),
    ("kinetics", lambda s: (s / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start\nabseiling,x,1\n"), "has no column 'time_end'"),
    ("kinetics", lambda s: (s / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n\"abseiling,x,1,11,train\n"),
     "train.csv' line 2: unexpected end of data"),
    ("kinetics", lambda s: (s / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nabseiling,x,soon,11,train\n"),
     "line 2: time 'soon' is not a number"),
    ("kinetics", lambda s: (s / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n\n\nabseiling,x,5,3,train\n"),
     "train.csv line 4: time_end 3 is not after time_start 5"),
    ("kinetics", lambda s: (s / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n\n\"abseiling,x,1,11,train\n"),
     "train.csv' line 3: unexpected end of data"),
    ("kinetics", lambda s: (s / "annotations" / "val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nunheard of,x,1,11,val\n"),
     "val.csv has label 'unheard of', which train.csv lacks"),
], ids=["hmdb-bad-code", "hmdb-no-splits", "kinetics-missing-column", "kinetics-open-quote",
        "kinetics-bad-time", "kinetics-blank-rows", "kinetics-blank-rows-open-quote",
        "kinetics-unknown-label"])
def test_bad_split_files_and_csvs_are_one_line_and_write_nothing(dataset, damage, expected,
                                                                 copy, tmp_path):
    source = copy(dataset)
    damage(source)
    store = tmp_path / "x.zarr"
    refused(build_cli(dataset, source, store), store, expected)


@pytest.mark.parametrize("text, expected", [
    ("path,label\na.mp4,x\n", "has no column 'split'"),
    ("path,label,split\na.mp4,x,holdout\n", "line 2: split 'holdout' is not one of"),
    ("path,label,split\n../a.mp4,x,train\n", "line 2: path '../a.mp4' is not inside"),
    ("path,label,split\na.mp4,x,train\na.mp4,x,test\n", "line 3: 'a.mp4' is listed twice"),
    ("path,label,split\na.mp4,x,train,extra\n", "line 2: expected 3 fields"),
    ("path,label,split,path\na.mp4,x,train,b.mp4\n", "has the column 'path' twice"),
    ("path,label,split\n", "lists no videos"),
    (None, "no split file at"),
    ("path,label,split\n.,x,train\n", "line 2: path '.' names no file"),
    # a spreadsheet's blank rows: each row is named by its own line (was by its count + 1)
    ("path,label,split\n\na.mp4,x,train\n\n\nb.mp4,x,trian\n", "line 6: split 'trian'"),
    ("path,label,split\r\n\r\na.mp4,x,train\r\n\r\nb.mp4,x,train,extra\r\n",
     "line 5: expected 3 fields"),
], ids=["no-split-column", "bad-split", "outside", "twice", "extra-field", "column-twice",
        "empty", "absent", "dot", "blank-rows", "blank-rows-crlf"])
def test_a_malformed_or_absent_split_csv_is_one_line_and_writes_nothing(text, expected, copy,
                                                                        tmp_path):
    source = copy("videofolder")
    csv = tmp_path / "splits.csv"
    if text is not None:
        csv.write_text(text)
    store = tmp_path / "v.zarr"
    refused(build_cli("videofolder", source, store, "--split-file", str(csv)), store, expected)


def test_an_empty_split_file_path_is_refused_as_an_empty_path(copy, tmp_path):
    """`--split-file "$SPLITS"` with SPLITS unset was `Path("")`, the current folder: "split
    file '.' is a folder", blaming the folder the user stood in; `--source ""` said what
    happened, and so does a dataset's own path option now."""
    source = copy("videofolder")
    store = tmp_path / "v.zarr"
    refused(build_cli("videofolder", source, store, "--split-file", ""), store,
            "--split-file: an empty path (an unset shell variable?)")
    refused(build_cli("videofolder", source, store, "--split-file", str(tmp_path)), store,
            f"split file {str(tmp_path)!r} is a folder, not a file")


def test_a_split_file_that_reads_once_is_refused(copy, tmp_path):
    """`--split-file <(cat split.csv)`: the manifest read the pipe, and the content the store
    records (and its fingerprint hashes) was read from it again, empty, so the store could not
    be resumed with the real file, "built with other split options" (found by review). A FIFO
    with no writer is refused too, not waited on."""
    import os

    from flowstore.datasets._classfolders import read_text
    from flowstore.errors import SourceLayoutError

    reading, writing = os.pipe()
    os.write(writing, b"path,label,split\n")
    os.close(writing)
    try:
        with pytest.raises(SourceLayoutError, match=r"is not a regular file \(a pipe or a "
                                                    r"device, which reads once\)"):
            read_text(Path(f"/dev/fd/{reading}"), "split file")
    finally:
        os.close(reading)
    fifo = tmp_path / "split.csv"
    os.mkfifo(fifo)
    store = tmp_path / "v.zarr"
    refused(build_cli("videofolder", copy("videofolder"), store, "--split-file", str(fifo)),
            store, f"split file {str(fifo)!r} is not a regular file")


# -- class folders ---------------------------------------------------------------------------------
def test_an_empty_class_folder_is_one_line(copy, tmp_path):
    source = copy("videofolder")
    (source / "kiss").mkdir()
    (source / "kiss" / "notes.txt").write_text("to do")
    store = tmp_path / "v.zarr"
    refused(build_cli("videofolder", source, store), store, "class folder", "kiss",
            "holds no video")


def test_a_source_without_class_folders_is_one_line(tmp_path):
    source = tmp_path / "flat"
    source.mkdir()
    write_clip(source / "a.avi", 0, TINY)
    store = tmp_path / "v.zarr"
    refused(build_cli("videofolder", source, store), store,
            "no class folders in", "expected <class>/<video>")


def test_a_store_inside_its_own_class_folder_source_builds_again(copy, tmp_path):
    """Its folder was read as a class folder without videos: every later build of it (the same
    command, a resume, a repair) was refused."""
    source = copy("videofolder")
    store = source / "features.zarr"
    first = build_cli("videofolder", source, store)
    assert first.returncode == 0, first.stderr
    again = build_cli("videofolder", source, store)
    assert again.returncode == 0 and " 0 computed" in again.stdout, again.stdout + again.stderr
    assert flowstore_cli("verify", store, "-q").returncode == 0


def test_a_store_inside_another_store_is_one_line_and_writes_nothing(copy, tmp_path):
    """It was built, and `--overwrite` of the outer store then deleted it without a word."""
    source = copy("videofolder")
    outer = tmp_path / "outer.zarr"
    assert build_cli("videofolder", source, outer).returncode == 0
    inner = outer / "inner.zarr"
    refused(build_cli("videofolder", source, inner), inner,
            f"store {str(inner)!r} lies inside the store {str(outer)!r}")


@pytest.mark.parametrize("other", ["Jumping Jacks", "jumping jacks".upper(), "jumping jacks "])
def test_two_spellings_of_one_class_are_one_line(other, copy, tmp_path):
    source = copy("videofolder")
    (source / other).mkdir()
    write_clip(source / other / "x.avi", 0, TINY)
    store = tmp_path / "v.zarr"
    refused(build_cli("videofolder", source, store), store, "differ only in letter case")


def test_two_unicode_forms_of_one_class_are_one_line(tmp_path):
    import unicodedata

    source = tmp_path / "s"
    for form in ("NFC", "NFD"):
        folder = source / unicodedata.normalize(form, "vélo")
        folder.mkdir(parents=True)
        write_clip(folder / "a.avi", 0, TINY)
    store = tmp_path / "v.zarr"
    refused(build_cli("videofolder", source, store), store,
            "classes 've\\u0301lo' and 'v\\xe9lo' in ")  # (printed alike, escaped: told apart)


def test_class_names_with_spaces_parentheses_apostrophes_and_non_ascii_work(tmp_path):
    names = ["playing (guitar)", "rock'n'roll", "vélo à l'école", "跳舞", "tai chi"]
    source = tmp_path / "s"
    for k, name in enumerate(names):
        (source / name).mkdir(parents=True)
        for number in range(3):
            write_clip(source / name / f"clip ({number}).avi", k, TINY)
    store = tmp_path / "v.h5"
    result = build_cli("videofolder", source, store)
    assert result.returncode == 0, result.stderr
    with open_store(store, "r") as opened:
        assert opened.attrs["classes"] == sorted(names)
        assert opened.read("done").all()
        assert "vélo à l'école/clip (0)" in list(opened.read("id"))


def test_a_tvhi_readme_listing_a_clip_in_both_sets_is_one_line_and_writes_nothing(
        tiny_tvhi_source, tmp_path):
    """It was a sample twice, in train and in test, with a warning after the build."""
    from flowstore.datasets.tvhi import parse_readme

    source = Path(shutil.copytree(tiny_tvhi_source, tmp_path / "tvhi"))
    readme = source / "readme.txt"
    sets = parse_readme(readme.read_text())
    test_clip = sets[1]["hug"][0]
    text = readme.read_text().replace("SET 2:", f"SET 2:\n\tHug\t\t-> {{{test_clip}}}", 1)
    readme.write_text(text)
    store = tmp_path / "x.zarr"
    refused(build_cli("tvhi", source, store), store,
            f"lists Hug clip {test_clip} (hug_{test_clip:04d}) in both SET 1 and SET 2")


def test_a_tvhi_readme_listing_a_set_twice_is_one_line_and_writes_nothing(tiny_tvhi_source,
                                                                          tmp_path):
    """A second "SET 1:" block (a readme edited by pasting) replaced the first's clips, and the
    sets still passed every check: another test split, without a word."""
    source = Path(shutil.copytree(tiny_tvhi_source, tmp_path / "tvhi"))
    readme = source / "readme.txt"
    lines = readme.read_text().splitlines()
    set_2 = next(n for n, line in enumerate(lines) if line.startswith("SET 2:"))
    block_1 = lines[:set_2]
    header = next(n for n, line in enumerate(block_1) if line.startswith("SET 1:"))
    edited = [*lines, *block_1[header:]]
    readme.write_text("\n".join(edited) + "\n")
    store = tmp_path / "x.zarr"
    refused(build_cli("tvhi", source, store), store,
            f"readme.txt' line {len(lines) + 1}: a second 'SET 1:'")


def test_a_tvhi_readme_whose_numbers_lost_a_comma_or_a_class_is_one_line(tiny_tvhi_source,
                                                                         tmp_path):
    """`{2 14,15}` (a comma lost in an edit) was a ValueError traceback; `Hug -> {}` built a
    test split without hugs, silently."""
    import re

    source = Path(shutil.copytree(tiny_tvhi_source, tmp_path / "tvhi"))
    readme = source / "readme.txt"
    original = readme.read_text()
    lines = original.splitlines()
    number = next(n for n, line in enumerate(lines, start=1) if "->" in line and "," in line)
    first, second = re.search(r"\{(\d+),(\d+)", lines[number - 1]).groups()
    lines[number - 1] = lines[number - 1].replace(f"{{{first},{second}", f"{{{first} {second}", 1)
    readme.write_text("\n".join(lines) + "\n")
    store = tmp_path / "x.zarr"
    refused(build_cli("tvhi", source, store), store,
            f"readme.txt' line {number}: '{first} {second}' is not a clip number")
    readme.write_text(re.sub(r"(Hug\s*->\s*)\{[\d,\s]*\}", r"\1{}", original, count=1))
    refused(build_cli("tvhi", source, store), store, "SET 1 lists no Hug clip")
