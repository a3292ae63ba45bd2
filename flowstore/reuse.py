"""`flowstore build --reuse-from OLD`: copy samples another store already holds, not compute them.

The same parameters never compute twice, even when the store they were computed into cannot be
resumed: clips added to a split file (a new manifest), the same clips under another dataset's
rules (`videofolder` of a `clips` folder), or a Zarr store rewritten as HDF5. A sample of the
new store is copied from OLD when OLD holds a done sample extracted with the same parameters
and OpenCV release into arrays of the same shapes and dtypes, from a source file of the same
bytes: OLD's content hash of that file is checked against the file the new build reads, in the
sample's task. The candidates are OLD's sample of the same id and those whose source file had
the same size (up to `MAX_CANDIDATES` of other contents), so a clip renamed or moved to
another folder, or kept under another dataset's ids, is found too. The copied arrays are read
back and checked against OLD's checksum of them before they are written; a sample that fails
either check is extracted as any other. OLD is only read.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from flowstore.errors import StoreError, StoreMismatchError
from flowstore.store import Store, lies_within, open_store
from flowstore.store.checksum import file_digest, sample_digest
from flowstore.store.layout import FORMAT, SOFTWARE


#: OLD's samples of one source file size a task may compare its file with (each of another
#: content hash): bounds what is sent to a task where many files share a size (uncompressed
#: frames); beyond it a renamed file may be extracted again, never copied wrongly.
MAX_CANDIDATES = 8


class Candidate(NamedTuple):
    """A sample of OLD that may be the one a task needs."""

    #: Its index in OLD.
    index: int
    #: OLD's content hash of the source file it was extracted from.
    source_hash: str
    #: OLD's checksum of its arrays.
    checksum: str


class ReuseSource(NamedTuple):
    """Where a task may find its sample already computed (sent to the task, so small)."""

    #: OLD's location (absolute: a cluster worker resolves paths in its own folder).
    location: str
    #: OLD's store id: a store put at that location since is not read.
    store_id: str
    #: OLD's samples whose source file may be the task's, each of another content hash.
    candidates: tuple[Candidate, ...]
    #: The arrays to copy.
    arrays: tuple[str, ...]


class Copied(NamedTuple):
    """What `reused_arrays` found for a task."""

    #: The sample's arrays as OLD holds them; None where it must be extracted.
    arrays: dict[str, np.ndarray] | None
    #: The content hash of the task's source file (None when it could not be read): the
    #: ledger's record of it, so that a sample extracted after all does not hash it again.
    source_hash: str | None


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
    with open_store(location, "r") as old:
        _refuse_other_samples(old, location, params, specs, opencv)
        _reusable_samples(old)  # (its columns read now: a damaged one leaves nothing made)


def _refuse_other_samples(old: Store, location: str | Path, params: dict[str, Any],
                          specs: Sequence[Any], opencv: str) -> None:
    """Raise StoreMismatchError where the open OLD's samples are not this build's."""
    from flowstore.build import params_differences

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


def _reusable_samples(old: Store) -> tuple[dict[str, int], np.ndarray, np.ndarray,
                                          np.ndarray]:
    """OLD's done samples with a recorded source hash and checksum: (id -> index, the source
    hashes, the checksums, the source file sizes)."""
    done = old.read("done").astype(bool)
    hashes, checksums = old.read("source_hash"), old.read("checksum")
    position = {sample: k for k, sample in enumerate(old.read("id").tolist())
                if done[k] and hashes[k] and checksums[k]}
    return position, hashes, checksums, old.read("source_size")


def plan_reuse(location: str | Path, *, params: dict[str, Any], specs: Sequence[Any],
               opencv: str, ids: Sequence[str], sizes: np.ndarray, todo: np.ndarray,
               absolute: str) -> dict[int, ReuseSource]:
    """The samples of `todo` (indices into `ids` and `sizes`, the new manifest's ids and source
    file sizes, -1 where missing) of which OLD at `location` (`check_reusable`) may hold the
    arrays, by index, with the candidates their tasks compare their source file with: OLD's
    sample of the same id, then OLD's samples whose file had the same size.

    OLD is checked again here, on the handle whose store id the tasks are sent: a store put
    at its place since `check_reusable` (another build's `--overwrite` with other parameters)
    would otherwise have its samples copied into this one, of other parameters, without a
    word. The tasks read only a store of that id (`reused_arrays`).

    Raises:
        StoreError: OLD cannot be read.
        StoreMismatchError: OLD's samples are no longer this build's.
    """
    with open_store(location, "r") as old:
        _refuse_other_samples(old, location, params, specs, opencv)
        position, hashes, checksums, old_sizes = _reusable_samples(old)
        store_id = str(old.attrs.get("store_id", ""))
    by_size: dict[int, dict[str, int]] = {}  # size -> content hash -> OLD's sample
    for k in position.values():
        if old_sizes[k] >= 0:
            by_size.setdefault(int(old_sizes[k]), {}).setdefault(str(hashes[k]), k)
    names = tuple(spec.name for spec in specs)
    plan = {}
    for index in todo.tolist():
        same_id = position.get(ids[index])
        chosen = {} if same_id is None else {str(hashes[same_id]): same_id}
        for content, k in by_size.get(int(sizes[index]), {}).items():
            if len(chosen) >= MAX_CANDIDATES:
                break
            chosen.setdefault(content, k)
        if chosen:
            plan[index] = ReuseSource(absolute, store_id, tuple(
                Candidate(k, content, str(checksums[k])) for content, k in chosen.items()),
                names)
    return plan


_READERS: dict[tuple[str, str], Store] = {}
_READERS_LOCK = threading.Lock()


def reused_arrays(reuse: ReuseSource, source_file: str) -> Copied:
    """The sample's arrays as OLD holds them, from the candidate whose source file had the
    bytes of `source_file`; no arrays where it must be extracted: no candidate's file is this
    one (or it cannot be read: extraction then says why), OLD was replaced or cannot be read,
    or the candidate's arrays do not match its checksum."""
    try:
        if not stat.S_ISREG(os.stat(source_file).st_mode):
            # (a FIFO, a device: hashing one read forever, a build that never ended; not a
            # clip, which its extraction says)
            return Copied(None, None)
        digest = file_digest(source_file)
    except OSError:
        return Copied(None, None)
    match = next((c for c in reuse.candidates if c.source_hash == digest), None)
    if match is None:
        return Copied(None, digest)
    algorithm = match.checksum.split(":", 1)[0]
    try:
        old = _reader(reuse)
        if old is None:
            return Copied(None, digest)
        arrays = {name: old.read(name, match.index) for name in reuse.arrays}
        if sample_digest(arrays, algorithm) != match.checksum:
            return Copied(None, digest)
    except (StoreError, OSError, KeyError):  # (KeyError: a checksum algorithm unknown here)
        return Copied(None, digest)
    return Copied(arrays, digest)


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


__all__: Sequence[str] = ["Candidate", "Copied", "ReuseSource", "check_reusable", "close_readers", "plan_reuse",
                          "reused_arrays"]
