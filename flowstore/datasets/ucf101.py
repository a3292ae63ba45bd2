"""UCF101 (Soomro et al., 2012): 13,320 YouTube clips of 101 actions, three official folds.

Source layout, as the dataset ships (the clips' archive and the split archive unpacked side by
side)::

    SOURCE/UCF-101/<Class>/v_<Class>_gGG_cCC.avi
    SOURCE/ucfTrainTestlist/classInd.txt          "1 ApplyEyeMakeup" (1-based index, class)
    SOURCE/ucfTrainTestlist/trainlist0F.txt       "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    SOURCE/ucfTrainTestlist/testlist0F.txt        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"

Quirks of the real files (the copies in the shared data folder): CRLF line endings; the class
and folder ``HandstandPushups`` holds clips named ``v_HandStandPushups_*``, so a clip's class is
its folder in the list, never a part of its name; GG is the group (one actor and scene).

Split: ``--fold`` F (1, 2 or 3) gives test = testlist0F; trainlist0F gives train and
val: whole groups of each class (about ``--val-fraction`` of its groups, at least one), so no
group is in both. Labels in classInd.txt order. A sample's id is its clip's file stem.
"""

from __future__ import annotations

import re
from pathlib import Path

from flowstore.datasets._classfolders import FOLDS, FoldOptions, read_text
from flowstore.datasets.base import SourceSizes, VideoDataset
from flowstore.errors import SourceLayoutError
from flowstore.manifest import Manifest, build_manifest, grouped_holdout
from flowstore.synth.clips import SynthClipsConfig

CLIPS_DIR = "UCF-101"
LISTS_DIR = "ucfTrainTestlist"
CLASS_INDEX = "classInd.txt"
_GROUP = re.compile(r"_g(\d+)_c\d+$")



def list_names(fold: int) -> tuple[str, str]:
    return f"trainlist{fold:02d}.txt", f"testlist{fold:02d}.txt"


def group_of(sample_id: str) -> str:
    """A clip's group, ``gGG`` (clips of one group share actor and scene)."""
    match = _GROUP.search(sample_id)
    return f"g{match.group(1)}" if match else sample_id


def parse_class_index(text: str, origin: str) -> list[str]:
    """Classes in label order from classInd.txt ("N Class" lines, N = 1, 2, ...)."""
    classes: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        # (isdecimal, not isdigit: '²' is a digit, and int() refuses it)
        if len(fields) != 2 or not fields[0].isdecimal():
            raise SourceLayoutError(f"{origin} line {number}: expected 'INDEX CLASS', got {line!r}")
        if int(fields[0]) != len(classes) + 1:
            raise SourceLayoutError(f"{origin} line {number}: index {fields[0]} out of order "
                                    f"(expected {len(classes) + 1})")
        if fields[1] in classes:  # (its clips would take the later index, the lists the first)
            raise SourceLayoutError(f"{origin} line {number}: class {fields[1]!r} is listed "
                                    f"twice (also as {classes.index(fields[1]) + 1})")
        classes.append(fields[1])
    if not classes:
        raise SourceLayoutError(f"{origin} lists no classes")
    return classes


def parse_clip_list(text: str, origin: str, classes: list[str],
                    labelled: bool) -> dict[str, list[tuple[str, str]]]:
    """{class: [(clip id, path under UCF-101/)]} of a train or test list.

    Train lines carry the 1-based class index, which must agree with the clip's folder.
    """
    by_class: dict[str, list[tuple[str, str]]] = {}
    known = set(classes)
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{origin} line {number}"
        if len(fields) != (2 if labelled else 1) or fields[0].count("/") != 1 \
                or not fields[0].lower().endswith(".avi"):
            expected = "'Class/clip.avi INDEX'" if labelled else "'Class/clip.avi'"
            raise SourceLayoutError(f"{where}: expected {expected}, got {line!r}")
        folder, clip = fields[0].split("/")
        if folder not in known:
            raise SourceLayoutError(f"{where}: class {folder!r} is not in {CLASS_INDEX}")
        if labelled and (not fields[1].isdecimal() or int(fields[1]) - 1 != classes.index(folder)):
            raise SourceLayoutError(f"{where}: index {fields[1]} is not that of {folder!r} in "
                                    f"{CLASS_INDEX} ({classes.index(folder) + 1})")
        by_class.setdefault(folder, []).append((clip[: -len(".avi")], fields[0]))
    return by_class


class UCF101(VideoDataset):
    name = "ucf101"
    options_type = FoldOptions
    synth_config_type = SynthClipsConfig

    def manifest(self, source: Path) -> Manifest:
        self.check_source_folder(source)
        lists = source / LISTS_DIR
        if not lists.is_dir() or not (source / CLIPS_DIR).is_dir():
            raise SourceLayoutError(f"expected {CLIPS_DIR}/ and {LISTS_DIR}/ in {str(source)!r}, "
                                    f"as UCF101 ships them")
        classes = parse_class_index(read_text(lists / CLASS_INDEX, CLASS_INDEX), CLASS_INDEX)
        train_name, test_name = list_names(self.options.fold)
        train = parse_clip_list(read_text(lists / train_name, train_name), train_name, classes,
                                labelled=True)
        test = parse_clip_list(read_text(lists / test_name, test_name), test_name, classes,
                               labelled=False)
        listed_in: dict[str, str] = {}  # sample id -> the list that names it
        for name, listed in ((train_name, train), (test_name, test)):
            for clips in listed.values():
                for sample_id, path in clips:
                    first = listed_in.get(sample_id)
                    if first is not None:
                        lists = f"{name} lists" if first == name else f"{first} and {name} list"
                        raise SourceLayoutError(f"{lists} clip {path!r} twice")
                    listed_in[sample_id] = name
                    self.sample_paths[sample_id] = f"{CLIPS_DIR}/{path}"
        pool = {c: [i for i, _ in clips] for c, clips in train.items()}
        val = grouped_holdout({c: pool.get(c, []) for c in classes},
                              lambda i: group_of(i), self.options.val_fraction, self.options.seed)
        # (lists of no clips: `build_manifest` refuses classes without samples, and classInd.txt
        # lists at least one)
        return build_manifest(classes, pool, {c: [i for i, _ in v] for c, v in test.items()},
                              val=val)

    def source_files(self, source: Path, manifest: Manifest) -> SourceSizes:
        """Every listed clip, plus the split files the manifest was read from."""
        sizes = super().source_files(source, manifest)
        for name in (CLASS_INDEX, *list_names(self.options.fold)):
            sizes[f"{LISTS_DIR}/{name}"] = (source / LISTS_DIR / name).stat().st_size
        return sizes

    def write_synthetic(self, folder: Path, config: SynthClipsConfig) -> Path:
        """The real layout and list formats (CRLF, the HandstandPushups spelling quirk),
        `classes` of the real class names, `clips_per_class` clips in groups g01.. of two
        clips; the three folds test on groups 1, 2 and 3 respectively."""
        from flowstore.synth.clips import crlf, write_clip, write_source

        names = ["ApplyEyeMakeup", "HandstandPushups", "Archery", "Basketball", "Biking",
                 "Bowling"]
        names += [f"Action{k:02d}" for k in range(len(names), config.classes)]
        classes = sorted(names[: config.classes])

        def fill(root: Path) -> None:
            lists = root / LISTS_DIR
            lists.mkdir()
            (lists / CLASS_INDEX).write_bytes(crlf([f"{k + 1} {c}" for k, c in enumerate(classes)]))
            rows: list[tuple[int, str, int]] = []  # (group, path, label)
            for label, name in enumerate(classes):
                spelled = "HandStandPushups" if name == "HandstandPushups" else name
                (root / CLIPS_DIR / name).mkdir(parents=True)
                for k in range(config.clips_per_class):
                    group, clip = k // 2 + 1, k % 2 + 1
                    path = f"{name}/v_{spelled}_g{group:02d}_c{clip:02d}.avi"
                    write_clip(root / CLIPS_DIR / path, label, config)
                    rows.append((group, path, label + 1))
            for fold in FOLDS:
                train_name, test_name = list_names(fold)
                (lists / train_name).write_bytes(crlf([f"{p} {label}" for g, p, label in rows
                                                       if g != fold]))
                (lists / test_name).write_bytes(crlf([p for g, p, _ in rows if g == fold]))

        return write_source(folder, fill)
