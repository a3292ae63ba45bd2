"""Stanford-40 Actions (Yao et al., ICCV 2011): 9,532 still images of 40 human actions.

Source layout, as the dataset ships (two archives unpacked side by side)::

    SOURCE/JPEGImages/{action}_{number:03d}.jpg
    SOURCE/ImageSplits/actions.txt               header line, then "action_name<TABs>count"
    SOURCE/ImageSplits/train.txt, test.txt       one image name per line, e.g. applauding_001.jpg
    SOURCE/ImageSplits/{action}_train.txt, {action}_test.txt   the same lists, one class each

Quirks of the real files (measured on the copies in the shared data folder): the columns of
actions.txt are padded with a varying number of tabs (one line also ends in a stray tab);
actions.txt does not list the classes alphabetically ("reading" comes before "phoning"), while
train.txt and test.txt are the per-class files concatenated in alphabetical class order; the
per-class files list their images in no particular order. The count in actions.txt is the
class's train + test total and is not needed for the split.

Split: classes and labels in actions.txt order; test = test.txt; train.txt gives
train and val (10%, stratified by class, fixed seed: 3600 / 400, 10 val per class, on the real
data). A sample's id is its file stem; its class is the id minus the trailing ``_NNN``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from flowstore.datasets.base import SourceSizes, ImageDataset
from flowstore.errors import SourceLayoutError
from flowstore.manifest import Manifest, build_manifest

#: The 40 actions in the order of the real ImageSplits/actions.txt (the label order).
ACTIONS = (
    "applauding", "blowing_bubbles", "brushing_teeth", "cleaning_the_floor", "climbing",
    "cooking", "cutting_trees", "cutting_vegetables", "drinking", "feeding_a_horse", "fishing",
    "fixing_a_bike", "fixing_a_car", "gardening", "holding_an_umbrella", "jumping",
    "looking_through_a_microscope", "looking_through_a_telescope", "playing_guitar",
    "playing_violin", "pouring_liquid", "pushing_a_cart", "reading", "phoning", "riding_a_bike",
    "riding_a_horse", "rowing_a_boat", "running", "shooting_an_arrow", "smoking", "taking_photos",
    "texting_message", "throwing_frisby", "using_a_computer", "walking_the_dog",
    "washing_dishes", "watching_TV", "waving_hands", "writing_on_a_board", "writing_on_a_book",
)
IMAGES_DIR = "JPEGImages"
SPLITS_DIR = "ImageSplits"
ACTIONS_FILE = "actions.txt"
IMAGE_SUFFIX = ".jpg"
SPLIT_NAMES = ("train", "test")

_SAMPLE_ID = re.compile(r"^(?P<action>.+)_(?P<number>\d+)$")


def _other_case(source: Path, name: str) -> str:
    """A refusal's hint where `source` holds `name` in another letter case: the public copy of
    Stanford-40 this project's data README points to ships `JPEGimages/` (a lower-case i), and
    "no JPEGImages/ folder" beside it sent users looking for a folder they could see. Not read
    as it is: the name is the layout (a case-insensitive file system finds it anyway)."""
    try:
        found = sorted(entry.name for entry in source.iterdir()
                       if entry.name.lower() == name.lower() and entry.is_dir())
    except OSError:
        return ""
    return f" (there is {found[0] + '/'!r}: rename it to {name}/)" if found else ""


def class_of(sample_id: str) -> str:
    """The action of a sample id: the id minus its trailing ``_NNN`` (``applauding_001``)."""
    match = _SAMPLE_ID.match(sample_id)
    if not match:
        raise ValueError(f"not a Stanford-40 sample id (ACTION_NNN): {sample_id!r}")
    return match.group("action")


def split_file_name(action: str, split: str) -> str:
    """Name of a per-class split file, e.g. ``applauding_train.txt``."""
    return f"{action}_{split}.txt"


def parse_actions(text: str, origin: str = ACTIONS_FILE) -> dict[str, int]:
    """``{action: number of images}`` in file order, from the text of actions.txt.

    The first non-empty line is a header (``action_name ... number_of_images``) and is skipped
    when its last column is not a number. Columns are separated by any run of whitespace: the
    real file pads them with a varying number of tabs.
    """
    actions: dict[str, int] = {}
    seen_first = False
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if not seen_first:
            seen_first = True
            if not fields[-1].isdecimal():
                continue
        # (isdecimal, not isdigit: '²' is a digit, and int() refuses it)
        if len(fields) != 2 or not fields[1].isdecimal():
            raise SourceLayoutError(f"{origin} line {number}: expected 'action_name<TAB>count', "
                                    f"got {line!r}")
        if fields[0] in actions:
            raise SourceLayoutError(f"{origin} line {number}: action {fields[0]!r} listed twice")
        actions[fields[0]] = int(fields[1])
    if not actions:
        raise SourceLayoutError(f"{origin} lists no actions")
    return actions


def parse_image_list(text: str, origin: str) -> list[str]:
    """Sample ids (file stems) of a split file: one ``ACTION_NNN.jpg`` name per line."""
    ids: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        stem = name[: -len(IMAGE_SUFFIX)]
        if not name.endswith(IMAGE_SUFFIX) or not _SAMPLE_ID.match(stem):
            raise SourceLayoutError(f"{origin} line {number}: expected an image name like "
                                    f"applauding_001.jpg, got {line!r}")
        ids.append(stem)
    return ids


@dataclass(frozen=True)
class ImageSplits:
    """What ImageSplits/ says: the classes (label order) and each split's ids per class."""

    classes: tuple[str, ...]
    train: dict[str, list[str]]
    test: dict[str, list[str]]


def _read(path: Path) -> str:
    """A split file's text; a BOM (as Windows editors write) is not part of its first name."""
    return path.read_text(encoding="utf-8-sig", errors="replace")


def _group_by_class(ids: list[str], classes: tuple[str, ...], origin: str) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {name: [] for name in classes}
    for sample_id in ids:
        action = class_of(sample_id)
        if action not in grouped:
            raise SourceLayoutError(f"{origin} lists {sample_id}{IMAGE_SUFFIX}, whose action "
                                    f"{action!r} is not in {ACTIONS_FILE}")
        grouped[action].append(sample_id)
    return grouped


def _read_split(folder: Path, split: str, classes: tuple[str, ...]) -> dict[str, list[str]]:
    """One split's ids per class, from `{split}.txt`, checked against the per-class files.

    Without `{split}.txt` the per-class files are used (all of them must be there); with it,
    every per-class file that exists must list exactly that class's ids of `{split}.txt`.
    """
    combined = folder / f"{split}.txt"
    per_class = {name: folder / split_file_name(name, split) for name in classes}
    if combined.is_file():
        grouped = _group_by_class(parse_image_list(_read(combined), combined.name), classes,
                                  combined.name)
        for ids in grouped.values():
            _check_once(ids, combined.name)
    else:
        missing = [path.name for path in per_class.values() if not path.is_file()]
        if missing:
            raise SourceLayoutError(f"no {combined.name} in {str(folder)!r} (and no per-class "
                                    f"lists to make it from, e.g. {missing[0]})")
        grouped = {}
    for name, path in per_class.items():
        if not path.is_file():
            continue
        listed = parse_image_list(_read(path), path.name)
        _check_once(listed, path.name)
        strangers = [i for i in listed if class_of(i) != name]
        if strangers:
            raise SourceLayoutError(f"{path.name} lists {strangers[0]}{IMAGE_SUFFIX}, which is "
                                    f"not an image of {name!r}")
        if name not in grouped:
            grouped[name] = listed
        elif sorted(listed) != sorted(grouped[name]):
            differ = sorted(set(listed) ^ set(grouped[name]))
            raise SourceLayoutError(f"{path.name} disagrees with {combined.name} about the "
                                    f"{name!r} images (e.g. {differ[0]})")
    return grouped


def _check_once(ids: list[str], origin: str) -> None:
    """Refuse a name `origin` lists twice (before comparing lists, which it would confuse)."""
    seen: set[str] = set()
    for sample_id in ids:
        if sample_id in seen:
            raise SourceLayoutError(f"{origin} lists {sample_id}{IMAGE_SUFFIX} twice")
        seen.add(sample_id)


def read_image_splits(folder: str | Path) -> ImageSplits:
    """Parse a Stanford-40 ``ImageSplits`` folder.

    Raises:
        SourceLayoutError: actions.txt or a split list is missing or malformed, a list names an
            action that actions.txt lacks, the lists disagree, or an image is in both splits.
    """
    folder = Path(folder)
    actions_path = folder / ACTIONS_FILE
    if not actions_path.is_file():
        raise SourceLayoutError(f"no {ACTIONS_FILE} in {str(folder)!r}")
    classes = tuple(parse_actions(_read(actions_path)))
    train, test = (_read_split(folder, split, classes) for split in SPLIT_NAMES)
    train_ids = {i for ids in train.values() for i in ids}
    both = sorted(train_ids & {i for ids in test.values() for i in ids})
    if both:
        raise SourceLayoutError(f"{len(both)} image(s) are listed in both train.txt and "
                                f"test.txt, e.g. {both[0]}{IMAGE_SUFFIX}")
    return ImageSplits(classes=classes, train=train, test=test)


def manifest_from_splits(splits: ImageSplits) -> Manifest:
    """Test = test.txt; train.txt split into train and val (10%, stratified, fixed seed)."""
    return build_manifest(splits.classes, train_pool=splits.train, test=splits.test)


class Stanford40(ImageDataset):
    name = "stanford40"

    def manifest(self, source: Path) -> Manifest:
        self.check_source_folder(source)
        splits_dir = source / SPLITS_DIR
        if not splits_dir.is_dir():
            hint = _other_case(source, SPLITS_DIR)
            if (source / ACTIONS_FILE).is_file():
                hint = f"; --source is the folder that holds {SPLITS_DIR}/ and {IMAGES_DIR}/"
            raise SourceLayoutError(
                f"no {SPLITS_DIR}/ folder in {str(source)!r}: expected {SPLITS_DIR}/"
                f"{ACTIONS_FILE}, train.txt and test.txt as Stanford-40 ships them{hint}")
        # (lists of no images are refused by `build_manifest`, a class of none)
        manifest = manifest_from_splits(read_image_splits(splits_dir))
        if not (source / IMAGES_DIR).is_dir():
            raise SourceLayoutError(f"no {IMAGES_DIR}/ folder in {str(source)!r}: expected "
                                    f"images like {IMAGES_DIR}/{manifest.rows[0].id}{IMAGE_SUFFIX}"
                                    f"{_other_case(source, IMAGES_DIR)}")
        return manifest

    def source_file(self, source: Path, sample_id: str) -> Path:
        return source / IMAGES_DIR / f"{sample_id}{IMAGE_SUFFIX}"

    def source_files(self, source: Path, manifest: Manifest) -> SourceSizes:
        """Every listed image, plus the split files the manifest was read from."""
        sizes = super().source_files(source, manifest)
        names = [ACTIONS_FILE] + [f"{split}.txt" for split in SPLIT_NAMES] + [
            split_file_name(name, split) for name in manifest.classes for split in SPLIT_NAMES]
        for name in names:
            path = source / SPLITS_DIR / name
            if path.is_file():
                sizes[f"{SPLITS_DIR}/{name}"] = path.stat().st_size
        return sizes
