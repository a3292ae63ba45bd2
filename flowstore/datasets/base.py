"""What every dataset module provides, and the registry that finds datasets by name.

Adding a dataset is one module with one `Dataset` subclass that sets `name`: it registers
itself, and `flowstore build NAME` finds it. Its split options (fold, fractions, seed, split
file) are one frozen dataclass, `options_type`, validated in its `__post_init__`: the command
line takes them as `--NAME VALUE` after the dataset name (`parse_option_tokens`, typed from the
dataclass's annotations), the fingerprint covers them (a file by its content), and the store
records them. A synthetic source in the real layout is the dataset's `synth_config_type` and
`write_synthetic`, which `flowstore synth NAME` and `build --synthetic` find the same way.
"""

from __future__ import annotations

import abc
import collections.abc
import dataclasses
import difflib
import inspect
import os
import re
import stat
import sys
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from flowstore.console import some_named
from flowstore.errors import ParameterError, SourceLayoutError, UnknownDatasetError
from flowstore.extraction.sampling import frame_count
from flowstore.manifest import SPLITS, Manifest
from flowstore.params import ImageParams, VideoParams
from flowstore.store.base import ArraySpec

_REGISTRY: dict[str, type["Dataset"]] = {}
#: What a dataset's name may be: a word on the command line, a store's `dataset` attribute,
#: and the start of its synthetic source's cache folder (`flowstore.synth`'s `_OURS`).
DATASET_NAME = "[a-z0-9_]+"


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a dataset whose split has none (its official split is fixed)."""


class Dataset(abc.ABC):
    """One dataset: its source layout, classes, official split and per-sample extraction."""

    #: Name used on the command line and in the store's `dataset` attribute.
    name: ClassVar[str]
    #: The frozen parameter dataclass of this dataset's samples.
    params_type: ClassVar[type]
    #: The frozen, self-validating dataclass of this dataset's split options.
    options_type: ClassVar[type] = NoOptions
    #: The frozen settings of its synthetic source, or None when it has none here (see
    #: `write_synthetic`).
    synth_config_type: ClassVar[type | None] = None
    #: What one sample's source file is, as messages name it.
    item_noun: ClassVar[str] = "file"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if not re.fullmatch(DATASET_NAME, cls.name):
                # (the synthetic cache knows its folders by `<name>-<hash>`: one of another
                # name was never pruned; found by review)
                raise TypeError(f"dataset name {cls.name!r} of {cls.__module__}.{cls.__qualname__} "
                                f"is not lower-case letters, digits and '_'")
            other = _REGISTRY.get(cls.name)
            if other is not None and (other.__module__, other.__qualname__) != (
                    cls.__module__, cls.__qualname__):
                raise TypeError(f"dataset name {cls.name!r} is taken by "
                                f"{other.__module__}.{other.__qualname__}; "
                                f"{cls.__module__}.{cls.__qualname__} needs another")
            _REGISTRY[cls.name] = cls

    #: The split options the last `manifest` did not read: a split file gives every sample
    #: its split, so the fractions and seed beside it shape nothing (`options_in_effect`).
    unused_options: frozenset[str] = frozenset()
    #: The options as an existing store recorded them, where they differ from
    #: `recorded_options` only in unused ones (`keep_store_options`).
    store_options: dict[str, Any] | None = None

    def __init__(self, options: Any = None) -> None:
        self.options = self.options_type() if options is None else options
        #: Sample id -> its file relative to the source, for datasets whose ids do not say
        #: where their file is (filled by `manifest`; see `source_file`).
        self.sample_paths = SamplePaths()

    @abc.abstractmethod
    def manifest(self, source: Path) -> Manifest:
        """The split manifest for a source folder (raises SourceLayoutError on a wrong layout)."""

    def source_file(self, source: Path, sample_id: str) -> Path:
        """The file a sample is extracted from: by default where `manifest` found it."""
        return source / self.sample_paths[sample_id]

    def recorded_options(self) -> dict[str, Any]:
        """The split options as the store records them and the fingerprint hashes them: a file
        option (a split file) by its content, never its path (the same data elsewhere is the
        same store)."""
        from flowstore.store.checksum import file_digest

        if self.store_options is not None:
            return dict(self.store_options)
        values = self.options_in_effect(dataclasses.asdict(self.options))
        for key, value in values.items():
            if isinstance(value, Path):
                try:
                    values[key] = file_digest(value)
                except OSError as exc:
                    raise SourceLayoutError(f"cannot read --{_flag(key)} {str(value)!r}: "
                                            f"{exc.strerror}") from None
        return values

    def options_in_effect(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Split options by name (asked, or as a store recorded them) with those the manifest
        did not use (`unused_options`) at their defaults: what the store records, the
        fingerprint hashes and a resume compares. An unused option given (`--val-fraction`
        beside `--split-file`) cannot change the manifest, so it neither refuses a resume nor
        makes another fingerprint. Nor does `--seed` where every fraction in use is 0
        (`--val-fraction 0` of UCF101, HMDB51 or Kinetics): it draws nothing."""
        unused = self.unused_in(values)
        if not unused:
            return dict(values)
        defaults = {field.name: field.default for field in dataclasses.fields(self.options_type)}
        return {**values, **{name: defaults[name] for name in unused}}

    def unused_in(self, values: Mapping[str, Any]) -> set[str]:
        """The split options `values` (by name) leave unused (`options_in_effect`): the
        manifest's `unused_options`, and `seed` where every fraction in use is 0."""
        unused = set(self.unused_options)
        fractions = [name for name in values if name.endswith("_fraction") and name not in unused]
        if "seed" in values and fractions and all(values[name] == 0 for name in fractions):
            unused.add("seed")
        return unused

    def keep_store_options(self, recorded: Mapping[str, Any]) -> None:
        """Record and hash the split options as the store being resumed recorded them, which
        are this build's in effect (`options_in_effect`) but name an unused one at another
        value (a store made before unused options were recorded at their defaults): rewritten,
        its fingerprint changed on a resume that changed nothing, and the runs trained on it
        no longer matched it."""
        self.store_options = dict(recorded)

    def option_paths(self) -> dict[str, str]:
        """The file options as given (recorded beside the store, so `verify --repair` can read
        them again; not in the fingerprint)."""
        return {key: str(value.resolve()) for key, value in dataclasses.asdict(self.options).items()
                if isinstance(value, Path)}

    def write_synthetic(self, folder: Path, config: Any) -> Path:
        """Write a small synthetic source in the real layout into `folder` (new or empty)."""
        raise UnknownDatasetError(f"no synthetic source for dataset {self.name!r}")

    def source_files(self, source: Path, manifest: Manifest) -> "SourceSizes":
        """Names and sizes (None when missing) of every file the store's content depends on.

        Plain `os` calls on strings: for a 250,000-clip Kinetics list, pathlib objects were
        most of the planning time (benchmarks/plan_scale.py).
        """
        root = os.fspath(source)
        sizes = np.full(len(manifest), SourceSizes.MISSING, dtype=np.int64)
        for index, sample in enumerate(manifest.ids):
            try:
                info = os.stat(os.path.join(root, self.source_name(sample)))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                sizes[index] = info.st_size
        return SourceSizes(lambda index: self.source_name(manifest.ids[index]), sizes)

    def check_some_present(self, source: Path, manifest: Manifest,
                           sizes: "SourceSizes | None" = None) -> None:
        """Refuse a source that holds none of the files its split lists: a copy laid out
        otherwise than the dataset's layout (Kinetics split folders named otherwise, an empty
        clip folder) would otherwise make a store of nothing but "file is missing" failures,
        each naming only its file. Some missing is normal (a Kinetics copy misses 5-10%) and
        builds; none present is a wrong --source.
        `sizes`: the build's listing of the source (`source_files`), not listed again."""
        if not len(manifest):
            return
        if sizes is not None:
            present = bool((sizes.sizes != SourceSizes.MISSING).any())
        else:
            present = any(self.source_file(source, sample).is_file() for sample in manifest.ids)
        if not present:
            raise SourceLayoutError(
                f"none of the {len(manifest)} {self.item_noun}s its split lists is in "
                f"{str(source)!r} (expected e.g. "
                f"{str(self.source_file(source, manifest.ids[0]))!r}): --source is not laid "
                f"out as `flowstore datasets {self.name}` describes")

    def absent_folders(self, source: Path, manifest: Manifest, sizes: "SourceSizes") -> list[str]:
        """Lines naming the folders the split lists put files in that are not in the source,
        though other files are: one for each split none of whose files, nor any of their
        folders, is there (Kinetics' ``val/`` named ``validation/``, or not copied), and one for
        the other absent folders (a Kinetics label folder spelt otherwise, a UCF101 class not
        copied). Their files fail as missing, each named by its file alone, so without these
        lines a folder named otherwise looked like clips the copy lacks. Told, not refused: a
        copy of one split alone (Kinetics' val, to score a trained model) builds, its other
        splits failing as missing; a folder that is there with every file missing is a copy
        missing clips, told by its failures alone."""
        missing = sizes.sizes == SourceSizes.MISSING
        if missing.all():  # (`check_some_present` refuses that source)
            return []
        folder_of = {row: os.path.dirname(self.source_name(manifest.ids[row]))
                     for row in np.flatnonzero(missing)}
        absent = {folder for folder in set(folder_of.values())
                  if not os.path.isdir(os.path.join(source, folder))}
        lines, told = [], set()
        for code, split in enumerate(SPLITS):
            rows = np.flatnonzero(manifest.split_codes == code)
            if not len(rows) or not missing[rows].all():
                continue
            folders = {folder_of[row] for row in rows}
            if folders <= absent:
                told |= folders
                example = self.source_file(source, manifest.ids[rows[0]])
                lines.append(f"none of the {len(rows)} {self.item_noun}s of the {split} split is "
                             f"in {str(source)!r}, nor any folder they lie in (expected e.g. "
                             f"{str(example)!r}): a folder named otherwise, or not copied?")
        untold = absent - told
        if untold:
            others = sorted(untold)
            count = sum(folder in untold for folder in folder_of.values())
            lines.append(f"{len(others)} folder(s) the split lists name are not in "
                         f"{str(source)!r}: {some_named(others)} ({count} "
                         f"{self.item_noun}s in all, failing as missing): named otherwise, or "
                         f"not copied?")
        return lines

    def source_name(self, sample_id: str) -> str:
        """A sample's file relative to the source: how the fingerprint and the store's recorded
        sizes and hashes name it."""
        if sample_id in self.sample_paths:
            return self.sample_paths[sample_id]
        return str(self.source_file(Path("."), sample_id))

    @abc.abstractmethod
    def specs(self, params: Any) -> list[ArraySpec]:
        """The per-sample arrays this dataset writes."""

    @abc.abstractmethod
    def extract(self, path: Path, params: Any) -> dict[str, np.ndarray]:
        """Arrays of one sample, keyed like `specs` (raises SampleError on bad input)."""

    @staticmethod
    def check_source_folder(source: Path) -> None:
        """A source must be an existing, non-empty folder."""
        if not source.exists():
            raise SourceLayoutError(f"source folder does not exist: {str(source)!r}")
        if not source.is_dir():
            raise SourceLayoutError(f"source is not a folder: {str(source)!r}")
        if not any(source.iterdir()):
            raise SourceLayoutError(f"source folder is empty: {str(source)!r}")


class VideoDataset(Dataset):
    """A dataset of clips: each sample is the TV-HI extraction (middle frame, frames, flow)."""

    params_type = VideoParams
    item_noun = "clip"

    def specs(self, params: VideoParams) -> list[ArraySpec]:
        s, t = params.size, params.steps
        return [
            ArraySpec("middle_frame", (s, s, 3), "uint8"),
            ArraySpec("frames", (frame_count(params), s, s, 3), "uint8"),
            ArraySpec("flow", (t, s, s, 2), params.flow_dtype,
                      codec="zstd" if params.flow_dtype == "uint8" else "shuffled-lz4"),
        ]

    def extract(self, path: Path, params: VideoParams) -> dict[str, np.ndarray]:
        from flowstore.extraction.video import extract_video  # keeps cv2 out of plain imports

        features = extract_video(path, params)
        return {"middle_frame": features.middle_frame, "frames": features.frames,
                "flow": features.flow}


class ImageDataset(Dataset):
    """A dataset of still images: each sample is the Stanford-40 extraction (`image`)."""

    params_type = ImageParams
    item_noun = "image"

    def specs(self, params: ImageParams) -> list[ArraySpec]:
        return [ArraySpec("image", (params.size, params.size, 3), "uint8")]

    def extract(self, path: Path, params: ImageParams) -> dict[str, np.ndarray]:
        from flowstore.extraction.image import extract_image  # keeps cv2 out of plain imports

        return {"image": extract_image(path, params)}


def dataset_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def dataset_type(name: str) -> type[Dataset]:
    """The registered dataset class called `name`; an unknown name lists the known ones."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {known}") from None


def get_dataset(name: str, options: Mapping[str, Any] | None = None) -> Dataset:
    """The registered dataset called `name`, with its split options (`make_options`)."""
    kind = dataset_type(name)
    return kind(make_options(kind.options_type, options or {}, f"dataset {name!r}"))


def describe_dataset(name: str) -> str:
    """What `flowstore datasets NAME` prints: the dataset's module docstring (its source layout,
    splits and the quirks of its real files) and its own options with their defaults, which
    `flowstore build NAME --help` cannot show (they follow the dataset's name)."""
    kind = dataset_type(name)
    about = inspect.getdoc(sys.modules[kind.__module__]) or inspect.getdoc(kind) or ""
    # (the docstrings are reST: ``x`` quotes a literal, "::" ends the line before a literal
    # block; printed, they take the rest of the CLI's plain text: `x`, ":")
    about = re.sub(r"::$", ":", about.replace("``", "`"), flags=re.MULTILINE)
    lines = [f"{name}: {about}", ""]
    options = dataclasses.fields(kind.options_type)
    if not options:
        lines.append("Options: none of its own.")
    else:
        lines.append("Options (after the dataset name, `--name value` or `--name=value`):")
        lines += [f"  --{_flag(f.name)}  (default: "
                  f"{'none' if f.default is None else f.default})" for f in options]
    return "\n".join(lines)


def option_names(kind: type) -> list[str]:
    """The command-line spelling of each field of an options dataclass (`--val-fraction`)."""
    return ["--" + _flag(f.name) for f in dataclasses.fields(kind)]


def make_options(kind: type, values: Mapping[str, Any], owner: str) -> Any:
    """An options dataclass from `values`, each string converted to its field's annotated type
    (int, float, str, Path, or one of them or None); its `__post_init__` validates the rest.

    Raises:
        ParameterError: a name the dataclass lacks, or a value of the wrong kind.
    """
    hints = typing.get_type_hints(kind)
    converted = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        _require_option(kind, name, owner)
        converted[name] = _convert(hints[name], value, name)
    return kind(**converted)


def _require_option(kind: type, name: str, owner: str, also: Sequence[str] = (),
                    others: Mapping[str, str] | None = None) -> None:
    """Refuse `--name` unless it is a field of the options dataclass `kind`, suggesting the
    nearest of its options and `also` (the command's own flags: a mistyped `--overwrit` of
    `build` reaches the dataset as an unknown option); a flag of another command (`others`:
    flag -> "that command, not of this one", `--scheduler` given to `estimate`) is said to be
    that one's."""
    name = name.replace("-", "_")
    if name in {f.name for f in dataclasses.fields(kind)}:
        return
    known = option_names(kind)
    flag = "--" + _flag(name)
    if others and flag in others:
        raise ParameterError(f"{flag} is an option of {others[flag]}")
    # Another dataset's option (--fold on tvhi) is no typo: suggest nothing for it.
    elsewhere = {other for dataset in dataset_names()
                 for other in option_names(dataset_type(dataset).options_type)}
    nearest = ([] if flag in elsewhere
               else difflib.get_close_matches(flag, [*known, *also], n=1, cutoff=0.75))
    hint = f"; did you mean {nearest[0]}?" if nearest else ""
    raise ParameterError(f"--{_flag(name)} is not an option of {owner} (its options: "
                         f"{', '.join(known) or 'none'}){hint}")


def parse_option_tokens(tokens: Sequence[str], kind: type | None = None, owner: str = "", *,
                        also: Sequence[str] = (),
                        others: Mapping[str, str] | None = None) -> dict[str, str]:
    """`--name VALUE` and `--name=VALUE` pairs (what the command line leaves to the dataset).

    With `kind`, the options dataclass the pairs are for, a name it lacks is refused before
    its value is looked for (`_require_option`): "--overwrit needs a value" would send the user
    of a mistyped flag looking in the wrong place.
    """
    values: dict[str, str] = {}
    items = list(tokens)
    while items:
        token = items.pop(0)
        if not token.startswith("--") or token == "--":
            raise ParameterError(f"unexpected argument {token!r}")
        name, equals, value = token[2:].partition("=")
        if kind is not None:
            _require_option(kind, name, owner, also, others)
        if not equals:
            if not items or items[0].startswith("--"):
                raise ParameterError(f"option --{name} needs a value")
            value = items.pop(0)
        values[name.replace("-", "_")] = value
    return values


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _convert(hint: Any, value: Any, name: str) -> Any:
    """`value` as type `hint`; strings from the command line are parsed, others checked."""
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    kind = kinds[0]
    if value is None or not isinstance(value, str) or kind is str:
        return value
    if kind is Path:
        if not value:  # (`Path("")` is the current folder: "split file '.' is a folder")
            raise ParameterError(f"--{_flag(name)}: an empty path (an unset shell variable?)")
        return Path(value)
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ParameterError(f"--{_flag(name)} must be {what}, got {value!r}") from None


def _load_builtin() -> None:
    import flowstore.datasets  # noqa: F401  (importing the package registers the built-ins)


class SamplePaths(collections.abc.MutableMapping):
    """Sample id -> its file relative to the source, for datasets whose ids do not say where
    their file is.

    Held as the id and a shared (prefix, suffix) where the path is prefix + id + suffix
    ("walk/" + "walk_0001" + ".avi", the usual case), else whole: a path string per sample
    was 73 bytes of a 100,000-clip build's memory for its whole length
    (benchmarks/build_scale.py). A path is made again each time it is read.
    """

    def __init__(self) -> None:
        self._shape_of: dict[str, int] = {}
        self._shapes: list[tuple[str, str]] = []
        self._shape_numbers: dict[tuple[str, str], int] = {}
        self._whole: dict[str, str] = {}

    def __setitem__(self, sample_id: str, path: str) -> None:
        self._shape_of.pop(sample_id, None)
        self._whole.pop(sample_id, None)
        at = path.find(sample_id) if sample_id else -1
        if at < 0:
            self._whole[sample_id] = path
            return
        shape = (path[:at], path[at + len(sample_id):])
        number = self._shape_numbers.get(shape)
        if number is None:
            number = self._shape_numbers[shape] = len(self._shapes)
            self._shapes.append(shape)
        self._shape_of[sample_id] = number

    def __getitem__(self, sample_id: str) -> str:
        number = self._shape_of.get(sample_id)
        if number is None:
            return self._whole[sample_id]
        prefix, suffix = self._shapes[number]
        return prefix + sample_id + suffix

    def __delitem__(self, sample_id: str) -> None:
        if self._shape_of.pop(sample_id, None) is None:
            del self._whole[sample_id]

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._shape_of or sample_id in self._whole

    def __iter__(self) -> Iterator[str]:
        yield from self._shape_of
        yield from self._whole

    def __len__(self) -> int:
        return len(self._shape_of) + len(self._whole)


class SourceSizes(collections.abc.Mapping):
    """Names and sizes (None when missing) of the files a store depends on, as the fingerprint
    and a resumed build read them.

    One entry per manifest row, held as a size in an int64 array beside the manifest with the
    name made from the row's id when asked, plus a few files of the whole source (split lists,
    a readme) set by name. A dict of a 300,000-clip list held a path string, two dict entries
    and an int object a sample, about 180 bytes, for the whole build
    (benchmarks/build_scale.py). Reading by name builds a name index once (rarely needed:
    the build reads rows by position, `row_size`).
    """

    #: A missing file's size in `sizes`.
    MISSING = -1

    def __init__(self, row_name: Callable[[int], str], sizes: np.ndarray) -> None:
        self._row_name = row_name
        self.sizes = sizes
        self.extra: dict[str, int | None] = {}
        self._rows_by_name: dict[str, int] | None = None

    def row_size(self, index: int) -> int | None:
        """The size of row `index`'s file (None when missing)."""
        size = int(self.sizes[index])
        return None if size == self.MISSING else size

    def __setitem__(self, name: str, size: int | None) -> None:
        """Record a file of the whole source (a later value of a row's own name wins over the
        row's, as in a dict)."""
        self.extra[name] = size

    def update(self, other: Mapping[str, int | None]) -> None:
        for name, size in other.items():
            self[name] = size

    def items_sorted(self) -> Iterator[tuple[str, int | None]]:
        """(name, size) in name order, each name once: what the fingerprint encodes. The names
        are made for the sort and let go after it."""
        rows = len(self.sizes)
        names = [self._row_name(index) for index in range(rows)] + list(self.extra)
        order = sorted(range(len(names)), key=names.__getitem__)
        for at, position in enumerate(order):
            name = names[position]
            if at + 1 < len(order) and names[order[at + 1]] == name:
                continue  # a name twice: the last one set wins (the extra, as in a dict)
            yield name, self.extra[name] if position >= rows else self.row_size(position)

    def __getitem__(self, name: str) -> int | None:
        if name in self.extra:
            return self.extra[name]
        if self._rows_by_name is None:
            self._rows_by_name = {self._row_name(i): i for i in range(len(self.sizes))}
        return self.row_size(self._rows_by_name[name])

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.items_sorted())

    def __len__(self) -> int:
        return sum(1 for _ in self.items_sorted())

    def with_rows(self, changed: Mapping[int, int | None]) -> "SourceSizes":
        """A copy with the sizes of some rows replaced (row index -> size)."""
        sizes = self.sizes.copy()
        for index, size in changed.items():
            sizes[index] = self.MISSING if size is None else size
        copy = SourceSizes(self._row_name, sizes)
        copy.extra = dict(self.extra)
        return copy
