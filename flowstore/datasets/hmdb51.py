"""HMDB51 (Kuehne et al., ICCV 2011): 6,766 clips of 51 actions, three official 70/30 splits.

Source layout, as the dataset ships (one rar per class unpacked, and the split archive)::

    SOURCE/<class>/<clip>.avi                        (or one level down: SOURCE/hmdb51/<class>/)
    SOURCE/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt

Quirks of the real split files (the copies in the shared data folder): each line is
``clip.avi N `` with a trailing space, N = 1 train, 2 test, 0 not used in that split; clip
names keep their source's odd characters (``[HD]``, ``!!!!``, ``~``, ``(HQ)``).

Split: ``--fold`` F uses the ``_test_splitF`` files; test = N 2; the N 1 clips give
train and val (``--val-fraction`` of each class's source videos, ``--seed``); N 0 clips are
left out. Classes are the split files' class names, sorted (``climb`` before ``climb_stairs``,
as MMAction2's and torchvision's label maps have them). A sample's id is its clip's file stem.

Clips are cut several from one video, named ``<video>_<action>_<tags>_<n>`` (e.g.
``April_09_brush_hair_u_nm_np1_ba_goo_0``); the official splits never put two clips of one
video on both sides (checked on the real files: no video of a class in both train and test,
in all three folds), and the validation split keeps to that too (`source_video`): drawn clip
by clip, over half the real fold 1's validation clips shared a video with a training clip.
"""

from __future__ import annotations

import re
from pathlib import Path

from flowstore.datasets._classfolders import FOLDS, FoldOptions, read_text, skipped
from flowstore.datasets.base import SamplePaths, SourceSizes, VideoDataset
from flowstore.errors import SourceLayoutError
from flowstore.manifest import Manifest, build_manifest, grouped_holdout
from flowstore.synth.clips import SynthClipsConfig

SPLITS_DIR = "testTrainMulti_7030_splits"
_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<fold>\d)\.txt$")
#: The code of each clip in a split file.
TRAIN, TEST, UNUSED = "1", "2", "0"



def parse_split_file(text: str, origin: str) -> dict[str, list[str]]:
    """{"1": [clip file names], "2": [...], "0": [...]} of one class's split file, each name as
    the file spells it (`.avi` in any case: the clip is read by that name)."""
    codes: dict[str, list[str]] = {TRAIN: [], TEST: [], UNUSED: []}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().rsplit(None, 1)
        # (a clip is a file of its class folder: a path, `Class/clip.avi` as UCF101's lists
        # write them, is another dataset's list or would read a file elsewhere)
        if len(fields) != 2 or fields[1] not in codes or not fields[0].lower().endswith(".avi") \
                or "/" in fields[0] or "\\" in fields[0]:
            raise SourceLayoutError(f"{origin} line {number}: expected 'clip.avi N' with N 0, 1 "
                                    f"or 2, got {line!r}")
        codes[fields[1]].append(fields[0])
    return codes


def _split_files(splits_dir: Path, fold: int) -> dict[str, Path]:
    """{class: its split file for `fold`}, sorted by class (not by file name: `_` sorts after
    letters, so `kick_ball_test_split1.txt` comes before `kick_test_split1.txt`). Hidden files
    (a macOS `._brush_hair_test_split1.txt`) are not split files.

    A class whose file of another fold is there but not this fold's is refused: the fold
    would silently have one class fewer, and its labels would not be the other folds'."""
    found: dict[int, dict[str, Path]] = {}
    for path in splits_dir.iterdir():
        match = _SPLIT_FILE.match(path.name)
        if match and not path.name.startswith("."):
            found.setdefault(int(match.group("fold")), {})[match.group("cls")] = path
    files = found.get(fold, {})
    for other in sorted(found):
        lacking = sorted(set(found[other]) - set(files))
        if files and lacking:
            raise SourceLayoutError(
                f"{str(splits_dir)!r} has {lacking[0]}_test_split{other}.txt but no "
                f"{lacking[0]}_test_split{fold}.txt: fold {fold} would lack class "
                f"{lacking[0]!r} (and number the others otherwise); put the file back")
    return dict(sorted(files.items()))


def source_video(sample_id: str, class_name: str) -> str:
    """The video a clip was cut from: its name before the action (module docstring); the name
    less its clip number where the action is not in it."""
    cut = sample_id.rfind(f"_{class_name}_")
    return sample_id[:cut] if cut > 0 else re.sub(r"_\d+$", "", sample_id)


def _roots(source: Path) -> list[Path]:
    """Where the data may lie: `source`, then each folder in it (one folder down), but hidden
    ones and macOS' `__MACOSX/`, which mirrors the data's folders with resource forks in them
    (`skipped`)."""
    return [source, *sorted(p for p in source.iterdir() if p.is_dir() and not skipped(p.name))]


def _find(roots: list[Path], name: str) -> Path | None:
    """The first of `roots` (`_roots`) that holds a folder `name`."""
    return next((root for root in roots if (root / name).is_dir()), None)


def _clips_root(source: Path, roots: list[Path], classes: list[str]) -> Path:
    """The first of `roots` holding the most class folders (two whole copies, `hmdb51_org/`
    beside `hmdb51_sta/`: the first). Class folders split between two of them (one left at
    the top, the rest one folder down) are refused: looking in one place alone failed the
    other's clips as missing, naming only their files."""
    holding = {root: {c for c in classes if (root / c).is_dir()} for root in roots}
    if not any(holding.values()):
        raise SourceLayoutError(f"no class folder of the split files (e.g. {classes[0]!r}) in "
                                f"{str(source)!r} (or one folder down): expected "
                                f"<class>/<clip>.avi")
    chosen = max(roots, key=lambda root: len(holding[root]))  # (the first of the most)
    elsewhere = next(((root, name) for root in roots for name in sorted(holding[root])
                      if name not in holding[chosen]), None)
    if elsewhere is not None:
        root, name = elsewhere
        raise SourceLayoutError(
            f"class folders in two places: {name!r} in {str(root)!r}, the others in "
            f"{str(chosen)!r}; put every class folder in one")
    return chosen


class HMDB51(VideoDataset):
    name = "hmdb51"
    options_type = FoldOptions
    synth_config_type = SynthClipsConfig

    def manifest(self, source: Path) -> Manifest:
        self.check_source_folder(source)
        roots = _roots(source)
        splits_root = _find(roots, SPLITS_DIR)
        if splits_root is None:
            raise SourceLayoutError(f"no {SPLITS_DIR}/ in {str(source)!r} (or one folder down), "
                                    f"as HMDB51 ships its splits")
        splits_dir = splits_root / SPLITS_DIR
        files = _split_files(splits_dir, self.options.fold)
        if not files:
            raise SourceLayoutError(f"no <class>_test_split{self.options.fold}.txt files in "
                                    f"{str(splits_dir)!r}")
        classes = list(files)
        clips_root = _clips_root(source, roots, classes)
        train: dict[str, list[str]] = {}
        test: dict[str, list[str]] = {}
        paths = SamplePaths()  # (this source's alone: a second manifest reads it afresh)
        prefix = clips_root.relative_to(source).as_posix()
        for name, path in files.items():
            codes = parse_split_file(read_text(path, "split file"), path.name)
            train[name], test[name] = ([clip[: -len(".avi")] for clip in codes[code]]
                                       for code in (TRAIN, TEST))
            for clip in codes[TRAIN] + codes[TEST]:
                sample_id = clip[: -len(".avi")]
                if sample_id in paths:
                    raise SourceLayoutError(f"clip {clip!r} is listed twice in the "
                                            f"split {self.options.fold} files")
                relative = f"{name}/{clip}"
                paths[sample_id] = relative if prefix == "." else f"{prefix}/{relative}"
        self.sample_paths = paths
        self._split_paths = {f"{splits_dir.relative_to(source).as_posix()}/{p.name}": p
                             for p in files.values()}
        videos = {i: source_video(i, c) for c, ids in train.items() for i in ids}
        val = grouped_holdout(train, videos.__getitem__, self.options.val_fraction,
                              self.options.seed)
        return build_manifest(classes, train, test, val=val)

    def source_files(self, source: Path, manifest: Manifest) -> SourceSizes:
        """Every listed clip, plus the split files the manifest was read from."""
        sizes = super().source_files(source, manifest)
        sizes.update({name: path.stat().st_size for name, path in self._split_paths.items()})
        return sizes

    def write_synthetic(self, folder: Path, config: SynthClipsConfig) -> Path:
        """The real layout one folder down (``hmdb51/<class>/``) and split-file format
        ("clip.avi N " with its trailing space); odd characters in the clip names; two clips
        cut from each video; in fold F video v of a class is test when v % 3 == F - 1, else
        train, and every fourth clip unused."""
        from flowstore.synth.clips import write_clip, write_source

        names = ["brush_hair", "cartwheel", "climb_stairs", "kick_ball", "shake_hands", "wave"]
        names += [f"action_{k:02d}" for k in range(len(names), config.classes)]
        classes = sorted(names[: config.classes])

        def fill(root: Path) -> None:
            splits = root / SPLITS_DIR
            splits.mkdir()
            for label, name in enumerate(classes):
                (root / "hmdb51" / name).mkdir(parents=True)
                clips = [f"My_[HD]_Video!!!_{k // 2}_{name}_f_cm_np1_ri_med_{k % 2}.avi"
                         for k in range(config.clips_per_class)]
                for clip in clips:
                    write_clip(root / "hmdb51" / name / clip, label, config)
                for fold in FOLDS:
                    codes = [UNUSED if k % 4 == 3 else TEST if k // 2 % 3 == fold - 1
                             else TRAIN for k in range(len(clips))]
                    lines = [f"{clip} {code} " for clip, code in zip(clips, codes)]
                    (splits / f"{name}_test_split{fold}.txt").write_text("\n".join(lines) + "\n")

        return write_source(folder, fill)
