"""What the datasets read from plain folders share: class folders, split files and split rules.

`videofolder` and `imagefolder` (Hugging Face's and torchvision's conventions) are this module's
`ClassFolders` with their own file suffixes; `clips` and `images` (no classes) are its
`Unlabelled`; both build on `MediaFiles`, the listing and naming of media files. UCF101, HMDB51
and Kinetics use its checks of class names and its reading of text files.

Layout: SOURCE/<class>/<file> (files may sit deeper inside their class folder). Splits, first
match wins:

1. ``--split-file CSV``: columns ``path,label,split``, paths relative to SOURCE; the classes are
   the CSV's labels, sorted. A listed file that is missing fails as a sample, not the build.
2. top-level ``train/``, ``val/``, ``test/`` folders, each with class folders; without ``val/``,
   val is carved from train (``--val-fraction``, stratified); without ``test/`` the source is
   refused (a store with no test split reports no accuracy).
3. otherwise every file of a class is drawn into test (``--test-fraction``) and val
   (``--val-fraction``), stratified by class with ``--seed``; the rest is train.

Files whose suffix is not a media suffix (README.txt, .DS_Store, Thumbs.db), hidden files and
folders, and systems' folders (``__MACOSX/``, ``@eaDir/``: `skipped`) are skipped. Links to
folders are followed, once each (not a link back into the source or above it); a file that two
class folders hold through links is refused; a broken link or a symlink loop named like a
media file is a sample, which fails. Classes are sorted by name; two folders
whose names differ only in letter case, Unicode form or spaces around them (``Dog``, ``dog``
and ``dog ``) are one class spelled two ways, which is refused. A class of no sample in any split is refused
(`flowstore.manifest`).
"""

from __future__ import annotations

import csv
import glob
import io
import itertools
import os
import re
import stat
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar, Iterable, Mapping, Sequence

from flowstore.datasets.base import Dataset
from flowstore.errors import ParameterError, SourceLayoutError
from flowstore.params import check_seed
from flowstore.store.layout import as_text
from flowstore.manifest import (NO_CLASS, SPLITS, Manifest, assemble_manifest, build_manifest,
                                stratified_holdout)

SPLIT_FILE_COLUMNS = ("path", "label", "split")
#: The split an `Unlabelled` dataset puts every sample in: the one `trainers predict` reads by
#: default.
UNLABELLED_SPLIT = "test"
#: Split names a split file may use for each split, in any letter case.
SPLIT_SPELLINGS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                   "validation": "val", "test": "test", "testing": "test"}
#: Folder names (any letter case) that mean a split, not a class: two or more of them among a
#: source's class folders is a split-folder source misnamed (`valid/`, `Train/`), whose splits
#: would otherwise be built as classes and split again at random.
SPLIT_FOLDER_NAMES = frozenset({*SPLIT_SPELLINGS, "dev", "eval"})


@dataclass(frozen=True)
class FolderOptions:
    """Split options of a class-folder dataset (see the module docstring for the rules)."""

    split_file: Path | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        check_fraction("val_fraction", self.val_fraction)
        check_fraction("test_fraction", self.test_fraction)
        check_seed(self.seed)

    def check_random_split(self) -> None:
        """Both fractions drawn from one pool leave some of it to train. Checked only where
        the manifest draws both: beside a split file or split folders they shape nothing."""
        if self.val_fraction + self.test_fraction >= 1:
            raise ParameterError(f"--val-fraction + --test-fraction must be below 1 (some "
                                 f"train), got {self.val_fraction} + {self.test_fraction}")


#: The official folds of UCF101 and HMDB51.
FOLDS = (1, 2, 3)


@dataclass(frozen=True)
class FoldOptions:
    """Split options of a dataset with official folds (UCF101, HMDB51): which fold, and how much
    of its train list becomes val (how it is carved is the dataset's: by group for UCF101)."""

    fold: int = 1
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fold not in FOLDS:
            raise ParameterError(f"--fold must be 1, 2 or 3, got {self.fold!r}")
        check_fraction("val_fraction", self.val_fraction)
        check_seed(self.seed)


def check_fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ParameterError(f"--{name.replace('_', '-')} must be in [0, 1), got {value!r}")


def read_text(path: Path, what: str) -> str:
    """A split or annotation file's text (UTF-8, a BOM dropped), or one clear error.

    A pipe or a device is refused: read once here, it was read again, empty, for the content
    a store records of a split file (`--split-file <(cat split.csv)` built a store recorded
    as of an empty file, which the real file then could not resume)."""
    try:
        mode = os.stat(path).st_mode  # (before it is opened: a FIFO with no writer blocks)
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise SourceLayoutError(f"{what} {str(path)!r} is not a regular file (a pipe or a "
                                    f"device, which reads once); give a file")
        return path.read_bytes().decode("utf-8-sig")
    except SourceLayoutError:  # (a FileNotFoundError too)
        raise
    except FileNotFoundError:
        raise SourceLayoutError(f"no {what} at {str(path)!r}") from None
    except IsADirectoryError:
        raise SourceLayoutError(f"{what} {str(path)!r} is a folder, not a file") from None
    except OSError as exc:
        raise SourceLayoutError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SourceLayoutError(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start})") \
            from None


def read_csv(path: Path, what: str,
             required: Iterable[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV with a header holding at least the `required` columns (quoted fields, CRLF
    and a BOM are fine), each with the line of the file it starts on, for messages to name;
    a malformed file is one SourceLayoutError naming the line. A blank row is skipped, as the
    csv module skips an empty line: one whose every field is blank, as a spreadsheet exports
    an emptied row (`,,`, spaces), which was refused ("empty path or label", "expected 3
    fields") while an empty line was not."""
    required = tuple(required)
    text = read_text(path, what)
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    lines = re.split(r"\r\n|\r|\n", text)

    def next_row_line(last: int) -> int:
        """The line the row after line `last` starts on: the csv module skips empty lines (a
        spreadsheet's blank rows), so it is not always `last + 1`."""
        while last < len(lines) and not lines[last]:
            last += 1
        return last + 1

    line = 1
    try:
        # a spreadsheet's header: `Path, Label, Split` names the columns `path,label,split`
        reader.fieldnames = columns = [_column_name(c, required) for c in reader.fieldnames or []]
        twice = [c for c, count in Counter(columns).items() if count > 1 and c in required]
        if twice:  # csv.DictReader would take the last of them, silently
            raise SourceLayoutError(f"{what} {str(path)!r} has the column {twice[0]!r} twice "
                                    f"(its header: {','.join(columns)})")
        missing = [c for c in required if c not in columns]
        if missing:
            raise SourceLayoutError(f"{what} {str(path)!r} has no column {missing[0]!r} "
                                    f"(its header: {','.join(columns) or 'none'}; expected "
                                    f"{','.join(required)})")
        rows = []
        line = next_row_line(reader.line_num)
        for row in reader:
            if not any(field.strip() for field in _fields(row)):
                line = next_row_line(reader.line_num)
                continue
            if None in row or any(row.get(c) is None for c in columns):
                raise SourceLayoutError(f"{what} {str(path)!r} line {line}: expected "
                                        f"{len(columns)} fields ({','.join(columns)})")
            rows.append((line, row))
            line = next_row_line(reader.line_num)
    except csv.Error as exc:  # e.g. a quote left open: named by the line its row starts on
        raise SourceLayoutError(f"{what} {str(path)!r} line {line}: {exc}") from None
    return rows


def _fields(row: Mapping[str | None, object]) -> list[str]:
    """Every field of a `csv.DictReader` row: a short row's missing ones are None (left out),
    a long row's extra ones a list under the key None."""
    extra = row.get(None) or []
    return [v for k, v in row.items() if k is not None and isinstance(v, str)] + list(extra)


def _column_name(header: str, required: tuple[str, ...]) -> str:
    """A header cell as the required column it names, whatever its letter case and the spaces
    around it; any other column as it is."""
    cell = header.strip()
    return cell.casefold() if cell.casefold() in required else header


def class_key(name: str) -> str:
    """What makes two class names one class: the same letters, whatever their case or form,
    and the spaces around them (folders `cat` and `cat ` were two classes, shown alike; a
    split file's labels are read without them)."""
    return unicodedata.normalize("NFC", name).strip().casefold()


def check_spellings(classes: Iterable[str], origin: str) -> None:
    """Refuse one class spelled two ways (`Dog` and `dog`, NFC and NFD `é`, `dog ` and `dog`),
    naming them in ASCII escapes where they would look the same."""
    seen: dict[str, str] = {}
    for name in classes:
        other = seen.setdefault(class_key(name), name)
        if other != name:
            alike = unicodedata.normalize("NFC", other) == unicodedata.normalize("NFC", name)
            shown = ascii if alike else repr
            raise SourceLayoutError(f"classes {shown(other)} and {shown(name)} in {origin} "
                                    f"differ only in letter case, Unicode form or spaces around "
                                    f"them; rename one so that they are one class")


#: The folder macOS' Archive Utility adds to a zip for its resource forks (``._name`` files):
#: unzipped elsewhere it sits beside the data, and is never a class, a sample or a dataset folder.
MACOS_ARCHIVE_FOLDER = "__MACOSX"
#: Folders that systems and NAS boxes write into the folders they serve, never anyone's data:
#: `MACOS_ARCHIVE_FOLDER`; Synology's thumbnails (``@eaDir/<image>/SYNOPHOTO_THUMB_*.jpg`` beside
#: every image: ten images were built as sixty samples, thumbnails of train images in test) and
#: recycle bin; Windows' recycle bin and volume information; ext4's ``lost+found``.
SYSTEM_FOLDERS = frozenset({MACOS_ARCHIVE_FOLDER, "@eaDir", "#recycle", "$RECYCLE.BIN",
                            "System Volume Information", "lost+found"})


def skipped(name: str) -> bool:
    """Whether a file or folder of a source is none of its data: hidden (``.DS_Store``, a
    macOS ``._clip.avi``), or a system's folder (`SYSTEM_FOLDERS`)."""
    return name.startswith(".") or name in SYSTEM_FOLDERS


def holds_a_store(path: Path) -> bool:
    """Whether `path` is a Zarr store's folder (`zarr.json` in it), none of a source's data: a
    store built inside its own source (`--source vf --store vf/features.zarr`) read as a class
    folder without samples, and every later build of it (a resume, a repair) was refused."""
    return (path / "zarr.json").is_file()


#: What a listed entry is to `MediaFiles.sample_files` (`_kind`).
FOLDER, FILE, OTHER = "folder", "file", "other"


def _kind(entry: os.DirEntry) -> str:
    """A listed entry as `MediaFiles.sample_files` takes it: a folder (or a link to one), a
    file (a link to one, and an entry that names none: a broken link or a symlink loop, whose
    sample then fails saying so), or another thing (a FIFO, a socket, a device), which no
    listing took for a sample."""
    try:
        if entry.is_dir():
            return FOLDER
        if entry.is_file():
            return FILE
    except OSError:  # (a symlink loop)
        return FILE
    return OTHER if os.path.exists(entry.path) else FILE


def _within(path: str, folder: str) -> bool:
    """Whether the real path `path` is `folder` or inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _followed(entry: os.DirEntry, parent: str, trees: tuple[str, ...],
              visited: set[str]) -> str | None:
    """The real path of a sub-folder `MediaFiles.sample_files` lists (`parent`: the real path
    of the folder it is in), or None for one it skips: a folder already listed (two links to
    one folder), and a link into one of `trees` (the folder listed, and the whole source: a
    class folder's link to another class, or train/'s to test/, made its clips samples of both)
    or to a folder above one (`loop -> .`, `up -> ..`: listed forever). Without links to
    folders nothing is skipped, so a source's listing, and the manifest of a store built from
    it, is what it was before links were followed."""
    if entry.is_symlink():
        target = os.path.realpath(entry.path)
        if any(_within(target, tree) or _within(tree, target) for tree in trees):
            return None
    else:
        target = os.path.join(parent, entry.name)
    return None if target in visited else target


def _check_one_folder_each(folders: Sequence[Path]) -> None:
    """Refuse class folders of which one is another, or inside another, through a link (a
    class `zeta -> vélo`, `test -> train`, `test/walk -> ../train/walk`): the same clips were
    samples of two classes, or of train and test, without a word. By the folders' real paths
    as tuples of parts, sorted: a folder's contents come right after it."""
    real = sorted((tuple(os.path.realpath(folder).split(os.sep)), folder) for folder in folders)
    for (outer, first), (inner, second) in zip(real, real[1:]):
        if inner[:len(outer)] == outer:
            raise SourceLayoutError(
                f"class folders {str(first)!r} and {str(second)!r} are one folder, or one "
                f"holds the other (through a link): their files would be "
                f"samples of both; remove the link, or copy the folder")


def _check_one_class_each(listed: Sequence[tuple[str, Sequence[str], Sequence[str]]]) -> None:
    """Refuse a file that two class folders list, through a link: one folder outside the
    source linked into two classes (`cat/extra -> /data/extra`, `dog/extra -> /data/extra`),
    or a file linked into another class, was a sample of both, most of them in the same split,
    where the warning of byte-identical files across splits never names them. `listed`: each
    class folder's path under the source, its files (paths under the source) and their real
    paths. A file listed twice by one class folder is a duplicate sample of one class, which
    that warning names where the two fall into different splits."""
    reached: dict[str, tuple[str, str]] = {}  # real path -> (class folder, file)
    for folder, files, reals in listed:
        for file, real in zip(files, reals):
            owner, first = reached.setdefault(real, (folder, file))
            if owner != folder:
                raise SourceLayoutError(
                    f"{as_text(first)!r} and {as_text(file)!r} are one file (through a link) "
                    f"in two class folders, {as_text(owner)!r} and {as_text(folder)!r}: it "
                    f"would be a sample of both; remove the link, or copy the file")


class MediaFiles(Dataset):
    """A dataset whose samples are the media files of a folder tree, named by their paths:
    `sample_files` lists them, `sample_ids` names them. Subclasses set the suffixes."""

    #: Lower-case suffixes of the files that are samples; any other file is skipped.
    suffixes: ClassVar[tuple[str, ...]]
    #: What a sample is, in messages ("video", "image").
    what: ClassVar[str]

    def sample_files(self, folder: Path, source: Path | None = None) -> list[str]:
        """The sample files under `folder`, as '/'-separated paths relative to it, in the order
        of their parts (`listed_files` without their real paths)."""
        return [relative for relative, _ in self.listed_files(folder, source)]

    def listed_files(self, folder: Path, source: Path | None = None) -> list[tuple[str, str]]:
        """The sample files under `folder`, each as its '/'-separated path relative to it and
        its real path, in the order of their parts: every entry with a media suffix that is
        not a folder, in `folder` or in its sub-folders, hidden files and folders and system
        folders (`SYSTEM_FOLDERS`) skipped (`skipped`).

        An entry named like a sample is one even where it cannot be read (a broken link, a
        symlink loop): its extraction fails with the reason, as a listed clip of TV-HI does;
        dropped, it went unnoticed, and a loop's `is_file` raised and refused the whole source.
        Links to folders are followed, as a link as a class folder is ("every clip in any
        sub-folders": `cam2 -> /mnt/disk2/cam2`), except where that would list a folder twice
        or forever, or into `source` (the source `folder` is part of, where it is not all of
        it): `_followed`. A FIFO, socket or device named like a sample is none (`_kind`).
        `os.scandir` strings, not pathlib objects: on 100,000 files those were most of the CPU
        and memory of a resumed build's planning (build_scale.py). A real path costs a call
        only for a link to a file; any other file's is its folder's, known, and its name."""
        found: list[tuple[str, str]] = []
        root = os.path.realpath(folder)
        trees = (root,) if source is None else (root, os.path.realpath(source))
        visited = {root}  # real paths of the folders listed or to be listed
        pending = [("", os.fspath(folder), root)]
        while pending:
            prefix, path, real = pending.pop()
            folders = []
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        if skipped(entry.name):
                            continue
                        kind = _kind(entry)
                        if kind == FOLDER:
                            folders.append(entry)
                        elif (kind == FILE
                              and os.path.splitext(entry.name)[1].lower() in self.suffixes):
                            found.append((prefix + entry.name,
                                          os.path.realpath(entry.path) if entry.is_symlink()
                                          else os.path.join(real, entry.name)))
            except PermissionError:  # an unreadable sub-folder holds no samples (as rglob)
                continue
            # in name order, so that which of two links to one folder lists it does not
            # depend on the order the file system lists them in
            below = []
            for entry in sorted(folders, key=lambda e: e.name):
                target = _followed(entry, real, trees, visited)
                if target is not None:
                    visited.add(target)
                    below.append((f"{prefix}{entry.name}/", entry.path, target))
            pending.extend(reversed(below))
        return sorted(found, key=lambda listed: listed[0].split("/"))

    def sample_ids(self, relative: list[str]) -> list[str]:
        """Sample ids of files (paths under the source): the path without its suffix, or with
        it where two files differ only in suffix (`a.mp4`, `a.avi`), as text (`as_text`: the
        file is still read by its real name). Remembers each id's file (`source_file`)."""
        stems = [os.path.splitext(path)[0] for path in relative]
        shared = Counter(stems)  # (a count per stem: `stems.count` made this quadratic)
        # unique, as paths are, unless two names differ only in bytes that are not UTF-8
        whole = [as_text(path) for path in relative]
        ids = [path if shared[stem] > 1 else as_text(stem)
               for path, stem in zip(whole, stems)]
        # A kept suffix can still be another file's stem (`a.mp4` beside `a.avi` keeps its
        # suffix, and `a.mp4.avi`'s stem is `a.mp4`): one sample built twice, the other never.
        # Whatever meets another id takes its whole path, until none does.
        while True:
            counts = Counter(ids)
            clashing = [k for k, i in enumerate(ids) if counts[i] > 1 and i != whole[k]]
            if not clashing:
                break
            for k in clashing:
                ids[k] = whole[k]
        twice = next((i for i, count in counts.items() if count > 1), None)
        if twice is not None:  # two names that differ only where one is not UTF-8 (`as_text`)
            first, second = [relative[k] for k, i in enumerate(ids) if i == twice][:2]
            raise SourceLayoutError(f"{ascii(first)} and {ascii(second)} would be one sample, "
                                    f"{twice!r}; rename one of the files")
        self.sample_paths.update(zip(ids, relative))
        return ids


class Unlabelled(MediaFiles):
    """A folder tree of media files of no class, to predict with a trained run (`clips`,
    `images`): every file with a media suffix, in any sub-folder, is a sample of the split
    `UNLABELLED_SPLIT` and the label `NO_CLASS`, in a store of no classes."""

    def manifest(self, source: Path) -> Manifest:
        self.check_source_folder(source)
        files = self.sample_files(source)
        if not files:
            raise SourceLayoutError(f"no {self.item_noun}s in {str(source)!r} or its "
                                    f"sub-folders (files ending in {' '.join(self.suffixes)})")
        ids = self.sample_ids(files)
        return Manifest((), ids, [NO_CLASS] * len(ids), [UNLABELLED_SPLIT] * len(ids))


class ClassFolders(MediaFiles):
    """A dataset read from class folders (module docstring); subclasses set the suffixes."""

    options_type = FolderOptions

    def manifest(self, source: Path) -> Manifest:
        self.check_source_folder(source)
        options: FolderOptions = self.options
        scanned: list[Path] = []  # the class folders `_scan` lists (`_check_one_folder_each`)
        reached: list[tuple[str, list[str], list[str]]] = []  # (`_check_one_class_each`)
        drawn = frozenset({"val_fraction", "test_fraction", "seed"})  # (rule 3's options)
        self.unused_options = frozenset()
        if options.split_file is not None:
            by_split = self._from_split_file(source, options.split_file)
            self.unused_options = drawn
        elif (source / "train").is_dir() and all(
                p.name in SPLITS for p in source.iterdir()
                if p.is_dir() and not skipped(p.name) and not holds_a_store(p)):
            if not (source / "test").is_dir():  # (train/ val/, as many downloads ship)
                raise SourceLayoutError(
                    f"split folders in {str(source)!r} but no test/: a source of split folders "
                    f"holds train/, test/ and optionally val/, and a store without a test split "
                    f"has nothing to report accuracy on; name the held-out folder test/ (val is "
                    f"then carved from train/), or use --split-file")
            by_split = {split: self._scan(source / split, source, f"{split}/", scanned,
                                           reached)
                        for split in SPLITS if (source / split).is_dir()}
            if "val" not in by_split:
                by_split = self._carve(by_split["train"], options.val_fraction, by_split)
                self.unused_options = frozenset({"test_fraction"})
            else:
                self.unused_options = drawn
        else:
            options.check_random_split()
            pool = self._scan(source, source, "", scanned, reached)
            test = stratified_holdout(pool, options.test_fraction, options.seed)
            rest = {c: [i for i in ids if i not in test] for c, ids in pool.items()}
            share = options.val_fraction / (1 - options.test_fraction)
            by_split = self._carve(rest, share, {"test": {
                c: [i for i in ids if i in test] for c, ids in pool.items()}})
        _check_one_folder_each(scanned)
        _check_one_class_each(reached)
        classes = sorted({c for per_class in by_split.values() for c in per_class})
        check_spellings(classes, repr(str(options.split_file or source)))
        if len(classes) < 2:  # nothing to classify: most often a --source one level too high
            where = (f"the split file {str(options.split_file)!r} names"
                     if options.split_file is not None else f"{str(source)!r} holds")
            hint = ("" if options.split_file is not None else
                    "; is --source one level too high, at a folder whose only subfolder holds "
                    "the class folders?")
            raise SourceLayoutError(f"{where} {len(classes)} class(es) "
                                    f"({', '.join(map(repr, classes))}): a classification "
                                    f"source needs two or more{hint}")
        return assemble_manifest(classes, by_split)

    def _carve(self, pool: Mapping[str, list[str]], fraction: float,
               by_split: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
        """`by_split` with train and val drawn from `pool` (stratified, --seed)."""
        manifest = build_manifest(sorted(pool), pool, {}, val_fraction=fraction,
                                  seed=self.options.seed)
        out = dict(by_split)
        for split in ("train", "val"):
            out[split] = {c: [] for c in pool}
            for row in manifest.rows:
                if row.split == split:
                    out[split][row.class_name].append(row.id)
        return out

    def _scan(self, root: Path, source: Path, where: str, scanned: list[Path],
              reached: list[tuple[str, list[str], list[str]]]) -> dict[str, list[str]]:
        """{class: [sample id]} of the class folders in `root`; remembers each id's file, and
        adds the class folders to `scanned` (for `_check_one_folder_each`) and their files to
        `reached` (for `_check_one_class_each`)."""
        try:
            entries = [p for p in root.iterdir() if not skipped(p.name) and not holds_a_store(p)]
        except OSError as exc:
            raise SourceLayoutError(f"cannot list {str(root)!r}: {exc.strerror}") from None
        folders = sorted(p for p in entries if p.is_dir())
        if not folders:
            raise SourceLayoutError(
                f"no class folders in {str(root)!r}: expected {where}<class>/<{self.what}> with "
                f"{self.what}s ending in {' '.join(self.suffixes)}")
        loose = sorted(p.name for p in entries if p.is_file()
                       and p.suffix.lower() in self.suffixes)
        if loose:  # skipped, they were samples of no class: a --source one level too deep
            raise SourceLayoutError(
                f"{len(loose)} {self.what}(s) directly in {str(root)!r}, outside any class "
                f"folder (e.g. {as_text(loose[0])!r}): expected {where}<class>/<{self.what}>; "
                f"is --source one level too deep, inside a class folder?")
        split_like = [p.name for p in folders if p.name.casefold() in SPLIT_FOLDER_NAMES]
        if not where and len(split_like) >= 2:  # not read as splits: they would be classes
            names = [p.name for p in folders]
            why = (["no train/ folder"] if "train" not in names else []) + [
                f"{name!r} beside them" for name in names if name not in SPLITS]
            raise SourceLayoutError(
                f"class folders {', '.join(repr(n) for n in split_like)} in {str(root)!r} look "
                f"like split folders, not read as such ({'; '.join(why)}): a source of split "
                f"folders holds train/, test/ and optionally val/, so named, and nothing "
                f"else; rename them, or use --split-file")
        check_spellings([as_text(p.name) for p in folders], repr(str(root)))
        scanned.extend(folders)
        found: dict[str, list[str]] = {}
        for folder in folders:
            listed = self.listed_files(folder, source)
            if not listed:
                raise SourceLayoutError(
                    f"class folder {str(folder)!r} holds no {self.what} (files ending in "
                    f"{' '.join(self.suffixes)}); remove it or add its {self.what}s")
            under = folder.relative_to(source).as_posix()
            files = [f"{under}/{name}" for name, _ in listed]
            reached.append((under, files, [real for _, real in listed]))
            found[as_text(folder.name)] = self.sample_ids(files)
        return found

    def _from_split_file(self, source: Path, split_file: Path) -> dict[str, dict[str, list[str]]]:
        """{split: {class: [sample id]}} of a split file's rows; remembers each id's file. The
        ids are folder mode's (`sample_ids`): a rule of its own gave `a/x` to whichever of
        `a/x.mp4` and `a/x.avi` came first, so one id named another file as rows were sorted."""
        what = "split file"
        rows = read_csv(split_file, what, SPLIT_FILE_COLUMNS)
        if not rows:
            raise SourceLayoutError(f"{what} {str(split_file)!r} lists no {self.what}s")
        listed: dict[str, int] = {}  # path: its line
        where_of: list[tuple[str, str]] = []  # (split, label) of each path listed
        for number, row in rows:
            path, label, written = row["path"].strip(), row["label"].strip(), row["split"].strip()
            split = SPLIT_SPELLINGS.get(written.casefold(), written)
            where = f"{what} {str(split_file)!r} line {number}"
            relative = PurePosixPath(path.replace("\\", "/"))
            if not path or not label:
                raise SourceLayoutError(f"{where}: empty path or label")
            if relative.is_absolute() or ".." in relative.parts:
                raise SourceLayoutError(f"{where}: path {path!r} is not inside the source folder")
            if not relative.name:
                raise SourceLayoutError(f"{where}: path {path!r} names no file")
            if split not in SPLITS:
                raise SourceLayoutError(f"{where}: split {written!r} is not one of "
                                        f"{', '.join(SPLITS)} (or training, validation, valid, "
                                        f"testing, in any letter case)")
            if str(relative) in listed:
                raise SourceLayoutError(f"{where}: {path!r} is listed twice")
            listed[str(relative)] = number
            where_of.append((split, label))
        # Checked before `sample_ids` remembers the files: a refused file leaves none behind.
        self._check_listed_files(source, split_file, listed)
        by_split: dict[str, dict[str, list[str]]] = {}
        for sample_id, (split, label) in zip(self.sample_ids(list(listed)), where_of):
            by_split.setdefault(split, {}).setdefault(label, []).append(sample_id)
        return by_split

    def _check_listed_files(self, source: Path, split_file: Path,
                            lines: Mapping[str, int]) -> None:
        """Refuse a split file whose paths are written otherwise than as files under SOURCE,
        which failed every sample alike ("image file is missing: img3") and, once built,
        could only be rebuilt: a path without its file's suffix (`cat/img3` for
        `cat/img3.jpeg`), or paths none of which is under SOURCE (written from another folder).
        One missing file among others stays that sample's failure (a clip not downloaded).
        `lines`: each listed path (as written, `/`-separated) and the line it is on."""
        # A systematic mistake shows in the first rows: a stat of each of them, not of every row
        # of a 300,000-row file (each file is looked at again when its sample is extracted).
        first = list(itertools.islice(lines, 20))
        missing = [path for path in first if not os.path.lexists(source / path)]
        for path in missing[:5]:
            near = sorted(p.name for p in (source / path).parent.glob(
                f"{glob.escape((source / path).name)}.*") if p.suffix.lower() in self.suffixes)
            if near:
                raise SourceLayoutError(
                    f"split file {str(split_file)!r} line {lines[path]}: {path!r} is not in "
                    f"{str(source)!r}, {near[0]!r} is beside it: a path names its file, suffix "
                    f"included")
        if missing and len(missing) == len(first) and not any(
                os.path.lexists(source / path) for path in list(lines)[len(first):]):
            raise SourceLayoutError(
                f"none of the {len(lines)} files split file {str(split_file)!r} lists is in "
                f"{str(source)!r} (e.g. {str(source / missing[0])!r}): its paths are "
                f"relative to --source")
