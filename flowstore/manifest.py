"""Split manifests: which sample goes to train, val or test, with its label.

A manifest row is ``id,label,class,split``. Rows are ordered by split (train, val, test) and,
within a split, round-robin over the classes, so that the first N rows of a split (what
`--max-per-split N` builds) cover every class evenly.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

SPLITS = ("train", "val", "test")
#: Both datasets hold out 10% of their official training pool for validation (the report's
#: 400 of 4000 Stanford-40 images, 10 of 100 TV-HI clips), drawn with this seed.
VAL_FRACTION = 0.1
SPLIT_SEED = 0
HEADER = ("id", "label", "class", "split")


@dataclass(frozen=True, slots=True)  # slots: a Kinetics manifest holds 300,000 of them
class ManifestRow:
    id: str
    label: int
    class_name: str
    split: str


@dataclass(frozen=True)
class Manifest:
    """The classes (label order) and the rows (store order) of one dataset."""

    classes: tuple[str, ...]
    rows: tuple[ManifestRow, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def positions(self, ids: Iterable[str]) -> dict[str, int]:
        """The row index of each of `ids` the manifest holds (absent ones are left out): one
        pass over the rows, where a build-long index of every id cost memory per sample."""
        wanted = set(ids)
        return {row.id: index for index, row in enumerate(self.rows) if row.id in wanted}

    def split_ids(self, split: str) -> list[str]:
        return [row.id for row in self.rows if row.split == split]

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
        rows = tuple(ManifestRow(r["id"], int(r["label"]), r["class"], r["split"]) for r in reader)
        return cls(tuple(classes), rows)

    @classmethod
    def read(cls, path: str | Path, classes: Sequence[str]) -> "Manifest":
        return cls.from_csv(Path(path).read_text(), classes)

    def first_per_split(self, limit: int | None) -> list[int]:
        """Row indices of the first `limit` rows of each split (all rows when None)."""
        seen = dict.fromkeys(SPLITS, 0)
        picked = []
        for index, row in enumerate(self.rows):
            if limit is None or seen[row.split] < limit:
                picked.append(index)
                seen[row.split] += 1
        return picked


def stratified_holdout(ids_by_class: Mapping[str, Sequence[str]], fraction: float,
                       seed: int) -> set[str]:
    """Pick round(fraction * total) ids, spread over the classes in proportion to their size.

    Each class gets the floor of its share; the ids left over go to the classes with the largest
    remainders (ties: class order). Within a class the ids are drawn with a generator seeded by
    (seed, class position), so adding a class never changes another class's draw.
    """
    classes = list(ids_by_class)
    sizes = np.array([len(ids_by_class[c]) for c in classes], dtype=float)
    total = int(round(fraction * sizes.sum()))
    shares = fraction * sizes
    quota = np.floor(shares).astype(int)
    order = sorted(range(len(classes)), key=lambda i: (-(shares[i] - quota[i]), i))
    for i in order[: total - int(quota.sum())]:
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
    `fraction` of the class's groups, at least one when the class has two or more groups; so
    no group is on both sides. Drawn like `stratified_holdout` (seed, class position)."""
    picked: set[str] = set()
    for position, name in enumerate(ids_by_class):
        groups = sorted({group_of(i) for i in ids_by_class[name]})
        count = int(round(fraction * len(groups)))
        if fraction > 0 and len(groups) >= 2:
            count = min(max(count, 1), len(groups) - 1)
        rng = np.random.default_rng([seed, position])
        chosen = set(rng.choice(groups, size=count, replace=False).tolist()) if count else set()
        picked.update(i for i in ids_by_class[name] if group_of(i) in chosen)
    return picked


def assemble_manifest(classes: Sequence[str],
                      by_split: Mapping[str, Mapping[str, Iterable[str]]]) -> Manifest:
    """Manifest from each split's ids per class, in the store order (module docstring)."""
    label = {c: k for k, c in enumerate(classes)}
    rows = [ManifestRow(sample_id, label[c], c, split) for split in SPLITS
            for c, sample_id in round_robin({c: sorted(by_split.get(split, {}).get(c, ()))
                                             for c in classes})]
    return Manifest(tuple(classes), tuple(rows))


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
