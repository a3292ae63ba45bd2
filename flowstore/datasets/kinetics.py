"""Kinetics (Kay et al., 2017): 10-second YouTube clips of 400 (600, 700) actions.

Source layout, as the official annotations and the common downloaders leave it::

    SOURCE/annotations/train.csv, val.csv     label,youtube_id,time_start,time_end,split[,is_cc]
    SOURCE/annotations/test.csv               (optional; no label column: not used)
    SOURCE/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4
    SOURCE/<split>/<youtube_id>_<start:06d>_<end:06d>.mp4        (or flat: CVDF's archives)

A label's folder may also be spelled as MMAction2's ``rename_classnames.sh`` leaves it: spaces
as ``_`` (``air_drumming``), and in some of its versions parentheses as ``-``; the first
spelling present in the split folder is read (`label_folder`). The archives of the CVD
Foundation (cvdfoundation/kinetics-dataset: a common copy, since many of the YouTube videos
are gone) extract every clip of a split into the split folder itself, with
no label folders: a label with no folder of its own, in a split folder that holds clips, is
read from there (`clip_folder`).

Quirks of the real CSVs (the copies in the shared data folder): labels with spaces are quoted
(``"air drumming"``), some hold parentheses or apostrophes; Kinetics-600 has no ``is_cc``.
Copies downloaded from YouTube miss 5-10% of their clips (videos taken off it): each missing clip
is a recorded failure ("video file is missing"), the rest builds.

Split (DESIGN.md): test = the official val set (what the literature reports, since the official
test set has no labels); val is carved from train (``--val-fraction``, stratified by class,
``--seed``). Classes are train.csv's labels, sorted. A sample's id is its clip's file stem.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from flowstore.datasets._classfolders import check_fraction, check_spellings, read_csv
from flowstore.datasets.base import SamplePaths, SourceSizes, VideoDataset
from flowstore.errors import SourceLayoutError
from flowstore.manifest import Manifest, build_manifest
from flowstore.params import check_seed
from flowstore.synth.clips import SynthClipsConfig

ANNOTATIONS_DIR = "annotations"
COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
#: The official CSV each split of the store comes from, and the clip folder it names.
CSV_OF_SPLIT = {"train": "train.csv", "test": "val.csv"}
#: What a label, youtube_id or split folder may not hold: each is one name of the clip's path.
_NOT_A_NAME = re.compile(r"[/\\]|^\.\.?$")


@dataclass(frozen=True)
class KineticsOptions:
    """How much of the official train set becomes val."""

    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check_fraction("val_fraction", self.val_fraction)
        check_seed(self.seed)


def clip_name(youtube_id: str, start: int, end: int) -> str:
    """A clip's file stem as the common downloaders write it: ``<id>_<start:06d>_<end:06d>``."""
    return f"{youtube_id}_{start:06d}_{end:06d}"


def label_folders(label: str) -> tuple[str, ...]:
    """The spellings a label's folder may have, in the order they are looked for: the CSV's,
    then MMAction2's renamings (spaces as ``_``; also parentheses as ``-``)."""
    underscored = label.replace(" ", "_")
    return tuple(dict.fromkeys((label, underscored,
                                underscored.replace("(", "-").replace(")", "-"))))


def label_folder(split_folder: Path, label: str) -> str:
    """The first spelling of `label`'s folder (`label_folders`) present in `split_folder`,
    else the CSV's own (its clips then fail as missing, named by that path)."""
    return next((name for name in label_folders(label) if (split_folder / name).is_dir()), label)


def holds_clips(split_folder: Path) -> bool:
    """Whether `split_folder` holds clips itself (`*.mp4`), as CVDF's archives extract, rather
    than in label folders alone. Stops at the first clip: a flat folder of 240,000 clips is not
    listed, a folder of 400 label folders is."""
    try:
        with os.scandir(split_folder) as entries:
            return any(entry.name.endswith(".mp4") and entry.is_file() for entry in entries)
    except OSError:  # missing or unreadable: its clips fail as missing, named by their path
        return False


def clip_folder(source: Path, split_folder: str, label: str, flat: bool) -> str:
    """The folder, relative to `source`, a clip of `label` listed under `split_folder` is read
    from: its label's folder where the split folder has one (`label_folder`); else the split
    folder itself where that holds clips (`flat`: CVDF's layout); else the folder the CSV's
    label names (its clips then fail as missing, named by that path)."""
    folder = label_folder(source / split_folder, label)
    if flat and not (source / split_folder / folder).is_dir():
        return split_folder
    return f"{split_folder}/{folder}"


def _seconds(value: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise SourceLayoutError(f"{where}: time {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise SourceLayoutError(f"{where}: time {value!r} is not a whole number of seconds")
    return int(number)


class Kinetics(VideoDataset):
    name = "kinetics"
    options_type = KineticsOptions
    synth_config_type = SynthClipsConfig

    def manifest(self, source: Path) -> Manifest:
        self.check_source_folder(source)
        folder = source / ANNOTATIONS_DIR
        if not folder.is_dir():
            raise SourceLayoutError(f"no {ANNOTATIONS_DIR}/ in {str(source)!r}: expected "
                                    f"{ANNOTATIONS_DIR}/train.csv and val.csv, as Kinetics ships")
        by_split: dict[str, dict[str, list[str]]] = {}
        paths = SamplePaths()  # (this source's alone: a second manifest reads it afresh)
        flat: dict[str, bool] = {}  # split folder -> whether it holds clips itself
        folders: dict[tuple[str, str], str] = {}  # (split folder, label) -> its clips' folder
        for split, name in CSV_OF_SPLIT.items():
            path = folder / name
            per_class = by_split[split] = {}
            for number, row in read_csv(path, "annotation CSV", COLUMNS):
                where = f"{ANNOTATIONS_DIR}/{name} line {number}"
                label, youtube_id = row["label"].strip(), row["youtube_id"].strip()
                folder_name = row["split"].strip()
                # each names a path component: one that is a path would read a file elsewhere
                if not all(part and not _NOT_A_NAME.search(part)
                           for part in (label, youtube_id, folder_name)):
                    raise SourceLayoutError(f"{where}: empty or malformed label, youtube_id or "
                                            f"split (each one name: no '/', '\\' or '..')")
                start, end = _seconds(row["time_start"], where), _seconds(row["time_end"], where)
                if end <= start:
                    raise SourceLayoutError(f"{where}: time_end {end} is not after time_start "
                                            f"{start}")
                sample_id = clip_name(youtube_id, start, end)
                if sample_id in paths:
                    raise SourceLayoutError(f"{where}: clip {sample_id} is listed twice")
                if folder_name not in flat:
                    flat[folder_name] = holds_clips(source / folder_name)
                if (folder_name, label) not in folders:
                    folders[folder_name, label] = clip_folder(source, folder_name, label,
                                                              flat[folder_name])
                paths[sample_id] = f"{folders[folder_name, label]}/{sample_id}.mp4"
                per_class.setdefault(label, []).append(sample_id)
        self.sample_paths = paths
        check_spellings([*by_split["train"], *by_split["test"]],
                        f"{ANNOTATIONS_DIR}/train.csv and val.csv")
        classes = sorted(by_split["train"])
        strangers = sorted(set(by_split["test"]) - set(classes))
        if strangers:
            raise SourceLayoutError(f"{ANNOTATIONS_DIR}/val.csv has label {strangers[0]!r}, which "
                                    f"train.csv lacks")
        if not classes:
            raise SourceLayoutError(f"{ANNOTATIONS_DIR}/train.csv in {str(source)!r} lists no "
                                    f"clips")
        return build_manifest(classes, by_split["train"], by_split["test"],
                              val_fraction=self.options.val_fraction, seed=self.options.seed)

    def source_files(self, source: Path, manifest: Manifest) -> SourceSizes:
        """Every listed clip (None where it is missing), plus the CSVs read."""
        sizes = super().source_files(source, manifest)
        for name in CSV_OF_SPLIT.values():
            sizes[f"{ANNOTATIONS_DIR}/{name}"] = (source / ANNOTATIONS_DIR / name).stat().st_size
        return sizes

    def write_synthetic(self, folder: Path, config: SynthClipsConfig) -> Path:
        """The official CSV formats (quoted labels with spaces, parentheses, an apostrophe;
        test.csv without labels) and the downloaders' clip layout; one clip of each class in
        train and the last clip of the first class are missing, as in every real copy."""
        from flowstore.synth.clips import write_clip, write_source

        names = ["air drumming", "abseiling", "passing American football (in game)",
                 "massaging person's head", "dancing gangnam style", "bartending"]
        names += [f"action {k:02d}" for k in range(len(names), config.classes)]
        classes = sorted(names[: config.classes])
        per_split = {"train": max(1, config.clips_per_class * 2 // 3)}
        per_split["val"] = max(1, config.clips_per_class - per_split["train"])

        def fill(root: Path) -> None:
            (root / ANNOTATIONS_DIR).mkdir()
            for split, count in per_split.items():
                rows = ["label,youtube_id,time_start,time_end,split,is_cc"]
                for label, name in enumerate(classes):
                    (root / split / name).mkdir(parents=True)
                    # as the official files write them: a label with a space is quoted
                    written = f'"{name}"' if " " in name else name
                    for k in range(count):
                        youtube_id = f"{split[:2]}{label:03d}-{k:04d}_x"
                        start = 10 * k
                        rows.append(f"{written},{youtube_id},{start},{start + 10},{split},0")
                        missing = (split == "train" and k == count - 1 and count > 2) or (
                            split == "val" and label == 0 and k == count - 1 and count > 1)
                        if not missing:
                            write_clip(root / split / name /
                                       f"{clip_name(youtube_id, start, start + 10)}.mp4",
                                       label, config)
                (root / ANNOTATIONS_DIR / f"{split}.csv").write_text("\n".join(rows) + "\n")
            (root / ANNOTATIONS_DIR / "test.csv").write_text(
                "youtube_id,time_start,time_end,split\n--6bJUbfpnQ,17,27,test\n")

        return write_source(folder, fill)
