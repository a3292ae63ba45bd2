"""Synthetic sources in each dataset's real layout, and a cache of them for `build --synthetic`."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import re
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from flowstore.errors import FlowstoreError, ParameterError, UnknownDatasetError
from flowstore.params import canonical_json


def _writers() -> dict[str, tuple[type, Callable[[Path, Any], Path]]]:
    from flowstore.synth.tvhi import SynthTVHIConfig, write_synthetic_tvhi

    writers: dict[str, tuple[type, Callable[[Path, Any], Path]]] = {
        "tvhi": (SynthTVHIConfig, write_synthetic_tvhi)}
    try:
        from flowstore.synth.stanford40 import SynthStanford40Config, write_synthetic_stanford40
    except ImportError:
        return writers
    writers["stanford40"] = (SynthStanford40Config, write_synthetic_stanford40)
    return writers


def _dataset_writers() -> dict[str, tuple[type, Callable[[Path, Any], Path]]]:
    """The synthetic sources that dataset modules declare themselves (`synth_config_type`)."""
    from flowstore.datasets import dataset_names, get_dataset

    writers = {}
    for name in dataset_names():
        dataset = get_dataset(name)
        if dataset.synth_config_type is not None:
            writers[name] = (dataset.synth_config_type, dataset.write_synthetic)
    return writers


def cache_dir() -> Path:
    """Where `build --synthetic` keeps generated sources: $FLOWSTORE_CACHE or ~/.cache/flowstore.

    Raises:
        FlowstoreError: FLOWSTORE_CACHE is not set and the process has no home folder (no
            HOME, and a user the password database does not know: a container run under an
            arbitrary uid), where it was "internal error: ... Could not determine home
            directory" (found by review). No folder is guessed instead: one in a shared /tmp
            could be made beforehand by another user, and its sources taken as cached.
    """
    root = os.environ.get("FLOWSTORE_CACHE")
    if not root:
        try:
            root = Path.home() / ".cache" / "flowstore"
        except (RuntimeError, KeyError):  # (KeyError: Python before 3.12, no password entry)
            raise FlowstoreError("the synthetic source cache lies in the home folder, and this "
                                 "process has none (HOME is not set, and its user has no entry "
                                 "in the password database): set FLOWSTORE_CACHE to a folder "
                                 "that can be written") from None
    return Path(root) / "synthetic"


def _make_cache_dir() -> Path:
    """`cache_dir()`, made, and refused in one line that names $FLOWSTORE_CACHE where it is set
    (the user's setting to change, not a path they never typed): a folder that is or lies inside
    a flowstore store (`--overwrite` would delete the cache with it), or one that cannot be
    made (a file on the way was `error: Not a directory: '.../afile/synthetic'`)."""
    from flowstore.store import enclosing_store

    cache, setting = cache_dir(), os.environ.get("FLOWSTORE_CACHE")
    named = (f"the synthetic source cache {str(cache)!r} "
             + (f"(FLOWSTORE_CACHE={setting!r})" if setting else "(FLOWSTORE_CACHE is not set)"))
    store = enclosing_store(cache)
    if store is not None:
        raise ParameterError(f"{named} is the store {str(store)!r} or lies inside it; set "
                             f"FLOWSTORE_CACHE to a folder outside any store")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FlowstoreError(f"cannot make {named}: {exc.strerror or exc}; set FLOWSTORE_CACHE "
                             f"to a folder that can be written") from None
    return cache


def _writer_files(write: Callable[..., Any]) -> list[Path]:
    """The source files a synthetic source may depend on: the writer's module, this package's
    (frame drawing, clip encoding, TV-HI and Stanford-40) and the dataset modules' (the
    layouts, names and readmes the writers take from them). A change to any of them makes
    every synthetic source anew, once: seconds each."""
    package = Path(__file__).parent
    module = Path(sys.modules[write.__module__].__file__)
    return sorted({module, *package.glob("*.py"), *(package.parent / "datasets").glob("*.py")})


def synthetic_source(dataset: str, config: Any = None) -> Path:
    """A cached synthetic source for `dataset` (default settings unless `config` is given).

    The folder name carries a hash of the settings and of the code that writes the source
    (`_writer_files`), so different settings never share a folder and a source from an
    older writer is not served for a newer one's; the writer renames a finished folder into
    place, so a killed run leaves no half source.
    """
    writers = {**_writers(), **_dataset_writers()}
    if dataset not in writers:
        raise UnknownDatasetError(f"no synthetic source for dataset {dataset!r}; available: "
                                  f"{', '.join(sorted(writers))}")
    config_type, write = writers[dataset]
    config = config or config_type()
    digest = hashlib.sha256(canonical_json(dataclasses.asdict(config)).encode())
    for path in _writer_files(write):
        digest.update(path.read_bytes())
    key = digest.hexdigest()[:12]
    cache = _make_cache_dir()
    folder = cache / f"{dataset}-{key}"
    with _cache_lock(cache, exclusive=False):  # (not while a prune decides)
        served = _mark_used(folder)
    if not served:
        try:
            write(folder, config)
        except FlowstoreError:
            # Two builds on an empty cache both write the source; the one that renames its
            # copy second finds the folder there, whole (a rename is), with the same content.
            if not folder.is_dir():
                raise
        prune_unused(cache)
    return folder


#: A cached source that no build has used for this many days is deleted when another source is
#: written. Each flowstore release that changes a writer makes its sources anew (about 50 MB for
#: TV-HI's default settings) and never serves an older one's, which nothing else ever removed.
#: Asked for again, a source is written again (the writers are seeded: the same bytes, with the
#: same OpenCV).
UNUSED_DAYS = 30

def _ours() -> re.Pattern[str]:
    """What the cache holds of ours: sources (`tvhi-0123456789ab`), a killed writer's staging
    folder (`write_source`'s `.NAME.writing-PID`) and a killed pruner's (`.NAME.pruning-PID`).
    (Made when asked: the datasets' base module, which says what a name may be, imports the
    dataset modules, which import this package.)"""
    from flowstore.datasets.base import DATASET_NAME

    return re.compile(rf"(?P<source>{DATASET_NAME}-[0-9a-f]{{12}})"
                      rf"|\.{DATASET_NAME}-[0-9a-f]{{12}}\.(writing|pruning)-\d+")


@contextlib.contextmanager
def _cache_lock(cache: Path, *, exclusive: bool) -> Iterator[None]:
    """An `flock` on the cache folder itself (no lock file to leave beside the sources): held
    shared while a source is stamped as used, exclusive while `prune_unused` decides and
    deletes, so that no source is deleted between its being served and its stamp. A cache
    that cannot be opened so, or on a file system without `flock` (Lustre mounted `noflock`:
    every `build --synthetic` failed there), is used unlocked."""
    try:
        fd = os.open(cache, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # (releases the lock)


def _mark_used(folder: Path) -> bool:
    """Stamp a cached source as used now (its folder's mtime, which `prune_unused` reads);
    False when it is not there. A source the user may read but not stamp (another user's, in
    a shared cache) is listed instead, which moves its access time (on `relatime` mounts,
    Linux's default, at most once a day: enough against 30 days)."""
    try:
        os.utime(folder)
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.listdir(folder)
        except OSError:
            pass
    return folder.is_dir()


def prune_unused(cache: Path, days: float = UNUSED_DAYS) -> list[str]:
    """Delete the folders of ours in `cache` (`_ours`: real folders, not links, owned by this
    user) that nothing has used for `days`: neither stamped (`_mark_used`, as each build that
    takes a source does) nor listed (their access time); the names deleted. Anything else is
    left alone, and so is what cannot be deleted: pruning is housekeeping, never a reason for
    a build to fail. A source is renamed aside before it is deleted, so that a pruner killed
    midway never leaves half a source under a name a build would take.
    """
    cutoff = time.time() - days * 86400
    pruned, ours = [], _ours()
    with _cache_lock(cache, exclusive=True):
        try:
            entries = list(cache.iterdir())
        except OSError:
            return pruned
        for entry in entries:
            match = ours.fullmatch(entry.name)
            if match is None or not _ours_and_unused_since(entry, cutoff):
                continue
            if match["source"]:
                aside = entry.with_name(f".{entry.name}.pruning-{os.getpid()}")
                try:
                    entry.rename(aside)
                except OSError:
                    continue
                entry = aside
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                pruned.append(match["source"] or entry.name)
    return pruned


def _ours_and_unused_since(folder: Path, cutoff: float) -> bool:
    """Whether `folder` is a folder (not a link) of this user's, last stamped or listed before
    `cutoff`. (Any listing counts as use: a `du` or a backup of the cache keeps its sources,
    as erring that way costs disk, never a build.)"""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and max(info.st_mtime, info.st_atime) < cutoff)


def write_synthetic(dataset: str, folder: str | Path, settings: dict[str, Any]) -> Path:
    """`flowstore synth NAME DIR`: the synthetic source a dataset module declares, with its
    settings (`synth_config_type` fields) from strings."""
    from flowstore.datasets import get_dataset
    from flowstore.datasets.base import make_options

    spec = get_dataset(dataset)
    if spec.synth_config_type is None:
        raise UnknownDatasetError(f"no synthetic source for dataset {dataset!r}")
    config = make_options(spec.synth_config_type, settings, f"synth {dataset}")
    return spec.write_synthetic(Path(folder), config)
