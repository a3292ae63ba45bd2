"""Split manifests: which sample goes to train, val or test, with its label.

A manifest row is ``id,label,class,split``. Rows are ordered by split (train, val, test) and,
within a split, round-robin over the classes, so that the first N rows of a split (what
`--max-per-split N` builds) cover every class evenly.
"""

from __future__ import annotations

import collections
import collections.abc
import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from flowstore.console import some_named
from flowstore.errors import SourceLayoutError

SPLITS = ("train", "val", "test")
#: Both datasets hold out 10% of their official training pool for validation (the report's
#: 400 of 4000 Stanford-40 images, 10 of 100 TV-HI clips), drawn with this seed.
VAL_FRACTION = 0.1
SPLIT_SEED = 0
HEADER = ("id", "label", "class", "split")
#: The label of a sample of no class: a clip or image to predict, not to train on (the `clips`
#: and `images` datasets, whose stores have no classes). Its manifest row's class is empty.
NO_CLASS = -1


def class_label(classes: Sequence[str], label: int) -> str:
    """A label as messages and pictures name it: its class, "(no class)" for `NO_CLASS`, or
    "(label N)" for a label that names no class (a damaged store)."""
    if 0 <= label < len(classes):
        return classes[label]
    return "(no class)" if label == NO_CLASS else f"(label {label})"


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One sample of a manifest, as `Manifest.rows` hands it out (made on access)."""

    id: str
    label: int
    class_name: str
    split: str


class Manifest:
    """The classes (label order) and the rows (store order) of one dataset.

    Held as columns, not one object per row: ids as a list of `str`, labels and split codes as
    small numpy arrays. A Kinetics manifest has 300,000 rows, and a row object was 64 bytes of
    each sample's build memory (benchmarks/build_scale.py). `rows` still hands out
    `ManifestRow`s, made as they are read; hot loops read `ids` directly.
    """

    __slots__ = ("classes", "ids", "labels", "split_codes")

    def __init__(self, classes: Sequence[str], ids: Sequence[str], labels: Sequence[int],
                 splits: Sequence[str]) -> None:
        self.classes = tuple(classes)
        self.ids: list[str] = list(ids)
        self.labels = np.asarray(labels, dtype=np.int32).reshape(-1)
        self.split_codes = np.asarray([SPLITS.index(s) for s in splits], dtype=np.int8)
        if not len(self.ids) == len(self.labels) == len(self.split_codes):
            raise ValueError("a manifest's ids, labels and splits differ in length")
        if len(set(self.ids)) != len(self.ids):  # (each dataset refuses its source's repeats)
            repeated = next(i for i, n in collections.Counter(self.ids).items() if n > 1)
            raise ValueError(f"a manifest lists sample {repeated!r} twice")
        named = self.labels[self.labels != NO_CLASS]
        if len(named) and not 0 <= named.min() <= named.max() < len(self.classes):
            raise ValueError("a manifest label names no class")

    @classmethod
    def from_rows(cls, classes: Sequence[str], rows: Iterable[ManifestRow]) -> "Manifest":
        """A manifest from row objects; each row's class must be its label's."""
        classes = tuple(classes)
        rows = list(rows)
        for row in rows:
            if row.label == NO_CLASS and row.class_name == "":
                continue
            if not 0 <= row.label < len(classes) or classes[row.label] != row.class_name:
                raise ValueError(f"manifest row {row.id!r}: class {row.class_name!r} is not "
                                 f"label {row.label}'s")
        return cls(classes, [r.id for r in rows], [r.label for r in rows], [r.split for r in rows])

    @property
    def rows(self) -> "_Rows":
        return _Rows(self)

    def row(self, index: int) -> ManifestRow:
        label = int(self.labels[index])
        return ManifestRow(self.ids[index], label, "" if label == NO_CLASS else self.classes[label],
                           SPLITS[self.split_codes[index]])

    def splits(self) -> list[str]:
        """Each row's split name, in store order."""
        return [SPLITS[code] for code in self.split_codes]

    def store_columns(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The `id`, `label` and `split` columns a store of these rows (all when None) holds."""
        if rows is None:
            ids, labels, codes = self.ids, self.labels, self.split_codes
        else:
            ids = [self.ids[i] for i in rows]
            labels, codes = self.labels[rows], self.split_codes[rows]
        return {"id": np.array(ids, dtype=str), "label": labels,
                "split": np.array(SPLITS, dtype=str)[codes]}

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return (self.classes == other.classes and self.ids == other.ids
                and np.array_equal(self.labels, other.labels)
                and np.array_equal(self.split_codes, other.split_codes))

    __hash__ = None  # mutable columns

    def __repr__(self) -> str:
        return f"Manifest({len(self.classes)} classes, {len(self)} rows)"

    def positions(self, ids: Iterable[str]) -> dict[str, int]:
        """The row index of each of `ids` the manifest holds (absent ones are left out): one
        pass over the rows, where a build-long index of every id cost memory per sample."""
        wanted = set(ids)
        return {sample: index for index, sample in enumerate(self.ids) if sample in wanted}

    def split_ids(self, split: str) -> list[str]:
        """The ids of `split`'s samples, in manifest order."""
        return [self.ids[i] for i in np.flatnonzero(self.split_codes == SPLITS.index(split))]

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        for row in self.rows:
            writer.writerow((row.id, row.label, row.class_name, row.split))
        return out.getvalue()

    @classmethod
    def from_csv(cls, text: str, classes: Sequence[str]) -> "Manifest":
        reader = csv.DictReader(io.StringIO(text))
        return cls.from_rows(classes, (ManifestRow(r["id"], int(r["label"]), r["class"],
                                                   r["split"]) for r in reader))

    @classmethod
    def read(cls, path: str | Path, classes: Sequence[str]) -> "Manifest":
        return cls.from_csv(Path(path).read_text(), classes)

    def first_per_split(self, limit: int | None) -> np.ndarray:
        """Row indices (int64, ascending) of the first `limit` rows of each split (all rows
        when None): an array, not a list of ints, which was 40 bytes a sample of a build."""
        if limit is None:
            return np.arange(len(self), dtype=np.int64)
        return np.sort(np.concatenate(
            [np.flatnonzero(self.split_codes == code)[:limit] for code in range(len(SPLITS))]))


class _Rows(collections.abc.Sequence):
    """A manifest's rows as `ManifestRow`s, each made when it is read."""

    __slots__ = ("manifest",)

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.manifest.row(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("manifest row index out of range")
        return self.manifest.row(index)


def stratified_holdout(ids_by_class: Mapping[str, Sequence[str]], fraction: float,
                       seed: int) -> set[str]:
    """Pick round(fraction * total) ids, spread over the classes in proportion to their size.

    Each class gets the floor of its share; the ids left over go to the classes with the largest
    remainders (ties: class order) among those that keep an id on the other side: a class of
    one or a few ids is never drawn whole (it would be one a model trains on, or is tested on,
    not at all), and what it cannot give goes to the next class in that order, even one whose
    remainder is 0, so the pick stays round(fraction * total) unless no class has an id to
    spare. (Changing this rule would change the manifests, hence the stores, drawn so far.) Within a
    class the ids are drawn with a generator seeded by (seed, class position): the same classes
    always give the same draw, but a class added before others (class folders are in name
    order) moves their positions, hence their draws.
    (Seeding by class name would keep them, and change every split made so far, the committed
    TV-HI one included.)
    """
    classes = list(ids_by_class)
    sizes = np.array([len(ids_by_class[c]) for c in classes], dtype=float)
    total = int(round(fraction * sizes.sum()))
    shares = fraction * sizes
    quota = np.floor(shares).astype(int)
    order = sorted(range(len(classes)), key=lambda i: (-(shares[i] - quota[i]), i))
    spare = [i for i in order if quota[i] + 1 < sizes[i]]
    for i in spare[: total - int(quota.sum())]:
        quota[i] += 1
    picked: set[str] = set()
    for position, name in enumerate(classes):
        ids = sorted(ids_by_class[name])
        rng = np.random.default_rng([seed, position])
        picked.update(rng.choice(ids, size=int(quota[position]), replace=False).tolist())
    return picked


def round_robin(ids_by_class: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """(class, id) pairs taking one id of each class in turn, ids sorted within a class."""
    queues = {name: sorted(ids) for name, ids in ids_by_class.items()}
    out: list[tuple[str, str]] = []
    depth = max((len(q) for q in queues.values()), default=0)
    for i in range(depth):
        out.extend((name, q[i]) for name, q in queues.items() if i < len(q))
    return out


def grouped_holdout(ids_by_class: Mapping[str, Sequence[str]], group_of: Callable[[str], str],
                    fraction: float, seed: int) -> set[str]:
    """Pick whole groups of each class (e.g. UCF101's gNN: one actor and scene), about
    `fraction` of the class's groups, at least one when the class has two or more groups and
    never all of them (a class of one group stays whole on the training side); so no group is
    on both sides. Drawn like `stratified_holdout` (seed, class position)."""
    picked: set[str] = set()
    for position, name in enumerate(ids_by_class):
        groups = sorted({group_of(i) for i in ids_by_class[name]})
        count = int(round(fraction * len(groups))) if len(groups) >= 2 else 0
        if fraction > 0 and len(groups) >= 2:
            count = min(max(count, 1), len(groups) - 1)
        rng = np.random.default_rng([seed, position])
        chosen = set(rng.choice(groups, size=count, replace=False).tolist()) if count else set()
        picked.update(i for i in ids_by_class[name] if group_of(i) in chosen)
    return picked


def _check_no_empty_class(classes: Sequence[str],
                          by_split: Mapping[str, Mapping[str, list[str]]]) -> None:
    """Refuse a class with no sample in any split (an empty split file, a class index line
    whose class no list names): a store that holds it has a label no run can learn or is ever
    scored on, unseen until a per-class score is read. (The class-folder datasets refuse an
    empty class folder for the same reason; a class only in val or test is the user's choice.)"""
    empty = [c for c in classes if not any(per_class.get(c) for per_class in by_split.values())]
    if not empty:
        return
    named = some_named(empty)
    what = f"class {named} has" if len(empty) == 1 else f"classes {named} have"
    raise SourceLayoutError(f"{what} no samples in any split: a model cannot learn a class it "
                            f"never sees; add its samples or remove it from the source")


def assemble_manifest(classes: Sequence[str],
                      by_split: Mapping[str, Mapping[str, Iterable[str]]]) -> Manifest:
    """Manifest from each split's ids per class, in the store order (module docstring)."""
    by_split = {split: {c: list(ids) for c, ids in per_class.items()}
                for split, per_class in by_split.items()}
    _check_no_empty_class(classes, by_split)
    label = {c: k for k, c in enumerate(classes)}
    ids: list[str] = []
    labels: list[int] = []
    splits: list[str] = []
    for split in SPLITS:
        for c, sample_id in round_robin({c: sorted(by_split.get(split, {}).get(c, ()))
                                         for c in classes}):
            ids.append(sample_id)
            labels.append(label[c])
            splits.append(split)
    return Manifest(classes, ids, labels, splits)


def build_manifest(classes: Sequence[str], train_pool: Mapping[str, Iterable[str]],
                   test: Mapping[str, Iterable[str]], *, val_fraction: float = VAL_FRACTION,
                   seed: int = SPLIT_SEED, val: set[str] | None = None) -> Manifest:
    """Manifest from per-class train pools (split into train/val: stratified, or the ids in
    `val` when given) and test sets."""
    pool = {c: sorted(train_pool.get(c, ())) for c in classes}
    if val is None:
        val = stratified_holdout(pool, val_fraction, seed)
    return assemble_manifest(classes, {
        "train": {c: [i for i in pool[c] if i not in val] for c in classes},
        "val": {c: [i for i in pool[c] if i in val] for c in classes},
        "test": {c: test.get(c, ()) for c in classes},
    })
