"""HDF5 backend: one file, the same hierarchy as the Zarr store.

HDF5 attributes cannot hold nested JSON, so every root attribute is stored as its JSON text;
`attrs` decodes it back. Any h5py user reads them with `json.loads(f.attrs[key])`.
h5py serialises all calls behind one lock, so worker threads may write their own samples.

Crash safety: files use HDF5's default (earliest) format on purpose. With ``libver="latest"``
the superblock carries "open for writing" flags, and a writer killed with SIGKILL leaves them
set: every later open then fails until someone runs `h5clear`, so a killed build could not
resume. The writer flushes after every sample. A flush is not atomic: HDF5 writes a flush's
metadata in no crash-safe order, and a writer killed in the middle of one can leave a chunk
index pointing at a node never written, every chunk under it unreadable and unwritable for good
("addr overflow", "wrong B-tree signature"), done samples among them. So a writer marks the file
(`WRITER_ATTR`) while it writes it, and the next writer to find the mark checks every chunk;
where some cannot be read, it copies what can into a new file that takes the old one's place,
the samples it lost marked not done (`_salvaged`).

No reading while a build writes: HDF5 does not support a reader of a file that another process
writes (its metadata cache would read structures the writer is changing), except in SWMR mode.
SWMR needs ``libver="latest"`` (see above: a killed writer would leave the file unopenable) and
forbids new attributes while writing, where the build records failures and sizes as it goes.
So a read-only open takes the store's lock shared (`flowstore.store.lock.reader_lock`; `open_store`
takes it for every backend whose capabilities say `reads_during_build=False`) until it
is closed: it is refused, in one line naming the build, while a build holds the store, and a
build is refused while a reader has it open. Readers open without HDF5's own OS-level file lock,
which would refuse them after a killed writer; the flock is what keeps them apart.

Text columns: the ledger's (`checksum`, `failure`, `source_hash`, rewritten by every build
about once a second) are fixed-width UTF-8 in a new store (`layout.Column.width`), written
whole at creation, so a rewrite overwrites bytes already in the file and changes no HDF5
structure: a variable-length string lives in the global heap, and a rewritten chunk of them
points at new heap objects that a build killed before HDF5 wrote the heap left missing ("bad
heap index" on the next read). `id` and `split`, written once at creation, stay
variable-length. How a column is written follows its dtype in the file, so stores made before
(variable-length ledger text) are read and resumed as they are.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np

from flowstore.errors import DamagedStoreError, FlowstoreError, StoreError
from flowstore.files import file_size_limit
from flowstore.store.base import (DAMAGE_ERRORS, STRING, ArrayInfo, ArraySpec, Capabilities,
                                  Store, check_columns, column_chunks, fsync_path, read_exactly,
                                  sync_to_disk, unreadable_array)
from flowstore.store.layout import BY_NAME
from flowstore.store.lock import release_reader_lock

_STR = h5py.string_dtype("utf-8")
#: A sample whose chunk offset is not known yet (`_chunk_offset`): offsets are >= 0.
NO_OFFSET = -1
#: Where `put_column` writes a replacement column before it takes the column's place.
_UPGRADE_PREFIX = "_upgrade_"
#: Where `rewrite_column` keeps a column it replaced whose chunk index cannot be read: HDF5
#: deletes a dataset by walking that index to free its chunks, which fails ("Couldn't delete
#: link"), or, with a handle of it still open, crashes the process when the handle closes.
_DAMAGED_PREFIX = _UPGRADE_PREFIX + "damaged_"
#: How HDF5 names the system's error in a failed write ("..., errno = 28, error message = ...").
_ERRNO = re.compile(r"errno = (\d+)")
#: The root attribute a writer sets to 1 at its first write and back to 0 when it closes the
#: file: the next writer that finds 1 knows the last one died with the file open (module
#: docstring). JSON text like every root attribute, as one fixed-width byte (`_OPEN`,
#: `_CLOSED`), so that setting it rewrites that byte in place and changes no HDF5 structure.
WRITER_ATTR = "flowstore.writer_open"
_OPEN, _CLOSED = np.bytes_(b"1"), np.bytes_(b"0")
#: HDF5's refusal of a file shorter than the space its header records.
_TRUNCATED = re.compile(r"truncated file: eof = (\d+), .*stored_eof = (\d+)")


class HDF5Store(Store):
    name = "hdf5"

    @classmethod
    def capabilities(cls, location: Path | str) -> Capabilities:
        """One local file: an flock beside it, a rename into place; no reader while a build
        writes (see the module docstring), and one writing process."""
        return Capabilities(writer_lock=True, rename=True, reads_during_build=False,
                            parallel_writers=False)

    @classmethod
    def exists(cls, location: Path | str) -> bool:
        """Its path, but for an empty file (`touch out.h5`): no store, which a build makes
        there (as an empty Zarr folder: `ZarrStore.exists`)."""
        path = Path(location)
        return path.exists() and not (path.is_file() and path.stat().st_size == 0)

    @classmethod
    def remove(cls, location: Path | str) -> None:
        if Path(location).is_dir():
            import shutil

            shutil.rmtree(location)
        else:
            Path(location).unlink()

    def __init__(self, file: h5py.File, path: Path, mode: str) -> None:
        problem = _foreign_member(file)
        if problem is not None:
            file.close()
            raise DamagedStoreError(f"store {str(path)!r} is damaged: {problem}; rebuild it "
                                    f"(flowstore build ... --overwrite)")
        self._file = file
        self._sample_lock = threading.Lock()
        self._entry_synced = False  # the file's name in its folder made durable (`sync_columns`)
        self.path = path
        self.mode = mode
        # read-only stores read unfiltered chunks with os.preadv on their own descriptor
        self._raw_fd: int | None = os.open(file.filename, os.O_RDONLY) if mode == "r" else None
        # array name -> each sample's chunk offset, NO_OFFSET until read: 8 bytes a sample,
        # where a dict entry per (array, sample) took ~150 (~130 MB a process, a DataLoader
        # worker each, for a Kinetics store of 300,000 samples and three arrays)
        self._chunk_offsets: dict[str, np.ndarray] = {}
        self._raw_arrays: dict[str, bool] = {}  # array name -> its chunks can be read raw
        self._verified: dict[str, bool] = {}  # array name -> its first raw read matched h5py
        self._length_checked = False  # (`_check_declared_length`)
        # a read-only store's arrays as h5py looked them up, once: the look-up by name was a
        # third of a small sample's read (60 of 190 us; `verify` of 100,000 tiny images took
        # 21 s of CPU against Zarr's 3). A writer's are looked up each time (columns replaced)
        self._datasets: dict[str, h5py.Dataset] = {}
        # held open while writing: HDF5 writes a dataset's cached chunks when its last handle
        # closes, and a write the disk refuses there is printed by h5py as "Exception
        # ignored" and lost, the sample taken for written (`_writing`)
        self._written: dict[str, h5py.Dataset] = {}
        self._refused: tuple[int, str] | None = None  # (errno, strerror) of a refused write
        # whether this writer has marked the file (`WRITER_ATTR`): at its first write, so that
        # a command refused before it writes leaves the file as it was, byte for byte
        self._marked = False
        self._mark_lock = threading.Lock()

    @property
    def concurrent_reads(self) -> bool:
        """h5py runs one call at a time, holding the GIL: reads from two threads only contend
        (benchmarks/input_pipeline.py: 72% of a bare read with two in flight, 97% with one).
        Unfiltered per-sample arrays of a read-only store are read outside h5py (`read_into`),
        and those reads do run in parallel."""
        return self.mode == "r" and all(
            _unfiltered_sample_chunks(self._dataset(name)) for name in self._file
            if self._dataset(name).ndim > 1)

    @classmethod
    def create(cls, path: Path, *, attrs: Mapping[str, Any], specs: list[ArraySpec],
               columns: Mapping[str, Any], num_samples: int) -> "HDF5Store":
        check_columns(num_samples, columns)
        # The new file is made in memory and written out by Python, not by HDF5: a write HDF5
        # is refused (a full disk, a file-size limit) leaves objects it could not close half
        # closed in the library, which crashed the process later (SIGSEGV, at exit), after
        # some 50 lines of h5py's "Exception ignored" reports; Python's write fails as an
        # OSError like any other, and the caller removes what it left. (It holds the new file
        # in memory once: 232 MB for 300,000 samples, made in 2.5 s, against 1.1 s written by
        # HDF5; its ledger columns are stored uncompressed.)
        image = io.BytesIO()
        with h5py.File(image, "w") as file:
            for name, values in columns.items():
                _create_column(file, name, values)
            for spec in specs:
                file.create_dataset(
                    spec.name, shape=(num_samples, *spec.sample_shape),
                    dtype=_STR if spec.dtype == STRING else spec.dtype,
                    chunks=(1, *spec.sample_shape) if num_samples else None,
                    compression="lzf" if num_samples else None, fillvalue=0,
                    # HDF5's byte shuffle is the nearest built-in to bitshuffle (it only
                    # moves bytes of multi-byte values)
                    shuffle=bool(num_samples) and spec.codec == "shuffled-lz4"
                    and spec.dtype != STRING and np.dtype(spec.dtype).itemsize > 1)
            for key, value in attrs.items():
                file.attrs[key] = json.dumps(value, sort_keys=True)
            file.attrs.modify(WRITER_ATTR, _CLOSED)  # (as a writer's clean close leaves it)
        with open(path, "xb") as out:
            out.write(image.getbuffer())
        del image
        return cls(h5py.File(path, "r+"), path, "r+")

    @classmethod
    def open(cls, path: Path, mode: str) -> "HDF5Store":
        """(A reader opens without HDF5's own OS-level file lock, which would refuse it after a
        killed writer: the store lock that `open_store` took keeps it apart from builds.)"""
        if Path(path).exists() and not (Path(path).is_file() or Path(path).is_dir()):
            raise OSError(f"{str(path)!r} is not a file")  # (libhdf5 waited on a FIFO for ever)
        if mode != "r":
            # HDF5 opens an empty file "r+" as a new one, writing its header into it: checked
            # first, a file that is not HDF5 is refused as it was given
            if not h5py.is_hdf5(path):
                raise OSError(f"{str(path)!r} is not an HDF5 file")
            _check_size_limit(Path(path))
            try:
                mended = _salvaged(path)
                store = cls(h5py.File(path, mode), path, mode)
            except OSError as exc:
                _refuse_short(path, exc)
                raise
            store.mended = mended
            return store
        try:
            return cls(h5py.File(path, mode, locking=False), path, mode)
        except OSError as exc:
            _refuse_short(path, exc)
            if "locking flag values don't match" not in str(exc):
                raise
            # open in this process already, by h5py with its default locking (a notebook that
            # read the file by hand, as "Reading a store without flowstore" shows): HDF5 shares
            # one open file a process and refuses another with other flags, so take the same
            return cls(h5py.File(path, mode), path, mode)

    @property
    def attrs(self) -> dict[str, Any]:
        # (h5py's items() holds its global lock between items: a value json cannot read,
        # raised from inside the loop, left it held by the suspended iterator until the garbage
        # collector freed it, and every other thread's h5py call waited for ever)
        return {key: _json_attribute(self.path, key, value)
                for key, value in list(self._file.attrs.items()) if key != WRITER_ATTR}

    def _mark_writer(self, writing: bool) -> None:
        """Set the writer's mark (`WRITER_ATTR`) to `writing` and flush: one byte rewritten in
        place (`attrs.modify`), no HDF5 structure changed but where a store made before the
        mark gets it."""
        self._file.attrs.modify(WRITER_ATTR, _OPEN if writing else _CLOSED)
        self._file.flush()

    def array_names(self) -> list[str]:
        return sorted(name for name in self._file.keys() if not name.startswith(_UPGRADE_PREFIX))

    def _dataset(self, name: str) -> "h5py.Dataset":
        """The array `name`. h5py raises KeyError for one whose object header is damaged ("bad
        object header version number"), which went out as "a bug in flowstore": damage."""
        dataset = self._datasets.get(name)
        if dataset is not None:
            return dataset
        try:
            dataset = self._file[name]
        except KeyError as exc:
            raise unreadable_array(self.path, name, exc) from exc
        if self.mode == "r":
            self._datasets[name] = dataset
        return dataset

    def read(self, name: str, index: Any = slice(None)) -> np.ndarray:
        if index == slice(None):
            self._check_declared_length()
        dataset = self._dataset(name)
        try:
            if h5py.check_string_dtype(dataset.dtype):  # variable-length or fixed-width
                return np.asarray(dataset.asstr()[index], dtype=str)
            if not dataset.dtype.isnative:  # (h5py converts as it reads)
                return np.asarray(dataset.astype(_native(dataset.dtype))[index])
            return np.asarray(dataset[index])
        except FlowstoreError:
            raise
        except DAMAGE_ERRORS as exc:  # h5py's OSError for bytes it cannot decode
            raise unreadable_array(self.path, name, exc) from exc

    def _check_declared_length(self) -> None:
        """Refuse, before a whole column is read, a store whose `id` column declares more
        samples than the chunks it holds: every chunk of a column is written when the store is
        made (`_create_column`), so one missing is a length edited by another tool (or a store
        from elsewhere: 10**9 declared rows in 600 KB were read whole, a 7 GiB allocation;
        found by review) or lost. The other columns are checked against its length. Once a
        handle (one look at its chunk index), as `ZarrStore._check_declared_length`."""
        if self._length_checked or "id" not in self._file:
            return  # (a store without `id`: said by the caller's own read)
        self._length_checked = True
        ids = self._dataset("id")
        if ids.chunks is None or not ids.shape[0]:
            return  # (a format-1 column, contiguous; no samples)
        expected = -(-ids.shape[0] // ids.chunks[0])
        held = ids.id.get_num_chunks()
        if held < expected:
            raise StoreError(f"store {str(self.path)!r} is damaged: it declares {ids.shape[0]} "
                             f"samples, but its id column holds {held} of its {expected} "
                             f"chunks (its length edited, or chunks lost); rebuild it "
                             f"(flowstore build ... --overwrite)")

    def read_into(self, name: str, index: int, out: np.ndarray) -> None:
        """One sample into `out`. An unfiltered chunk of a read-only store is the sample's bytes
        as they lie in the file, so it is read with `os.preadv` at the chunk's offset: the same
        bytes h5py would copy, but without holding the GIL, so the trainers' tf.data threads
        and the training step run meanwhile (h5py holds the GIL for the whole read: on an
        uncompressed store that held the pipeline to 2/3 of a bare read).

        The first raw read of each array is compared with h5py's read of the same sample; if
        they differ, that array is read by h5py from then on."""
        offset = self._chunk_offset(name, index, out)
        if offset is None:
            self._dataset(name).read_direct(out, np.s_[index])
            return
        read_exactly(self._raw_fd, offset, out, f"sample {index} of {name!r}")
        if name not in self._verified:
            expected = np.empty_like(out)
            self._dataset(name).read_direct(expected, np.s_[index])
            same = np.array_equal(expected.view(np.uint8), out.view(np.uint8))
            if not same:
                self._raw_arrays[name] = False
                self._chunk_offsets.clear()
                out[...] = expected
            self._verified[name] = same

    @property
    def fast_reads(self) -> dict[str, bool]:
        """Arrays whose raw reads were checked against h5py: True where they matched."""
        return dict(self._verified)

    def _chunk_offset(self, name: str, index: int, out: np.ndarray) -> int | None:
        """File offset of sample `index`'s chunk when its bytes can be read raw, else None."""
        offsets = self._chunk_offsets.get(name)
        if offsets is not None and index < len(offsets) and offsets[index] != NO_OFFSET:
            return int(offsets[index])
        if name not in self._raw_arrays:
            self._raw_arrays[name] = self._raw_fd is not None and _unfiltered_sample_chunks(
                self._dataset(name))
        if not self._raw_arrays[name] or self._dataset(name).dtype != out.dtype \
                or not out.flags.c_contiguous:
            return None
        dataset = self._dataset(name)
        info = dataset.id.get_chunk_info_by_coord((index,) + (0,) * (dataset.ndim - 1))
        if info.byte_offset is None or info.size != out.nbytes:  # not written (yet)
            return None
        if offsets is None:  # (where another thread made it first, setdefault keeps that one)
            offsets = self._chunk_offsets.setdefault(name, np.full(len(dataset), NO_OFFSET,
                                                                    np.int64))
        offsets[index] = info.byte_offset  # an unfiltered chunk never moves
        return info.byte_offset

    def info(self, name: str) -> ArrayInfo:
        dataset = self._dataset(name)
        text = h5py.check_string_dtype(dataset.dtype)
        is_text = text is not None
        # (variable-length text has no size known from the metadata; fixed-width text has one)
        itemsize = 0 if is_text and text.length is None else dataset.dtype.itemsize
        return ArrayInfo(name=name, shape=tuple(dataset.shape),
                         dtype=STRING if is_text else str(_native(dataset.dtype)),
                         chunks=tuple(dataset.chunks or dataset.shape),
                         nbytes=int(np.prod(dataset.shape)) * itemsize,
                         text_width=text.length if is_text else None)

    def storage_size(self, name: str) -> int:
        return int(self._dataset(name).id.get_storage_size())

    def write_sample(self, index: int, arrays: Mapping[str, np.ndarray], *,
                     durable: bool = False) -> None:
        # One sample at a time, flush (and fsync) included: a flush writes every dirty chunk in
        # the file, so without this a full disk would fail one thread's flush for another
        # thread's chunks and the sample whose bytes were lost would be marked done.
        with self._sample_lock:
            super().write_sample(index, arrays, durable=durable)

    def sync_sample(self, index: int, names: Sequence[str]) -> None:
        """One file: HDF5 has flushed its caches (`flush`), the kernel's go to the disk."""
        sync_to_disk(self._file.id.get_vfd_handle(), self.path)

    def sync_columns(self) -> None:
        """The whole file; the first time also its name in its folder (a new store was renamed
        into place)."""
        self.flush()
        sync_to_disk(self._file.id.get_vfd_handle(), self.path)
        if not self._entry_synced:
            fsync_path(Path(self.path).parent)
            self._entry_synced = True

    def sample_layout(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        dataset = self._dataset(name)  # (h5py converts native values as it writes)
        return tuple(dataset.shape[1:]), _native(dataset.dtype)

    def write(self, name: str, index: Any, value: np.ndarray) -> None:
        """(Text: fixed-width columns are overwritten in place; in a variable-length column of
        an older store each string rewritten takes new room in the file's heap, which HDF5 does
        not give back, so only the changed span of a column is ever rewritten,
        `Store.write_changed`.)"""
        self.check_writable()
        with self._writing(name):
            dataset = self._written.get(name)
            if dataset is None:
                dataset = self._written[name] = self._dataset(name)
            dataset[index] = _as_stored(name, dataset.dtype, np.asarray(value))

    @contextlib.contextmanager
    def _writing(self, name: str | None = None) -> Iterator[None]:
        """Any write to the file. Once the disk has refused one (no space, a file-size limit, a
        quota), HDF5 holds metadata of chunks it could not write and every later flush would
        write it: the first refusal is raised as an OSError with the system's errno (a data
        error: the sample fails with that reason, never marked done), and every write after it
        is refused the same way without touching the file. Any other refusal is HDF5's of a
        damaged file (a chunk index that cannot be read: "bad coordinate offset"), raised as
        one line naming the store and the array `name` written, not HDF5's words alone."""
        if self._refused is not None:
            raise self._refusal(*self._refused)
        try:
            if not self._marked and self.mode != "r":  # a writer's first write: marked first
                with self._mark_lock:  # (no thread's write flushed before the mark is)
                    if not self._marked:
                        self._mark_writer(True)
                        self._marked = True
            yield
        except (RuntimeError, OSError) as exc:
            match = _ERRNO.search(str(exc))
            if isinstance(exc, FlowstoreError):
                raise
            if match is None:
                what = f"array {name!r}" if name is not None else "it"
                raise DamagedStoreError(
                    f"store {str(self.path)!r} is damaged: {what} cannot be written "
                    f"({type(exc).__name__}: {exc}); `flowstore verify` tells what is lost, "
                    f"a rebuild (flowstore build ... --overwrite) mends it") from None
            code = int(match.group(1))
            self._refused = (code, os.strerror(code))
            raise self._refusal(*self._refused) from None

    def _refusal(self, code: int, reason: str) -> OSError:
        return OSError(code, f"{reason}: the disk refused a write to HDF5 store "
                             f"{str(self.path)!r}, which takes no more writes in this run; "
                             f"make room and run the same command again")

    def put_column(self, name: str, values: np.ndarray) -> None:
        self._written.clear()  # (columns are replaced: no handle of an old one kept)
        with self._writing(name):
            self._put_column(name, values)

    def rewrite_column(self, name: str, values: np.ndarray) -> None:
        """A new dataset replaces the column (`_put_column`, never in place: a write through
        a chunk index that cannot be read fails, "bad coordinate offset"); the old one is kept
        aside, hidden (`_DAMAGED_PREFIX`), not deleted."""
        self._written.clear()
        with self._writing(name):
            self._put_column(name, values, damaged=True)

    def _put_column(self, name: str, values: np.ndarray, *, damaged: bool = False) -> None:
        """A column of the same chunking and dtype is overwritten in place; any other (a
        format-1 column, or one of ledger text stored variable-length), or a `damaged` one, is
        written beside the old column under a temporary name and flushed; then the old
        column is renamed aside, the new one renamed into its place (two link changes in the
        root group, put back if the second fails) and the old one deleted (a `damaged` one
        kept under a `_DAMAGED_PREFIX` name), and the file flushed
        again. HDF5 writes its metadata at a flush, so a process killed before the second
        flush leaves the old column."""
        self.check_writable()
        temporary, retired = _UPGRADE_PREFIX + name, f"{_UPGRADE_PREFIX}old_{name}"
        if name not in self._file and retired in self._file:  # an upgrade killed between renames
            self._file.move(retired, name)
        for leftover in (temporary, retired):
            if leftover in self._file:
                del self._file[leftover]
        if not damaged and name in self._file \
                and self._file[name].chunks == column_chunks(len(values)) \
                and self._file[name].dtype == _column_dtype(name):  # (not vlen where fixed)
            self._file[name][:] = _as_stored(name, self._file[name].dtype, np.asarray(values))
            self.flush()
            return
        _create_column(self._file, temporary, np.asarray(values))
        self.flush()
        if damaged:
            retired = next(f"{_DAMAGED_PREFIX}{name}_{n}" for n in itertools.count()
                           if f"{_DAMAGED_PREFIX}{name}_{n}" not in self._file)
        if name in self._file:
            self._file.move(name, retired)
        try:
            self._file.move(temporary, name)
        except BaseException:
            if retired in self._file and name not in self._file:
                self._file.move(retired, name)
            raise
        if retired in self._file and not damaged:
            del self._file[retired]
        self.flush()

    def update_attrs(self, values: Mapping[str, Any], remove: Sequence[str] = ()) -> None:
        self.check_writable()
        with self._writing():
            for key in remove:
                if key in self._file.attrs:
                    del self._file.attrs[key]
            for key, value in values.items():
                self._file.attrs[key] = json.dumps(value, sort_keys=True)

    def flush(self) -> None:
        if self.mode == "r":
            return
        with self._writing():
            self._file.flush()

    def close(self) -> None:
        self._let_go()
        self._datasets.clear()
        if self._refused is None:
            self._written.clear()
            if self._file:
                if self._marked:  # (a failure keeps the mark: the next writer checks the file)
                    with contextlib.suppress(RuntimeError, OSError):
                        self._mark_writer(False)
                self._file.close()
            return
        # After a refused write, HDF5 still holds chunks and metadata it could not write, and
        # closing writes them: it failed again, and the library crashed the process at exit
        # (SIGSEGV) on the file it could not close. Nothing it holds is wanted (the samples it
        # belongs to failed, none marked done), and the file must stay as the refusal left it
        # (`_give_length_back` then extends it to the length its header records), so the file's
        # descriptor is pointed at a scratch file for the close. (h5py prints the failures of
        # handles it releases: silenced.)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(RuntimeError, OSError):
            if self._file:
                with tempfile.TemporaryFile() as scratch:
                    os.dup2(scratch.fileno(), self._file.id.get_vfd_handle())
                    self._written.clear()  # (a handle let go writes too: after the swap)
                    self._file.close()
            self._written.clear()
        _give_length_back(Path(self.path))

    def __del__(self) -> None:
        # a reader dropped without close() (a split's store, reopened for itself) must not keep
        # builds out, nor its raw-read descriptor open, for the life of the process (h5py
        # closes its own file when collected)
        self._let_go()

    def _let_go(self) -> None:
        """Close the raw-read descriptor and release the reader lock (each once)."""
        if getattr(self, "_raw_fd", None) is not None:
            os.close(self._raw_fd)
            self._raw_fd = None
        if getattr(self, "reader_lock", None) is not None:
            release_reader_lock(self.reader_lock)
            self.reader_lock = None


def _check_size_limit(path: Path) -> None:
    """Refuse to open for writing a file already at this process's file-size limit (`ulimit
    -f`): every write HDF5 makes past it is refused, the first of them after HDF5 has marked
    the file open in its superblock, so the command that failed changed the store it wrote
    nothing to.

    Raises:
        StoreError: saying so, in one line.
    """
    limit, size = file_size_limit(), path.stat().st_size
    if limit is not None and size >= limit:
        raise StoreError(f"store {str(path)!r} ({size // 1024} KiB) is past this "
                         f"process's file-size limit (`ulimit -f`: {limit // 1024} KiB), so "
                         f"nothing can be written to it; raise the limit and run the same "
                         f"command again")


def _json_attribute(path: Path, key: str, value: Any) -> Any:
    """A root attribute's value: JSON text, as every store writes them. One of another kind
    (an array another tool wrote) or text that is no JSON is damage naming the attribute: it
    was "not a readable flowstore store (TypeError: the JSON object must be str ...)" (found
    by review)."""
    try:
        return json.loads(value)
    except (TypeError, ValueError, RecursionError):
        shown = repr(value)
        raise DamagedStoreError(f"store {str(path)!r} is damaged: its attribute {key!r} is not "
                                f"JSON text ({shown if len(shown) <= 40 else shown[:37] + '...'})"
                                f"; rebuild it (flowstore build ... --overwrite)") from None


def _foreign_member(file: h5py.File) -> str | None:
    """What makes a member of the file's root no array of the store, or None: an external or
    soft link (h5py follows them, and HDF5 opens an external link's file as writable as the
    store: a build or a repair wrote samples into another file, and the raw reads took its
    chunk offsets for the store's, returning zeros; found by review), a virtual dataset (its
    data in other files), a group (an internal error), or a second name of one array (two
    columns written over each other). A member whose header cannot be read is left to the
    read that names it (`_dataset`)."""
    seen: dict[Any, str] = {}
    for name in file.keys():
        link = file.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            return (f"{name!r} is a link to {link.path!r} in the file {link.filename!r} "
                    f"(flowstore reads and writes only arrays inside the store's file)")
        if not isinstance(link, h5py.HardLink):
            return f"{name!r} is a link to {getattr(link, 'path', '?')!r}, not an array"
        try:
            member = file[name]
        except (KeyError, OSError):
            continue
        if not isinstance(member, h5py.Dataset):
            return f"{name!r} is a group, not an array"
        if member.is_virtual:
            return (f"{name!r} is a virtual dataset, its data in other files (flowstore reads "
                    f"and writes only arrays inside the store's file)")
        if member.id in seen:
            return f"{name!r} and {seen[member.id]!r} are one array under two names"
        seen[member.id] = name
    return None


def _refuse_short(path: Path, exc: BaseException) -> None:
    """One line for HDF5's refusal of a file shorter than the space its header records: part
    of it is missing, and every sample may be (a copy cut short; HDF5 keeps its metadata
    anywhere in the file), so it is not opened, not even to repair."""
    match = _TRUNCATED.search(str(exc))
    if match is not None and int(match.group(2)) > int(match.group(1)):
        missing = int(match.group(2)) - int(match.group(1))
        raise StoreError(f"HDF5 store {str(path)!r} is {missing} bytes shorter than its header "
                         f"records (a copy cut short?): copy it again, or delete it and build "
                         f"it again (--overwrite deletes only a store it can open)") from None


def _salvaged(path: Path) -> tuple[str, ...]:
    """Where a writer died with the file open (`WRITER_ATTR`) and some chunk index entry no
    longer reads, the file copied whole into a new one but for the chunks that cannot be read,
    the new file renamed over it, and the done samples that lost a chunk marked not done, for
    the build to extract again: one line saying so (none where every chunk reads). Chunks copy
    as they are stored (`read_direct_chunk`: nothing decoded or encoded again).

    Raises:
        StoreError: the copy cannot be made (no room for it, say); the file is left as it was.
    """
    with h5py.File(path, "r", locking=False) as old:
        if not _marked_open(old.attrs.get(WRITER_ATTR, _CLOSED)):
            return ()
        unreadable: set[int] = set()
        for dataset in list(old.values()):  # (whole first: as `attrs`, h5py's lock)
            if _per_sample(dataset):
                unreadable.update(_unreadable_chunks(dataset))
        if not unreadable:
            return ()
        done = old["done"][()] if "done" in old else np.zeros(0, dtype=bool)
        lost = sorted(index for index in unreadable if index < len(done) and done[index])
        copy = path.with_name(f".{path.name}.salvage")
        try:
            with h5py.File(copy, "w") as new:
                for key, value in list(old.attrs.items()):
                    if key != WRITER_ATTR:
                        new.attrs[key] = value
                for name, item in list(old.items()):
                    if name.startswith(_DAMAGED_PREFIX):  # (`rewrite_column`: left behind)
                        continue
                    if _per_sample(item):
                        _copy_chunks(item, new, name, unreadable)
                    else:
                        old.copy(item, new, name=name)
                for column, cleared in (("done", False), ("checksum", b"")):  # (`Ledger.reset`)
                    if lost and column in new:
                        values = new[column][()]
                        values[lost] = cleared
                        new[column][:] = values
                new.flush()
                os.fsync(new.id.get_vfd_handle())
            os.replace(copy, path)
            fsync_path(path.parent)
        except (OSError, RuntimeError) as exc:
            with contextlib.suppress(OSError):
                copy.unlink()
            raise StoreError(f"HDF5 store {str(path)!r} was left damaged by a writer that died "
                             f"with it open, and its readable part cannot be copied out "
                             f"({exc}): where the disk is full (or a file-size limit stops "
                             f"it), make room and run the same command again; else delete it "
                             f"and build it again") from None
    return (f"HDF5 store {str(path)!r} was left damaged by a writer that died with it open "
            f"(part of a chunk index never reached the disk): what reads was copied into a new "
            f"file, and the {len(lost)} done sample(s) whose chunks were lost are marked not "
            f"done, for a build to extract again",)


def _marked_open(mark: Any) -> bool:
    """Whether a writer's mark says it had the file open: `_OPEN`, or a mark that is not
    `_CLOSED`'s JSON (written otherwise: the file is checked, which costs a read)."""
    try:
        return json.loads(mark) != 0
    except (TypeError, ValueError):
        return True


def _per_sample(item: Any) -> bool:
    """Whether `item` is a per-sample array: a dataset of more than one axis chunked one
    sample a chunk (the columns are written whole at creation and never reallocated)."""
    return (isinstance(item, h5py.Dataset) and item.ndim > 1 and item.chunks is not None
            and item.chunks[0] == 1)


def _unreadable_chunks(dataset: h5py.Dataset) -> list[int]:
    """The samples of `dataset` whose chunk cannot be read as stored."""
    unreadable = []
    for index in range(dataset.shape[0]):
        try:
            _stored_chunk(dataset, index)
        except (RuntimeError, OSError, ValueError):
            unreadable.append(index)
    return unreadable


def _stored_chunk(dataset: h5py.Dataset, index: int) -> tuple[int, bytes] | None:
    """Sample `index`'s chunk of `dataset` as stored (its filter mask and bytes); None where
    none was written. (Its index entry alone can read where the chunk's does not: both.)"""
    offset = (index,) + (0,) * (dataset.ndim - 1)
    if dataset.id.get_chunk_info_by_coord(offset).byte_offset is None:
        return None
    return dataset.id.read_direct_chunk(offset)


def _copy_chunks(dataset: h5py.Dataset, new: h5py.File, name: str, skip: set[int]) -> None:
    """`dataset` into the file `new` as `name`, with its creation properties (chunks, filters,
    fill value) and attributes, every written chunk but those of the samples `skip` copied as
    stored."""
    made = h5py.h5d.create(new.id, name.encode(), dataset.id.get_type(), dataset.id.get_space(),
                           dcpl=dataset.id.get_create_plist())
    for key, value in list(dataset.attrs.items()):
        new[name].attrs[key] = value
    for index in range(dataset.shape[0]):
        stored = None if index in skip else _stored_chunk(dataset, index)
        if stored is not None:
            mask, chunk = stored
            made.write_direct_chunk((index,) + (0,) * (dataset.ndim - 1), chunk, mask)


#: Where a version-0 superblock (the one HDF5's earliest format writes, as every store here
#: is made) records the file's end: after the 8-byte signature, 16 bytes of versions, sizes and
#: flags, and the base and free-space addresses (8 bytes each).
_SUPERBLOCK_EOF = slice(40, 48)


def _give_length_back(path: Path) -> None:
    """Extend a file HDF5 left shorter than its header's end-of-file address (it recorded
    room a refused write never got) to that length: the missing bytes held only what the
    refusal lost, chunks of samples never marked done, and a file shorter than its header is
    refused by every open. Extending writes no data (a sparse end), so a full disk allows it.
    Only a version-0 superblock with 8-byte addresses is read; anything else is left."""
    with contextlib.suppress(OSError), open(path, "rb") as file:
        head = file.read(_SUPERBLOCK_EOF.stop)
        if len(head) < _SUPERBLOCK_EOF.stop or head[:8] != b"\x89HDF\r\n\x1a\n" \
                or head[8] != 0 or head[13] != 8:
            return
        (recorded,) = struct.unpack("<Q", head[_SUPERBLOCK_EOF])
        if recorded > os.fstat(file.fileno()).st_size:
            os.truncate(path, recorded)


def _create_column(file: h5py.File, name: str, values: np.ndarray) -> None:
    """A format-2 column of `values` (chunked along the sample axis; contiguous when empty,
    as HDF5 wants); text of a column with a `width` fixed-width. Every chunk is written here
    (`data`), so no later write of the column allocates one."""
    dtype = _column_dtype(name)
    file.create_dataset(name, data=_as_stored(name, dtype, np.asarray(values)), dtype=dtype,
                        chunks=column_chunks(len(values)) if len(values) else None)


def _native(dtype: np.dtype) -> np.dtype:
    """A dataset's dtype as its values are handed out and taken: numbers in this machine's
    byte order, whatever the file's (h5py converts both ways). A store whose arrays another
    tool copied big-endian (h5py `create_dataset(..., dtype='>f2')`) was "of another type" to
    the reader and the build, and every sample's bytes "changed" to `verify`; zarr hands out
    native values whatever its `bytes` codec's `endian`, and so does this backend."""
    return dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype


def _column_dtype(name: str) -> np.dtype:
    """The dtype of a new column `name`."""
    column = BY_NAME[name.removeprefix(_UPGRADE_PREFIX)]
    if column.dtype != STRING:
        return np.dtype(column.dtype)
    return _STR if column.width is None else h5py.string_dtype("utf-8", column.width)


def _as_stored(name: str, dtype: np.dtype, values: np.ndarray) -> np.ndarray:
    """`values` as an array of `dtype` (a dataset's, in the file) takes them: text as objects
    for variable-length UTF-8, as UTF-8 bytes of the dataset's width for fixed-width
    (`layout.Column.fit`: a longer failure reason is cut)."""
    text = h5py.check_string_dtype(dtype)
    if text is None:
        return values
    if text.length is None:
        return values.astype(object) if values.dtype.kind in "UT" else values
    column = BY_NAME[name.removeprefix(_UPGRADE_PREFIX)]
    return np.array([column.fit(value, text.length) for value in values.ravel().tolist()],
                    dtype=dtype).reshape(values.shape)


def _unfiltered_sample_chunks(dataset: h5py.Dataset) -> bool:
    """Whether each chunk of `dataset` is one sample stored as plain native-order bytes."""
    return (dataset.chunks == (1, *dataset.shape[1:]) and dataset.dtype.isnative
            and dataset.id.get_create_plist().get_nfilters() == 0
            and h5py.check_string_dtype(dataset.dtype) is None)


#: This module's backend (`flowstore.store.BACKENDS`).
BACKEND = HDF5Store
