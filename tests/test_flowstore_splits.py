"""Splits: the committed TV-HI manifest, the readme parser, stratified hold-out, and the val
draws of the other datasets pinned."""

from __future__ import annotations

import codecs
import re
from collections import Counter

import numpy as np
import pytest

from flowstore.datasets.tvhi import (CLASSES, OFFICIAL_SETS, format_readme, manifest_from_sets,
                                     parse_readme, sample_id)
from flowstore.manifest import Manifest, ManifestRow, round_robin, stratified_holdout
from tests.conftest import REAL_TVHI, REPO, SHARED, require_real_data

COMMITTED = REPO / "manifests" / "tvhi.csv"


@pytest.fixture(scope="module")
def official() -> Manifest:
    return Manifest.read(COMMITTED, CLASSES)


def test_committed_manifest_is_what_the_code_derives(official):
    assert COMMITTED.read_text() == manifest_from_sets(OFFICIAL_SETS).to_csv()


def test_readme_parser_reads_the_real_readme():
    readme = require_real_data(REAL_TVHI / "readme.txt", "real TV-HI readme.txt")
    assert parse_readme(readme.read_text()) == OFFICIAL_SETS


def test_readme_round_trips_through_format_and_parse():
    assert parse_readme(format_readme(OFFICIAL_SETS)) == OFFICIAL_SETS


def _edited(readme: str, old: str, new: str) -> str:
    assert old in readme
    return readme.replace(old, new, 1)


REAL_FORMAT = format_readme(OFFICIAL_SETS)


@pytest.mark.parametrize("edit, expected", [
    (("{2,14,", "{2,3,14,"), "lists Hand shake clip 3 (handShake_0003) in both SET 1 and SET 2"),
    (("{2,14,", "{2,2,14,"), "lists Hand shake clip 2 (handShake_0002) twice in SET 1"),
    (("\tHigh five\t\t-> {1,6,", "\tHigh fiv\t\t-> {1,6,"),
     "SET 1 has no line 'High five -> {...}' (one line per class"),
    (("\tKiss\t\t-> {2,3,", "\tKiss\t\t-> {2,\n3,"), "SET 2 has no line 'Kiss -> {...}'"),
    (("SET 2:", "SET 3:"), "does not list 'SET 1:' and 'SET 2:'"),
], ids=["in-both-sets", "twice-in-a-set", "class-line-unread", "braces-wrapped", "no-set-2"])
def test_a_readme_whose_sets_do_not_split_the_clips_is_refused(edit, expected, tmp_path):
    """A clip listed in both sets was a sample twice, trained on and tested on (the build gave
    only a warning about identical bytes); a class line the parser could not read left that
    class without samples in a set, silently."""
    from flowstore.datasets.tvhi import TVHI
    from flowstore.errors import SourceLayoutError

    (tmp_path / "readme.txt").write_text(_edited(REAL_FORMAT, *edit))
    with pytest.raises(SourceLayoutError, match=re.escape(expected)):
        TVHI().manifest(tmp_path)


def test_a_readme_saved_with_a_bom_reads_as_without(tmp_path):
    """It was read in the locale's encoding, its BOM kept: a readme whose first line is
    `SET 1:` did not list 'SET 1:'."""
    from flowstore.datasets.tvhi import TVHI

    text = REAL_FORMAT[REAL_FORMAT.index("SET 1:"):]
    (tmp_path / "readme.txt").write_bytes(codecs.BOM_UTF8 + text.encode())
    assert TVHI().manifest(tmp_path).to_csv() == COMMITTED.read_text()


def test_a_readme_spelling_high_five_with_a_hyphen_is_read():
    edited = _edited(REAL_FORMAT, "High five\t\t-> {2,3,", "High-five\t\t-> {2,3,")
    assert parse_readme(edited) == OFFICIAL_SETS


def test_a_manifest_holds_each_sample_once():
    """The guard behind every dataset's own check: a repeat is a bug, said as such."""
    with pytest.raises(ValueError, match="a manifest lists sample 'a' twice"):
        Manifest(("x",), ["a", "b", "a"], [0, 0, 0], ["train", "val", "test"])


def test_split_sizes_and_stratification(official):
    assert Counter(row.split for row in official.rows) == {"train": 90, "val": 10, "test": 100}
    val_per_class = Counter(row.class_name for row in official.rows if row.split == "val")
    assert set(val_per_class) == set(CLASSES)
    assert all(count in (2, 3) for count in val_per_class.values())
    test_per_class = Counter(row.class_name for row in official.rows if row.split == "test")
    assert test_per_class == dict.fromkeys(CLASSES, 25)


def test_test_split_is_set_one_and_no_id_is_in_two_splits(official):
    set1 = {sample_id(c, i) for c, ids in OFFICIAL_SETS[1].items() for i in ids}
    assert set(official.split_ids("test")) == set1
    ids = [row.id for row in official.rows]
    assert len(ids) == len(set(ids)) == 200
    assert not any(i.startswith("negative") for i in ids)
    for row in official.rows:
        assert row.label == CLASSES.index(row.class_name) and row.id.startswith(row.class_name + "_")


def test_first_rows_of_a_split_cover_every_class(official):
    picked = official.first_per_split(4)
    assert len(picked) == 12
    for split in ("train", "val", "test"):
        assert {official.rows[i].class_name for i in picked if official.rows[i].split == split} == set(CLASSES)


def test_stratified_holdout_is_proportional_and_seeded():
    pool = {"a": [f"a{i}" for i in range(100)], "b": [f"b{i}" for i in range(50)]}
    picked = stratified_holdout(pool, 0.1, seed=3)
    assert len(picked) == 15
    assert sum(p.startswith("a") for p in picked) == 10
    assert picked == stratified_holdout(pool, 0.1, seed=3)
    assert picked != stratified_holdout(pool, 0.1, seed=4)
    # the same samples listed in another order (a folder listed by another file system) are
    # the same split: drawn from the ids as listed, another listing drew another split
    listed = {name: ids[::-1] for name, ids in pool.items()}
    assert stratified_holdout(listed, 0.1, seed=3) == picked


def test_a_holdout_never_draws_a_class_whole():
    """A class of one id took a leftover draw (a class-folder test split took a small
    class's only clip), and a class of one group went to val whole at a fraction of 0.5 or
    more: a class no model trains on."""
    from flowstore.manifest import grouped_holdout

    pool = {f"c{k}": [f"c{k}/a"] for k in range(10)}
    pool["big"] = [f"big/{i:03d}" for i in range(100)]
    picked = stratified_holdout(pool, 0.2, seed=0)
    # round(0.2 * 110) = 22: big's 20 and a leftover id; the other leftover had no class to
    # come from but one it would have emptied
    assert len(picked) == 21 and all(i.startswith("big/") for i in picked)
    groups = {"a": ["a_g01_c01", "a_g01_c02"], "b": ["b_g01_c01", "b_g02_c01"]}
    picked = grouped_holdout(groups, lambda i: i.split("_")[1], 0.6, seed=0)
    assert len(picked) == 1 and next(iter(picked)).startswith("b_")
    # a fraction that rounds to every group (0.8 of 2) still leaves one to train on, and a
    # fraction of 0 (`--val-fraction 0`) draws no group, not the one a class of two was given
    two = {"b": ["b_g01_c01", "b_g02_c01"]}
    assert len(grouped_holdout(two, lambda i: i.split("_")[1], 0.8, seed=0)) == 1
    assert grouped_holdout(two, lambda i: i.split("_")[1], 0.0, seed=0) == set()


def test_round_robin_interleaves_classes():
    order = round_robin({"x": ["x2", "x1"], "y": ["y1"]})
    assert order == [("x", "x1"), ("y", "y1"), ("x", "x2")]


def test_manifest_csv_round_trip(official):
    again = Manifest.from_csv(official.to_csv(), CLASSES)
    assert again == official
    assert np.array_equal([r.id for r in again.rows], [r.id for r in official.rows])


def test_a_manifest_holds_columns_and_hands_out_the_same_rows():
    rows = [ManifestRow("b/1", 1, "b", "train"), ManifestRow("a/1", 0, "a", "val"),
            ManifestRow("a/2", 0, "a", "test")]
    manifest = Manifest.from_rows(("a", "b"), rows)
    assert list(manifest.rows) == rows and manifest.rows[-1] == rows[-1]
    assert manifest.rows[1:] == rows[1:] and len(manifest.rows) == 3
    assert manifest.ids == ["b/1", "a/1", "a/2"] and manifest.labels.tolist() == [1, 0, 0]
    assert manifest.splits() == ["train", "val", "test"] and manifest.split_ids("val") == ["a/1"]
    assert manifest.first_per_split(None).tolist() == [0, 1, 2]
    assert manifest.first_per_split(1).tolist() == [0, 1, 2] and manifest.first_per_split(0).size == 0
    assert Manifest.from_csv(manifest.to_csv(), ("a", "b")) == manifest
    assert manifest != Manifest.from_rows(("a", "b"), rows[:2])
    with pytest.raises(IndexError):
        manifest.rows[3]
    with pytest.raises(ValueError, match="class 'a' is not label 1's"):
        Manifest.from_rows(("a", "b"), [ManifestRow("x", 1, "a", "train")])


# The val splits of the other datasets are drawn with numpy's `default_rng(...).choice`, whose
# streams numpy may change between releases: a change would move every such store's val split
# (a build would refuse it as "manifest changed", never mix it; still a user's splits moved).
# These digests pin the draws on the real split files, and on made-up ids for the two functions
# (Kinetics and class folders: no real train list here).
REAL_VAL_DIGESTS = {  # sha256 of the sorted val ids, one per line: (val count, first 16 digits)
    "stanford40": ("ImageSplits", "JPEGImages", 400, "979b2d8957c46012"),
    "ucf101": ("ucfTrainTestlist", "UCF-101", 1045, "ef5893c633637881"),
    "hmdb51": ("testTrainMulti_7030_splits", "brush_hair", 351, "1bd1353fdf2c4134"),
}


@pytest.mark.parametrize("name", sorted(REAL_VAL_DIGESTS))
def test_val_of_the_real_split_files_is_the_pinned_draw(name, tmp_path):
    import hashlib

    from flowstore.datasets.base import get_dataset

    splits, media, count, digest = REAL_VAL_DIGESTS[name]
    real = SHARED / "data" / name
    require_real_data(min((real / splits).glob("*.txt"), default=real / splits / "*.txt"),
                      f"the real {name} split files")
    (tmp_path / splits).symlink_to(real / splits)
    (tmp_path / media).mkdir()  # the media folder the manifest looks for; no media is read
    manifest = get_dataset(name).manifest(tmp_path)
    val = sorted(row.id for row in manifest.rows if row.split == "val")
    assert (len(val), hashlib.sha256("\n".join(val).encode()).hexdigest()[:16]) == (count, digest)


def test_the_holdout_draws_are_pinned():
    from flowstore.manifest import grouped_holdout

    ids = {c: [f"{c}{i:02d}" for i in range(7 + 3 * k)] for k, c in enumerate("abc")}
    assert sorted(stratified_holdout(ids, 0.3, seed=0)) == [
        "a04", "a05", "b04", "b08", "b09", "c00", "c03", "c05", "c09"]
    pairs = grouped_holdout(ids, lambda i: f"{i[0]}{int(i[1:]) // 2}", 0.5, seed=0)
    assert sorted(pairs) == ["a04", "a05", "a06", "b04", "b05", "b08", "b09",
                             "c00", "c01", "c02", "c03", "c04", "c05", "c06", "c07"]

