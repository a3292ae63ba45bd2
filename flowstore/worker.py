"""What a build's workers run: one task extracts one sample and writes its chunks itself.

A task runs on one of the coordinator's threads or on a dask.distributed worker, and sends
back a `TaskOutcome` (no arrays): a data problem as the sample's failure reason, a bug in
flowstore as an internal error with its traceback (`DATA_ERRORS` draws the line). The
coordinator (`flowstore.build`) hands the tasks out and records their outcomes in the ledger
(`flowstore.ledger`); nothing here writes the ledger.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import numpy as np

from flowstore.datasets import get_dataset
from flowstore.errors import FlowstoreError, StoreError, resource_advice
from flowstore.files import file_size_limit
from flowstore.params import EXTRACTION_VERSION
from flowstore.store import Store, is_url, open_store
from flowstore.store.checksum import file_digest, sample_digest

if TYPE_CHECKING:
    from flowstore.reuse import ReuseSource


class StoreKey(NamedTuple):
    """Which store a task writes to: its location and the random id given at its creation.

    A location alone does not name a store: `--overwrite` puts a new store (perhaps of other
    shapes, dtypes or codecs) where the old one was, and a long-lived cluster worker that kept
    the old store's handle would write the new store's chunks in the old layout.
    """

    path: str
    store_id: str


_OPEN_STORES: dict[StoreKey, Store] = {}
_OPEN_LOCK = threading.Lock()


def _writer(key: StoreKey) -> Store:
    """The store a task writes to: the coordinator's own object in-process, else opened once
    per store identity (a handle of an earlier store at the same path is closed, never used)."""
    with _OPEN_LOCK:
        if key not in _OPEN_STORES:
            for stale in [k for k in _OPEN_STORES if k.path == key.path]:
                _OPEN_STORES.pop(stale).close()
            store = open_store(key.path, "r+")
            found = store.attrs.get("store_id", "")
            if found != key.store_id:
                store.close()
                raise _replaced(key, found)
            _OPEN_STORES[key] = store
        store = _OPEN_STORES[key]
        # A handle kept open (a cluster worker's, between tasks) outlives a Ctrl-C'd build: its
        # task still running would write into a store rebuilt at once with --overwrite, the
        # old layout's chunks into the new store's files (one `stat` a sample; a URL store's
        # root is fetched every few seconds, `flowstore.store._zarr.URL_STORE_ID_INTERVAL`).
        now = store.store_id_now()
        if now is not None and now != key.store_id:
            _OPEN_STORES.pop(key).close()
            raise _replaced(key, now)
        return store


def _replaced(key: StoreKey, found: str) -> StoreError:
    """The error of a task whose store (`key`) another took the place of (`found`: its id)."""
    return StoreError(f"store {key.path!r} was replaced while this build ran "
                      f"(store id {found or 'none'!r}, not {key.store_id!r})")


#: Room kept free beside a store: HDF5 corrupts its file when a write meets a full disk.
FREE_SPACE_MARGIN = 1 << 20

#: Bytes that writes in this process have been promised but may not have written yet, per
#: filesystem (st_dev). Held under `_SPACE_LOCK` with the free-space check itself, so N worker
#: threads cannot all see the same free space and all write into it.
_RESERVED: dict[int | str, int] = {}  # (and per one-file store: its path)
_SPACE_LOCK = threading.Lock()


@contextlib.contextmanager
def _space_reserved(store_path: str, arrays: dict[str, np.ndarray]) -> Iterator[None]:
    """Check that one sample's write fits, and hold its bytes reserved until the write is over.

    A full disk is reported, never hit. The check and the reservation are one step under a
    process-wide lock, so with any `--workers` the writes in flight never add up to more than
    the free space seen. (On a cluster each worker process reserves for itself.)
    """
    if is_url(store_path):
        yield
        return
    one_file = not Path(store_path).is_dir()
    folder = Path(store_path).parent if one_file else Path(store_path)
    needed = 2 * sum(a.nbytes for a in arrays.values()) + FREE_SPACE_MARGIN
    device = os.stat(folder).st_dev
    with _SPACE_LOCK:
        free = shutil.disk_usage(folder).free - _RESERVED.get(device, 0)
        if free < needed:
            raise StoreError(f"not enough free space for the store ({max(free, 0) // 1024} KiB "
                             f"free, {needed // 1024} KiB wanted); free some and run the same "
                             f"command again")
        limit = file_size_limit()
        if one_file and limit is not None:
            # (an HDF5 store grows as one file: a write past the limit is refused like a full
            # disk, and is as bad for the file)
            grown = os.path.getsize(store_path) + _RESERVED.get(store_path, 0) + needed
            if grown > limit:
                raise StoreError(f"store {store_path!r} would pass this process's file-size "
                                 f"limit (`ulimit -f`: {limit // 1024} KiB); raise it and run "
                                 f"the same command again")
        held = (device, store_path) if one_file else (device,)
        for key in held:
            _RESERVED[key] = _RESERVED.get(key, 0) + needed
    try:
        yield
    finally:
        with _SPACE_LOCK:
            for key in held:
                _RESERVED[key] -= needed


#: What a task records as its sample's failure: the sample's own data, its source file, or the
#: disk it is written to (FlowstoreError covers SampleError from extraction, which turns
#: OpenCV's decoding errors into it, and StoreError from the writer). Anything else raised in a
#: task (TypeError, AttributeError, an OpenCV error outside decoding, ...) is a bug in
#: flowstore: an internal error, never a failure that would read as a bad clip.
DATA_ERRORS = (FlowstoreError, OSError, MemoryError)


class TaskOutcome(NamedTuple):
    """What one task sends back to the coordinator (no arrays: the task wrote them itself)."""

    index: int
    #: Why the sample failed (a data problem), or None.
    reason: str | None = None
    #: Checksum of the arrays written, when it succeeded.
    digest: str = ""
    #: Size of the source file it read, when it succeeded.
    size: int | None = None
    #: Content hash of the source file it read (XXH3), when it succeeded.
    source_hash: str | None = None
    #: The traceback of a bug in flowstore that stopped this task, or None.
    internal_error: str | None = None
    #: Whether the arrays were copied from `BuildConfig.reuse_from`, not extracted.
    reused: bool = False


class TaskArguments(NamedTuple):
    """The positional arguments of one `extract_and_write` task, named: a cluster tells the
    sample of a task it gives up on by `index` (it took the last argument, which became
    `reuse` with `--reuse-from`, and a killed worker crashed the build)."""

    store: StoreKey
    dataset_name: str
    params: Any
    source_file: str
    index: int
    reuse: "ReuseSource | None"


def extract_and_write(store: StoreKey, dataset_name: str, params: Any, source_file: str,
                      index: int, reuse: "ReuseSource | None" = None, fsync: bool = False,
                      opencv: str | None = None,
                      extraction: str = EXTRACTION_VERSION) -> TaskOutcome:
    """One Dask task: extract one sample (or copy it from `reuse`, `flowstore.reuse`) and write
    its chunks (fsynced with `fsync`).

    Data problems are returned as the sample's failure reason, not raised (see `DATA_ERRORS`);
    a bug comes back as an internal error with its traceback, for the coordinator to log.
    `opencv`: the OpenCV release the store is extracted with, `extraction` the version of
    flowstore's extraction (the coordinator's); a cluster worker with another of either fails
    the sample (left for a retry) rather than write bytes of another extraction.
    """
    here = opencv_here()
    if opencv is not None and opencv != here:
        return TaskOutcome(index, f"this worker has OpenCV {here} and the store is "
                                  f"extracted with OpenCV {opencv}")
    if extraction != EXTRACTION_VERSION:
        return TaskOutcome(index, f"this worker's flowstore extracts as version "
                                  f"{EXTRACTION_VERSION} and the store as version {extraction}")
    try:
        dataset = get_dataset(dataset_name)
        before = _identity(source_file)
        arrays, source_hash = None, None
        if reuse is not None:  # (its hash of the file is inside the identity check too)
            from flowstore.reuse import reused_arrays

            arrays, source_hash = reused_arrays(reuse, source_file)
        reused = arrays is not None
        if not reused:
            arrays = dataset.extract(Path(source_file), params)
        if source_hash is None:
            source_hash = file_digest(source_file)  # inside the identity check: what was decoded
        read = _identity(source_file)
        if read != before:
            return TaskOutcome(index, "the source file changed while it was being read")
        with _space_reserved(store.path, arrays):
            _writer(store).write_sample(index, arrays, durable=fsync)
        digest = sample_digest(arrays)
    except FlowstoreError as exc:
        return TaskOutcome(index, str(exc))
    except DATA_ERRORS as exc:
        # (a limit said as such: "MemoryError: " said nothing)
        return TaskOutcome(index, resource_advice(exc) or f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001  (a bug: an internal error, with its traceback)
        advice = resource_advice(exc)  # (unless a limit: OpenCV's allocation in Farneback, a
        if advice is not None:         # binding's error over a MemoryError)
            return TaskOutcome(index, advice)
        return TaskOutcome(index, internal_error=traceback.format_exc())
    return TaskOutcome(index, None, digest, read[0], source_hash, reused=reused)


def _identity(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a source file, None when it is missing: what a task read."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns

@contextlib.contextmanager
def writing_through(key: StoreKey, store: Store) -> Iterator[None]:
    """While it lasts, this process's tasks for `key` write through the coordinator's own
    `store` object rather than a handle of their own (threads share it; a second handle of
    an HDF5 file in one process is not allowed)."""
    with _OPEN_LOCK:
        _OPEN_STORES[key] = store
    try:
        yield
    finally:
        with _OPEN_LOCK:
            _OPEN_STORES.pop(key, None)


def extractor_here() -> tuple[str, str]:
    """This process's extraction version and OpenCV release (run on each cluster worker by
    `flowstore.build.extraction_opencv`)."""
    return EXTRACTION_VERSION, opencv_here()


def opencv_here() -> str:
    """This process's OpenCV release (`flowstore.extraction._cv.OPENCV_VERSION`), imported
    only when asked: `verify` and `inspect` import the build's modules without extracting
    anything, and importing OpenCV costs them start-up time and, under a tight memory limit
    (`ulimit -v 500000`), crashed them with a segfault before they said a word."""
    from flowstore.extraction._cv import OPENCV_VERSION
    return OPENCV_VERSION
