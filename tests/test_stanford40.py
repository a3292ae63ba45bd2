"""Stanford-40: split-file parsing (real files), synthetic source, image store, bad input, CLI."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flowstore.build import BuildConfig, build
from flowstore.cli import app
from flowstore.datasets import get_dataset
from flowstore.datasets.stanford40 import (ACTIONS, Stanford40, class_of, manifest_from_splits,
                                           parse_actions, parse_image_list, read_image_splits)
from flowstore.errors import SampleError, SourceLayoutError
from flowstore.extraction._cv import cv2
from flowstore.extraction.image import extract_image
from flowstore.manifest import SPLITS
from flowstore.params import EXTRACTION_VERSION, ImageParams
from flowstore.store import failures, open_store
from flowstore.synth import synthetic_source
from flowstore.synth.stanford40 import (SynthStanford40Config, class_cue,
                                        write_synthetic_stanford40)
from tests.conftest import SHARED, assert_one_line_error, flowstore_cli, require_real_data
from tests.reference import reference_image

REAL_SPLITS = SHARED / "data" / "stanford40" / "ImageSplits"
SIZE = 32
# 4 classes x (20 train + 3 test) small images: val = 10% of 80 = 2 per class.
TINY = SynthStanford40Config(classes=4, train_per_class=20, test_per_class=3, min_side=40,
                             max_side=90, seed=1)
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory) -> Path:
    """A read-only tiny synthetic source (copy it to change it)."""
    return write_synthetic_stanford40(tmp_path_factory.mktemp("synth") / "stanford40", TINY)


@pytest.fixture(scope="module")
def stores(tiny_source, tmp_path_factory) -> dict[str, Path]:
    """The tiny source built once into each backend."""
    folder = tmp_path_factory.mktemp("stores")
    built = {}
    for suffix in (".zarr", ".h5"):
        result = build(BuildConfig(dataset="stanford40", source=tiny_source,
                                   store=folder / f"s40{suffix}", params=ImageParams(size=SIZE),
                                   workers=2, progress=False))
        assert result.ok and result.computed == 4 * 23, result.failures
        built[suffix] = result.store
    return built


@pytest.fixture
def real_splits() -> Path:
    require_real_data(REAL_SPLITS / "actions.txt", "real Stanford-40 split files")
    return REAL_SPLITS


# -- the real split files ----------------------------------------------------------------------
def test_real_split_files_parse_into_the_official_split(real_splits):
    splits = read_image_splits(real_splits)
    assert splits.classes == ACTIONS and len(ACTIONS) == 40
    assert splits.classes.index("reading") < splits.classes.index("phoning")  # file order, not abc
    counts = parse_actions((real_splits / "actions.txt").read_text())
    assert sum(counts.values()) == 9532
    assert sum(map(len, splits.train.values())) == 4000
    assert sum(map(len, splits.test.values())) == 5532
    for name in ACTIONS:
        assert len(splits.train[name]) == 100
        assert len(splits.train[name]) + len(splits.test[name]) == counts[name]
        for split, ids in (("train", splits.train[name]), ("test", splits.test[name])):
            per_class = parse_image_list((real_splits / f"{name}_{split}.txt").read_text(), "x")
            assert per_class == ids  # same ids, same order: train.txt is their concatenation
            assert {class_of(i) for i in ids} == {name}

    manifest = manifest_from_splits(splits)
    assert manifest == manifest_from_splits(read_image_splits(real_splits))  # fixed seed
    per_split = Counter(row.split for row in manifest.rows)
    assert per_split == {"train": 3600, "val": 400, "test": 5532}
    val_per_class = Counter(row.class_name for row in manifest.rows if row.split == "val")
    assert set(val_per_class.values()) == {10} and len(val_per_class) == 40
    ids = [row.id for row in manifest.rows]
    assert len(ids) == len(set(ids)) == 9532  # so no id is in two splits
    assert {row.id for row in manifest.rows if row.split == "test"} == {
        i for ids in splits.test.values() for i in ids}
    assert all(row.label == ACTIONS.index(row.class_name) == ACTIONS.index(class_of(row.id))
               for row in manifest.rows)
    # the first rows of a split cycle over the classes (what --max-per-split relies on)
    assert [row.class_name for row in manifest.rows[:40]] == list(ACTIONS)


def test_split_files_saved_with_a_bom_read_as_without(real_splits, tmp_path):
    """A BOM (a Windows editor's save) became part of the first name: "train.txt lists
    \\ufeffapplauding_177.jpg, whose action ... is not in actions.txt"."""
    folder = Path(shutil.copytree(real_splits, tmp_path / "ImageSplits"))
    for name in ("actions.txt", "train.txt", "test.txt", "applauding_train.txt"):
        (folder / name).write_bytes(b"\xef\xbb\xbf" + (folder / name).read_bytes())
    assert read_image_splits(folder) == read_image_splits(real_splits)


def test_train_and_test_lists_in_another_order_than_the_per_class_files_read(real_splits,
                                                                             tmp_path):
    """The per-class files list their images in no particular order: `train.txt` re-sorted
    (regenerated, or edited in a spreadsheet) holds the same images, and reads as the same
    split (its lists were compared in order: an IndexError)."""
    folder = Path(shutil.copytree(real_splits, tmp_path / "ImageSplits"))
    for name in ("train.txt", "test.txt"):
        lines = (folder / name).read_text().split()
        (folder / name).write_text("\n".join(sorted(lines, reverse=True)) + "\n")
    resorted, official = read_image_splits(folder), read_image_splits(real_splits)
    assert resorted.classes == official.classes
    for split in ("train", "test"):
        got, want = getattr(resorted, split), getattr(official, split)
        assert {name: sorted(ids) for name, ids in got.items()} == \
            {name: sorted(ids) for name, ids in want.items()}


def test_parsers_take_the_real_quirks_and_reject_garbage():
    text = "action_name\t\t\tnumber_of_images\nb_c\t\t\t3\nlooking_x\t191\t\n\na\t\t\t\t2\n"
    assert parse_actions(text) == {"b_c": 3, "looking_x": 191, "a": 2}  # file order kept
    assert parse_actions("a 1\nb 2\n") == {"a": 1, "b": 2}  # a header is optional
    assert parse_image_list("a_001.jpg\r\nb_c_012.jpg  \r\n\r\n", "x") == ["a_001", "b_c_012"]
    assert class_of("looking_through_a_microscope_007") == "looking_through_a_microscope"
    with pytest.raises(SourceLayoutError, match="line 2"):
        parse_actions("action_name number_of_images\nfoo bar baz\n")
    # '²' is a digit to `str.isdigit` and no number to int(): was a ValueError, an internal error
    with pytest.raises(SourceLayoutError, match="line 2: expected 'action_name<TAB>count'"):
        parse_actions("action_name\tnumber_of_images\nrun\t1\u00b2\n")
    with pytest.raises(SourceLayoutError, match="twice"):
        parse_actions("a 1\na 2\n")
    with pytest.raises(SourceLayoutError, match=r"train.txt line 2.*applauding_001\.png"):
        parse_image_list("applauding_002.jpg\napplauding_001.png\n", "train.txt")
    # a name without its class's `_NNN` was a traceback of `class_of` (ValueError) at the build
    with pytest.raises(SourceLayoutError, match=r"test.txt line 2: .*got 'applauding\.jpg'"):
        parse_image_list("applauding_002.jpg\napplauding.jpg\n", "test.txt")


def _splits_folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "ImageSplits"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("files, message", [
    ({"train.txt": "a_001.jpg\n", "test.txt": "b_001.jpg\n"}, "no actions.txt"),
    ({"actions.txt": "a 2\nb 1\n", "test.txt": "b_001.jpg\n"}, "no train.txt"),
    ({"actions.txt": "a 2\n", "train.txt": "a_001.jpg\nz_001.jpg\n", "test.txt": ""},
     "'z' is not in actions.txt"),
    ({"actions.txt": "a 2\n", "train.txt": "a_001.jpg\n", "test.txt": "a_001.jpg\n"},
     "both train.txt and test.txt"),
    ({"actions.txt": "a 2\n", "train.txt": "a_001.jpg\na_001.jpg\n", "test.txt": ""},
     "train.txt lists a_001.jpg twice"),
    ({"actions.txt": "a 2\n", "train.txt": "a_001.jpg\n", "a_test.txt": "a_002.jpg\na_002.jpg\n"},
     "a_test.txt lists a_002.jpg twice"),
    ({"actions.txt": "a 2\n", "train.txt": "a_001.jpg\n", "test.txt": "a_002.jpg\n",
      "a_train.txt": "a_003.jpg\n"}, "a_train.txt disagrees with train.txt"),
    # a per-class file missing an image train.txt lists (the check caught only extra ones)
    ({"actions.txt": "a 2\n", "train.txt": "a_001.jpg\na_002.jpg\n", "test.txt": "",
      "a_train.txt": "a_001.jpg\n"},
     r"^a_train.txt disagrees with train.txt about the 'a' images \(e.g. a_002\)$"),
    # a repeat beside a per-class file was "a_train.txt disagrees with train.txt about the 'a'
    # images (e.g. (a repeated name))": the file that repeats it is named now
    ({"actions.txt": "a 2\n", "train.txt": "a_001.jpg\na_001.jpg\n", "test.txt": "",
      "a_train.txt": "a_001.jpg\n"}, "train.txt lists a_001.jpg twice"),
    ({"actions.txt": "a 2\n", "train.txt": "a_001.jpg\n", "test.txt": "",
      "a_train.txt": "a_001.jpg\na_001.jpg\n"}, "a_train.txt lists a_001.jpg twice"),
    # without train.txt, a per-class file listing another class's image gave it that label
    ({"actions.txt": "a 2\nb 2\n", "a_train.txt": "a_001.jpg\nb_001.jpg\n",
      "b_train.txt": "b_002.jpg\n", "test.txt": "a_002.jpg\n"},
     r"^a_train.txt lists b_001.jpg, which is not an image of 'a'$"),
])
def test_inconsistent_split_files_are_layout_errors(tmp_path, files, message):
    with pytest.raises(SourceLayoutError, match=message) as error:
        read_image_splits(_splits_folder(tmp_path, files))
    assert "\n" not in str(error.value)


def test_per_class_files_stand_in_for_a_missing_train_txt(tmp_path):
    folder = _splits_folder(tmp_path, {"actions.txt": "b 2\na 2\n", "b_train.txt": "b_002.jpg\n",
                                       "a_train.txt": "a_001.jpg\n", "test.txt": "a_002.jpg\nb_001.jpg\n"})
    splits = read_image_splits(folder)
    assert splits.classes == ("b", "a")
    assert splits.train == {"b": ["b_002"], "a": ["a_001"]}


# -- the synthetic source ----------------------------------------------------------------------
def test_synthetic_source_has_the_real_layout(tiny_source, real_splits):
    folder = tiny_source / "ImageSplits"
    actions = ACTIONS[:4]
    expected = {"actions.txt", "train.txt", "test.txt"} | {
        f"{a}_{s}.txt" for a in actions for s in ("train", "test")}
    assert {p.name for p in folder.iterdir()} == expected
    for path in folder.iterdir():
        raw = path.read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n"), path.name
    real_lines = (real_splits / "actions.txt").read_text().splitlines()
    lines = (folder / "actions.txt").read_text().splitlines()
    assert lines[0] == real_lines[0]  # the header, byte for byte
    assert lines[1:] == [line.replace(line.split("\t")[-1], "23") for line in real_lines[1:5]]
    for split in ("train", "test"):
        per_class = "".join((folder / f"{a}_{split}.txt").read_text() for a in sorted(actions))
        assert (folder / f"{split}.txt").read_text() == per_class
    images = sorted(p.name for p in (tiny_source / "JPEGImages").iterdir())
    assert images == sorted(f"{a}_{n:03d}.jpg" for a in actions for n in range(1, 24))
    sides = [cv2.imread(str(tiny_source / "JPEGImages" / name)).shape[:2] for name in images]
    assert all(40 <= side <= 90 for hw in sides for side in hw)
    assert len(set(sides)) > len(sides) // 2  # sizes and aspect ratios vary


def test_synthetic_source_is_deterministic_per_seed(tmp_path):
    args = ["--classes", "2", "--train-per-class", "2", "--test-per-class", "1",
            "--min-side", "32", "--max-side", "48"]
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        result = runner.invoke(app, ["synth", "stanford40", str(tmp_path / name), *args, "--seed", seed])
        assert result.exit_code == 0, result.output
    files = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 6 + 7
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    image = "JPEGImages/applauding_001.jpg"
    assert (tmp_path / "a" / image).read_bytes() != (tmp_path / "c" / image).read_bytes()
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind
    again = runner.invoke(app, ["synth", "stanford40", str(tmp_path / "a"), *args])
    assert again.exit_code == 2 and "not empty" in again.output
    bad = runner.invoke(app, ["synth", "stanford40", str(tmp_path / "d"), "--classes", "41"])
    assert bad.exit_code == 2 and "classes must be in 1..40, got 41" in bad.output


def test_synthetic_classes_have_distinct_cues_visible_after_resizing(stores):
    assert len({class_cue(k) for k in range(40)}) == 40
    with open_store(stores[".zarr"]) as store:
        images, labels = store.read("image").astype(float), store.read("label")
    # The object's colour is the most saturated region; its mean colour names the class.
    colours = np.array([class_cue(k)[0] for k in range(4)], dtype=float)
    hits = 0
    for image, label in zip(images, labels):
        grey = image.mean(axis=2, keepdims=True)
        saturation = np.abs(image - grey).sum(axis=2)
        obj = image[saturation >= np.quantile(saturation, 0.9)].mean(axis=0)
        hits += int(np.argmin(((colours - obj) ** 2).sum(axis=1)) == label)
    assert hits / len(labels) > 0.9


def test_synthetic_source_is_registered_for_build_synthetic(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSTORE_CACHE", str(tmp_path))
    small = SynthStanford40Config(classes=2, train_per_class=2, test_per_class=1, min_side=32, max_side=40)
    folder = synthetic_source("stanford40", small)
    assert folder.parent == tmp_path / "synthetic" and folder.name.startswith("stanford40-")
    assert len(get_dataset("stanford40").manifest(folder)) == 6
    assert synthetic_source("stanford40", small) == folder  # cached


# -- the store ---------------------------------------------------------------------------------
def test_synthetic_split_counts_and_stratification(tiny_source, stores):
    manifest = Stanford40().manifest(tiny_source)
    assert manifest.classes == ACTIONS[:4]
    count = Counter((row.split, row.class_name) for row in manifest.rows)
    for name in ACTIONS[:4]:
        assert (count["train", name], count["val", name], count["test", name]) == (18, 2, 3)
    ids = [row.id for row in manifest.rows]
    assert len(ids) == len(set(ids))
    listed_test = (tiny_source / "ImageSplits" / "test.txt").read_text().split()
    assert {row.id + ".jpg" for row in manifest.rows if row.split == "test"} == set(listed_test)
    for path in stores.values():
        with open_store(path) as store:
            assert store.read("id").tolist() == ids
            assert store.read("split").tolist() == [row.split for row in manifest.rows]
            assert store.read("label").tolist() == [row.label for row in manifest.rows]
            assert store.attrs["classes"] == list(ACTIONS[:4])


@pytest.mark.parametrize("suffix", [".zarr", ".h5"], ids=["zarr", "hdf5"])
def test_store_values_equal_an_independent_decode_and_resize(tiny_source, stores, suffix):
    with open_store(stores[suffix]) as store:
        assert store.attrs["dataset"] == "stanford40" and store.attrs["params"] == {
            "size": SIZE, "extraction": EXTRACTION_VERSION}
        assert store.read("done").all()
        assert store.info("image").chunks == (1, SIZE, SIZE, 3)
        images, ids = store.read("image"), store.read("id")
    assert images.shape == (4 * 23, SIZE, SIZE, 3) and images.dtype == np.uint8
    for sample_id, image in zip(ids, images):
        expected = reference_image(tiny_source / "JPEGImages" / f"{sample_id}.jpg", SIZE)
        np.testing.assert_array_equal(image, expected, err_msg=sample_id)


def test_both_backends_hold_equal_values(stores):
    with open_store(stores[".zarr"]) as zarr_store, open_store(stores[".h5"]) as h5_store:
        assert zarr_store.attrs["fingerprint"] == h5_store.attrs["fingerprint"]
        for name in ("id", "label", "split", "done", "image"):
            np.testing.assert_array_equal(zarr_store.read(name), h5_store.read(name), err_msg=name)


def test_fingerprint_covers_the_split_files(tiny_source):
    dataset = Stanford40()
    files = dataset.source_files(tiny_source, dataset.manifest(tiny_source))
    assert files["ImageSplits/actions.txt"] > 0 and files["ImageSplits/train.txt"] > 0
    assert files["ImageSplits/applauding_test.txt"] > 0
    assert files["JPEGImages/applauding_001.jpg"] > 0
    assert not any(Path(name).is_absolute() for name in files)
    # the names the build compares on resume are the ones recorded here
    assert str(dataset.source_file(Path("."), "applauding_001")) in files


# -- bad input -----------------------------------------------------------------------------------
def test_image_extraction_failures_are_sample_errors(tmp_path, tiny_source):
    good = (tiny_source / "JPEGImages" / "applauding_001.jpg").read_bytes()
    cases = {"missing.jpg": None, "empty.jpg": b"", "garbage.jpg": b"not a jpeg" * 50,
             "cut.jpg": good[: len(good) * 2 // 3]}
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    reasons = {}
    for name in cases:
        with pytest.raises(SampleError) as info:
            extract_image(tmp_path / name, ImageParams(size=SIZE))
        reasons[name] = str(info.value)
    assert reasons == {"missing.jpg": "image file is missing: missing.jpg",
                       "empty.jpg": "image file is empty (0 bytes): empty.jpg",
                       "garbage.jpg": "not a decodable image (500 bytes): garbage.jpg",
                       "cut.jpg": "truncated JPEG (no end-of-image marker): cut.jpg"}


def test_a_jpeg_is_whole_at_its_image_end_marker_whatever_follows_or_precedes_it(tmp_path):
    """A phone's "motion photo" is a whole JPEG with an MP4 appended: its bytes held a
    start-of-scan marker with no end marker after it, and the search from the end refused the
    image ("truncated JPEG") though OpenCV decodes it. And a JPEG cut short is one whatever
    whole JPEG it carries inside (an EXIF thumbnail, with its own end marker, in APP1)."""
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    whole = cv2.imencode(".jpg", picture)[1].tobytes()
    motion = whole + b"\0\0\0\x18ftypmp42" + bytes(100) + b"\xff\xda" + bytes(50)
    thumbnail = cv2.imencode(".jpg", picture[::4, ::4])[1].tobytes()
    app1 = b"Exif\0\0" + thumbnail
    with_thumbnail = (whole[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1
                      + whole[2:])
    progressive = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    cases = {"motion.jpg": motion, "thumbnail.jpg": with_thumbnail,
             "thumbnail-cut.jpg": with_thumbnail[:-len(whole) // 3],
             "progressive.jpg": progressive, "progressive-cut.jpg": progressive[:-40]}
    outcomes = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        try:
            outcomes[name] = extract_image(tmp_path / name, ImageParams(size=SIZE)).shape
        except SampleError as exc:
            outcomes[name] = str(exc)
    whole_shape = (SIZE, SIZE, 3)
    assert outcomes == {
        "motion.jpg": whole_shape, "thumbnail.jpg": whole_shape,
        "thumbnail-cut.jpg": "truncated JPEG (no end-of-image marker): thumbnail-cut.jpg",
        "progressive.jpg": whole_shape,
        "progressive-cut.jpg": "truncated JPEG (no end-of-image marker): progressive-cut.jpg"}


def test_grey_png_and_exif_rotation_decode_like_imread(tmp_path):
    grey = (np.arange(30 * 50) % 251).astype(np.uint8).reshape(30, 50)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    # A JPEG whose EXIF says "rotate 90 degrees clockwise" (orientation 6).
    ok, jpeg = cv2.imencode(".jpg", np.dstack([grey, grey // 2, 255 - grey]))
    tiff = (b"II*\x00\x08\x00\x00\x00\x01\x00" + b"\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00"
            + b"\x00\x00\x00\x00")
    app1 = b"Exif\x00\x00" + tiff
    raw = jpeg.tobytes()
    (tmp_path / "rotated.jpg").write_bytes(raw[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big")
                                           + app1 + raw[2:])
    assert cv2.imread(str(tmp_path / "rotated.jpg")).shape == (50, 30, 3)
    for name in ("grey.png", "rotated.jpg"):
        np.testing.assert_array_equal(extract_image(tmp_path / name, ImageParams(size=16)),
                                      reference_image(tmp_path / name, 16))


def test_an_alpha_channel_is_dropped_as_pils_convert_rgb_drops_it(tmp_path):
    """What the docs promise of an RGBA PNG: the colour under a transparent pixel is kept, not
    composited onto black or white, as PIL's `convert("RGB")` reads it."""
    from PIL import Image

    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 1] = 200, np.arange(16, dtype=np.uint8)[:, None] * 10  # R, G
    rgba[..., 3] = np.where(np.arange(16) < 8, 0, 255)[None, :]  # left half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut-out.png")
    stored = extract_image(tmp_path / "cut-out.png", ImageParams(size=16))
    np.testing.assert_array_equal(stored, rgba[..., :3])
    np.testing.assert_array_equal(
        stored, np.asarray(Image.open(tmp_path / "cut-out.png").convert("RGB")))


def test_bad_images_fail_alone_are_listed_and_retried_alone(tiny_source, tmp_path):
    source = Path(shutil.copytree(tiny_source, tmp_path / "source"))
    images = source / "JPEGImages"
    train_listed = (source / "ImageSplits" / "train.txt").read_text().split()
    corrupt, empty, missing = "applauding_004", "brushing_teeth_010", train_listed[5][:-4]
    assert len({corrupt, empty, missing}) == 3
    (images / f"{corrupt}.jpg").write_bytes(b"\x00garbage\xff" * 111)
    (images / f"{empty}.jpg").write_bytes(b"")
    (images / f"{missing}.jpg").unlink()
    store = tmp_path / "s40.zarr"
    args = ["build", "stanford40", "--source", source, "--store", store, "--size", str(SIZE), "-q"]

    first = flowstore_cli(*args)
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    assert f"{corrupt}: not a decodable image (999 bytes): {corrupt}.jpg" in first.stderr
    assert f"{empty}: image file is empty (0 bytes): {empty}.jpg" in first.stderr
    assert f"{missing}: image file is missing: {missing}.jpg" in first.stderr
    assert "89 computed, 0 already done, 3 failed of 92 selected" in first.stdout
    with open_store(store) as built:
        done = dict(zip(built.read("id").tolist(), built.read("done").tolist()))
        assert {k for k, v in done.items() if not v} == {corrupt, empty, missing}
        assert set(failures(built)) == {corrupt, empty, missing}

    again = flowstore_cli(*args)  # nothing fixed: only the three are tried, and fail again
    assert again.returncode == 1
    assert "0 computed, 89 already done, 3 failed of 92 selected" in again.stdout

    for name in (corrupt, empty, missing):
        shutil.copy(tiny_source / "JPEGImages" / f"{name}.jpg", images / f"{name}.jpg")
    fixed = flowstore_cli(*args)
    assert fixed.returncode == 0, fixed.stderr
    assert "3 computed, 89 already done, 0 failed of 92 selected" in fixed.stdout
    with open_store(store) as built:
        assert built.read("done").all() and failures(built) == {}
        position = built.read("id").tolist().index(corrupt)
        np.testing.assert_array_equal(built.read("image", position),
                                      reference_image(images / f"{corrupt}.jpg", SIZE))


@pytest.mark.parametrize("damage, message", [
    ("no ImageSplits", "no ImageSplits/ folder in"),
    ("no JPEGImages", "no JPEGImages/ folder in"),
    # (the public copy the data README points to ships it so)
    ("JPEGimages", "expected images like JPEGImages/applauding_001.jpg (there is 'JPEGimages/': "
                   "rename it to JPEGImages/)"),
    ("imagesplits", "as Stanford-40 ships them (there is 'imagesplits/': rename it to "
                    "ImageSplits/)"),
    ("no images", "none of the 92 images its split lists is in"),
    ("ImageSplits as source", "--source is the folder that holds ImageSplits/ and JPEGImages/"),
])
def test_wrong_source_layout_is_one_line_and_exit_2(tiny_source, tmp_path, damage, message):
    source = Path(shutil.copytree(tiny_source, tmp_path / "source"))
    if damage == "no ImageSplits":
        shutil.rmtree(source / "ImageSplits")
    elif damage == "no JPEGImages":
        shutil.rmtree(source / "JPEGImages")
    elif damage in ("JPEGimages", "imagesplits"):
        folder = {"JPEGimages": "JPEGImages", "imagesplits": "ImageSplits"}[damage]
        (source / folder).rename(source / damage)
    elif damage == "no images":
        for path in (source / "JPEGImages").iterdir():
            path.rename(path.with_suffix(".jpeg"))
    else:
        source = source / "ImageSplits"
    result = runner.invoke(app, ["build", "stanford40", "--source", str(source),
                                 "--store", str(tmp_path / "s.zarr"), "-q"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "s.zarr").exists()


def test_missing_image_splits_through_a_real_subprocess(tiny_source, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_source / "JPEGImages", source / "JPEGImages")
    line = assert_one_line_error(flowstore_cli("build", "stanford40", "--source", source,
                                               "--store", tmp_path / "s.h5"))
    assert "no ImageSplits/ folder in" in line and str(source) in line


def test_video_options_are_rejected_and_unknown_datasets_list_the_known(tiny_source, tmp_path):
    steps = runner.invoke(app, ["build", "stanford40", "--source", str(tiny_source),
                                "--store", str(tmp_path / "s.zarr"), "--steps", "4"])
    assert steps.exit_code == 2 and "--steps does not apply to dataset 'stanford40'" in steps.stderr
    unknown = runner.invoke(app, ["build", "nosuch", "--source", str(tiny_source),
                                  "--store", str(tmp_path / "s.zarr")])
    assert unknown.exit_code == 2
    known = unknown.stderr.split("known datasets: ")[1].strip().split(", ")
    assert "unknown dataset 'nosuch'" in unknown.stderr and {"stanford40", "tvhi"} <= set(known)
    assert "stanford40" in runner.invoke(app, ["datasets"]).stdout.split()


# -- inspect -------------------------------------------------------------------------------------
def test_inspect_shows_a_stanford40_store(stores):
    for suffix, path in stores.items():
        text = runner.invoke(app, ["inspect", str(path)])
        assert text.exit_code == 0, text.output
        for expected in ("dataset      stanford40  (4 classes)",
                         f'{{"extraction": "{EXTRACTION_VERSION}", "size": 32}}',
                         "92 done, 0 failed, 0 pending", "blowing_bubbles", "image",
                         "(92, 32, 32, 3)", "uint8", "(1, 32, 32, 3)", " 72/72 ", " 8/8 ", " 12/12"):
            assert expected in text.stdout, (suffix, expected, text.stdout)
        summary = json.loads(runner.invoke(app, ["inspect", str(path), "--json", "--bytes"]).stdout)
        assert summary["dataset"] == "stanford40" and summary["classes"] == list(ACTIONS[:4])
        assert summary["backend"] == ("zarr" if suffix == ".zarr" else "hdf5")
        assert summary["samples"] == summary["done"] == 92 and summary["failures"] == {}
        assert {split: sum(summary["counts"][split].values()) for split in SPLITS} == {
            "train": 72, "val": 8, "test": 12}
        assert summary["counts"]["val"] == dict.fromkeys(ACTIONS[:4], 2)
        arrays = {a["name"]: a for a in summary["arrays"]}
        assert {"id", "label", "split", "done", "image"} <= set(arrays)
        assert arrays["image"]["shape"] == [92, 32, 32, 3] and arrays["image"]["dtype"] == "uint8"
        assert arrays["image"]["bytes_stored"] > 0
