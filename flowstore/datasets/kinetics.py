"""Kinetics (Kay et al., 2017): 10-second YouTube clips of 400 (600, 700) actions.

Source layout, as the official annotations and the common downloaders leave it::

    SOURCE/annotations/train.csv, val.csv     label,youtube_id,time_start,time_end,split[,is_cc]
    SOURCE/annotations/test.csv               (optional; no label column: not used)
    SOURCE/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4
    SOURCE/<split>/<youtube_id>_<start:06d>_<end:06d>.mp4        (or flat: CVDF's archives)

MMAction2's layout (``tools/data/kinetics``) builds as it is: its renamed CSVs
(``annotations/kinetics_train.csv``, ``kinetics_val.csv``; DeepMind's archive's own
``validate.csv`` too) and its clip folders ``videos_train/``, ``videos_val/``: a CSV's ``split``
value ``s`` is read from the folder ``s/`` where there is one, else from ``videos_s/``
(`split_folder_of`). The first CSV name present of each split is read (`annotation_csv`).

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

Split: test = the official val set (what the literature reports, since the official
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
#: The CSV names each split of the store may come from, in the order they are looked for: the
#: official (and CVDF's) name, DeepMind's archive's (`validate.csv`), MMAction2's renaming.
CSVS_OF_SPLIT = {"train": ("train.csv", "kinetics_train.csv"),
                 "test": ("val.csv", "validate.csv", "kinetics_val.csv")}
#: What MMAction2's scripts put before a CSV's `split` value to name its clip folder.
MMACTION2_FOLDER_PREFIX = "videos_"
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
    else the CSV's own (its clips then fail as missing;
    the build names the absent folder, `Dataset.absent_folders`)."""
    return next((name for name in label_folders(label) if (split_folder / name).is_dir()), label)


def annotation_csv(source: Path, split: str) -> str:
    """The CSV, relative to `source`, that the store's `split` ("train" or "test") is read
    from: the first of its names (`CSVS_OF_SPLIT`) present in `annotations/`.

    Raises:
        SourceLayoutError: none of them is there.
    """
    names = CSVS_OF_SPLIT[split]
    for name in names:
        if os.path.lexists(source / ANNOTATIONS_DIR / name):
            return f"{ANNOTATIONS_DIR}/{name}"
    raise SourceLayoutError(f"no annotation CSV at {str(source / ANNOTATIONS_DIR / names[0])!r} "
                            f"(nor {' or '.join(names[1:])}, as others name it)")


def split_folder_of(source: Path, split: str) -> str:
    """The folder, relative to `source`, the clips a CSV lists under `split` (its `split`
    column) are in: `split` itself where there is one, else MMAction2's `videos_<split>` where
    that is there, else `split` (its clips then fail as missing;
    the build names the absent folder, `Dataset.absent_folders`)."""
    if not (source / split).is_dir() and (source / f"{MMACTION2_FOLDER_PREFIX}{split}").is_dir():
        return f"{MMACTION2_FOLDER_PREFIX}{split}"
    return split


def holds_clips(split_folder: Path) -> bool:
    """Whether `split_folder` holds clips itself (`*.mp4`), as CVDF's archives extract, rather
    than in label folders alone. Stops at the first clip: a flat folder of 240,000 clips is not
    listed, a folder of 400 label folders is."""
    try:
        with os.scandir(split_folder) as entries:
            return any(entry.name.endswith(".mp4") and entry.is_file() for entry in entries)
    except OSError:  # missing or unreadable: its clips fail as missing (`Dataset.absent_folders`)
        return False


def clip_folder(source: Path, split_folder: str, label: str, flat: bool) -> str:
    """The folder, relative to `source`, a clip of `label` listed under `split_folder` is read
    from: its label's folder where the split folder has one (`label_folder`); else the split
    folder itself where that holds clips (`flat`: CVDF's layout); else the folder the CSV's
    label names (its clips then fail as missing;
    the build names the absent folder, `Dataset.absent_folders`)."""
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
        folders: dict[tuple[str, str], str] = {}  # (split column, label) -> its clips' folder
        csvs = {split: annotation_csv(source, split) for split in CSVS_OF_SPLIT}
        for split, name in csvs.items():
            per_class = by_split[split] = {}
            for number, row in read_csv(source / name, "annotation CSV", COLUMNS):
                where = f"{name} line {number}"
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
                if (folder_name, label) not in folders:
                    clips = split_folder_of(source, folder_name)
                    if clips not in flat:
                        flat[clips] = holds_clips(source / clips)
                    folders[folder_name, label] = clip_folder(source, clips, label, flat[clips])
                paths[sample_id] = f"{folders[folder_name, label]}/{sample_id}.mp4"
                per_class.setdefault(label, []).append(sample_id)
        self.sample_paths = paths
        check_spellings([*by_split["train"], *by_split["test"]],
                        f"{csvs['train']} and {Path(csvs['test']).name}")
        classes = sorted(by_split["train"])
        strangers = sorted(set(by_split["test"]) - set(classes))
        if strangers:
            raise SourceLayoutError(f"{csvs['test']} has label {strangers[0]!r}, which "
                                    f"{Path(csvs['train']).name} lacks")
        if not classes:
            raise SourceLayoutError(f"{csvs['train']} in {str(source)!r} lists no clips")
        return build_manifest(classes, by_split["train"], by_split["test"],
                              val_fraction=self.options.val_fraction, seed=self.options.seed)

    def source_files(self, source: Path, manifest: Manifest) -> SourceSizes:
        """Every listed clip (None where it is missing), plus the CSVs read."""
        sizes = super().source_files(source, manifest)
        for split in CSVS_OF_SPLIT:
            name = annotation_csv(source, split)
            sizes[name] = (source / name).stat().st_size
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
