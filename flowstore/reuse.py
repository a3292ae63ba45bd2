"""`flowstore build --reuse-from OLD`: copy samples another store already holds, not compute them.

The same parameters never compute twice, even when the store they were computed into cannot be
resumed: clips added to a split file (a new manifest), the same clips under another dataset's
rules (`videofolder` of a `clips` folder), or a Zarr store rewritten as HDF5. A sample of the
new store is copied from OLD when OLD holds it done under the same id, extracted with the same
parameters and OpenCV release into arrays of the same shapes and dtypes, from a source file of
the same bytes (its content hash, recorded in OLD, is checked against the file the new build
reads, in the sample's task). Its arrays are read back and checked against OLD's checksum of
them before they are written; a sample that fails either check is extracted as any other.
OLD is only read.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from flowstore.errors import StoreError, StoreMismatchError
from flowstore.store import Store, lies_within, open_store
from flowstore.store.checksum import file_digest, sample_digest
from flowstore.store.layout import FORMAT, SOFTWARE


class ReuseSource(NamedTuple):
    """Where a task finds its sample already computed (sent to the task, so small)."""

    #: OLD's location (absolute: a cluster worker resolves paths in its own folder).
    location: str
    #: OLD's store id: a store put at that location since is not read.
    store_id: str
    #: The sample's index in OLD.
    index: int
    #: OLD's content hash of the source file it was extracted from.
    source_hash: str
    #: OLD's checksum of the sample's arrays.
    checksum: str
    #: The arrays to copy.
    arrays: tuple[str, ...]


def check_reusable(location: str | Path, *, store_path: str | Path, params: dict[str, Any],
                   specs: Sequence[Any], opencv: str) -> None:
    """Refuse, in one line, an OLD whose samples cannot be this build's: checked before the new
    store is made, so a refusal leaves nothing behind. `opencv`: the release this build
    extracts with (on a cluster, its workers').

    Raises:
        StoreError: OLD is missing, not a store, of another format, or the store being built.
        StoreMismatchError: OLD was extracted with other parameters, OpenCV or arrays.
    """
    if (lies_within(location, store_path)
            or str(location).rstrip("/") == str(store_path).rstrip("/")):
        raise StoreError(f"--reuse-from {str(location)!r} is the store being built; name "
                         f"another store")
    try:
        _check_reusable(location, params, specs, opencv)
    except StoreMismatchError:
        raise
    except StoreError as exc:  # (said of OLD, not of --store: the user knows which to mend)
        raise StoreError(f"--reuse-from: {exc}") from None


def _check_reusable(location: str | Path, params: dict[str, Any], specs: Sequence[Any],
                    opencv: str) -> None:
    from flowstore.build import params_differences

    with open_store(location, "r") as old:
        what = f"--reuse-from store {str(location)!r}"
        if old.format != FORMAT:
            raise StoreMismatchError(f"{what} is of flowstore format {old.format}, which records "
                                     f"no OpenCV release: its samples cannot be told to be this "
                                     f"build's")
        attrs = old.attrs
        diffs = params_differences(attrs.get("params") or {}, params)
        if diffs:
            raise StoreMismatchError(f"{what} was built with other parameters ({diffs}): its "
                                     f"samples are not this build's")
        theirs = (attrs.get(SOFTWARE) or {}).get("opencv")
        if theirs is None:
            raise StoreMismatchError(f"{what} records no OpenCV release (made by an older "
                                     f"flowstore): its samples cannot be told to be this build's")
        if theirs != opencv:
            raise StoreMismatchError(f"{what} was extracted with OpenCV {theirs} and this build "
                                     f"extracts with OpenCV {opencv}, which extracts other bytes "
                                     f"from the same source")
        samples = old.info("done").shape[0]
        for spec in specs:
            layout = old.layout(spec.name) if spec.name in old.array_names() else None
            if layout != ((samples, *spec.sample_shape), spec.dtype):
                raise StoreMismatchError(f"{what} holds no array {spec.name!r} of samples of "
                                         f"shape {tuple(spec.sample_shape)} and dtype "
                                         f"{spec.dtype} (another dataset kind or layout)")
        _reusable_samples(old)  # (its columns read now: a damaged one leaves nothing made)


def _reusable_samples(old: Store) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """OLD's done samples with a recorded source hash and checksum: (id -> index, the source
    hashes, the checksums)."""
    done = old.read("done").astype(bool)
    hashes, checksums = old.read("source_hash"), old.read("checksum")
    position = {sample: k for k, sample in enumerate(old.read("id").tolist())
                if done[k] and hashes[k] and checksums[k]}
    return position, hashes, checksums


def plan_reuse(location: str | Path, *, specs: Sequence[Any], ids: Sequence[str],
               todo: np.ndarray, absolute: str) -> dict[int, ReuseSource]:
    """The samples of `todo` (indices into `ids`, the new manifest's) that OLD at `location`
    (`check_reusable`) holds done, by index, with what their tasks check before copying.

    Raises:
        StoreError: OLD cannot be read.
    """
    with open_store(location, "r") as old:
        position, hashes, checksums = _reusable_samples(old)
        store_id = str(old.attrs.get("store_id", ""))
    names = tuple(spec.name for spec in specs)
    plan = {}
    for index in todo.tolist():
        k = position.get(ids[index])
        if k is not None:
            plan[index] = ReuseSource(absolute, store_id, k, str(hashes[k]), str(checksums[k]),
                                      names)
    return plan


_READERS: dict[tuple[str, str], Store] = {}
_READERS_LOCK = threading.Lock()


def reused_arrays(reuse: ReuseSource, source_file: str) -> dict[str, np.ndarray] | None:
    """The sample's arrays as OLD holds them, or None where it must be extracted: the source
    file is not the one OLD's sample was extracted from (or cannot be read: extraction then
    says why), OLD was replaced or cannot be read, or its arrays do not match its checksum."""
    try:
        if file_digest(source_file) != reuse.source_hash:
            return None
    except OSError:
        return None
    algorithm = reuse.checksum.split(":", 1)[0]
    try:
        old = _reader(reuse)
        if old is None:
            return None
        arrays = {name: old.read(name, reuse.index) for name in reuse.arrays}
        if sample_digest(arrays, algorithm) != reuse.checksum:
            return None
    except (StoreError, OSError, KeyError):  # (KeyError: a checksum algorithm unknown here)
        return None
    return arrays


def _reader(reuse: ReuseSource) -> Store | None:
    """OLD, opened once per process and store id; None if another store is there now."""
    key = (reuse.location, reuse.store_id)
    with _READERS_LOCK:
        if key not in _READERS:
            old = open_store(reuse.location, "r")
            if str(old.attrs.get("store_id", "")) != reuse.store_id:
                old.close()
                return None
            _READERS[key] = old
        return _READERS[key]


def close_readers() -> None:
    """Close the stores `reused_arrays` opened in this process (an HDF5 one holds a lock)."""
    with _READERS_LOCK:
        while _READERS:
            _READERS.popitem()[1].close()


__all__: Sequence[str] = ["ReuseSource", "check_reusable", "close_readers", "plan_reuse",
                          "reused_arrays"]
