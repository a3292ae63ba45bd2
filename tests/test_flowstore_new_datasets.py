"""The dataset contract, for every dataset that writes its own synthetic source (those of
issue 14, videofolder, imagefolder, UCF101, HMDB51 and Kinetics, and `clips` and `images`, new
clips and images of no class to predict; a dataset module added later joins them by itself).

Each builds from a tiny synthetic source in its real layout, on both backends, into values
equal to an independent decode + resize (tests/reference.py); its split follows the dataset's
rules; its options are typed, validated in one place, recorded and fingerprinted; and the real
split files in ../shared/data parse into the official folds.
"""

from __future__ import annotations

import collections
import os
import dataclasses
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from flowstore.build import (FAILURES_LISTED, BuildConfig, build, duplicate_sources,
                             failure_lines, group_failures)
from flowstore.datasets.hmdb51 import source_video
from flowstore.datasets import dataset_names, get_dataset
from flowstore.datasets.base import Dataset, VideoDataset
from flowstore.errors import ParameterError, SourceLayoutError
from flowstore.extraction._cv import cv2
from flowstore.params import ImageParams, VideoParams
from flowstore.store import open_store
from flowstore.synth.clips import SynthClipsConfig
from tests.conftest import SHARED, assert_one_line_error, flowstore_cli, require_real_data
from tests.reference import reference_image, reference_tvhi

#: Every registered dataset whose module writes its synthetic source (TV-HI's and
#: Stanford-40's are the report's own, with tests of their own).
NEW = tuple(name for name in dataset_names() if get_dataset(name).synth_config_type is not None)
#: The image datasets among them (a store of `image`, no flow).
IMAGES = tuple(name for name in NEW if not isinstance(get_dataset(name), VideoDataset))
TINY = SynthClipsConfig(classes=2, clips_per_class=4, min_frames=6, max_frames=9, width=48,
                        height=32, seed=3)
SIZE, STEPS = 16, 2


def params_of(name: str):
    return ImageParams(size=SIZE) if name in IMAGES else VideoParams(size=SIZE, steps=STEPS)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """A read-only tiny synthetic source of each new dataset (copy one to change it)."""
    root = tmp_path_factory.mktemp("synth")
    return {name: get_dataset(name).write_synthetic(root / name, TINY) for name in NEW}


def test_every_new_dataset_is_registered_with_its_options():
    assert {"videofolder", "imagefolder", "ucf101", "hmdb51", "kinetics", "clips",
            "images"} <= set(NEW) and set(IMAGES) == {"imagefolder", "images"}
    result = flowstore_cli("datasets")
    assert result.returncode == 0
    lines = dict(line.split(None, 1) if " " in line else (line, "")
                 for line in result.stdout.splitlines())
    assert "--fold" in lines["ucf101"] and "--fold" in lines["hmdb51"]
    assert "--split-file" in lines["videofolder"] and "--val-fraction" in lines["kinetics"]
    assert lines["tvhi"] == ""


@pytest.mark.parametrize("name", ["something-v2", "SSv2", "vélo", ""])
def test_a_dataset_named_other_than_a_word_of_lower_case_letters_is_refused(name):
    """The synthetic cache knows its folders by `<name>-<hash>`: a source of a dataset named
    `something-v2` was never pruned (found by review)."""
    with pytest.raises(TypeError, match="is not lower-case letters, digits and '_'"):
        type("Odd", (VideoDataset,), {"name": name})
    assert name not in dataset_names()


def test_datasets_describes_one_with_its_layout_and_options():
    """`build NAME --help` cannot show a dataset's own options (they follow its name):
    `flowstore datasets NAME` does, with their defaults and the source layout."""
    described = flowstore_cli("datasets", "videofolder")
    assert described.returncode == 0, described.stderr
    assert described.stdout.startswith("videofolder: A folder of your own clips sorted by class")
    assert "`path,label,split`" in described.stdout
    for name in ("videofolder", "imagefolder", "tvhi", "stanford40", "ucf101", "hmdb51",
                 "kinetics"):  # one quoting, as the rest of the CLI's text
        text = flowstore_cli("datasets", name).stdout
        assert "``" not in text and "::\n" not in text, name
    for option in ("  --split-file  (default: none)", "  --val-fraction  (default: 0.1)",
                   "  --test-fraction  (default: 0.2)", "  --seed  (default: 0)"):
        assert option in described.stdout.splitlines(), option
    assert "Options: none of its own." in flowstore_cli("datasets", "tvhi").stdout
    assert "unknown dataset 'nope'" in assert_one_line_error(flowstore_cli("datasets", "nope"))


@pytest.mark.parametrize("name", NEW)
def test_builds_from_its_synthetic_source_with_values_of_an_independent_decode(
        name, sources, suffix, tmp_path):
    source = sources[name]
    store_path = tmp_path / f"{name}{suffix}"
    result = build(BuildConfig(dataset=name, source=source, store=store_path,
                               params=params_of(name), workers=2, progress=False))
    dataset = get_dataset(name)
    manifest = dataset.manifest(source)
    missing = {row.id for row in manifest.rows
               if not dataset.source_file(source, row.id).is_file()}
    assert set(result.failures) == missing  # only Kinetics' synthetic copy has holes
    assert all(reason.startswith("video file is missing") for reason in result.failures.values())
    assert result.computed == len(manifest) - len(missing) > 0
    with open_store(store_path, "r") as store:
        attrs = store.attrs
        assert attrs["dataset"] == name and tuple(attrs["classes"]) == manifest.classes
        assert list(store.read("id")) == [row.id for row in manifest.rows]  # its manifest:
        assert list(store.read("label")) == [row.label for row in manifest.rows]
        assert list(store.read("split")) == [row.split for row in manifest.rows]
        done = store.read("done").astype(bool)
        for index, row in enumerate(manifest.rows):
            assert done[index] == (row.id not in missing)
            if not done[index]:
                continue
            path = dataset.source_file(source, row.id)
            if name in IMAGES:
                np.testing.assert_array_equal(store.read("image", index),
                                              reference_image(path, SIZE))
            else:
                expected = reference_tvhi(path, SIZE, STEPS)
                for array in ("middle_frame", "frames", "flow"):
                    np.testing.assert_array_equal(store.read(array, index), expected[array],
                                                  err_msg=f"{name} {row.id} {array}")


@pytest.mark.parametrize("name", ["videofolder", "clips"])
def test_a_synthetic_source_written_again_is_the_same_bytes(name, sources, tmp_path):
    """Every file again byte for byte, as `flowstore synth`'s help promises: FFmpeg's Matroska
    muxer wrote random identifiers into each `.mkv` clip, so a source written again (a cleared
    cache) no longer matched the content hash a store had recorded of it, and `build
    --check-source` refused the store (found by review). The rewritten identifiers leave a
    valid file: each CRC-32 holds, and the clip decodes as written."""
    again = get_dataset(name).write_synthetic(tmp_path / name, TINY)
    files = sorted(path.relative_to(sources[name]) for path in sources[name].rglob("*")
                   if path.is_file())
    assert any(path.suffix == ".mkv" for path in files), files
    for path in files:
        assert (again / path).read_bytes() == (sources[name] / path).read_bytes(), path
    for path in (again / path for path in files if path.suffix == ".mkv"):
        data = path.read_bytes()
        for crc_at, body, end in _matroska_crcs(data):
            assert data[crc_at:crc_at + 4] == zlib.crc32(data[body:end]).to_bytes(4, "little")
        assert len(_matroska_crcs(data)) >= 3, path  # (Info, Tracks, Tags: those rewritten)
        capture, frames = cv2.VideoCapture(str(path)), 0
        while capture.read()[0]:
            frames += 1
        assert TINY.min_frames <= frames <= TINY.max_frames, path


def test_synthetic_clips_of_classes_that_share_a_cue_are_not_the_same_bytes(tmp_path):
    """Class k and k + 4 share a cue, and each clip was seeded by its name alone: `clip_02` of
    every such class was one file, 1,200 clips of 400 classes 12 distinct ones, and every
    build warned of byte-identical samples (found by review)."""
    import hashlib

    config = dataclasses.replace(TINY, classes=6, clips_per_class=2)
    source = get_dataset("videofolder").write_synthetic(tmp_path / "src", config)
    dataset = get_dataset("videofolder")
    files = [dataset.source_file(source, sample) for sample in dataset.manifest(source).ids]
    assert len(files) == 12
    assert len({hashlib.sha256(path.read_bytes()).digest() for path in files}) == 12


def _matroska_crcs(data: bytes) -> list[tuple[int, int, int]]:
    """(where its value is, where the rest of its parent starts, where it ends) of each CRC-32
    element that is the first child of a top-level element of the Segment."""
    from flowstore.synth.matroska import SEGMENT, _body, _children, _element_id

    found = []
    for start, end in _children(bytearray(data), 0, len(data)):
        if _element_id(bytearray(data), start)[0] != SEGMENT:
            continue
        for child, child_end in _children(bytearray(data), *_body(bytearray(data), start, end)):
            body, body_end = _body(bytearray(data), child, child_end)
            if data[body] == 0xBF:  # (a CRC-32 element: ID, size 0x84, 4 bytes)
                found.append((body + 2, body + 6, body_end))
    return found


@pytest.mark.parametrize("name", NEW)
def test_a_dataset_reads_its_source_again_the_same(name, sources):
    """`manifest` called twice on one dataset object gives the same manifest and files: HMDB51
    and Kinetics checked repeats against the paths of the first call, so the second refused
    every clip as "listed twice"."""
    dataset, source = get_dataset(name), sources[name]
    first = dataset.manifest(source)
    paths = [dataset.source_file(source, sample) for sample in first.ids]
    second = dataset.manifest(source)
    assert second.to_csv() == first.to_csv()
    assert [dataset.source_file(source, sample) for sample in second.ids] == paths


@pytest.mark.parametrize("name", NEW)
def test_build_synthetic_works_from_the_command_line(name, tmp_path):
    """Every selected sample is built; only Kinetics' copy misses a clip, as real ones do, and
    says which (accepting exit 1 everywhere let a build that failed most samples pass)."""
    store = tmp_path / f"{name}.zarr"
    steps = [] if name in IMAGES else ["--steps", "2"]
    result = flowstore_cli("build", name, "--synthetic", "--store", store, "--size", "16",
                           *steps, "--max-per-split", "1", "-q",
                           env={"FLOWSTORE_CACHE": str(tmp_path / "cache")})
    missing = int(name == "kinetics")
    assert result.returncode == missing, result.stderr
    assert "Traceback" not in result.stderr
    assert "preparing synthetic source" not in result.stderr  # -q
    counts = re.search(r": (\d+) computed, 0 already done, (\d+) failed of (\d+) selected ",
                       result.stdout)
    assert counts, result.stdout
    computed, failed, selected = map(int, counts.groups())
    assert failed == missing and computed == selected - missing > 0, result.stdout
    if missing:
        header, reason = result.stderr.splitlines()
        assert header == ("1 sample(s) failed (the next run of this command tries them again: a "
                          "missing file once it is back, a bad one once it is mended):")
        assert re.fullmatch(r"  (\S+): video file is missing: \1\.mp4", reason), reason
    else:
        assert result.stderr == ""
    with open_store(store, "r") as opened:
        assert int(opened.read("done").sum()) == computed


def test_synth_help_lists_each_setting_whole_on_a_line_of_its_own():
    """Wrapped as prose, "--max-frames 16" broke at its hyphen ("--max-" / "frames 16")."""
    shown = flowstore_cli("synth", "kinetics", "--help")
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    for setting in ("--classes 3", "--clips-per-class 6", "--min-frames 10",
                    "--max-frames 16", "--width 64", "--height 48", "--seed 0"):
        assert setting in lines, shown.stdout
    commands = flowstore_cli("synth", "--help").stdout  # (the first sentence alone there)
    assert "  kinetics     Synthetic kinetics in its real layout." in commands.splitlines()


def test_synth_command_writes_each_real_layout(tmp_path):
    """In each layout, the classes and clips the settings ask for (the defaults are 3 and 6: a
    command that dropped its settings still wrote a source, and exit 0)."""
    for name, marker in [("ucf101", "ucfTrainTestlist/classInd.txt"),
                         ("hmdb51", "testTrainMulti_7030_splits"),
                         ("kinetics", "annotations/val.csv"), ("videofolder", "README.txt"),
                         ("imagefolder", "README.txt")]:
        folder = tmp_path / name
        result = flowstore_cli("synth", name, folder, "--classes", "2", "--clips-per-class", "2")
        assert result.returncode == 0, result.stderr
        assert (folder / marker).exists()
        dataset = get_dataset(name)
        manifest = dataset.manifest(folder)
        assert len(manifest.classes) == 2, (name, manifest.classes)
        assert collections.Counter(row.label for row in manifest.rows) == {0: 2, 1: 2}, name
        assert all(dataset.source_file(folder, row.id).is_file() for row in manifest.rows), name
    refused = flowstore_cli("synth", "ucf101", tmp_path / "x", "--clips", "2")
    assert "--clips is not an option of synth ucf101" in assert_one_line_error(refused)
    for name in ("videofolder", "imagefolder"):  # a source its build refuses: not written
        refused = flowstore_cli("synth", name, tmp_path / f"one-{name}", "--classes", "1")
        assert assert_one_line_error(refused) == ("error: --classes must be at least 2 for a "
                                                  "class-folder source (a build refuses one "
                                                  "class), got 1")
        assert not (tmp_path / f"one-{name}").exists()


def test_clips_are_every_clip_of_a_folder_tree_and_of_no_class(sources, tmp_path):
    """`clips`: new clips to predict with a trained run. Every clip under the folder, in any
    sub-folder, is a test sample of label NO_CLASS in a store of no classes; a README is not."""
    import flowstore
    from flowstore.manifest import NO_CLASS

    source = sources["clips"]
    manifest = get_dataset("clips").manifest(source)
    count = TINY.classes * TINY.clips_per_class
    assert manifest.classes == () and len(manifest) == count
    assert manifest.ids == sorted(manifest.ids, key=lambda i: i.split("/"))
    assert {i.split("/")[0] for i in manifest.ids} == {"more"} | {
        f"clip_{k:03d}" for k in range(0, count, 2)}
    assert set(manifest.labels.tolist()) == {NO_CLASS} and set(manifest.splits()) == {"test"}
    assert "label,class" in manifest.to_csv() and ",-1,,test" in manifest.to_csv()

    store = tmp_path / "clips.zarr"
    assert flowstore_cli("build", "clips", "--source", source, "--store", store, "--size", "16",
                         "--steps", "2", "-q").returncode == 0
    shown = flowstore_cli("inspect", store)
    assert "dataset      clips  (0 classes)" in shown.stdout
    assert re.search(rf"\(no class\) +0/0 +0/0 +{count}/{count}", shown.stdout), shown.stdout
    assert "DAMAGED" not in shown.stdout
    with flowstore.open(store) as ds:
        assert ds.classes == () and len(ds.split("train")) == 0
        test = ds.split("test")
        assert list(test.ids) == manifest.ids and set(test.labels.tolist()) == {NO_CLASS}
        assert test[0]["flow"].shape == (STEPS, SIZE, SIZE, 2)
    pictures = flowstore_cli("show", store, "--out", tmp_path / "p", "-q")
    assert pictures.returncode == 0 and "wrote 2 picture(s) of 2 sample(s)" in pictures.stdout
    assert flowstore_cli("build", "clips", "--source", source, "--store", store, "--size", "16",
                         "--steps", "2", "-q").stdout.count(" 0 computed, ") == 1  # resumed

    for name in ("clips", "images"):
        written = flowstore_cli("synth", name, tmp_path / name, "--classes", "2",
                                "--clips-per-class", "3")
        assert written.returncode == 0, written.stderr
        manifest = get_dataset(name).manifest(tmp_path / name)
        assert len(manifest) == 6 and manifest.classes == (), name
    empty = tmp_path / "no-clips"
    (empty / "sub").mkdir(parents=True)
    (empty / "README.txt").write_text("nothing here\n")
    line = assert_one_line_error(flowstore_cli("build", "clips", "--source", empty, "--store",
                                               tmp_path / "e.zarr"))
    assert f"no clips in {str(empty)!r} or its sub-folders" in line
    assert not (tmp_path / "e.zarr").exists()


# -- splits ---------------------------------------------------------------------------------------
def test_videofolder_ids_are_unique_across_classes_and_non_media_is_skipped(sources):
    dataset = get_dataset("videofolder")
    manifest = dataset.manifest(sources["videofolder"])
    ids = [row.id for row in manifest.rows]
    assert len(ids) == len(set(ids)) == TINY.classes * TINY.clips_per_class
    assert "jumping jacks/clip_01" in ids and "rock'n'roll/clip_01" in ids
    assert manifest.classes == ("jumping jacks", "rock'n'roll")  # sorted by name
    suffixes = {Path(dataset.sample_paths[i]).suffix for i in ids}
    assert suffixes == {".avi", ".MP4", ".mkv", ".mov"}  # any container, any letter case
    assert not any("README" in i or "DS_Store" in i or "Thumbs" in i for i in ids)


def test_videofolder_scan_finds_nested_files_and_links_and_skips_hidden_and_non_media(
        tmp_path):
    source = tmp_path / "src"
    for name in ["a/top.mp4", "a/deep/er/clip.AVI", "a/x.mp4", "a/x.mkv", "a/.hidden.mp4",
                 "a/.cache/in_hidden.mp4", "a/notes.txt", "a/no_suffix", "b/one.mov",
                 "outside/elsewhere.mp4"]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(b"")
    (source / "a" / "linked.mp4").symlink_to(source / "outside" / "elsewhere.mp4")
    (source / "a" / "broken.mp4").symlink_to(source / "missing.mp4")  # a sample that fails
    (source / "a" / "folder_link").symlink_to(source / "outside", target_is_directory=True)
    (source / "a" / "dir.mp4").mkdir()  # a folder with a media suffix is no sample
    dataset = get_dataset("videofolder")
    assert dataset.sample_files(source / "a") == [
        "broken.mp4", "deep/er/clip.AVI", "folder_link/elsewhere.mp4", "linked.mp4", "top.mp4",
        "x.mkv", "x.mp4"]
    with pytest.raises(SourceLayoutError, match="'a/linked.mp4' and 'outside/elsewhere.mp4' "
                                                "are one file"):  # (of classes a and outside)
        dataset.manifest(source)
    (source / "a" / "linked.mp4").unlink()
    dataset = get_dataset("videofolder")
    dataset.manifest(source)
    # (`outside` is a class folder of this source: its link in `a` is not followed there)
    assert dataset.sample_paths == {
        "a/broken": "a/broken.mp4", "a/deep/er/clip": "a/deep/er/clip.AVI",
        "a/top": "a/top.mp4",
        "a/x.mkv": "a/x.mkv", "a/x.mp4": "a/x.mp4",  # same stem: the id keeps its suffix
        "b/one": "b/one.mov", "outside/elsewhere": "outside/elsewhere.mp4"}


def test_clips_behind_links_to_folders_are_listed_once_and_links_back_are_not_followed(
        tmp_path):
    """A linked sub-folder (`cam2 -> /mnt/disk2/cam2`) was silently not listed, though a
    linked class folder was, and a broken link named like a clip was dropped unnoticed. Links
    to folders are followed, once each, never back into the tree or above it (`loop -> .`)."""
    source = _empty_files(tmp_path / "clips", ["cam1/a.mp4", "cam1/sub/s.mp4"])
    disk2 = _empty_files(tmp_path / "disk2", ["cam2/b.mp4", "cam2/deeper/d.MOV"])
    (source / "cam2").symlink_to(disk2 / "cam2", target_is_directory=True)
    (source / "cam3").symlink_to(disk2 / "cam2", target_is_directory=True)  # listed as cam2/
    (disk2 / "cam2" / "back").symlink_to(source, target_is_directory=True)  # a loop via disk2
    (disk2 / "cam2" / "deeper" / "up").symlink_to(disk2, target_is_directory=True)  # above
    (source / "loop").symlink_to(".", target_is_directory=True)
    (source / "cam1" / "up").symlink_to("..", target_is_directory=True)
    (source / "alias").symlink_to("cam1/sub", target_is_directory=True)  # listed as cam1/sub/
    (source / "c.mp4").symlink_to("/nonexistent/c.mp4")  # a sample, that will fail
    files = ["c.mp4", "cam1/a.mp4", "cam1/sub/s.mp4", "cam2/b.mp4", "cam2/deeper/d.MOV"]
    dataset = get_dataset("clips")
    assert dataset.sample_files(source) == files
    assert dataset.manifest(source).ids == [f.rsplit(".", 1)[0] for f in files]
    # a class folder's linked sub-folder, as a linked class folder
    (disk2 / "cam2" / "back").unlink()
    classes = _empty_files(tmp_path / "vf", ["walk/a.mp4", "run/b.mp4"])
    (classes / "walk" / "cam2").symlink_to(disk2 / "cam2", target_is_directory=True)
    (classes / "jump").symlink_to(disk2 / "cam2", target_is_directory=True)
    with pytest.raises(SourceLayoutError, match="'jump/b.mp4' and 'walk/cam2/b.mp4' are one "
                                                "file"):  # (a sample of both classes)
        get_dataset("videofolder").manifest(classes)
    (classes / "jump").unlink()
    ids = get_dataset("videofolder").manifest(classes).ids
    assert sorted(ids) == ["run/b", "walk/a", "walk/cam2/b", "walk/cam2/deeper/d"]
    # A link into the source is not followed from a class folder either: another class's
    # clips (samples of both classes), or test/'s from train/ (test clips trained on).
    (classes / "walk" / "runs").symlink_to(classes / "run", target_is_directory=True)
    assert sorted(get_dataset("videofolder").manifest(classes).ids) == sorted(ids)
    splits = _empty_files(tmp_path / "splits", ["train/walk/a.mp4", "train/run/b.mp4",
                                                "test/walk/c.mp4", "test/run/d.mp4"])
    (splits / "train" / "walk" / "more").symlink_to("../../test/walk",
                                                   target_is_directory=True)
    manifest = get_dataset("videofolder").manifest(splits)
    assert sorted(manifest.ids) == ["test/run/d", "test/walk/c", "train/run/b", "train/walk/a"]
    # A FIFO (or a socket, a device) named like a clip is no sample, as before links were
    # followed; a build would have failed it as "missing" (and a resume of a store built
    # before refused the source as changed).
    os.mkfifo(source / "cam1" / "pipe.mp4")
    assert dataset.sample_files(source) == files


@pytest.mark.parametrize("layout, link, target", [
    (["walk/a.mp4", "run/b.mp4"], "jog", "run"),  # a class that is another
    (["train/walk/a.mp4", "train/run/b.mp4"], "test", "train"),  # test/ that is train/
    (["train/walk/a.mp4", "train/run/b.mp4", "test/run/c.mp4"], "test/walk",
     "../train/walk"),  # a class of test/ that is train/'s
    (["walk/a.mp4", "run/c.mp4", "run/slow/b.mp4"], "jog", "run/slow"),  # one holds the other
])
def test_class_folders_that_are_one_folder_through_a_link_are_refused(tmp_path, layout, link,
                                                                       target):
    """A class folder or a split folder linked to another of the source: the same clips were
    samples of two classes, or of train and test, without a word."""
    source = _empty_files(tmp_path / "vf", layout)
    (source / link).symlink_to(target, target_is_directory=True)
    with pytest.raises(SourceLayoutError, match=r"are one folder, or one holds the other "
                                                r"\(through a link\)"):
        get_dataset("videofolder").manifest(source)


@pytest.mark.parametrize("layout, links", [
    # one folder outside the source linked into two classes
    (["walk/a.mp4", "run/b.mp4"], {"walk/extra": "OUTSIDE", "run/extra": "OUTSIDE"}),
    # a file linked into another class
    (["walk/a.mp4", "run/b.mp4"], {"run/a_too.mp4": "../walk/a.mp4"}),
    # one folder outside the source linked into train/ and test/
    (["train/walk/a.mp4", "train/run/b.mp4", "test/walk/c.mp4", "test/run/d.mp4"],
     {"train/walk/extra": "OUTSIDE", "test/walk/extra": "OUTSIDE"}),
])
def test_a_file_in_two_class_folders_through_a_link_is_refused(tmp_path, layout, links):
    """Two class folders each holding a link to one folder (or one holding a link to the
    other's file): each of its files was a sample of both classes (or of train and test),
    most in one split, where the warning of byte-identical files across splits never named
    them (found by review)."""
    source = _empty_files(tmp_path / "vf", layout)
    outside = _empty_files(tmp_path / "outside", ["x.mp4", "y.mp4"])
    for link, target in links.items():
        (source / link).symlink_to(outside if target == "OUTSIDE" else target)
    with pytest.raises(SourceLayoutError, match=r"^'[^']+' and '[^']+' are one file \(through a "
                                                r"link\) in two class folders, "):
        get_dataset("videofolder").manifest(source)


def test_a_file_linked_twice_in_one_class_is_two_samples_of_it(tmp_path):
    """Within one class folder a second link to a file is a duplicate of one class, left to
    the warning of byte-identical files across splits."""
    source = _empty_files(tmp_path / "vf", ["walk/a.mp4", "run/b.mp4", "run/c.mp4"])
    (source / "walk" / "a_again.mp4").symlink_to("a.mp4")
    assert sorted(get_dataset("videofolder").manifest(source).ids) == [
        "run/b", "run/c", "walk/a", "walk/a_again"]


@pytest.mark.parametrize("folder", ["@eaDir", "#recycle", "$RECYCLE.BIN",
                                    "System Volume Information", "lost+found"])
def test_system_folders_in_a_source_are_not_data(tmp_path, folder):
    """A Synology NAS writes `@eaDir/<image>/SYNOPHOTO_THUMB_*.jpg` into every folder: ten
    images were built as sixty samples, thumbnails of train images in test (found by review);
    the other folders here are recycle bins and volume records, none anyone's data."""
    source = _empty_files(tmp_path / "if", ["cat/a.jpg", "dog/b.jpg",
                                            f"cat/{folder}/a.jpg/SYNOPHOTO_THUMB_S.jpg",
                                            f"{folder}/c.jpg"])
    assert get_dataset("imagefolder").manifest(source).ids == ["cat/a", "dog/b"]


def test_macos_archive_folders_are_not_data(sources, tmp_path):
    """A macOS zip unpacked elsewhere leaves `__MACOSX/` beside the data, its folders mirrored
    with `._` resource forks in them: videofolder took it for a class ("holds no video"), and
    HMDB51, which takes the first folder in name order that holds a class or the split files,
    looked for them in it ("none of the clips its split lists is in ...")."""
    root = _empty_files(tmp_path / "vf", ["train/walk/a.mp4", "test/walk/c.mp4",
                                          "train/run/b.mp4", "test/run/d.mp4",
                                          "__MACOSX/train/walk/._a.mp4"])
    manifest = get_dataset("videofolder").manifest(root)
    assert list(manifest.classes) == ["run", "walk"] and len(manifest) == 4

    def macos_zip(source: Path) -> None:
        splits = source / "testTrainMulti_7030_splits"
        splits.rename(source / "hmdb51" / splits.name)  # the splits one folder down too
        for mirrored in ("brush_hair/._x.avi", "testTrainMulti_7030_splits/._x.txt"):
            (source / "__MACOSX" / mirrored).parent.mkdir(parents=True, exist_ok=True)
            (source / "__MACOSX" / mirrored).write_bytes(b"")

    source = _edited(sources, "hmdb51", tmp_path, macos_zip)
    dataset = get_dataset("hmdb51")
    manifest = dataset.manifest(source)
    assert len(manifest) == len(get_dataset("hmdb51").manifest(sources["hmdb51"]))
    assert all(path.startswith("hmdb51/") for path in dataset.sample_paths.values())


def _empty_files(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


@pytest.mark.parametrize("names,source,expected", [
    # --source one level too high: all clips one class, named after the folder of classes
    (["clips/walk/a.mp4", "clips/run/b.mp4"], "", r"holds 1 class\(es\) \('clips'\): a "
     r"classification source needs two or more; is --source one level too high"),
    # one level too deep, inside a class: its own clips lay outside any class, skipped
    (["walk/a.mp4", "walk/b.avi", "walk/s2/c.mp4", "walk/s3/d.mp4"], "walk",
     r"2 video\(s\) directly in .*walk', outside any class folder \(e\.g\. 'a\.mp4'\): "
     r"expected <class>/<video>; is --source one level too deep"),
    # split folders misnamed: built as classes train/valid/test, split again at random
    (["train/walk/a.mp4", "valid/walk/b.mp4", "test/walk/c.mp4"], "", r"class folders 'test', "
     r"'train', 'valid' in .* look like split folders, not read as such \('valid' beside "
     r"them\): a source of split folders holds train/, test/"),
    (["train/walk/a.mp4", "test/walk/c.mp4", "extras/x/a.mp4"], "",
     r"look like split folders, not read as such \('extras' beside them\)"),
    (["Train/walk/a.mp4", "Test/walk/c.mp4"], "", r"class folders 'Test', 'Train' .* not read "
     r"as such \(no train/ folder; 'Test' beside them; 'Train' beside them\)"),
    # split folders without test/ (as many downloads ship): built, exit 0, with an empty test
    # split, so every run on the store reported no test accuracy
    (["train/walk/a.mp4", "train/run/b.mp4", "val/walk/c.mp4", "val/run/d.mp4"], "",
     r"split folders in .* but no test/: a source of split folders holds train/, test/ and "
     r"optionally val/.* name the held-out folder test/"),
    (["train/walk/a.mp4", "train/run/b.mp4"], "", r"split folders in .* but no test/"),
], ids=["one-level-too-high", "one-level-too-deep", "valid-folder", "stray-folder",
        "capitalised", "train-val-only", "train-only"])
def test_a_source_laid_out_one_level_off_is_refused_not_built_as_other_classes(
        tmp_path, names, source, expected):
    """Each was built, exit 0, into a store of other classes than the user's (one class, or
    the split folders as classes), or skipped the clips lying outside class folders."""
    root = _empty_files(tmp_path / "src", names)
    with pytest.raises(SourceLayoutError, match=expected):
        get_dataset("videofolder").manifest(root / source)


def test_videofolder_takes_every_container_ffmpeg_reads(tmp_path):
    """.m4v, .mpeg, .mts... were skipped without a word (the build said '13 of 13')."""
    names = [f"walk/clip{suffix}" for suffix in (".m4v", ".MPEG", ".mts", ".m2ts", ".3gp",
                                                 ".wmv", ".flv", ".WebM", ".mpg")] + [
        "run/a.mp4", "run/b.ts"]
    root = _empty_files(tmp_path / "src", names)
    dataset = get_dataset("videofolder", {"test_fraction": "0", "val_fraction": "0"})
    ids = sorted(row.id for row in dataset.manifest(root).rows)
    assert ids == sorted(["walk/clip.MPEG", "walk/clip.m4v", "walk/clip.mts",
                          "walk/clip.m2ts", "walk/clip.3gp", "walk/clip.wmv", "walk/clip.flv",
                          "walk/clip.WebM", "walk/clip.mpg",
                          "run/a"]), ids  # (one stem: each keeps its suffix; .ts is no video)


def test_imagefolder_takes_every_documented_image_format_in_any_letter_case(tmp_path):
    names = [f"cat/img{suffix}" for suffix in (".jpg", ".JPEG", ".Png", ".bmp", ".WEBP")] + [
        "dog/a.webp", "dog/b.gif", "dog/c.tiff"]
    root = _empty_files(tmp_path / "src", names)
    dataset = get_dataset("imagefolder", {"test_fraction": "0", "val_fraction": "0"})
    ids = sorted(row.id for row in dataset.manifest(root).rows)
    assert ids == sorted(["cat/img.jpg", "cat/img.JPEG", "cat/img.Png", "cat/img.bmp",
                          "cat/img.WEBP", "dog/a"]), ids  # (.gif, .tiff: no sample)


def test_videofolder_ids_stay_unique_where_a_kept_suffix_is_another_files_stem(tmp_path):
    """`a.mp4` beside `a.avi` keeps its suffix as its id, `a.mp4`, which is also the stem of
    `a.mp4.avi`: both were one sample, `a.mp4.avi` built twice and `a.mp4` never."""
    source = tmp_path / "src"
    for name in ["cat/a.mp4", "cat/a.avi", "cat/a.mp4.avi", "cat/a.mp4.avi.mkv", "dog/b.avi"]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(b"")
    dataset = get_dataset("videofolder", {"test_fraction": "0", "val_fraction": "0"})
    ids = [row.id for row in dataset.manifest(source).rows]
    assert len(ids) == len(set(ids)) == 5
    assert dataset.sample_paths == {
        "cat/a.avi": "cat/a.avi", "cat/a.mp4": "cat/a.mp4", "cat/a.mp4.avi": "cat/a.mp4.avi",
        "cat/a.mp4.avi.mkv": "cat/a.mp4.avi.mkv", "dog/b": "dog/b.avi"}


def test_names_that_would_be_one_id_once_made_text_are_refused(tmp_path):
    """A name that is not UTF-8 and one spelling its escape out (`a\\xff`) were one id."""
    import os

    source = tmp_path / "src"
    for name in ["cat/x.avi", "dog/y.avi"]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(b"")
    (source / "cat" / "a\\xff.avi").write_bytes(b"")
    with open(os.fsencode(source / "cat") + b"/a\xff.avi", "wb"):
        pass
    dataset = get_dataset("videofolder", {"test_fraction": "0", "val_fraction": "0"})
    with pytest.raises(SourceLayoutError, match="would be one sample"):
        dataset.manifest(source)


def test_class_folder_names_that_are_not_utf8_build_as_escaped_text(tmp_path):
    """A file or class folder name that is not UTF-8 stopped the build with a traceback where
    its id (or a failure reason naming it) was written; now it builds, named with `\\xff`."""
    import os

    config = dataclasses.replace(TINY, clips_per_class=2, min_frames=3, max_frames=3,
                                 width=16, height=16)
    source = get_dataset("videofolder").write_synthetic(tmp_path / "s", config)
    clip = next((source / "jumping jacks").iterdir())
    odd = os.fsencode(source) + b"/caf\xe9"
    os.mkdir(odd)
    os.rename(os.fsencode(clip), odd + b"/clip\xff" + os.fsencode(clip.suffix))
    with open(odd + b"/bad\xfe.avi", "wb") as broken:
        broken.write(b"not a video")
    result = flowstore_cli("build", "videofolder", "--source", source, "--store",
                           tmp_path / "s.zarr", "--size", "16", "--steps", "2",
                           "--test-fraction", "0", "--val-fraction", "0")
    assert result.returncode == 1, result.stderr  # the broken clip fails, as its own sample
    assert "Traceback" not in result.stderr and "caf\\xe9/bad\\xfe" in result.stderr
    with open_store(tmp_path / "s.zarr", "r") as store:
        assert "caf\\xe9" in store.attrs["classes"]
        ids = store.read("id").tolist()
        done = dict(zip(ids, store.read("done").tolist()))
    assert done["caf\\xe9/clip\\xff"] and not done["caf\\xe9/bad\\xfe"]


def test_videofolder_fractions_are_stratified_and_seeded(tmp_path):
    config = dataclasses.replace(TINY, clips_per_class=10, min_frames=2, max_frames=2,
                                 width=16, height=16)
    source = get_dataset("videofolder").write_synthetic(tmp_path / "s", config)
    counts = collections.Counter((row.class_name, row.split)
                                 for row in get_dataset("videofolder").manifest(source).rows)
    for name in ("jumping jacks", "rock'n'roll"):
        assert (counts[name, "train"], counts[name, "val"], counts[name, "test"]) == (7, 1, 2)
    other = get_dataset("videofolder", {"seed": "5", "test_fraction": "0.5"}).manifest(source)
    # each fraction is of the whole source: val 10% of the 20 clips, though drawn after test
    assert collections.Counter(row.split for row in other.rows) == {"train": 8, "val": 2,
                                                                    "test": 10}
    first = get_dataset("videofolder").manifest(source)
    assert first == get_dataset("videofolder").manifest(source)  # the same seed, the same split


def test_videofolder_split_folders_and_split_file_win_in_order(sources, tmp_path):
    source = Path(shutil.copytree(sources["videofolder"], tmp_path / "s"))
    (source / "README.txt").unlink()
    for split in ("train", "test"):
        (source / split).mkdir()
    for name in ("jumping jacks", "rock'n'roll"):
        shutil.move(source / name, source / "train" / name)
        (source / "test" / name).mkdir()
        shutil.move(source / "train" / name / "clip_04.avi", source / "test" / name)
    manifest = get_dataset("videofolder").manifest(source)
    by_split = collections.Counter(row.split for row in manifest.rows)
    assert by_split == {"train": 5, "val": 1, "test": 2}  # val carved from train/
    assert {row.id for row in manifest.rows if row.split == "test"} == {
        "test/jumping jacks/clip_04", "test/rock'n'roll/clip_04"}
    split_file = tmp_path / "splits.csv"
    # as a spreadsheet exports it: CRLF, and empty trailing columns (a header column twice,
    # but not one that is read)
    split_file.write_text("path,label,split,,\r\n"
                          "train/jumping jacks/clip_02.mkv,jumping,train,,\r\n"
                          "test/rock'n'roll/clip_04.avi,\"rock, roll\",val,,\r\n"
                          "gone/clip.avi,jumping,test,,\r\n")
    listed = get_dataset("videofolder", {"split_file": str(split_file)}).manifest(source)
    assert listed.classes == ("jumping", "rock, roll")  # classes from the CSV
    assert [(r.id, r.class_name, r.split) for r in listed.rows] == [
        ("train/jumping jacks/clip_02", "jumping", "train"),
        ("test/rock'n'roll/clip_04", "rock, roll", "val"), ("gone/clip", "jumping", "test")]


def test_imagefolder_builds_an_image_store_the_image_cnn_reads(sources, tmp_path):
    dataset = get_dataset("imagefolder")
    assert [spec.name for spec in dataset.specs(ImageParams(size=SIZE))] == ["image"]
    manifest = dataset.manifest(sources["imagefolder"])
    assert {Path(dataset.sample_paths[row.id]).suffix for row in manifest.rows} == {
        ".jpg", ".PNG", ".jpeg", ".bmp"}


def test_ucf101_reads_crlf_lists_the_handstand_quirk_and_keeps_groups_apart(sources):
    source = sources["ucf101"]
    assert b"\r\n" in (source / "ucfTrainTestlist" / "trainlist01.txt").read_bytes()
    for fold in (1, 2, 3):
        dataset = get_dataset("ucf101", {"fold": fold})
        manifest = dataset.manifest(source)
        assert manifest.classes == ("ApplyEyeMakeup", "HandstandPushups")
        for row in manifest.rows:
            assert dataset.source_file(source, row.id).is_file()
            assert (row.split == "test") == (f"_g{fold:02d}_" in row.id)


def test_ucf101_real_lists_give_the_official_folds_and_val_by_group(tmp_path):
    lists = require_real_data(SHARED / "data" / "ucf101" / "ucfTrainTestlist" / "classInd.txt",
                              "real UCF101 split files").parent
    source = tmp_path / "ucf"
    (source / "UCF-101").mkdir(parents=True)
    (source / "ucfTrainTestlist").symlink_to(lists)
    official = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}
    for fold, (train, test) in official.items():
        dataset = get_dataset("ucf101", {"fold": fold})
        manifest = dataset.manifest(source)
        counts = collections.Counter(row.split for row in manifest.rows)
        assert (counts["train"] + counts["val"], counts["test"]) == (train, test)
        assert 0.08 < counts["val"] / train < 0.14
        # (the group read here from the id as the list names it, not by `group_of`: a wrong
        # `group_of` drew val by its own wrong groups and passed)
        groups = {split: {(row.class_name, re.search(r"_g(\d+)_c\d+$", row.id).group(1))
                          for row in manifest.rows if row.split == split}
                  for split in ("train", "val")}
        assert not groups["train"] & groups["val"]
        assert {c for c, _ in groups["val"]} == set(manifest.classes)  # stratified by class
        row = next(r for r in manifest.rows if r.class_name == "HandstandPushups")
        assert row.id.startswith("v_HandStandPushups_")
        assert dataset.sample_paths[row.id].startswith("UCF-101/HandstandPushups/")


def test_hmdb51_real_split_files_give_the_official_counts(tmp_path):
    splits = require_real_data(SHARED / "data" / "hmdb51" / "testTrainMulti_7030_splits" /
                               "brush_hair_test_split1.txt", "real HMDB51 split files").parent
    source = tmp_path / "hmdb"
    (source / "brush_hair").mkdir(parents=True)
    (source / "testTrainMulti_7030_splits").symlink_to(splits)
    manifest = get_dataset("hmdb51").manifest(source)
    counts = collections.Counter(row.split for row in manifest.rows)
    assert (counts["train"] + counts["val"], counts["test"]) == (3570, 1530)
    assert (counts["train"], counts["val"]) == (3219, 351)  # the README's table
    # val is drawn by source video (the clips of one film scene are alike): none is in both
    # train and val. The video read here from the id (its name before the action), not by
    # `source_video`; a val drawn clip by clip passed the counts above.
    def video(row) -> str:
        named = re.match(rf"(.+)_{re.escape(row.class_name)}_", row.id)
        return named.group(1) if named else re.sub(r"_\d+$", "", row.id)

    videos = {split: {(row.class_name, video(row)) for row in manifest.rows
                      if row.split == split} for split in ("train", "val")}
    assert len(videos["val"]) > 40 and not videos["train"] & videos["val"]
    # labels in class-name order (they were in split-file-name order: `kick_ball` before
    # `kick`, `climb_stairs` before `climb`, `sword_exercise` before `sword`)
    assert len(manifest.classes) == 51 and list(manifest.classes) == sorted(manifest.classes)
    # no source video in train and val (drawn clip by clip, 189 of 357 val clips shared one),
    # as the official fold keeps none in train and test; every class has val clips
    videos = {split: {(row.class_name, source_video(row.id, row.class_name))
                      for row in manifest.rows if row.split == split}
              for split in ("train", "val", "test")}
    assert not videos["train"] & videos["val"] and not videos["train"] & videos["test"]
    assert {c for c, _ in videos["val"]} == set(manifest.classes)
    assert source_video("April_09_brush_hair_u_nm_np1_ba_goo_0", "brush_hair") == "April_09"


def test_hmdb51_groups_clips_named_without_their_action_by_name_less_clip_number():
    """The official names hold the action after the video's name; a copy renamed otherwise (a
    user's own clips in the layout) groups the clips of a name, less its clip number, as one
    video for the val draw, not each clip apart."""
    assert source_video("April_09_brush_hair_u_nm_np1_ba_goo_0", "brush_hair") == "April_09"
    assert source_video("kitchen_take_2_3", "brush_hair") == "kitchen_take_2"
    assert source_video("brush_hair_kitchen_12", "brush_hair") == "brush_hair_kitchen"


def test_hmdb51_clips_one_level_down_or_at_the_top(sources, tmp_path):
    source = Path(shutil.copytree(sources["hmdb51"], tmp_path / "s"))
    down = get_dataset("hmdb51").manifest(source)
    # a macOS resource fork beside the split files is no class (was class '._brush_hair')
    splits = source / "testTrainMulti_7030_splits"
    (splits / "._brush_hair_test_split1.txt").write_bytes(b"\x00\x05\x16\x07")
    assert get_dataset("hmdb51").manifest(source) == down
    (splits / "._brush_hair_test_split1.txt").unlink()
    for folder in (source / "hmdb51").iterdir():
        shutil.move(folder, source / folder.name)
    (source / "hmdb51").rmdir()
    dataset = get_dataset("hmdb51")
    assert dataset.manifest(source) == down
    assert all(dataset.source_file(source, row.id).is_file() for row in down.rows)
    lines = (source / "testTrainMulti_7030_splits" / "wave_test_split1.txt"
             if (source / "wave").exists() else
             next((source / "testTrainMulti_7030_splits").glob("*_split1.txt"))).read_text()
    assert lines.splitlines()[0].endswith(" ")  # the real trailing space
    codes = collections.Counter(line.split()[-1] for line in lines.splitlines())
    assert codes["0"] and codes["1"] and codes["2"]


def _hmdb51_source(root: Path, lines_by_class: dict[str, list[str]]) -> Path:
    """A hand-written HMDB51 source (split files of fold 1 only, in the real "clip.avi N "
    format with its trailing space; the class folders empty: a manifest reads no clip)."""
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for name, lines in lines_by_class.items():
        (root / name).mkdir()
        (splits / f"{name}_test_split1.txt").write_text("".join(f"{line} \n" for line in lines))
    return root


def test_hmdb51_split_codes_are_the_official_ones(tmp_path):
    """1 = train, 2 = test, 0 = not used, as the dataset's README has it (the synthetic writer
    uses the module's own constants, so codes swapped in both passed every other test)."""
    source = _hmdb51_source(tmp_path / "h", {"wave": [
        "a_wave_u_cm_np1_fr_med_0.avi 1", "b_wave_u_cm_np1_fr_med_0.avi 2",
        "c_wave_u_cm_np1_fr_med_0.avi 0"]})
    splits = {row.id: row.split for row in get_dataset("hmdb51").manifest(source).rows}
    assert splits.keys() == {"a_wave_u_cm_np1_fr_med_0", "b_wave_u_cm_np1_fr_med_0"}
    assert splits["a_wave_u_cm_np1_fr_med_0"] in ("train", "val")
    assert splits["b_wave_u_cm_np1_fr_med_0"] == "test"


def test_hmdb51_clips_are_read_by_the_names_their_split_file_gives(tmp_path):
    """A clip listed as `x.AVI` is read as `x.AVI` (it was read as `x.avi`: on a case-sensitive
    file system, a clip on disk said missing); its id is its stem either way."""
    source = _hmdb51_source(tmp_path / "h", {"wave": [
        "a_wave_u_cm_np1_fr_med_0.AVI 1", "b_wave_u_cm_np1_fr_med_0.avi 2"]})
    dataset = get_dataset("hmdb51")
    rows = dataset.manifest(source).rows
    assert {row.id for row in rows} == {"a_wave_u_cm_np1_fr_med_0", "b_wave_u_cm_np1_fr_med_0"}
    assert dataset.sample_paths["a_wave_u_cm_np1_fr_med_0"] == "wave/a_wave_u_cm_np1_fr_med_0.AVI"
    assert dataset.sample_paths["b_wave_u_cm_np1_fr_med_0"] == "wave/b_wave_u_cm_np1_fr_med_0.avi"


def test_hmdb51_classes_are_in_class_name_order_not_file_name_order(tmp_path):
    """`climb` before `climb_stairs` (its file, `climb_stairs_test_split1.txt`, sorts before
    `climb_test_split1.txt`), and each clip labelled by its class's place in that order."""
    source = _hmdb51_source(tmp_path / "h", {
        "climb_stairs": ["s_climb_stairs_f_cm_np1_ba_med_0.avi 2"],
        "climb": ["c_climb_f_cm_np1_ba_med_0.avi 2"]})
    manifest = get_dataset("hmdb51").manifest(source)
    assert manifest.classes == ("climb", "climb_stairs")
    assert {row.id: (row.label, row.class_name) for row in manifest.rows} == {
        "c_climb_f_cm_np1_ba_med_0": (0, "climb"),
        "s_climb_stairs_f_cm_np1_ba_med_0": (1, "climb_stairs")}


def test_kinetics_test_is_the_official_val_and_val_is_carved_from_train(sources):
    dataset = get_dataset("kinetics")
    manifest = dataset.manifest(sources["kinetics"])
    for row in manifest.rows:
        folder = dataset.sample_paths[row.id].split("/")[0]
        assert folder == ("val" if row.split == "test" else "train")
    assert manifest.classes == ("abseiling", "air drumming")  # train.csv's labels, sorted


def test_kinetics_classes_are_sorted_whatever_the_csv_order(tmp_path):
    """train.csv in no label order gives the classes sorted, and each clip the label of its
    class's place in that order (the synthetic CSV is written sorted, so classes taken in CSV
    order passed every other test)."""
    source = tmp_path / "k"
    (source / "annotations").mkdir(parents=True)
    header = "label,youtube_id,time_start,time_end,split,is_cc\n"
    (source / "annotations" / "train.csv").write_text(
        header + '"zumba",zzzzzzzzzz1,0,10,train,0\n"air drumming",aaaaaaaaaa1,0,10,train,0\n'
        '"juggling balls",jjjjjjjjjj1,0,10,train,0\n')
    (source / "annotations" / "val.csv").write_text(
        header + '"juggling balls",jjjjjjjjjj2,0,10,val,0\n')
    manifest = get_dataset("kinetics", {"val_fraction": 0.0}).manifest(source)
    assert manifest.classes == ("air drumming", "juggling balls", "zumba")
    assert {row.id: (row.label, row.class_name, row.split) for row in manifest.rows} == {
        "aaaaaaaaaa1_000000_000010": (0, "air drumming", "train"),
        "jjjjjjjjjj1_000000_000010": (1, "juggling balls", "train"),
        "jjjjjjjjjj2_000000_000010": (1, "juggling balls", "test"),
        "zzzzzzzzzz1_000000_000010": (2, "zumba", "train")}


def test_synthetic_kinetics_writes_its_labels_as_the_official_csvs_do(tmp_path):
    """Quoted where they hold a space, with parentheses and an apostrophe: what the parser
    must read (the synthetic copy wrote none quoted, so it tested no quoting)."""
    config = dataclasses.replace(TINY, classes=6, clips_per_class=3)
    source = get_dataset("kinetics").write_synthetic(tmp_path / "k", config)
    text = (source / "annotations" / "train.csv").read_text()
    assert '\n"massaging person\'s head",' in text and "\nabseiling," in text
    assert '\n"passing American football (in game)",' in text
    manifest = get_dataset("kinetics").manifest(source)
    assert "massaging person's head" in manifest.classes and len(manifest.classes) == 6


def test_kinetics_real_csv_parses_quoted_labels(tmp_path):
    val = require_real_data(SHARED / "data" / "kinetics400" / "annotations" / "val.csv",
                            "real Kinetics-400 CSVs")
    source = tmp_path / "k"
    (source / "annotations").mkdir(parents=True)
    text = val.read_text()
    (source / "annotations" / "val.csv").write_text(text)
    header, *rows = text.splitlines()
    (source / "annotations" / "train.csv").write_text(  # train: the same rows, other clips
        "\n".join([header] + [row.replace(",val,", ",train,").replace(",", ",t", 1)
                              if not row.startswith('"') else
                              row.replace(",val,", ",train,").replace('",', '",t', 1)
                              for row in rows]) + "\n")
    manifest = get_dataset("kinetics").manifest(source)
    assert len(manifest.classes) == 400 and "air drumming" in manifest.classes
    counts = collections.Counter(row.split for row in manifest.rows)
    assert counts["test"] == 19906 and counts["train"] + counts["val"] == 19906


# -- options, fingerprint, registry ----------------------------------------------------------------
def test_options_are_typed_and_validated_in_one_place(tmp_path):
    with pytest.raises(ParameterError, match="--fold must be 1, 2 or 3"):
        get_dataset("ucf101", {"fold": "4"})
    with pytest.raises(ParameterError, match="--fold must be an integer"):
        get_dataset("hmdb51", {"fold": "one"})
    with pytest.raises(ParameterError, match=r"--val-fraction \+ --test-fraction must be below"):
        (tmp_path / "a").mkdir()  # (refused before the class folders are scanned)
        get_dataset("videofolder", {"val_fraction": "0.5", "test_fraction": "0.5"}).manifest(
            tmp_path)
    with pytest.raises(ParameterError, match="--fold is not an option of dataset 'tvhi'"):
        get_dataset("tvhi", {"fold": "2"})
    assert get_dataset("ucf101", {"fold": "2"}).options.fold == 2


@pytest.mark.parametrize("args, expect", [
    (("ucf101", "--fold", "7"), "--fold must be 1, 2 or 3, got 7"),
    (("videofolder", "--val-fraction=1.5"), "--val-fraction must be in [0, 1)"),
    (("videofolder", "--val-fraction", "0.5", "--test-fraction", "0.5"),
     "--val-fraction + --test-fraction must be below 1 (some train), got 0.5 + 0.5"),
    (("tvhi", "--fold", "2"), "--fold is not an option of dataset 'tvhi'"),
    (("ucf101", "--fold"), "option --fold needs a value"),
    # the next flag is no value: `--fold --seed 2` took '--seed' for the fold
    (("ucf101", "--fold", "--seed", "2"), "option --fold needs a value"),
    # A mistyped flag of build itself, with no value, is named for what it is, not for a value
    # it lacks, with the nearest option; another dataset's option is not called a typo.
    (("tvhi", "--overwrit"), "--overwrit is not an option of dataset 'tvhi' (its options: "
                             "none); did you mean --overwrite?"),
    (("ucf101", "--fodl", "2"), "did you mean --fold?"),
    (("tvhi", "--fold"), "error: --fold is not an option of dataset 'tvhi' (its options: none)"),
    # estimate's own flag given to build: it was "not an option of dataset 'tvhi'"
    (("tvhi", "--sample", "3"), "error: --sample is an option of flowstore estimate, not of "
                                "flowstore build"),
])
def test_bad_dataset_options_are_one_line_before_any_work(args, expect, sources, tmp_path):
    result = flowstore_cli("build", args[0], "--source", sources.get(args[0], tmp_path),
                           "--store", tmp_path / "x.zarr", *args[1:], "-q")
    line = assert_one_line_error(result)
    assert line == expect if expect.startswith("error: ") else expect in line
    assert not (tmp_path / "x.zarr").exists()


def test_a_build_flag_given_to_estimate_is_said_to_be_builds(sources):
    result = flowstore_cli("estimate", "ucf101", "--source", sources["ucf101"], "--scheduler",
                           "tcp://127.0.0.1:9")
    assert assert_one_line_error(result) == (
        "error: --scheduler is an option of flowstore build, not of flowstore estimate")


def test_estimate_takes_the_dataset_options_a_build_would(sources):
    """`estimate` predicts the build of the samples the options choose, so it takes them too
    (it used to refuse `--fold` as an unknown option, so only fold 1 could be estimated)."""
    out = flowstore_cli("estimate", "ucf101", "--source", sources["ucf101"], "--fold", "2",
                        "--size", "16", "--steps", "2", "--sample", "2", "--workers", "1", "-q")
    assert out.returncode == 0, out.stderr
    assert "--fold must be 1, 2 or 3, got 4" in assert_one_line_error(
        flowstore_cli("estimate", "ucf101", "--source", sources["ucf101"], "--fold", "4"))
    assert "did you mean --sample?" in assert_one_line_error(
        flowstore_cli("estimate", "ucf101", "--source", sources["ucf101"], "--sampel", "2"))


def test_fingerprint_covers_the_options_and_a_split_file_by_content(sources, tmp_path):
    stores = tmp_path / "stores"
    stores.mkdir()

    def fingerprint(name: str, source: Path, **options) -> str:
        store = stores / f"s{len(list(stores.iterdir()))}.zarr"
        return build(BuildConfig(dataset=name, source=source, store=store,
                                 params=params_of(name), options=options, max_per_split=1,
                                 progress=False)).fingerprint

    ucf = sources["ucf101"]
    assert fingerprint("ucf101", ucf) != fingerprint("ucf101", ucf, fold=2)
    assert fingerprint("ucf101", ucf, seed=1) != fingerprint("ucf101", ucf)
    # without a val split the seed draws nothing: it made another store of the same samples
    assert fingerprint("ucf101", ucf, seed=1, val_fraction=0) == fingerprint(
        "ucf101", ucf, val_fraction=0)
    images = sources["imagefolder"]
    split_file = tmp_path / "splits.csv"
    split_file.write_text("path,label,split\njumping jacks/img_01.PNG,a,train\n"
                          "waving/img_01.PNG,z,train\n")
    moved = tmp_path / "elsewhere.csv"
    shutil.copy(split_file, moved)
    with_file = fingerprint("imagefolder", images, split_file=split_file)
    assert fingerprint("imagefolder", images, split_file=moved) == with_file  # not the path
    split_file.write_text("path,label,split\njumping jacks/img_01.PNG,b,train\n"
                          "waving/img_01.PNG,z,train\n")
    assert fingerprint("imagefolder", images, split_file=split_file) != with_file


def test_the_seed_is_recorded_where_a_fraction_in_use_draws_with_it(sources):
    """`--seed` is left at its default in what a store records only where every fraction in
    use is 0: with `--val-fraction 0` a folder's test split is still drawn with it."""
    manifests, recorded = [], []
    for seed in ("0", "5"):
        dataset = get_dataset("videofolder", {"val_fraction": "0", "seed": seed})
        manifests.append(dataset.manifest(sources["videofolder"]))
        recorded.append(dataset.recorded_options())
    assert manifests[0] != manifests[1]  # the seed drew another test split
    assert [options["seed"] for options in recorded] == [0, 5]


def test_a_folder_named_like_a_clip_is_listed_as_missing_not_by_its_size(sources, tmp_path):
    """The listing that the fingerprint and a resume compare takes files only: a folder in a
    clip's place is a missing clip (its size is the file system's, not data), and a source of
    such folders alone is refused as holding none of its clips."""
    source = Path(shutil.copytree(sources["kinetics"], tmp_path / "s"))
    kinetics = get_dataset("kinetics")
    manifest = kinetics.manifest(source)
    for sample in manifest.ids:
        clip = kinetics.source_file(source, sample)
        clip.unlink(missing_ok=True)
        clip.mkdir()
    sizes = kinetics.source_files(source, manifest)
    assert [sizes.row_size(row) for row in range(len(manifest))] == [None] * len(manifest)
    with pytest.raises(SourceLayoutError, match="none of the .* clips its split lists is in"):
        kinetics.check_some_present(source, manifest, sizes)


def test_ucf101_source_files_name_its_class_index_and_the_folds_lists(sources):
    """The fingerprint hashes the split files a manifest is read from by name and size, and a
    resume refuses them changed: classInd.txt, which gives every label, is one of them."""
    source = sources["ucf101"]
    dataset = get_dataset("ucf101", {"fold": 2})
    files = dataset.source_files(source, dataset.manifest(source))
    lists = {name for name in files if name.startswith("ucfTrainTestlist/")}
    assert lists == {"ucfTrainTestlist/classInd.txt", "ucfTrainTestlist/trainlist02.txt",
                     "ucfTrainTestlist/testlist02.txt"}
    assert all(files[name] == (source / name).stat().st_size for name in lists)


@pytest.mark.parametrize("name, read_from", [
    ("hmdb51", r"testTrainMulti_7030_splits/\w+_test_split1\.txt"),
    ("kinetics", r"annotations/(train|val)\.csv"),
    ("tvhi", r"readme\.txt"),
], ids=["hmdb51", "kinetics", "tvhi"])
def test_source_files_name_the_split_files_a_manifest_is_read_from(name, read_from, sources,
                                                                   tiny_tvhi_source):
    """Beside the clips, the fingerprint hashes the files a manifest is read from by name and
    size, and a resume refuses them changed (an edit that moved clips between splits): each
    of those, and only those, of the fold or set read."""
    source = tiny_tvhi_source if name == "tvhi" else sources[name]
    dataset = get_dataset(name)
    manifest = dataset.manifest(source)
    files = dataset.source_files(source, manifest)
    clips = {dataset.source_name(sample) for sample in manifest.ids}
    expected = {path.relative_to(source).as_posix() for path in source.rglob("*")
                if path.is_file() and re.search(f"(^|/){read_from}$",
                                                path.relative_to(source).as_posix())}
    assert expected and {name for name in files if name not in clips} == expected
    assert all(files[name] == (source / name).stat().st_size for name in expected)


def test_a_store_records_its_options_and_refuses_others(sources, tmp_path):
    store = tmp_path / "u.zarr"
    args = ("build", "ucf101", "--source", sources["ucf101"], "--store", store, "--size", "16",
            "--steps", "2", "--max-per-split", "1", "-q")
    assert flowstore_cli(*args, "--fold", "2").returncode == 0
    with open_store(store, "r") as opened:
        assert opened.attrs["options"] == {"fold": 2, "seed": 0, "val_fraction": 0.1}
    line = assert_one_line_error(flowstore_cli(*args, "--fold", "3"))
    assert "other split options (--fold: store 2 vs asked 3)" in line
    assert flowstore_cli(*args, "--fold=2").returncode == 0  # the same: resumes
    # --seed without a val split shapes nothing: recorded at its default, any value resumes
    assert flowstore_cli(*args[:-1], "--val-fraction", "0", "--seed", "4", "--overwrite",
                         "-q").returncode == 0
    with open_store(store, "r") as opened:
        assert opened.attrs["options"] == {"fold": 1, "seed": 0, "val_fraction": 0}
    assert flowstore_cli(*args, "--val-fraction", "0", "--seed", "7").returncode == 0
    # refused for its val fraction alone: the seed it left unused is no difference (it read
    # "--seed: store 0 vs asked 4" beside a store the same --seed 4 had built)
    line = assert_one_line_error(flowstore_cli(*args, "--val-fraction", "0.1", "--seed", "4"))
    assert "(--val-fraction: store 0" in line and "--seed" not in line, line


def test_a_split_file_refusal_names_the_files_not_their_hashes(sources, tmp_path):
    """A store built with a split file and resumed without one (or with another) said
    `--split-file: store 'xxh3_128:81125d10...' vs asked None`: a hash the user never wrote,
    and Python's None."""
    split_file = tmp_path / "splits.csv"
    split_file.write_text("path,label,split\njumping jacks/img_01.PNG,a,train\n"
                          "rock'n'roll/img_01.PNG,z,test\n")
    other = tmp_path / "other.csv"
    other.write_text("path,label,split\njumping jacks/img_01.PNG,a,test\n"
                     "rock'n'roll/img_01.PNG,z,train\n")
    args = ("build", "imagefolder", "--source", sources["imagefolder"], "--size", "16", "-q")
    with_file = tmp_path / "with.zarr"
    assert flowstore_cli(*args, "--store", with_file, "--split-file", split_file).returncode == 0
    line = assert_one_line_error(flowstore_cli(*args, "--store", with_file))
    assert f"(--split-file: store {str(split_file)!r} (content xxh3_128:" in line
    assert line.split("vs asked ")[1].startswith("none);")
    line = assert_one_line_error(flowstore_cli(*args, "--store", with_file, "--split-file", other))
    assert f"vs asked {str(other)!r} (content xxh3_128:" in line
    without = tmp_path / "without.zarr"
    assert flowstore_cli(*args, "--store", without, "--max-per-split", "1").returncode == 0
    line = assert_one_line_error(flowstore_cli(*args, "--store", without, "--split-file",
                                               split_file))
    assert f"(--split-file: store none vs asked {str(split_file)!r} (content" in line
    assert "None" not in line


def test_verify_checks_the_repair_options_before_it_reads_the_store(sources, tmp_path):
    """`verify --repair` parsed the dataset's options given again for their types alone, and
    checked their values only when there was something to repair: `--val-fraction nan` or an
    empty `--split-file` went through, exit 0, where a build refuses both (found by review).
    And a stray word was said to be a dataset option (`'extra': dataset options apply to
    --repair only`)."""
    store = tmp_path / "s.zarr"
    source = sources["imagefolder"]
    built = flowstore_cli("build", "imagefolder", "--source", source, "--store", store,
                          "--size", "16", "-q")
    assert built.returncode == 0, built.stderr
    repair = ("verify", store, "--repair", "--source", source, "-q")
    line = assert_one_line_error(flowstore_cli(*repair, "--val-fraction", "nan"))
    assert line == "error: --val-fraction must be in [0, 1), got nan"
    line = assert_one_line_error(flowstore_cli(*repair, "--split-file", ""))
    assert line == "error: --split-file: an empty path (an unset shell variable?)"
    assert assert_one_line_error(flowstore_cli("verify", store, "extra")) == (
        "error: unexpected argument 'extra'")
    assert flowstore_cli(*repair, "--val-fraction", "0.1").returncode == 0


def test_options_a_split_file_leaves_unused_neither_refuse_a_resume_nor_change_the_store(
        sources, tmp_path):
    """`--val-fraction`, `--test-fraction` and `--seed` beside `--split-file` shape nothing (the
    file gives every sample its split), yet a resume that gave another one, or left out one the
    build gave, was refused ("other split options (--val-fraction: store 0.3 vs asked 0.1)"),
    and each value made another fingerprint of the same store. They are recorded at their
    defaults; so is `--test-fraction` where split folders give the test split."""
    from flowstore.store.checksum import file_digest

    images = sources["imagefolder"]
    split_file = tmp_path / "splits.csv"
    split_file.write_text("path,label,split\njumping jacks/img_01.PNG,a,train\n"
                          "waving/img_01.PNG,z,test\n")

    def built(store: Path, **options) -> str:
        return build(BuildConfig(dataset="imagefolder", source=images, store=store,
                                 params=params_of("imagefolder"), progress=False,
                                 options={"split_file": split_file, **options})).fingerprint

    store = tmp_path / "s.zarr"
    first = built(store, val_fraction=0.3, seed=5)
    assert built(store) == first == built(store, test_fraction=0.5)  # each resumes
    assert built(tmp_path / "t.zarr") == first
    # a store made before recorded them as given, and its fingerprint hashed them so: it
    # resumes keeping both (rewritten, its fingerprint changed on a resume that changed
    # nothing, and the runs trained on it no longer matched it)
    older = {"split_file": file_digest(split_file), "val_fraction": 0.3, "test_fraction": 0.2,
             "seed": 5}
    with open_store(store, "r+") as opened:
        opened.update_attrs({"options": older})
    kept = built(store)
    assert kept != first and built(store) == kept == built(store, val_fraction=0.5)
    with open_store(store, "r") as opened:
        assert opened.attrs["options"] == older and opened.attrs["fingerprint"] == kept
    assert built(store, seed=5, val_fraction=0.3) == kept  # the command that made it
    # fractions summing to 1 or more leave no train in a random split only: beside a split
    # file they were refused all the same
    assert built(tmp_path / "u.zarr", val_fraction=0.5, test_fraction=0.6) == first
    folders = Path(shutil.copytree(images, tmp_path / "folders"))
    (folders / "README.txt").unlink(missing_ok=True)
    for split in ("train", "test"):
        (folders / split).mkdir()
    for name in [p.name for p in folders.iterdir() if p.name not in ("train", "test")]:
        shutil.copytree(folders / name, folders / "test" / name)
        shutil.move(folders / name, folders / "train" / name)
    dataset = get_dataset("imagefolder", {"test_fraction": 0.5, "val_fraction": 0.3})
    dataset.manifest(folders)
    assert dataset.recorded_options() == {"split_file": None, "val_fraction": 0.3,
                                          "test_fraction": 0.2, "seed": 0}


def test_verify_repair_rebuilds_with_the_stores_own_options(sources, tmp_path):
    from flowstore.verify import repair

    store = tmp_path / "u.zarr"
    build(BuildConfig(dataset="ucf101", source=sources["ucf101"], store=store,
                      params=params_of("ucf101"), options={"fold": 3}, progress=False))
    with open_store(store, "r") as opened:
        sample = str(opened.read("id")[0])
    assert repair(store, sources["ucf101"], [sample]).repaired == [sample]


def test_the_registry_refuses_a_duplicate_name():
    with pytest.raises(TypeError, match="dataset name 'ucf101' is taken"):
        type("AnotherUCF", (VideoDataset,), {"name": "ucf101", "manifest": lambda s, x: None,
                                             "__module__": __name__})
    assert get_dataset("ucf101").__class__.__module__ == "flowstore.datasets.ucf101"
    assert issubclass(type(get_dataset("ucf101")), Dataset)


# -- failure summary -------------------------------------------------------------------------------
def test_many_failures_are_grouped_by_reason_with_a_few_examples():
    failures = {f"clip{k:03d}_000000_000010": f"video file is missing: "
                f"clip{k:03d}_000000_000010.mp4" for k in range(500)}
    failures["bad_000000_000010"] = "only 1 decodable frame(s) in bad_000000_000010.mp4; need 2"
    groups = group_failures(failures)
    assert groups[0] == ("video file is missing: <file>", 500,
                         ["clip000_000000_000010", "clip001_000000_000010",
                          "clip002_000000_000010"])
    assert groups[1] == ("only 1 decodable frame(s) in <file>; need 2", 1, ["bad_000000_000010"])
    # a class-folder id (`run/c07`) names its file by the id's last part: one kind still
    # (each id whole in the pattern made each failure a kind of its own, listed one by one)
    folders = group_failures({f"run/c{k:02d}": f"video file is missing: c{k:02d}.avi"
                              for k in range(20)})
    assert folders == [("video file is missing: <file>", 20, ["run/c00", "run/c01", "run/c02"])]


def test_duplicates_across_splits_are_listed_before_those_within_one():
    """A clip in train and test (a leak) comes first, whatever its ids: listed by first id
    alone, it fell behind same-split copies and past `inspect`'s shown groups."""
    groups = duplicate_sources(["a", "b", "y", "z"], ["train", "train", "train", "test"],
                               np.array(["h1", "h1", "h2", "h2"]))
    assert [[row["id"] for row in group] for group in groups] == [["y", "z"], ["a", "b"]]


def test_up_to_failures_listed_each_failure_has_its_line_and_one_more_are_grouped():
    """FAILURES_LISTED is the most listed one per line (inclusive), one more are grouped."""
    def failures(n):
        return {f"clip{k:03d}": f"video file is missing: clip{k:03d}.mp4" for k in range(n)}

    listed = failure_lines(failures(FAILURES_LISTED))
    assert listed == [f"  clip{k:03d}: video file is missing: clip{k:03d}.mp4"
                      for k in range(FAILURES_LISTED)]
    assert failure_lines(failures(FAILURES_LISTED + 1)) == [
        f"  {FAILURES_LISTED + 1} x video file is missing: <file> (e.g. clip000, clip001, clip002)"]


def test_a_kinetics_copy_missing_many_clips_builds_the_rest_and_says_so_briefly(sources,
                                                                                 tmp_path):
    source = Path(shutil.copytree(sources["kinetics"], tmp_path / "k"))
    csv = source / "annotations" / "train.csv"
    extra = [f"abseiling,gone{k:03d},0,10,train,0" for k in range(40)]
    csv.write_text(csv.read_text() + "\n".join(extra) + "\n")
    result = flowstore_cli("build", "kinetics", "--source", source, "--store",
                           tmp_path / "k.zarr", "--size", "16", "--steps", "2", "-q")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, result.stderr  # the header and one grouped reason
    missing = int(lines[0].split()[0])
    assert missing > 40
    assert lines[1].startswith(f"  {missing} x video file is missing: <file> (e.g. ")
    with open_store(tmp_path / "k.zarr", "r") as store:
        assert int(store.read("done").sum()) == len(store.read("done")) - missing > 0
    shown = flowstore_cli("inspect", tmp_path / "k.zarr").stdout.splitlines()
    assert shown[-2:] == [f"failures ({missing})", lines[1]]  # inspect groups them the same way


def test_a_slow_ledger_is_written_less_often(sources, tmp_path, monkeypatch):
    """A ledger that takes long to write (a 250,000-clip Kinetics store: seconds) is written
    at most LEDGER_TIME_SHARE of the time, not after every sample once a second has passed."""
    import time

    from flowstore import build as build_module
    from flowstore.ledger import Ledger

    writes = []
    real_write = Ledger.write

    def slow_write(self, store, *, durable=False):
        time.sleep(0.2)
        writes.append(time.monotonic())
        real_write(self, store, durable=durable)

    monkeypatch.setattr(build_module, "DONE_FLUSH_SECONDS", 0.0)
    monkeypatch.setattr(Ledger, "write", slow_write)
    result = build(BuildConfig(dataset="ucf101", source=sources["ucf101"],
                               store=tmp_path / "u.zarr", params=params_of("ucf101"), workers=1,
                               progress=False))
    assert result.computed == 8
    during = writes[:-1]  # the last one is the final write after the run
    gaps = [later - earlier for earlier, later in zip(during, during[1:])]
    assert all(gap >= 0.2 / build_module.LEDGER_TIME_SHARE for gap in gaps), gaps
    assert len(during) < result.computed


def test_a_source_changed_since_the_build_is_refused_saying_what_changed(tmp_path):
    """Adding, removing or renaming clips (or deleting the one the build reported broken) was
    refused as 'built from another split manifest' and no more: now the refusal names them."""
    source = get_dataset("videofolder").write_synthetic(tmp_path / "s", TINY)
    args = ("build", "videofolder", "--source", source, "--store", tmp_path / "v.zarr",
            "--size", "16", "--steps", "2", "--test-fraction", "0", "--val-fraction", "0", "-q")
    assert flowstore_cli(*args).returncode == 0
    shutil.copy(source / "jumping jacks" / "clip_01.MP4", source / "jumping jacks" / "new.MP4")
    (source / "rock'n'roll" / "clip_02.mkv").unlink()
    line = assert_one_line_error(flowstore_cli(*args))
    assert ("""was built from another split manifest (1 sample(s) added ('jumping jacks/new'); """
            """1 removed ("rock'n'roll/clip_02")); use --overwrite"""
            in line), line
    (source / "jumping jacks").rename(source / "jumping")
    line = assert_one_line_error(flowstore_cli(*args))
    assert ("5 sample(s) added ('jumping/clip_01', 'jumping/clip_02', "
            "'jumping/clip_03', ...); 5 removed" in line), line
    assert "1 class(es) new ('jumping'); 1 class(es) gone ('jumping jacks')" in line, line


@pytest.mark.parametrize("rows,expected", [
    # a spreadsheet of ids, not file names: every sample failed as "image file is missing: a"
    (["cat/a,cat,train", "dog/b,dog,test"], r"line 2: 'cat/a' is not in .*, 'a\.jpeg' is "
     r"beside it: a path names its file, suffix included"),
    # written from the folder above the source: every sample failed alike
    (["imgs/cat/a.jpeg,cat,train", "imgs/dog/b.png,dog,test"], r"none of the 2 files split "
     r"file .* lists is in .*imgs' \(e\.g\. .*imgs/imgs/cat/a\.jpeg'\): its paths are relative "
     r"to --source"),
], ids=["no-suffix", "relative-to-elsewhere"])
def test_a_split_file_whose_paths_are_written_otherwise_is_refused(tmp_path, rows, expected):
    source = _empty_files(tmp_path / "imgs", ["cat/a.jpeg", "dog/b.png"])
    split_file = tmp_path / "splits.csv"
    split_file.write_text("\n".join(["path,label,split", *rows]) + "\n")
    with pytest.raises(SourceLayoutError, match=expected):
        get_dataset("imagefolder", {"split_file": str(split_file)}).manifest(source)
    # one file missing among others is that sample's failure, not the file's
    split_file.write_text("path,label,split\ncat/a.jpeg,cat,train\ndog/gone.png,dog,test\n")
    get_dataset("imagefolder", {"split_file": str(split_file)}).manifest(source)


def test_one_class_spelled_two_ways_in_a_split_file_names_the_file(tmp_path):
    split_file = tmp_path / "splits.csv"
    split_file.write_text("path,label,split\ncat/a.jpeg,cat,train\ncat/A.jpeg,Cat,test\n")
    source = _empty_files(tmp_path / "imgs", ["cat/a.jpeg", "cat/A.jpeg"])
    with pytest.raises(SourceLayoutError, match=r"classes 'Cat' and 'cat' in '.*splits\.csv'"):
        get_dataset("imagefolder", {"split_file": str(split_file)}).manifest(source)


def test_a_split_file_as_a_spreadsheet_exports_it_reads(tmp_path):
    """`Path, Label, Split` headers and `Train` / `validation` values were refused."""
    source = _empty_files(tmp_path / "imgs", ["cat/a.jpeg", "cat/b.jpeg", "dog/c.png"])
    split_file = tmp_path / "splits.csv"
    split_file.write_text("Path , Label,SPLIT,notes\ncat/a.jpeg,cat,Train,x\n"
                          "cat/b.jpeg,cat,validation,\ndog/c.png,dog,TEST,\n")
    manifest = get_dataset("imagefolder", {"split_file": str(split_file)}).manifest(source)
    assert {row.id: row.split for row in manifest.rows} == {"cat/a": "train", "cat/b": "val",
                                                            "dog/c": "test"}
    split_file.write_text("path,label,split\ncat/a.jpeg,cat,holdout\n")
    with pytest.raises(SourceLayoutError, match="line 2: split 'holdout' is not one of train, "
                                                "val, test"):
        get_dataset("imagefolder", {"split_file": str(split_file)}).manifest(source)


def test_split_file_ids_follow_folder_modes_rule_whatever_the_row_order(tmp_path):
    """`a/x.mp4` and `a/x.avi` in a split file: the first row got the id `a/x`, the other kept
    its suffix, so `a/x` named another file when the rows were sorted otherwise. Both keep
    their suffix, as in folder mode (`MediaFiles.sample_ids`)."""
    source = _empty_files(tmp_path / "vf", ["a/x.mp4", "a/x.avi", "b/y.mp4"])
    rows = ["a/x.mp4,a,train", "a/x.avi,a,test", "b/y.mp4,b,train"]
    got = []
    for order in (rows, [rows[1], rows[0], rows[2]]):
        split_file = tmp_path / "splits.csv"
        split_file.write_text("\n".join(["path,label,split", *order]) + "\n")
        dataset = get_dataset("videofolder", {"split_file": str(split_file)})
        manifest = dataset.manifest(source)
        got.append({row.id: (dataset.sample_paths[row.id], row.split) for row in manifest.rows})
    assert got[0] == got[1] == {"a/x.mp4": ("a/x.mp4", "train"), "a/x.avi": ("a/x.avi", "test"),
                                "b/y": ("b/y.mp4", "train")}
    folder_mode = get_dataset("videofolder", {"test_fraction": "0", "val_fraction": "0"})
    assert sorted(folder_mode.manifest(source).ids) == sorted(got[0])
    # a path and the same path without its suffix (both missing: samples that fail) are two
    # ids too, not refused as one sample
    split_file.write_text("path,label,split\na/x.mp4,a,train\nc/clip.MP4,a,test\n"
                          "c/clip,b,test\nb/y.mp4,b,train\n")
    dataset = get_dataset("videofolder", {"split_file": str(split_file)})
    assert sorted(dataset.manifest(source).ids) == ["a/x", "b/y", "c/clip", "c/clip.MP4"]


def test_blank_rows_of_a_split_file_are_skipped_as_empty_lines_are(tmp_path):
    """A row a spreadsheet exports blank (`,,`, or spaces) was refused ("empty path or label",
    "expected 3 fields") where an empty line was skipped (`read_csv`)."""
    source = _empty_files(tmp_path / "imgs", ["cat/a.jpeg", "dog/c.png"])
    split_file = tmp_path / "splits.csv"
    split_file.write_text("path,label,split\ncat/a.jpeg,cat,train\n,,\n  \n\n , ,\t, \n"
                          "dog/c.png,dog,test\n,,\n")
    manifest = get_dataset("imagefolder", {"split_file": str(split_file)}).manifest(source)
    assert {row.id: row.split for row in manifest.rows} == {"cat/a": "train", "dog/c": "test"}
    split_file.write_text("path,label,split\ncat/a.jpeg,cat,train\n,,\n \ndog/c.png,,test\n")
    with pytest.raises(SourceLayoutError, match="line 5: empty path or label"):
        get_dataset("imagefolder", {"split_file": str(split_file)}).manifest(source)

def test_a_split_file_of_excel_or_windows_reads_as_any_other(tmp_path):
    """Excel's "CSV UTF-8" starts the file with a byte-order mark (it read as part of the
    first column's name: "has no column 'path'"), and a Windows tool writes its paths with
    backslashes (no file matched): the same manifest as the plain file's."""
    source = _empty_files(tmp_path / "imgs", ["cat/a.jpeg", "dog/c.png"])
    plain = tmp_path / "plain.csv"
    plain.write_text("path,label,split\ncat/a.jpeg,cat,train\ndog/c.png,dog,test\n")
    expected = get_dataset("imagefolder", {"split_file": str(plain)}).manifest(source)
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbfpath,label,split\r\ncat\\a.jpeg,cat,train\r\n"
                      b"dog\\c.png,dog,test\r\n")
    manifest = get_dataset("imagefolder", {"split_file": str(excel)}).manifest(source)
    assert [(row.id, row.class_name, row.split) for row in manifest.rows] == \
        [(row.id, row.class_name, row.split) for row in expected.rows]


def _edited(sources, name: str, tmp_path: Path, edit) -> Path:
    """A private copy of a synthetic source, changed by `edit(root)`."""
    source = Path(shutil.copytree(sources[name], tmp_path / name))
    edit(source)
    return source


def _replace_line(path: Path, number: int, old: str, new: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    assert old in lines[number - 1], lines[number - 1]
    lines[number - 1] = lines[number - 1].replace(old, new, 1)
    path.write_text("".join(lines))


def _first_kinetics_row(old: str, new: str):
    """An edit of a synthetic Kinetics source: `old` replaced by `new` in train.csv's first row."""
    return lambda root: _replace_line(root / "annotations/train.csv", 2, old, new)


#: What a Kinetics CSV row naming a path, or nothing, as its label, youtube_id or split is told.
_MALFORMED_NAME = r"line 2: empty or malformed label, youtube_id or split \(each one name"


def _first_kinetics_row_listed_again(root: Path) -> None:
    """train.csv with its first row appended again (a CSV concatenated by hand)."""
    csv_file = root / "annotations/train.csv"
    text = csv_file.read_text()
    csv_file.write_text(text + text.splitlines(keepends=True)[1])


def _rename_kinetics_splits(root: Path) -> None:
    """Split folders named otherwise than the CSVs' `split` column: no listed clip is where
    the CSVs say (`train/`, `val/`)."""
    for split in ("train", "val"):
        (root / split).rename(root / f"{split}-clips")


@pytest.mark.parametrize("name, edit, expected", [
    ("kinetics", _rename_kinetics_splits, r"none of the \d+ clips its split lists is in .* \(expected "
     r"e\.g\. '.*/train/[^/]+/[^/]+\.mp4'\): --source is not laid out as `flowstore datasets "
     r"kinetics` describes"),
    ("ucf101", lambda root: [shutil.rmtree(p) for p in (root / "UCF-101").iterdir()],
     r"none of the \d+ clips its split lists is in"),
    ("hmdb51", lambda root: [clip.unlink() for clip in root.glob("**/*.avi")],
     r"none of the \d+ clips its split lists is in"),
    ("kinetics", _first_kinetics_row(",0,10,", ",nan,10,"),
     r"annotations/train.csv line 2: time 'nan' is not a whole number of seconds"),
    ("kinetics", _first_kinetics_row(",0,10,", ",1e400,10,"),
     r"time '1e400' is not a whole number of seconds"),
    ("kinetics", _first_kinetics_row(",0,10,", ",0.5,10,"),
     r"line 2: time '0.5' is not a whole number of seconds"),
    ("kinetics", _first_kinetics_row(",0,10,", ",10,10,"),
     r"line 2: time_end 10 is not after time_start 10"),
    ("kinetics", _first_kinetics_row(",0,10,", ",-1,10,"),
     r"line 2: time '-1' is not a whole number of seconds"),
    ("kinetics", _first_kinetics_row("tr000", "../../outside/tr000"),
     _MALFORMED_NAME),
    # a split or label of `..`, or none, read a clip above --source (`../abseiling/...`, or
    # `/abseiling/...` from the root)
    ("kinetics", _first_kinetics_row(",train,", ",..,"),
     _MALFORMED_NAME),
    ("kinetics", _first_kinetics_row(",train,", ",,"),
     _MALFORMED_NAME),
    ("kinetics", _first_kinetics_row("abseiling,", "..,"),
     _MALFORMED_NAME),
    # a train.csv concatenated by hand: its second listing of a clip ended in an internal
    # error (a manifest listing the sample twice)
    ("kinetics", _first_kinetics_row_listed_again,
     r"annotations/train.csv line \d+: clip \S+ is listed twice$"),
    # a trainlist in testlist's format (no class index) was an IndexError: a bug in flowstore
    ("ucf101", lambda root: _replace_line(root / "ucfTrainTestlist/trainlist01.txt", 1,
                                          ".avi 1", ".avi"),
     r"trainlist01.txt line 1: expected 'Class/clip.avi INDEX'"),
    ("ucf101", lambda root: _replace_line(root / "ucfTrainTestlist/trainlist01.txt", 1,
                                          ".avi 1", ".avi 2"),
     r"trainlist01.txt line 1: index 2 is not that of '\w+' in classInd.txt \(1\)"),
    ("kinetics", _first_kinetics_row("abseiling", "Abseiling"),
     r"classes 'Abseiling' and 'abseiling' in annotations/train.csv and val.csv differ only "
     r"in letter case"),
    ("ucf101", lambda root: (root / "ucfTrainTestlist/classInd.txt").write_text(
        (root / "ucfTrainTestlist/classInd.txt").read_text() + "3 ApplyEyeMakeup\r\n"),
     r"classInd.txt line 3: class 'ApplyEyeMakeup' is listed twice \(also as 1\)"),
    ("hmdb51", lambda root: next(root.glob("**/*_test_split1.txt")).unlink(),
     r"has \w+_test_split2.txt but no \w+_test_split1.txt: fold 1 would lack class"),
    ("hmdb51", lambda root: _replace_line(next(root.glob("**/*_test_split1.txt")), 1, "",
                                          "Class/"),
     r"line 1: expected 'clip.avi N'"),
    # a class of no clip was built, exit 0: a label no run could learn ("cartwheel 0/0 0/0")
    ("hmdb51", lambda root: next(root.glob("**/cartwheel_test_split1.txt")).write_text(""),
     r"class 'cartwheel' has no samples in any split: a model cannot learn a class it"),
    ("hmdb51", lambda root: [split_file.write_text(2 * split_file.read_text())
                             for split_file in root.glob("**/cartwheel_test_split1.txt")],
     r"clip '[^']+_cartwheel_[^']+\.avi' is listed twice in the split 1 files"),
    # one list repeating a clip was blamed on both ("trainlist01.txt and testlist01.txt list")
    ("ucf101", lambda root: (root / "ucfTrainTestlist/trainlist01.txt").write_text(
        2 * (root / "ucfTrainTestlist/trainlist01.txt").read_text()),
     r"^error: trainlist01.txt lists clip '[^']+' twice$"),
], ids=["kinetics-split-folders", "ucf101-no-clips", "hmdb51-no-clips", "kinetics-nan", "kinetics-inf",
        "kinetics-fraction", "kinetics-empty-span", "kinetics-negative-time",
        "kinetics-path-id", "kinetics-split-dots", "kinetics-split-empty", "kinetics-label-dots",
        "kinetics-clip-twice", "ucf101-trainlist-no-index", "ucf101-trainlist-other-index",
        "kinetics-case",
        "ucf101-class-twice", "hmdb51-fold-file-missing", "hmdb51-path-clip", "hmdb51-empty-class",
        "hmdb51-clip-twice", "ucf101-clip-twice-in-one-list"])
def test_a_source_the_split_files_do_not_fit_is_one_line_and_no_store(
        sources, tmp_path, name, edit, expected):
    """Each was built: a store of nothing but "video file is missing" failures (a source laid
    out otherwise), a traceback (nan or 1e400 seconds), a class with two labels (classInd.txt
    listing one twice; `Abseiling` beside `abseiling`), a fold of one class fewer, or a clip
    read from outside the source."""
    source = _edited(sources, name, tmp_path, edit)
    store = tmp_path / "s.zarr"
    result = flowstore_cli("build", name, "--source", source, "--store", store, "--size", "16",
                           "--steps", "2", "-q")
    assert re.search(expected, assert_one_line_error(result)), result.stderr
    assert not store.exists()


def test_spaces_and_blank_lines_a_hand_edit_leaves_read_as_without_them(sources, tmp_path):
    """A Kinetics label with spaces around it is its class, not a second one ('abseiling '
    in a folder of its own); an HMDB51 split file with a blank line reads as without it."""
    def manifest(name, source):
        return [(row.id, row.class_name, row.split)
                for row in get_dataset(name).manifest(source).rows]

    spaced = _edited(sources, "kinetics", tmp_path,
                     _first_kinetics_row("abseiling,", " abseiling ,"))
    assert manifest("kinetics", spaced) == manifest("kinetics", sources["kinetics"])

    def blank_line(root):
        split_file = next(root.glob("**/*_test_split1.txt"))
        lines = split_file.read_text().splitlines(keepends=True)
        split_file.write_text(lines[0] + "\n" + "".join(lines[1:]))

    blank = _edited(sources, "hmdb51", tmp_path, blank_line)
    assert manifest("hmdb51", blank) == manifest("hmdb51", sources["hmdb51"])


def test_a_stray_file_in_a_kinetics_split_folder_leaves_its_label_folders_read(sources,
                                                                            tmp_path):
    """Only clips make a split folder flat (CVDF's layout): with a `notes.txt` (or a
    `.DS_Store`) beside the label folders, a label folder named otherwise had its clips looked
    for as `train/<id>.mp4`, and the build's warning naming the folder it expected went
    untold."""
    def stray_file_and_a_folder_renamed(root):
        (root / "train" / "notes.txt").write_text("downloaded 2026")
        (root / "train" / "abseiling").rename(root / "train" / "abseiling (copy)")

    def paths(root):
        dataset = get_dataset("kinetics")
        return [dataset.source_file(root, row.id).relative_to(root).as_posix()
                for row in dataset.manifest(root).rows]

    source = _edited(sources, "kinetics", tmp_path, stray_file_and_a_folder_renamed)
    assert paths(source) == paths(sources["kinetics"])
    assert any(path.startswith("train/abseiling/") for path in paths(source))


def test_a_split_file_that_moved_is_given_again_to_repair_or_recorded_by_a_resume(sources,
                                                                                  tmp_path):
    """`verify --repair` read the split file from the path recorded when the store was made,
    and took no --split-file: once the file moved with its dataset, a damaged sample could not
    be repaired ("no split file at ..."), and a resume given the new path did not record it."""
    from tests.conftest import chunk_file

    source = sources["videofolder"]
    clips = sorted(p.relative_to(source).as_posix() for p in source.glob("*/clip_0[12]*"))
    rows = [f"{clip},{clip.split('/')[0]},{'train' if '_01' in clip else 'test'}"
            for clip in clips]
    first = tmp_path / "a.csv"
    first.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    store = tmp_path / "s.zarr"
    built = flowstore_cli("build", "videofolder", "--source", source, "--store", store,
                          "--size", str(SIZE), "--steps", str(STEPS), "--split-file", first, "-q")
    assert built.returncode == 0, built.stderr
    moved = first.rename(tmp_path / "b.csv")
    sound = flowstore_cli("verify", store, "--repair", "--source", source, "-q")
    assert sound.returncode == 0, sound.stderr  # nothing to repair: the file is not needed
    chunk_file(store, "flow", 0).unlink()
    gone = flowstore_cli("verify", store, "--repair", "--source", source)
    assert gone.returncode == 2 and "Traceback" not in gone.stderr
    assert gone.stderr.splitlines()[-1] == (
        f"error: the --split-file store '{store}' was built with is no longer at '{first}': "
        f"give it where it is now (--split-file FILE)")  # (after the bad samples it lists)
    refused = flowstore_cli("verify", store, "--split-file", moved)
    assert "dataset options apply to --repair only" in assert_one_line_error(refused)
    repaired = flowstore_cli("verify", store, "--repair", "--source", source, "--split-file",
                             moved, "-q")
    assert repaired.returncode == 0 and "repaired 1 of 1" in repaired.stdout, repaired.stderr

    again = moved.rename(tmp_path / "c.csv")  # moved again; a resume records where it is
    resumed = flowstore_cli("build", "videofolder", "--source", source, "--store", store,
                            "--size", str(SIZE), "--steps", str(STEPS), "--split-file", again,
                            "-q")
    assert resumed.returncode == 0 and "0 computed" in resumed.stdout, resumed.stderr
    chunk_file(store, "flow", 1).unlink()
    repaired = flowstore_cli("verify", store, "--repair", "--source", source, "-q")
    assert repaired.returncode == 0 and "repaired 1 of 1" in repaired.stdout, repaired.stderr
