"""The one store interface that every backend implements.

A store is a flat set of arrays whose axis 0 is the sample (in manifest order), plus JSON-like
root attributes. This layer knows nothing of video, OpenCV or Dask: the build hands it arrays.

Concurrency rule (DESIGN.md): per-sample arrays are chunked one sample per chunk, so parallel
writers never share a chunk; the columns (`flowstore.store.layout`) are chunked along the
sample axis, `id`, `label` and `split` written once at creation and the ledger (`done`,
`checksum`, ...) only by the build's coordinator, after a sample's arrays are complete.

A backend is one module that defines a `Store` subclass and is named in the registry of
`flowstore.store` (`BACKENDS`); `tests/store_contract.py` is the test class it must pass.
"""

from __future__ import annotations

import abc
import errno
import lzma
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from flowstore.errors import DamagedStoreError, StoreError, resource_exhaustion
from flowstore.store.layout import BY_NAME, DONE_REVISION, LEDGER, STRING, column_chunk  # noqa: F401  (STRING: backends import it from here)


#: Compression presets, chosen per array by measurement (benchmarks/store_bytes.py):
#: bit-shuffled LZ4 for pixels and float flow: within 5-12% of zstd's size, but 3-5x faster to
#: write and about 2x faster to read, and a store is written once and read every epoch; plain
#: zstd for quantized (uint8) flow, which is small and compresses 3x.
CODECS = ("shuffled-lz4", "zstd")


#: What a backend's read raises on damaged bytes: a codec refusing them (numcodecs:
#: RuntimeError, ValueError; its gzip and zlib codecs, of a store rewritten with them:
#: EOFError for a chunk cut short, zlib.error for bytes changed; LZMA: LZMAError), unparsable
#: metadata (json: ValueError), or an OSError without an errno (h5py's "can't read data",
#: flowstore's own short reads). An OSError with an errno is the system's condition (a
#: permission, an expired credential, an I/O error), not damage.
DAMAGE_ERRORS = (OSError, RuntimeError, ValueError, EOFError, zlib.error, lzma.LZMAError)


def ledger_remedy(name: str) -> str | None:
    """What mends an unreadable chunk of column `name`, if it is a ledger column (`Ledger.load`):
    the next build; `verify --repair` too for the columns verify reads (`done`, `checksum`)."""
    if name not in LEDGER:
        return None
    also = ", or `flowstore verify --repair --source DIR`," if name in ("done", "checksum") else ""
    return f"the next build{also} extracts its samples again and writes the chunk anew"


def unreadable_part(path: str | Path, what: str, exc: Exception, *, sample: bool,
                    remedy: str | None = None) -> StoreError | DamagedStoreError:
    """A read of the store failed, as one line naming the store and what could not be read:
    with the system's words where the system refused it, else as damage with what mends it (a
    `sample`'s chunk: `verify --repair`; a whole array or a column: a rebuild; or `remedy`).
    (A bug in flowstore raises something else, and stays a traceback.)"""
    if isinstance(exc, OSError) and exc.errno is not None:
        return StoreError(f"store {str(path)!r}: {what} cannot be read ({exc.strerror}"
                          + (f": {exc.filename!r})" if exc.filename else ")"))
    remedy = remedy or ("`flowstore verify` lists the damaged samples, `--repair` re-extracts "
                        "them" if sample else "rebuild it (flowstore build ... --overwrite)")
    return DamagedStoreError(f"store {str(path)!r} is damaged: {what} cannot be read "
                      f"({type(exc).__name__}: {exc}); {remedy}")


def unreadable_array(path: str | Path, name: str, exc: Exception) -> StoreError | DamagedStoreError:
    """A read of array `name` failed (`unreadable_part`): a ledger column's says what mends
    it without a rebuild (`ledger_remedy`)."""
    return unreadable_part(path, f"array {name!r}", exc, sample=False, remedy=ledger_remedy(name))


@dataclass(frozen=True)
class UnreadableChunk:
    """A chunk of a per-sample column that could not be read: samples `start` to `stop` - 1
    of `length`, and the read's error (its cause)."""

    name: str
    start: int
    stop: int
    length: int
    error: Exception

    def describe(self) -> str:
        """What could not be read, as `unreadable_part` names it: "array 'done'", or "array
        'done', samples 4096-8191 of 20000," for one chunk of several."""
        if (self.start, self.stop) == (0, self.length):
            return f"array {self.name!r}"
        samples = (f"sample {self.start}" if self.stop - self.start == 1 else
                   f"samples {self.start}-{self.stop - 1}")
        return f"array {self.name!r}, {samples} of {self.length},"


def ledger_dtype(name: str) -> Any:
    """The dtype a ledger column is held in memory in: its own, text as objects (a numpy str
    array has a fixed width)."""
    return object if BY_NAME[name].dtype == STRING else BY_NAME[name].dtype


def never_extracted(name: str) -> Any:
    """`read_column`'s `fill` for ledger column `name`: an unreadable chunk's samples at the
    column's fill value, as a sample never extracted holds it (`Ledger.load`, `verify`)."""
    return lambda start, stop: np.full(stop - start, BY_NAME[name].fill, dtype=ledger_dtype(name))


def read_column(store: "Store", name: str, fill: Any) -> tuple[np.ndarray, list[UnreadableChunk]]:
    """A per-sample column, and the chunks of it that could not be read: those read chunk by
    chunk, their samples given `fill(start, stop)` (an array of stop - start values), so that
    one damaged chunk (a power cut's empty file) costs its samples, not the column. A system's
    refusal (a permission) is raised."""
    try:
        return store.read(name), []
    except DamagedStoreError:
        pass
    info = store.info(name)
    length, step = info.shape[0], max(1, info.chunks[0])
    parts, unreadable = [], []
    for start in range(0, length, step):
        stop = min(start + step, length)
        try:
            parts.append(store.read(name, slice(start, stop)))
        except DamagedStoreError as exc:
            unreadable.append(UnreadableChunk(name, start, stop, length, exc.__cause__ or exc))
            parts.append(fill(start, stop))
    return np.concatenate(parts), unreadable


def tree_bytes(folder: str | Path) -> int:
    """Bytes of every file under `folder` (what `du --apparent-size` counts), links not
    followed.

    Raises:
        OSError: a folder under it cannot be listed (another user's): counted as empty, as
            `Path.rglob` and zarr's `nbytes_stored` count it, an array's bytes came out
            negative in `inspect --bytes`.
    """
    total, pending = 0, [os.fspath(folder)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


class SizeNotRecorded(Exception):
    """A done sample's `source_size` is the column's fill value (`unrecorded_sources`)."""


def unrecorded_sources(done: np.ndarray, sizes: np.ndarray) -> list[UnreadableChunk]:
    """The runs of done samples whose source file size reads as never recorded, each as an
    unreadable part of `source_size`.

    Every task that completes a sample records the size of the file it read, so a done sample
    without one is a `source_size` chunk lost: zarr reads a missing chunk as the fill value,
    -1, without an error (a copy of the store cut short; a power cut without `--fsync` that
    kept `done`'s chunk and not this one). Taken as no record, it made every later build
    refuse the sample's file as changed since it was written, a file nobody had touched, and
    `inspect` call the store sound."""
    fill = BY_NAME["source_size"].fill
    lost = np.flatnonzero(np.asarray(done, dtype=bool) & (np.asarray(sizes) == fill))
    runs = np.split(lost, np.flatnonzero(np.diff(lost) != 1) + 1) if len(lost) else []
    return [UnreadableChunk("source_size", int(run[0]), int(run[-1]) + 1, len(done),
                            SizeNotRecorded(f"{len(run)} done sample(s) with no recorded size "
                                            f"of their source file (a chunk lost, or an "
                                            f"older flowstore wrote none)"))
            for run in runs]


@dataclass(frozen=True)
class ArraySpec:
    """One per-sample array: its per-sample shape, dtype (`STRING` for text) and codec preset."""

    name: str
    sample_shape: tuple[int, ...]
    dtype: str
    codec: str = "shuffled-lz4"

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, got {self.codec!r}")


@dataclass(frozen=True)
class ArrayInfo:
    """Shape, dtype, chunks and logical bytes of one array: read from its metadata alone.
    (Bytes on disk are `Store.storage_size`, which lists every chunk.)"""

    name: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    nbytes: int
    #: The block of chunks a write of one of them rewrites whole, where there is one: a Zarr
    #: shard (`chunks` is then the chunk inside it); None where each chunk is written alone.
    shards: tuple[int, ...] | None = None
    #: Text stored fixed-width: how long a value may be (Zarr: characters; HDF5: bytes of
    #: UTF-8); None for text of any length, and for anything but text.
    text_width: int | None = None

    @property
    def one_sample_a_chunk(self) -> bool:
        """Whether each chunk holds one whole sample and is written alone (no shard around
        it): how flowstore lays out a per-sample array."""
        return self.shards is None and tuple(self.chunks) == (1, *self.shape[1:])


@dataclass(frozen=True)
class Capabilities:
    """What a backend offers at one location; callers ask these instead of naming classes."""

    #: A second build is kept out by an flock on a file beside the store.
    writer_lock: bool
    #: A new store can be created under a temporary name and renamed into place.
    rename: bool
    #: Readers may open the store while a build writes it.
    reads_during_build: bool
    #: Several processes (a dask.distributed cluster) may write samples at once.
    parallel_writers: bool


def done_revision_of(attributes: Mapping[str, Any]) -> int:
    """A store's `done_revision` (`flowstore.store.layout.DONE_REVISION`; 0 where it has none).
    One that is no number, hand-edited, is -1: a revision no reader saw, so that each reads
    `done` again."""
    try:
        return int(attributes.get(DONE_REVISION, 0))
    except (TypeError, ValueError):
        return -1


class RootNow(NamedTuple):
    """What a store's root records now of who it is and of its `done` flags (`Store.root_now`):
    its `store_id` ("" where there is none: deleted, or no store's root) and its
    `done_revision` (`flowstore.store.layout.DONE_REVISION`)."""

    store_id: str
    done_revision: int


class Store(abc.ABC):
    """A flowstore store opened for reading (mode "r") or writing (mode "r+")."""

    #: Short name of the backend ("zarr", "hdf5"), as `flowstore inspect` shows it.
    name: str = ""
    path: Path
    mode: str
    #: Whether reads from several threads at once run in parallel (decoding outside the GIL).
    #: A reader uses it to choose how many reads to keep in flight.
    concurrent_reads: bool = True
    #: The store lock held shared by a read-only open of a backend that cannot be read while
    #: a build writes (`Capabilities.reads_during_build`); its `close` releases it.
    reader_lock: int | None = None
    #: What opening the store to write mended, one line each (an HDF5 file a killed writer
    #: left damaged: `flowstore.store._hdf5`); a build warns of each.
    mended: tuple[str, ...] = ()

    # -- locations: what a backend does with a store as a whole --------------------------------
    @classmethod
    @abc.abstractmethod
    def capabilities(cls, location: str | Path) -> Capabilities:
        """What this backend offers for a store at `location`."""

    @classmethod
    @abc.abstractmethod
    def exists(cls, location: str | Path) -> bool:
        """Whether something this backend would open is at `location` (not necessarily a
        flowstore store)."""

    @classmethod
    @abc.abstractmethod
    def remove(cls, location: str | Path) -> None:
        """Delete whatever is at `location` (the caller has checked that it is a store)."""

    @classmethod
    @abc.abstractmethod
    def create(cls, location: str | Path, *, attrs: Mapping[str, Any], specs: list["ArraySpec"],
               columns: Mapping[str, np.ndarray], num_samples: int) -> "Store":
        """A new store at `location`: every column of `flowstore.store.layout` (`columns`
        gives their values, the others are left at their fill), one empty array per spec, and
        the root attributes written last. Returns it open for writing."""

    @classmethod
    @abc.abstractmethod
    def open(cls, location: str | Path, mode: str) -> "Store":
        """Open an existing store (mode "r" or "r+"); `flowstore.store.open_store` checks that
        it is a flowstore store of a format this flowstore reads."""

    # -- reading -----------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def attrs(self) -> dict[str, Any]:
        """A copy of the root attributes."""

    @abc.abstractmethod
    def array_names(self) -> list[str]:
        """Names of the arrays in the store."""

    @abc.abstractmethod
    def read(self, name: str, index: Any = slice(None)) -> np.ndarray:
        """`array[index]` as numpy; text comes back as a numpy ``str`` array."""

    def read_into(self, name: str, index: int, out: np.ndarray) -> None:
        """Read sample `index` of a numeric array into `out` (its shape and dtype).

        Backends decode straight into `out`, so a reader that batches samples (the trainers)
        fills a buffer it chose, aligned for TensorFlow to use without a copy. The sample's
        chunk must exist (the reader asks for done samples only): a backend whose chunks can
        go missing (files) raises StoreError rather than read the fill value.
        """
        out[...] = self.read(name, index)

    @abc.abstractmethod
    def info(self, name: str) -> ArrayInfo:
        """Shape, dtype, chunks and logical bytes of one array, from its metadata only."""

    @abc.abstractmethod
    def storage_size(self, name: str) -> int:
        """Bytes of one array's chunks on disk (its metadata not counted: a Zarr array's
        zarr.json of about 550 bytes made `inspect --bytes` show small arrays growing 10-100x
        on disk, where HDF5 counts chunks alone). Lists every chunk on Zarr (900,000 files for
        a Kinetics store): only `flowstore inspect --bytes` asks for it."""

    def layout(self, name: str) -> tuple[tuple[int, ...], str]:
        """Shape and dtype (`STRING` for text) of one array."""
        info = self.info(name)
        return info.shape, info.dtype

    @property
    def format(self) -> int | None:
        """The store's format (`flowstore.store.layout.FORMAT_ATTR`)."""
        from flowstore.store.layout import FORMAT_ATTR

        return self.attrs.get(FORMAT_ATTR)

    @property
    def num_samples(self) -> int:
        return int(self.info("id").shape[0])

    def root_now(self, *, fresh: bool = False) -> RootNow | None:
        """The `store_id` and `done_revision` the store in this one's place records now, read
        afresh where another store can be put there while this one is open (a rebuild,
        `--overwrite`, whose chunks this one's handles would then read) or a repair can write
        into it; None where neither can (an HDF5 store is neither rebuilt nor repaired while it
        is open: its readers hold its lock). A backend for which the look costs a round trip may
        answer what it read a moment ago; `fresh` makes it look now (a read that failed as
        damage: a store rebuilt or deleted under its reader is said as such, not as damage)."""
        return None

    def store_id_now(self, *, fresh: bool = False) -> str | None:
        """The `store_id` of `root_now`."""
        root = self.root_now(fresh=fresh)
        return None if root is None else root.store_id

    # -- writing -----------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Refuse a write to a store opened read-only, alike on both backends (zarr would raise
        a ValueError and h5py an OSError, each in its own words).

        Raises:
            StoreError: the store was opened with mode "r".
        """
        if self.mode == "r":
            raise StoreError(f"store {str(self.path)!r} is open read-only (mode 'r'); "
                             "open it with mode 'r+' to write")

    @abc.abstractmethod
    def write(self, name: str, index: Any, value: np.ndarray) -> None:
        """`array[index] = value`. Callers keep to one writer per chunk."""

    def write_changed(self, name: str, column: np.ndarray, changed: Sequence[int]) -> None:
        """Write `column[i]` for each `i` in `changed`, where `column` is the whole column as
        the store is to hold it (its other values are what the store holds: the build's ledger
        keeps the column in memory), rewriting only what holds them: per chunk of the stored column, the span from its
        first to its last changed sample. (Zarr writes whole chunks, from `column`, so that no
        chunk is read back first.)"""
        for lo, hi in changed_spans(changed, self.info(name).chunks[0]):
            self.write(name, slice(lo, hi), column[lo:hi])

    def rewrite_column(self, name: str, values: np.ndarray) -> None:
        """Write the whole column `name` as `values` (of its length), where what stores its
        chunks may not take a write in place: a ledger column `Ledger.load` could not read
        (`Ledger.mend`). Here every chunk is written whole (Zarr: a new chunk file replaces
        a damaged one)."""
        self.write_changed(name, values, range(len(values)))

    @abc.abstractmethod
    def put_column(self, name: str, values: np.ndarray) -> None:
        """Make `name` a column of `values` chunked as format 2 chunks columns, creating it or
        replacing one of another chunking (upgrading a format-1 store) such that a process
        killed at any moment leaves `name` either as it was or as asked, never missing or torn.
        Only an upgrade calls it."""

    def sample_layout(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """(per-sample shape, dtype) of a per-sample array, as this handle sees it."""
        info = self.info(name)
        return tuple(info.shape[1:]), np.dtype(info.dtype)

    def check_sample(self, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Refuse a sample whose arrays are not of the store's per-sample shape and dtype.

        zarr casts another dtype silently and writes a wrong-shaped chunk without complaint, and
        the checksum, computed from the arrays in memory, would still match what was meant: so
        a writer with a wrong idea of the store (a stale handle) is caught here, not by verify.

        Raises:
            StoreError: an array's shape or dtype differs from the store's.
        """
        for name, value in arrays.items():
            shape, dtype = self.sample_layout(name)
            if tuple(np.shape(value)) != shape or np.asarray(value).dtype != dtype:
                raise StoreError(f"sample {index}: array {name!r} is {np.asarray(value).dtype} "
                                 f"{tuple(np.shape(value))} but the store holds {dtype} {shape} "
                                 f"per sample; nothing of it was written")

    def write_sample(self, index: int, arrays: Mapping[str, np.ndarray], *,
                     durable: bool = False) -> None:
        """Write every array of one sample; raises if any of it failed (`check_sample` first:
        nothing is written of a sample of the wrong layout).

        With `durable`, the sample's bytes are on stable storage when this returns
        (`sync_sample`); otherwise they are handed to the operating system, which survives a
        killed process but not a power cut.
        """
        self.check_sample(index, arrays)
        for name, value in arrays.items():
            self.write(name, index, value)
        self.flush()
        if durable:
            self.sync_sample(index, list(arrays))

    @abc.abstractmethod
    def sync_sample(self, index: int, names: Sequence[str]) -> None:
        """fsync the chunks of sample `index` of arrays `names`, and their directory entries."""

    @abc.abstractmethod
    def sync_columns(self) -> None:
        """fsync the small columns (`done`, `checksum`, ...), the metadata and root attributes,
        and the store's own entry in its folder: what a reader needs to trust `done`."""

    @abc.abstractmethod
    def update_attrs(self, values: Mapping[str, Any], remove: Sequence[str] = ()) -> None:
        """Merge `values` into the root attributes and drop the keys `remove`, in one write
        where the backend can (Zarr: one replace of the root `zarr.json`)."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every write so far durable (a no-op where each write already is)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store (and its `reader_lock`, `lock.release_reader_lock`); further calls
        are errors."""

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, mode={self.mode!r})"


def check_columns(num_samples: int, columns: Mapping[str, Sequence[Any]]) -> None:
    """Every column given at creation is one of the layout's and has one value per sample."""
    from flowstore.store.layout import BY_NAME

    for name, values in columns.items():
        if name not in BY_NAME:
            raise ValueError(f"{name!r} is not a column of the store layout")
        if len(values) != num_samples:
            raise ValueError(f"column {name!r} has {len(values)} values for {num_samples} samples")


def all_columns(num_samples: int, given: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """Every column of the layout for a new store: `given` values, the others at their fill."""
    from flowstore.store.layout import COLUMNS

    check_columns(num_samples, given)
    return {column.name: (np.asarray(given[column.name]) if column.name in given
                          else column.empty(num_samples)) for column in COLUMNS}


def changed_spans(changed: Sequence[int], chunk: int) -> list[tuple[int, int]]:
    """(first, last + 1) of the changed indices within each chunk of `chunk` samples."""
    spans: dict[int, list[int]] = {}
    for index in changed:
        span = spans.setdefault(int(index) // chunk, [int(index), int(index)])
        span[0], span[1] = min(span[0], int(index)), max(span[1], int(index))
    return [(lo, hi + 1) for _, (lo, hi) in sorted(spans.items())]


def column_chunks(num_samples: int) -> tuple[int]:
    """The chunk shape of a format-2 column."""
    return (column_chunk(num_samples),)


def fsync_path(path: str | Path) -> None:
    """fsync one file or directory by path (a directory's fsync makes its entries durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        sync_to_disk(fd, path)
    finally:
        os.close(fd)


def sync_to_disk(fd: int, path: str | Path) -> None:
    """`os.fsync(fd)` of the file or folder at `path`, for `--fsync`.

    Raises:
        StoreError: the file system or the disk refused (EIO: the bytes may not be there;
            EINVAL: a file system that does not sync): said of the store's file, with what to
            do, where it was "error: [Errno 22] Invalid argument" (found by review). A folder
            that cannot be synced at all (EINVAL, as some file systems answer for folders) is
            passed over, as PostgreSQL does: its files are synced all the same.
    """
    try:
        os.fsync(fd)
    except OSError as exc:
        if resource_exhaustion(exc):
            raise
        if exc.errno == errno.EINVAL and os.path.isdir(path):
            return
        raise StoreError(f"--fsync: {str(path)!r} cannot be synced to its disk "
                         f"({exc.strerror or exc}); build without --fsync, or on another "
                         f"disk") from None


def read_exactly(fd: int, offset: int, out: np.ndarray, what: str) -> None:
    """Fill C-contiguous `out` with the bytes at `offset` of file `fd`.

    For chunks stored as plain bytes: `os.preadv` releases the GIL while the kernel copies, so
    reads from several threads (the trainers' tf.data readers) run in parallel, where a library
    read holds the GIL throughout (h5py) or copies the chunk twice under it (zarr).
    """
    got = os.preadv(fd, [memoryview(out).cast("B")], offset)
    if got != out.nbytes:
        raise OSError(f"short read of {what}: {got} of {out.nbytes} bytes (file truncated?)")
