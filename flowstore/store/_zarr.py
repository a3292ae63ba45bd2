"""Zarr v3 backend: a directory store, one chunk file per sample of each big array, all of an
array's chunk files in its folder (flat chunk keys, `CHUNK_KEY_ENCODING`).

zarr-python >= 3.1.3 writes every chunk and metadata document atomically (temporary file in the
same folder, then rename; zarr-python PR #3412), so a build killed at any moment leaves either
the old or the new chunk, never a torn one; that is what makes `done` trustworthy after SIGKILL.
zarr never fsyncs: a power cut may still lose or empty a renamed file, which is what
`sync_sample` / `sync_columns` (`flowstore build --fsync`) are for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.buffer.cpu import NDBuffer
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding, V2ChunkKeyEncoding
from zarr.storage import LocalStore
from zarr.core.sync import sync

from flowstore.errors import (FlowstoreError, MissingChunkError, ObjectStoreError, StoreError,
                              missing_chunk)
from flowstore.store import (is_url, object_store_failure, remote_reason, url_filesystem,
                             url_options)
from flowstore.store.base import (DAMAGE_ERRORS, STRING, ArrayInfo, ArraySpec, Capabilities,
                                  RootNow, Store, changed_spans, check_columns, column_chunks,
                                  done_revision_of, fsync_path, tree_bytes, unreadable_array)
from flowstore.store.layout import BY_NAME, CREATING_ATTR


_COMPRESSORS = {
    "zstd": lambda: [ZstdCodec(level=0)],
    "shuffled-lz4": lambda: [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
}


#: Where `put_column` writes a replacement column before it takes the column's place.
_UPGRADE_PREFIX = "_upgrade_"

#: The chunk keys of every array a store is created with: flat, `flow/c.17.0.0.0.0`, where
#: zarr's default nests them (`flow/c/17/0/0/0/0`: a folder per sample and dimension, 14 inodes
#: a sample for the three feature arrays against 3, and a 23-70x slower listing; benchmarks/
#: README.md, "Chunk files at Kinetics scale"). The columns take them too, for one layout.
#: It is layout, not content: zarr records it in each array's metadata and reads and writes
#: every chunk by it, so a store made with nested keys keeps them, for its new chunks too, and
#: it stays out of the fingerprint.
CHUNK_KEY_ENCODING = {"name": "default", "separator": "."}


#: Root attribute of a store whose every written chunk is on disk (`ZarrStore.create` sets it).
EVERY_CHUNK_WRITTEN = "every_chunk_written"

#: Seconds a URL store's `root_now` answers what it last read before it fetches the root
#: zarr.json again. Locally the look is one `stat` (microseconds), made on every batch; on
#: object storage it is a GET, a round trip (10-100 ms to S3), which on every batch could cost
#: as much as reading the batch's chunks. At most one GET every 2 s costs under 5% of one
#: reading thread even at 100 ms a GET, whatever the batch size. What it leaves open: chunks of
#: a rebuild of the same shapes read within 2 s of the last look. A rebuild deletes the old
#: store first, so a reader in between meets missing chunks, and a read that fails (a missing
#: chunk, chunks of other shapes) looks again at once (`fresh`). A module constant: tests
#: patch it.
URL_STORE_ID_INTERVAL = 2.0


def _absolute(path: Path | str) -> str:
    """A local store's path made absolute (a URL as it is)."""
    return str(path) if is_url(path) else os.path.abspath(path)


def _storage_options(path: Path | str) -> dict[str, Any] | None:
    """What zarr opens a store with (`flowstore.store.url_options`); None where there are none
    (a local path: zarr refuses storage options it would not use)."""
    return url_options(path) or None


def _object_stores_failure(path: Path | str, exc: Exception) -> bool:
    """Whether `exc` is the failure of the object store at `path` (`_object_store_io` says it
    as one): a lost connection or a timeout (`object_store_failure`), or the OSError a refusal
    of its becomes (s3fs: PermissionError "Access Denied"). Never on a local store."""
    return is_url(path) and (isinstance(exc, OSError) or object_store_failure(exc))


def _object_store_io(doing: str) -> Callable[[Callable], Callable]:
    """A method that reads or writes the store, whose failure on an object store that stopped
    answering is said in one line (`ObjectStoreError`): a build whose endpoint went away
    mid-run ended in a traceback called "a bug in flowstore", its samples logged as internal
    errors, and `verify` would have called the samples it could not fetch damaged (found by
    review). Only an object store's client's own exceptions (`object_store_failure`) are
    turned, and the OSError its filesystem makes of a refusal (s3fs: PermissionError "Access
    Denied" for read-only credentials, said without the store); any other is left as it is, a
    bug included."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapped(self: "ZarrStore", *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except FlowstoreError:
                raise
            except Exception as exc:
                if not _object_stores_failure(self.path, exc):
                    raise
                if object_store_failure(exc):
                    # (a read keeps nothing and changes nothing: only a write's advice says
                    # what is kept; a reader's said it too, found by review)
                    advice = ("what it held before is kept: run the command again"
                              if doing == "writing" else "read again")
                    raise ObjectStoreError(f"lost the object store while {doing} "
                                           f"{str(self.path)!r} ({remote_reason(exc)}); "
                                           f"{advice} once it answers") from exc
                raise ObjectStoreError(f"the object store refused {doing} "
                                       f"{str(self.path)!r} ({remote_reason(exc)})") from exc
        return wrapped
    return decorate


def _root_of(document: bytes) -> RootNow:
    """The `RootNow` a root zarr.json records; `RootNow("", 0)` for a document that is no
    store's root."""
    try:
        attributes = json.loads(document).get("attributes") or {}
        return RootNow(str(attributes.get("store_id", "")), done_revision_of(attributes))
    except (ValueError, AttributeError):
        return RootNow("", 0)


class ZarrStore(Store):
    name = "zarr"

    def __init__(self, group: zarr.Group, path: Path | str, mode: str) -> None:
        self._group = group
        self._arrays: dict[str, zarr.Array] = {}
        self._decoders: dict[str, _FastPlan | None] = {}  # see `_fast_read`
        self._length_checked = False  # (`_check_declared_length`)
        self._verified: dict[str, bool] = {}  # see `_verify_fast_read`
        #: Chunk keys of columns written since `sync_columns` (None: every chunk of it).
        self._unsynced: dict[str, set[str] | None] = {}
        self._layout_synced = False  # metadata and folders made durable once (`sync_columns`)
        self.path = path  # (as given: what messages name)
        #: Where its files are: a local path made absolute, so that a process changing its
        #: working folder (Hydra does) reads on (`root_now` took it for another store).
        self._root = _absolute(path)
        self.mode = mode
        self._root_stamp: tuple[int, int, int] | None = None  # (`root_now`)
        self._root_seen = RootNow("", 0)
        self._root_read_at: float | None = None  # monotonic time of a URL store's last look
        #: Whether a missing chunk of a sample asked for is damage (`read_into`): in stores made
        #: by this backend every written chunk is on disk; older ones (before write_empty_chunks
        #: was set on every handle, and format-1 stores upgraded since) may lack the chunks of
        #: samples that are all zeros, which zarr reads back as zeros, rightly.
        self._chunks_all_written = bool(group.attrs.get(EVERY_CHUNK_WRITTEN, False))

    @classmethod
    def capabilities(cls, location: Path | str) -> Capabilities:
        """Local: a folder (flock beside it, rename into place). Object storage: neither (one
        builder per URL is the user's promise). Both: every chunk and metadata document is
        replaced atomically, so readers read while a build appends, and cluster workers write
        their own samples' chunks."""
        local = not is_url(location)
        return Capabilities(writer_lock=local, rename=local, reads_during_build=True,
                            parallel_writers=True)

    @classmethod
    def exists(cls, location: Path | str) -> bool:
        """A URL store by its root document; a local one by its path, but for an empty folder
        (`mkdir out.zarr`, a mount point): no store, which a build makes there (it was "not a
        readable flowstore store (GroupNotFoundError ...)", even with --overwrite; found by
        review)."""
        if not is_url(location):
            path = Path(location)
            return path.exists() and not (path.is_dir() and next(path.iterdir(), None) is None)
        fs, root = url_filesystem(location)
        return bool(fs.exists(f"{root.rstrip('/')}/zarr.json"))

    @classmethod
    def remove(cls, location: Path | str) -> None:
        if is_url(location):
            fs, root = url_filesystem(location)
            fs.rm(root, recursive=True)
        elif Path(location).is_dir():
            shutil.rmtree(location)
        else:
            Path(location).unlink()

    def _array(self, name: str) -> zarr.Array:
        """Array handles are cached: opening one re-reads its metadata (about 0.5 ms locally,
        a round trip on object storage), which would otherwise be paid on every write.

        `write_empty_chunks` is a runtime setting (zarr keeps it out of the metadata), so it is
        set on every handle: each chunk is one whole sample, written once, and comparing it with
        the fill value first (zarr's default) cost 4 ms per 2.4 MB chunk. Per handle
        (`with_config`, zarr 3.1.6), not through zarr's global config: `zarr.config.set` is
        process-wide, and two threads opening arrays at once restored each other's value,
        leaving every later zarr array of the process (a user's own too) writing empty chunks.
        """
        if name not in self._arrays:
            self._arrays[name] = self._group[name].with_config({"write_empty_chunks": True})
        return self._arrays[name]

    @classmethod
    def create(cls, path: Path | str, *, attrs: Mapping[str, Any], specs: list[ArraySpec],
               columns: Mapping[str, Any], num_samples: int) -> "ZarrStore":
        check_columns(num_samples, columns)
        try:
            group = zarr.open_group(_absolute(path), mode="w-", zarr_format=3,
                                    attributes={CREATING_ATTR: True},
                                    storage_options=_storage_options(path))
            for name, values in columns.items():
                arr = _create_column(group, name, num_samples)
                if num_samples:  # (chunks equal to the fill value are not written)
                    arr[:] = _as_written(name, arr, values)
            for spec in specs:
                dtype = str if spec.dtype == STRING else spec.dtype
                group.create_array(spec.name, shape=(num_samples, *spec.sample_shape),
                                   dtype=dtype, chunks=(1, *spec.sample_shape), fill_value=0,
                                   compressors=_COMPRESSORS[spec.codec](),
                                   chunk_key_encoding=CHUNK_KEY_ENCODING)
            # one write of zarr.json, not one per key, `CREATING_ATTR` replaced
            group.attrs.put({**attrs, EVERY_CHUNK_WRITTEN: True})
        except BaseException:
            # zarr writes an array's metadata and its parents' at once (asyncio.gather), and the
            # first failure (a full disk) surfaces while the others still run in its threads,
            # making files and unlinking their partial ones: the caller's clean-up of `path`
            # raced them and left the folder behind.
            if _forget_zarr_loop_unless_running():
                sync(_others_finished())
            raise
        return cls(group, path, "r+")

    @classmethod
    def open(cls, path: Path | str, mode: str) -> "ZarrStore":
        try:
            group = zarr.open_group(_absolute(path), mode=mode, zarr_format=3,
                                    use_consolidated=False,
                                    storage_options=_storage_options(path))
        except BaseException:
            _forget_zarr_loop_unless_running()
            raise
        return cls(group, path, mode)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs.asdict())

    @_object_store_io("reading")
    def array_names(self) -> list[str]:
        with warnings.catch_warnings():  # a folder without metadata: reported as damage, not warned
            warnings.simplefilter("ignore", UserWarning)
            return sorted(name for name in self._group.array_keys()
                          if not name.startswith(_UPGRADE_PREFIX))

    @_object_store_io("reading")
    def read(self, name: str, index: Any = slice(None)) -> np.ndarray:
        if index == slice(None):
            self._check_declared_length()
        try:
            value = np.asarray(self._array(name)[index])
        except FlowstoreError:
            raise
        except DAMAGE_ERRORS as exc:  # a truncated chunk of the ledger, an unreadable file
            if _object_stores_failure(self.path, exc):
                raise  # (an object store's timeout or refusal: said as one, not as damage)
            raise unreadable_array(self.path, name, exc) from exc
        if value.dtype.kind in "OT":  # numpy StringDType / object strings -> plain 'U'
            value = np.array(value.tolist(), dtype=str)  # StringDType has no width to cast to
        return value

    @_object_store_io("reading")
    def read_into(self, name: str, index: int, out: np.ndarray) -> None:
        """One sample into `out`. On a local read-only store whose chunks use a codec chain
        flowstore writes (plain bytes, Blosc or Zstd), the chunk file is read and decoded
        straight into `out` by `numcodecs`, neither step holding the GIL; zarr's own read takes
        about twice the CPU (its event loop, a decode buffer, a copy into `out` under the GIL)
        and held the trainers' pipeline to one core (75-92% of a bare read on the default
        compressed store, 80-87% on an uncompressed one).

        That fast path rests on what zarr does not promise: where a chunk's file lies
        (`chunk_key`: the array's own key encoding, flat or nested, under its folder; the fast
        path fills in a template of it, checked against the encoding at both ends of the
        array) and how its codecs lay out the bytes (the Blosc header). So the first chunk of
        each array read that way is read by zarr too and compared; if they differ, that array
        is read by zarr from then on.
        """
        fast = self._fast_read(name, out)
        if fast is not None:
            try:
                fd = os.open(f"{fast.prefix}{index // fast.per_chunk}{fast.suffix}", os.O_RDONLY)
            except FileNotFoundError:
                if self._chunks_all_written:
                    raise self._missing_chunk(name, index) from None
                out[...] = 0  # an older store's all-zero sample: zarr's fill value
                return
            try:
                fast.decode(fd, out, f"sample {index} of {name!r}")
            finally:
                os.close(fd)
            if name not in self._verified:
                self._verify_fast_read(name, index, out)
            return
        arr = self._array(name)
        arr.get_basic_selection(index, out=NDBuffer.from_numpy_array(out))
        # zarr reads a missing chunk as the fill value, 0: only a sample read as all zeros
        # costs the look (one request on an object store)
        # (in flowstore's own layout only: an array another tool rechunked or sharded was
        # written by that tool, which may have left out chunks of zeros, rightly)
        if (self._chunks_all_written and not out.any() and self.info(name).one_sample_a_chunk
                and not sync((arr.store_path / self.chunk_key(name, index)).exists())):
            raise self._missing_chunk(name, index)

    def _check_declared_length(self) -> None:
        """Refuse, before a whole column is read, a local store whose `id` column lacks the
        chunk of its last sample, where every chunk is written (and no id is the fill value
        that zarr leaves unwritten): its declared length is not what was built. A store from
        elsewhere declaring 10**8 samples in a few kB read every column whole from fill values
        for minutes, then ran out of memory, said as the system's limit; 2**40, at once (found
        by review). Once a handle (one `stat`)."""
        if self._length_checked or not self._chunks_all_written or is_url(self.path):
            return
        self._length_checked = True
        if "id" not in self.array_names():
            return  # (said by the caller's own read, or `check_dataset_arrays`)
        samples = self.num_samples
        if samples and not os.path.exists(self._chunk_file("id", samples - 1)):
            raise StoreError(f"store {str(self.path)!r} is damaged: it declares {samples} "
                             f"samples, but its id column holds none from sample "
                             f"{samples - 1 - (samples - 1) % self._array('id').chunks[0]} on "
                             f"(its zarr.json edited, or chunks lost); rebuild it (flowstore "
                             f"build ... --overwrite)")

    def _missing_chunk(self, name: str, index: int) -> MissingChunkError:
        """Every sample's chunk is written whole (`write_empty_chunks`), so a sample asked for
        (a done one) without its chunk is a damaged store, not zeros to train on; unless the
        whole store is gone from where it was opened (moved or deleted while open), which is
        said as such rather than sending the user to repair a store that is fine elsewhere."""
        if not is_url(self.path) and not os.path.isdir(self._root):
            return MissingChunkError(f"store {str(self.path)!r} is gone (moved or deleted "
                                     f"while open): open it where it is now")
        return missing_chunk(str(self.path), name, index)

    def chunk_key(self, name: str, index: int) -> str:
        """The key, relative to the array `name`, of the chunk holding sample `index`, as the
        array's metadata encodes it: `c.17.0.0` (flat, stores made now) or `c/17/0/0` (nested,
        stores made before). Every chunk spans whole samples (a feature array: one sample, a
        column: `COLUMN_CHUNK`), so only its coordinate on the sample axis is not 0. In an
        array another tool sharded, the key is the shard's (what is stored under a key): zarr's
        `chunks` is then the chunk inside the shard."""
        arr = self._array(name)
        per_key = arr.shards[0] if arr.shards is not None else arr.chunks[0]
        return arr.metadata.encode_chunk_key((index // per_key,) + (0,) * (arr.ndim - 1))


    def chunk_path(self, name: str, index: int) -> Path:
        """The file of that chunk in a local store (zarr's `LocalStore` keeps a key's slashes
        as folders); it exists once the chunk is written."""
        return Path(self._chunk_file(name, index))

    def _chunk_file(self, name: str, index: int) -> str:
        """`chunk_path` as a string."""
        return os.path.join(self._root, name, self.chunk_key(name, index))

    def _verify_fast_read(self, name: str, index: int, out: np.ndarray) -> None:
        """Compare one fast read with zarr's own; on a difference, fall back for good (and
        leave zarr's value in `out`)."""
        expected = np.empty_like(out)
        self._array(name).get_basic_selection(index, out=NDBuffer.from_numpy_array(expected))
        same = np.array_equal(expected.view(np.uint8), out.view(np.uint8))
        if not same:
            self._decoders[name] = None
            out[...] = expected
        self._verified[name] = same

    @property
    def fast_reads(self) -> dict[str, bool]:
        """Arrays whose fast path was checked against zarr: True where it matched."""
        return dict(self._verified)

    def _fast_read(self, name: str, out: np.ndarray) -> "_FastPlan | None":
        """How `read_into` reads a sample of `name` into `out` outside zarr, or None: looked up
        once per array, as each zarr property read costs microseconds a sample."""
        if name not in self._decoders:
            self._decoders[name] = self._plan_fast_read(name)
        fast = self._decoders[name]
        if fast is None or out.dtype != fast.dtype or not out.flags.c_contiguous:
            return None
        return fast

    def _plan_fast_read(self, name: str) -> "_FastPlan | None":
        """The decoder of `name`'s chunk files and where they lie: the path of sample `i`'s
        chunk is `prefix + str(i // per_chunk) + suffix`, checked against the array's own key
        encoding at both ends of the array (else no fast path)."""
        decode = self._local_decoder(name)
        if decode is None:
            return None
        arr = self._array(name)
        per_chunk, rest = arr.chunks[0], (0,) * (arr.ndim - 1)
        marker = "918273645"
        key = arr.metadata.encode_chunk_key((int(marker),) + rest)
        if key.count(marker) != 1:
            return None
        before, after = key.split(marker)
        prefix = os.path.join(self._root, name, before)
        for index in {0, arr.shape[0] - 1}:
            if (f"{prefix}{index // per_chunk}{after}" != os.path.join(
                    self._root, name, arr.metadata.encode_chunk_key((index // per_chunk,) + rest))):
                return None
        return _FastPlan(decode, np.dtype(arr.dtype), prefix, per_chunk, after)

    def _local_decoder(self, name: str) -> Callable | None:
        """How to decode one chunk file of `name` outside zarr, or None."""
        arr = self._array(name)
        codecs = arr.metadata.codecs if arr.metadata.zarr_format == 3 else ()
        plain = (len(codecs) >= 1 and isinstance(codecs[0], BytesCodec)
                 and (codecs[0].endian is None or codecs[0].endian.value == sys.byteorder))
        known_keys = arr.metadata.zarr_format == 3 and isinstance(
            arr.metadata.chunk_key_encoding, (DefaultChunkKeyEncoding, V2ChunkKeyEncoding))
        usable = (self.mode == "r" and not is_url(self.path) and arr.ndim > 1
                  and arr.chunks == (1, *arr.shape[1:]) and plain and known_keys
                  and isinstance(self._group.store, LocalStore))
        return _CHUNK_DECODERS.get(
            tuple(type(codec) for codec in codecs[1:])) if usable else None

    def layout(self, name: str) -> tuple[tuple[int, ...], str]:
        arr = self._array(name)
        return tuple(arr.shape), STRING if arr.dtype.kind in "OTU" else str(arr.dtype)

    def info(self, name: str) -> ArrayInfo:
        arr = self._array(name)
        dtype = STRING if arr.dtype.kind in "OTU" else str(arr.dtype)
        itemsize = 0 if dtype == STRING else arr.dtype.itemsize
        return ArrayInfo(name=name, shape=tuple(arr.shape), dtype=dtype, chunks=tuple(arr.chunks),
                         nbytes=int(np.prod(arr.shape)) * itemsize,
                         shards=tuple(arr.shards) if arr.shards is not None else None,
                         # numpy's fixed-width text (zarr's FixedLengthUTF32): 4 bytes a character
                         text_width=arr.dtype.itemsize // 4 if arr.dtype.kind == "U" else None)

    def storage_size(self, name: str) -> int:
        if not is_url(self.path):
            try:
                folder = os.path.join(self._root, name)  # (its zarr.json not counted)
                return tree_bytes(folder) - os.stat(os.path.join(folder, "zarr.json")).st_size
            except OSError as exc:
                raise StoreError(f"cannot count the bytes of array {name!r} of store "
                                 f"{str(self.path)!r}: {exc.strerror or exc} "
                                 f"({str(exc.filename)!r})") from None
        arr = self._array(name)  # (nbytes_stored lists every chunk, and counts the metadata)
        metadata = sync(arr.store_path.store.getsize(f"{arr.path}/zarr.json"))
        return int(arr.nbytes_stored()) - int(metadata)

    def root_now(self, *, fresh: bool = False) -> RootNow | None:
        """(A local store's root zarr.json, parsed again only when its file changed: one
        `stat` a call while it has not, as on every batch a split reads. A URL store's, read
        again at most every `URL_STORE_ID_INTERVAL` seconds unless `fresh`: `_url_root`.)"""
        if is_url(self.path):
            return self._url_root(fresh)
        root = Path(self._root) / "zarr.json"
        try:
            stat = root.stat()
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if stamp != self._root_stamp:
                self._root_seen = _root_of(root.read_bytes())
                self._root_stamp = stamp
        except OSError:
            return RootNow("", 0)  # (gone: not this store)
        return self._root_seen

    def _url_root(self, fresh: bool) -> RootNow | None:
        """What the root zarr.json at this URL store's place records (`RootNow("", 0)` where
        there is none: deleted, or no store's root). A root that cannot be fetched (the network,
        the credentials) answers None, as a backend that cannot tell does: what cannot be told
        is not said as a rebuild, and a read of the store out of reach fails in its own
        words."""
        started = time.monotonic()
        if (not fresh and self._root_read_at is not None
                and started - self._root_read_at < URL_STORE_ID_INTERVAL):
            return self._root_seen
        try:
            document = sync((self._group.store_path / "zarr.json").get(
                prototype=default_buffer_prototype()))
        except Exception:  # (s3fs, aiohttp and botocore raise many unrelated types)
            return None
        self._root_read_at = started
        self._root_seen = _root_of(document.to_bytes() if document is not None else b"{}")
        return self._root_seen

    def sample_layout(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        arr = self._array(name)  # (info() would list every chunk to count stored bytes)
        return tuple(arr.shape[1:]), np.dtype(arr.dtype)

    @_object_store_io("writing")
    def write(self, name: str, index: Any, value: np.ndarray) -> None:
        self.check_writable()
        arr = self._array(name)
        arr[index] = _as_written(name, arr, value)
        if self._array(name).ndim == 1:
            self._unsynced[name] = None  # which chunks: `sync_columns` looks

    @_object_store_io("writing")
    def write_changed(self, name: str, column: np.ndarray, changed: Sequence[int]) -> None:
        """Each chunk holding a changed sample is written whole from `column`: zarr encodes it
        as given, where a part of a chunk would be read back and merged first."""
        self.check_writable()
        arr = self._array(name)
        size, length = arr.chunks[0], arr.shape[0]
        keys = self._unsynced.setdefault(name, set())
        for lo, _ in changed_spans(changed, size):
            start = lo - lo % size
            key = self.chunk_key(name, start)
            with self._naming(f"{name}/{key}"):
                arr[start:min(start + size, length)] = _as_written(name, arr,
                                                                   column[start:start + size])
            if keys is not None:
                keys.add(key)

    @_object_store_io("writing")
    def put_column(self, name: str, values: np.ndarray) -> None:
        """A column of another chunking is replaced without a moment when `name` is missing or
        torn: the new column is written beside it with zarr's "v2" chunk keys (`name/0`,
        `name/1`, ...), which the old metadata (keys `name/c.0`, or nested `name/c/0`) never
        reads; those chunks are copied under `name`, then the new metadata replaces
        `name/zarr.json` in one atomic write; only then are the old chunks and the copy
        deleted. A kill before the metadata write leaves the old column (and stray chunks no
        metadata reads), after it the new."""
        self.check_writable()
        values = np.asarray(values)
        chunks = column_chunks(len(values))
        self._delete_node(_UPGRADE_PREFIX + name)  # a copy left by an upgrade killed earlier
        self._arrays.pop(name, None)
        if name not in self.array_names():
            arr = _create_column(self._group, name, len(values))
        elif tuple(self._array(name).chunks) == chunks:  # chunked so already: rewrite in place
            arr = self._array(name)
        else:
            copy = _create_column(self._group, _UPGRADE_PREFIX + name, len(values),
                                  chunk_key_encoding={"name": "v2", "separator": "."})
            if len(values):
                copy[:] = _as_written(name, copy, values)
            copied = {key: name + key[len(_UPGRADE_PREFIX + name):]  # source: target
                      for key in self._keys(f"{_UPGRADE_PREFIX}{name}/")
                      if not key.endswith("/zarr.json")}
            # the old column's chunks, flat or nested (a store lists keys by folder, so not by
            # a "c" prefix), and any a killed upgrade copied that this copy does not rewrite
            old_chunks = [key for key in self._keys(f"{name}/")
                          if key != f"{name}/zarr.json" and key not in copied.values()]
            for key, target in copied.items():
                self._copy_key(key, target)
            self._copy_key(f"{_UPGRADE_PREFIX}{name}/zarr.json", f"{name}/zarr.json")
            for key in old_chunks:
                sync(self._group.store.delete(self._key(key)))
            self._delete_node(_UPGRADE_PREFIX + name)
            self._arrays.pop(name, None)
            self._unsynced[name] = None
            return
        if len(values):
            arr[:] = _as_written(name, arr, values)
        self._arrays.pop(name, None)
        self._unsynced[name] = None

    def _key(self, relative: str) -> str:
        """A key of the zarr store from one relative to the group."""
        return f"{self._group.path}/{relative}" if self._group.path else relative

    def _keys(self, prefix: str) -> list[str]:
        """Keys under `prefix` (relative to the group), relative to the group."""
        async def collect() -> list[str]:
            return [key async for key in self._group.store.list_prefix(self._key(prefix))]

        start = len(self._key(""))
        return sorted(key[start:] for key in sync(collect()))

    def _copy_key(self, source: str, target: str) -> None:
        store = self._group.store
        data = sync(store.get(self._key(source), prototype=default_buffer_prototype()))
        if data is not None:
            sync(store.set(self._key(target), data))

    def _delete_node(self, name: str) -> None:
        """Delete an array (its metadata first: a half-deleted one is no array)."""
        keys = self._keys(f"{name}/")
        for key in sorted(keys, key=lambda key: not key.endswith("zarr.json")):
            sync(self._group.store.delete(self._key(key)))
        if keys and not is_url(self.path):
            shutil.rmtree(Path(self._root, name), ignore_errors=True)  # its empty folders

    @_object_store_io("writing")
    def write_sample(self, index: int, arrays: Mapping[str, np.ndarray], *,
                     durable: bool = False) -> None:
        """All arrays of one sample in one call to zarr's event loop, their chunks encoded and
        written concurrently: one after the other, the calling thread (a build worker) waited
        about 10 ms per sample for thread hand-offs with its core idle.

        Each array is written as the whole chunk it is, (1, *sample_shape): zarr then encodes
        it as given, where `array[index] = value` first copies it into a fresh fill-value chunk.
        """
        self.check_writable()
        self.check_sample(index, arrays)
        handles = {name: self._array(name).async_array for name in arrays}  # (not in the loop)

        async def write_all() -> list[BaseException | None]:
            return await asyncio.gather(*(
                handles[name].setitem(slice(index, index + 1), np.asarray(value)[np.newaxis])
                for name, value in arrays.items()), return_exceptions=True)

        # every write has ended before this returns or raises: none is left running behind it
        failed = [outcome for outcome in sync(write_all()) if isinstance(outcome, BaseException)]
        if failed:
            raise failed[0]
        if durable:
            self.sync_sample(index, list(arrays))

    def sync_sample(self, index: int, names: Sequence[str]) -> None:
        """fsync each chunk file of the sample, then every folder from the chunk's up to the
        array's: zarr made the file by a rename, so its entry in its folder must reach the disk
        too (flat keys: the array's folder; nested keys: also the sample's new folders
        c/INDEX/0/...). An object store's write is durable when it returns: nothing to do
        there."""
        if is_url(self.path):
            return
        for name in names:
            _fsync_up_to(self.chunk_path(name, index), Path(self._root, name))

    def sync_columns(self) -> None:
        """fsync the chunk files of the columns written since the last call (`done`,
        `checksum`) and the root metadata (attributes); the first call also every array's
        metadata, the store's folders and its entry in its parent (a new store was renamed
        into place). Only what changed: the coordinator calls this twice a ledger write."""
        if is_url(self.path):
            return
        root = Path(self._root)
        unsynced = ({name: None for name in self.array_names()} if not self._layout_synced
                    else self._unsynced)
        for name, keys in sorted(unsynced.items()):
            if self._array(name).ndim == 1:  # (all files under the array: flat or nested keys)
                chunks = ((root / name / key for key in sorted(keys)) if keys is not None
                          else sorted(p for p in (root / name).rglob("*")
                                      if p.name != "zarr.json"))
                for chunk in chunks:
                    if chunk.is_file():
                        _fsync_up_to(chunk, root / name)
            if not self._layout_synced:
                fsync_path(root / name / "zarr.json")
                fsync_path(root / name)
        self._unsynced = {}
        fsync_path(root / "zarr.json")
        if not self._layout_synced:
            fsync_path(root)
            fsync_path(root.parent)
            self._layout_synced = True

    @_object_store_io("writing")
    def update_attrs(self, values: Mapping[str, Any], remove: Sequence[str] = ()) -> None:
        self.check_writable()
        with self._naming("zarr.json"):
            if not remove:
                self._group.update_attributes(dict(values))  # one write, not one per key
                return
            kept = {key: value for key, value in self.attrs.items() if key not in remove}
            self._group.attrs.put({**kept, **values})  # one write of the whole root zarr.json

    @contextlib.contextmanager
    def _naming(self, key: str) -> Iterator[None]:
        """A refused write of the store's own records (no space, a file-size limit), named by
        the file it was writing: zarr's OSError names none, and a full disk under the ledger
        was `error: [Errno 28] No space left on device`, no store said."""
        try:
            yield
        except OSError as exc:
            if exc.filename is not None or exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno),
                          f"{str(self.path).rstrip('/')}/{key}") from None

    def flush(self) -> None:
        """Every zarr write is already an atomic file replace, handed to the kernel; durable
        only after `sync_sample` / `sync_columns`."""

    def close(self) -> None:
        self._group = None  # type: ignore[assignment]
        self._arrays.clear()


def _forget_zarr_loop_unless_running() -> bool:
    """Forget zarr's event loop where its thread never started; return whether one runs.

    zarr (3.1) records its loop before it starts the thread that runs it: where that start
    fails (a memory or thread limit, "can't start new thread"), every later call into zarr
    waits forever on a loop nobody runs (a build hung at 0% CPU in its clean-up, found by
    review), and zarr's exit handler fails to join the thread. Such a loop is dropped here, so
    that the next call starts one anew (or fails to, in one line)."""
    from zarr.core import sync as zarr_sync

    with zarr_sync._get_lock():  # (zarr makes and starts its thread holding it)
        thread = zarr_sync.iothread[0]
        if thread is not None and thread.ident is None:  # made, never started
            zarr_sync.iothread[0] = zarr_sync.loop[0] = None
            return False
    return thread is not None and thread.is_alive()


async def _others_finished(timeout: float = 30.0) -> None:
    """Wait (up to `timeout` seconds) until every other task on zarr's event loop has ended."""
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    if others:
        await asyncio.wait(others, timeout=timeout)


def _create_column(group: zarr.Group, name: str, num_samples: int, *,
                   chunk_key_encoding: Mapping[str, str] = CHUNK_KEY_ENCODING) -> zarr.Array:
    """An empty format-2 column (chunked along the sample axis, at its fill value)."""
    column = BY_NAME[name.removeprefix(_UPGRADE_PREFIX)]
    return group.create_array(name, shape=(num_samples,), chunks=column_chunks(num_samples),
                              dtype=str if column.dtype == STRING else column.dtype,
                              fill_value=column.fill, chunk_key_encoding=dict(chunk_key_encoding))


def _as_written(name: str, arr: zarr.Array, values: np.ndarray) -> np.ndarray:
    """`values` as array `name` (`arr`) takes them: text as numpy `str` (what zarr's string
    dtype takes), anything else as it is. A layout column of fixed-width text (numpy `<U`:
    another tool's rewrite, which `layout_write_error` lets pass when at least flowstore's
    width) gets its values fitted by the column's rule (`layout.Column.fit`, in UTF-32 bytes,
    4 a character): a longer failure reason ends in `CUT_MARK` as in HDF5, where numpy cut it
    without a mark."""
    values = np.asarray(values)
    values = values.astype(str) if values.dtype.kind == "O" else values
    column = BY_NAME.get(name.removeprefix(_UPGRADE_PREFIX))
    if column is None or arr.dtype.kind != "U" or values.dtype.kind != "U":
        return values
    width = arr.dtype.itemsize
    return np.array([column.fit(value, width, "utf-32-le").decode("utf-32-le")
                     for value in values.ravel().tolist()], dtype=arr.dtype).reshape(values.shape)


def _fsync_up_to(file: Path, top: Path) -> None:
    """fsync `file`, then each folder from its own up to `top` (both included)."""
    fsync_path(file)
    folder = file.parent
    while True:
        fsync_path(folder)
        if folder == top or folder == folder.parent:
            return
        folder = folder.parent


def _read_whole(fd: int) -> bytes:
    """A chunk file's bytes (os.read releases the GIL while the kernel copies)."""
    size = os.fstat(fd).st_size
    data = os.read(fd, size)
    if len(data) != size:
        raise OSError(f"short read of a chunk file: {len(data)} of {size} bytes")
    return data


def _wrong_size(what: str, got: int, out: np.ndarray) -> ValueError:
    return ValueError(f"chunk of {what} holds {got} bytes, not the {out.nbytes} of one sample")


def _decode_blosc(fd: int, out: np.ndarray, what: str) -> None:
    data = _read_whole(fd)
    if len(data) < 16:  # shorter than a Blosc header
        raise ValueError(f"chunk of {what} is not a Blosc frame ({len(data)} bytes)")
    size = int.from_bytes(data[4:8], "little")  # Blosc header bytes 4-7: decompressed size
    if size != out.nbytes:
        raise _wrong_size(what, size, out)
    # Bytes 12-15: the frame's own length. Blosc trusts it: a chunk cut short (a partial copy)
    # of a frame stored uncompressed (noisy flow is) was read past its end, without an error.
    frame = int.from_bytes(data[12:16], "little")
    if frame != len(data):
        raise ValueError(f"chunk of {what} is a Blosc frame of {frame} bytes in a file of "
                         f"{len(data)}")
    numcodecs.blosc.decompress(data, out)  # blosc releases the GIL


def _decode_plain(fd: int, out: np.ndarray, what: str) -> None:
    # One preadv into `out` and one spare byte, where an fstat first cost a system call a
    # chunk: a longer file fills the spare byte and is refused as zarr refuses it (not read as
    # its prefix), a shorter one reads short.
    got = os.preadv(fd, [memoryview(out).cast("B"), bytearray(1)], 0)
    if got != out.nbytes:
        raise _wrong_size(what, os.fstat(fd).st_size, out)


def _decode_zstd(fd: int, out: np.ndarray, what: str) -> None:
    # Decoded into a new buffer, not into `out`: numcodecs refuses a frame longer than `out`
    # but fills a shorter one only in part, leaving the rest of the batch buffer as it was.
    # (zstd is the uint8-flow preset, whose samples are small: the copy costs ~0.1 ms.)
    data = numcodecs.zstd.decompress(_read_whole(fd))
    if len(data) != out.nbytes:
        raise _wrong_size(what, len(data), out)
    memoryview(out).cast("B")[:] = data


class _FastPlan(NamedTuple):
    """How `ZarrStore.read_into` reads one array's samples outside zarr (`_plan_fast_read`)."""

    decode: Callable[[int, np.ndarray, str], None]
    dtype: np.dtype
    prefix: str
    per_chunk: int
    suffix: str


#: Decoders of the codec chains flowstore writes, by the codecs after the `bytes` codec.
_CHUNK_DECODERS: dict[tuple[type, ...], Callable[[int, np.ndarray, str], None]] = {
    (): _decode_plain,
    (BloscCodec,): _decode_blosc,
    (ZstdCodec,): _decode_zstd,
}


#: This module's backend (`flowstore.store.BACKENDS`).
BACKEND = ZarrStore
