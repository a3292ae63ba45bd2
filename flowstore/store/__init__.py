"""Open, create, publish and remove stores; a registry of suffixes picks the backend.

Readers need nothing else from flowstore: `open_store(path)` gives a `Store` whose `read`,
`attrs` and `info` work the same for every backend.

A store is a local path or, for a backend that takes them (Zarr), an fsspec URL such as
``s3://bucket/prefix/tvhi.zarr``. Credentials and endpoints come from the environment the usual
way (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``~/.aws/``) and
are never written anywhere.

What differs between backends is asked of them (`capabilities`: writer lock, rename, readers
during a build, several writing processes), never read from their class names. A new backend
is one module defining a `Store` subclass, one line in `BACKENDS`, and a subclass of the shared
test class in `tests/store_contract.py`.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, NoReturn, Sequence

from flowstore.errors import (HalfCreatedStoreError, StoreError, raised_with,
                              resource_exhaustion)
from flowstore.store.base import ArrayInfo, ArraySpec, Capabilities, Store, all_columns
from flowstore.store.layout import (BY_NAME, COLUMN_NAMES, CREATING_ATTR, FORMAT, FORMAT_ATTR,
                                    LEDGER, READABLE_FORMATS, REQUIRED, SOFTWARE, STRING)

__all__ = ["BACKENDS", "STRING", "ArrayInfo", "ArraySpec", "Backend", "Capabilities", "Store",
           "array_type_error", "backend_for", "capabilities", "check_url_form", "create_store",
           "failures", "failures_named", "is_url", "layout_write_error", "lies_within",
           "names_url", "open_store", "remove_store", "store_exists"]


@dataclass(frozen=True)
class Backend:
    """One registry entry: the suffixes it claims, whether it takes URLs, and its module
    (imported on first use: zarr and h5py load only when a store of theirs is used)."""

    name: str
    #: How messages name it.
    label: str
    suffixes: tuple[str, ...]
    module: str
    #: fsspec URLs (s3://, gs://, ...) as well as local paths.
    urls: bool

    def load(self) -> type[Store]:
        return importlib.import_module(self.module).BACKEND


#: The backends, by suffix (case-insensitive).
BACKENDS = (
    Backend("zarr", "Zarr v3", (".zarr",), "flowstore.store._zarr", urls=True),
    Backend("hdf5", "HDF5", (".h5", ".hdf5"), "flowstore.store._hdf5", urls=False),
)


def is_url(path: str | Path) -> bool:
    """True for fsspec URLs (``s3://...``, ``gs://...``, ``memory://...``); False for local paths."""
    return "://" in str(path)


#: A URL's scheme and one slash where it needs two (`s3:/b/x.zarr`): a typo, or what
#: `pathlib.Path` makes of a URL (it collapses `//`). Taken for a local path, it built a local
#: store in a folder named `s3:`. A one-letter scheme is a Windows drive (`C:/`).
_ONE_SLASH_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/(?!/)")


def names_url(path: str | Path) -> bool:
    """Whether `path` is a URL, or one that lost a slash after its scheme (`_ONE_SLASH_URL`):
    what an option for a local path (`--source`) refuses, where `Path` turned it into a local
    path that "does not exist"."""
    return is_url(path) or bool(_ONE_SLASH_URL.match(str(path)))


def url_parts(path: str | Path) -> tuple[str, list[str]]:
    """A URL's scheme and the parts of what follows `://` (bucket first), trailing slashes
    dropped: `s3://b/p/x.zarr/` -> ("s3", ["b", "p", "x.zarr"]). One split for every check
    that looks at a URL's bucket or prefixes."""
    scheme, _, rest = str(path).rstrip("/").partition("://")
    return scheme, rest.split("/")


def url_options(location: str | Path) -> dict[str, Any]:
    """The fsspec options every URL store is opened with (`url_filesystem`, and zarr's own
    opening of the store).

    On S3: botocore's retries off (one attempt in all: its `max_attempts` counts retries), as
    s3fs retries each request itself (5 tries, a 15 s read timeout each). With both, an
    endpoint that took connections and never answered (a stopped or overloaded server, a
    firewall dropping replies) held a command for minutes a request, 5 x 5 tries, saying
    nothing (`flowstore inspect`, a build, `flowstore.open`; found by review); now a request
    gives up after about 80 s and the command says it in one line, as for any endpoint lost.
    A user's own setting wins: `max_attempts` in the AWS configuration (`AWS_MAX_ATTEMPTS`,
    the config file's profile), or `retries` in fsspec's configuration of s3
    (`FSSPEC_S3='{"config_kwargs": {...}}'`), whose other `config_kwargs` (a read timeout)
    are kept beside this one."""
    if not is_url(location) or url_parts(location)[0] not in ("s3", "s3a"):
        return {}
    import botocore.session
    import fsspec.config

    configured = {**(fsspec.config.conf.get("s3", {}).get("config_kwargs") or {}),
                  **(fsspec.config.conf.get("s3a", {}).get("config_kwargs") or {})}
    if ("retries" in configured
            or botocore.session.get_session().get_config_variable("max_attempts") is not None):
        return {}
    return {"config_kwargs": {**configured, "retries": {"total_max_attempts": 1}}}


def url_filesystem(location: str | Path) -> tuple[Any, str]:
    """The fsspec file system of a URL store and its path there, opened with `url_options`."""
    import fsspec

    return fsspec.core.url_to_fs(str(location), **url_options(location))


#: fsspec schemes whose files live in the memory of the process that wrote them.
_PROCESS_SCHEMES = ("memory",)


def check_url_form(path: str | Path) -> None:
    """Refuse a store location that is a near miss of a URL, or a URL whose store could not be
    read back by its plain form. Every command and `flowstore.open` meet it through
    `backend_for`.

    Raises:
        StoreError: a `file://` URL names a local store (taken for a remote one, it was written
            with no writer lock: two builds wrote it at once); a scheme with one slash
            (`s3:/b/x.zarr`, `_ONE_SLASH_URL`); a URL whose path has an empty part
            (`s3://b//x.zarr`) or a `.` or `..` part (`s3://b/./x.zarr`): object storage keeps
            them in the keys as they are (zarr wrote `//` where s3fs listed it without, a
            store "damaged" at once), so its store could not be read back, or overwritten, by
            the plain URL (`s3://b/x.zarr`: "no store").
            A `memory://` URL (`_PROCESS_SCHEMES`): its store ends with the process, so a
            build ran to its end and its store was lost, and no other command could find it.
    """
    text = str(path).rstrip("/")
    one_slash = None if is_url(text) else _ONE_SLASH_URL.match(text)
    local = (str(path)[len("file://"):] if text.lower().startswith("file://")
             else "/" + text[one_slash.end():] if one_slash and one_slash.group(1).lower() == "file"
             else None)
    if local is not None:  # (taken for a remote store: no writer lock, no space check)
        raise StoreError(f"a file:// URL names a local path: give the path itself "
                         f"({local!r}), got {str(path)!r}")
    if text.lower().startswith(tuple(f"{scheme}://" for scheme in _PROCESS_SCHEMES)):
        raise StoreError(f"a {text.split('://', 1)[0]}:// store lives only as long as the "
                         f"process that writes it (a build's store was lost when it ended): "
                         f"give a local path or an object store's URL, got {str(path)!r}")
    if one_slash:
        scheme = one_slash.group(1)
        raise StoreError(f"a URL has two slashes after its scheme ({scheme}://"
                         f"{text[one_slash.end():]}), got {str(path)!r} (a local folder named "
                         f"'{scheme}:' is given as './{text}')")
    if not is_url(text):
        return
    scheme, parts = url_parts(text)
    if parts[0] == "":
        raise StoreError(f"a store URL names no bucket ({scheme}://BUCKET/NAME.zarr), "
                         f"got {str(path)!r}")
    if "" in parts:
        raise StoreError(f"a store URL has an empty part ('//') in its path: {str(path)!r}")
    if {".", ".."} & set(parts):
        raise StoreError(f"a store URL has a '.' or '..' part in its path (object storage keeps "
                         f"it in the store's keys: the store could be read by that URL "
                         f"alone): {str(path)!r}")


def lies_within(path: str | Path, place: str | Path) -> bool:
    """Whether the local `path` is `place` or lies inside it, links resolved: an output a
    command refuses to write into a store (or a run) it reads. A URL lies within nothing."""
    if is_url(path) or is_url(place):
        return False
    target, place = Path(os.path.realpath(path)), Path(os.path.realpath(place))
    return target == place or place in target.parents


#: The suffixes a store at a URL may have (its backend's).
_URL_SUFFIXES = tuple(suffix for backend in BACKENDS if backend.urls for suffix in backend.suffixes)


def enclosing_store(path: str | Path) -> str | Path | None:
    """The flowstore store that `path` is or lies inside, links resolved; None where there is
    none. What is written there is lost to the store: `--overwrite` deletes it with the store
    (an object store's prefix with all under it), `inspect --bytes` counts it as the store's.
    Of a URL, only the prefixes named as a store are looked at (a request each)."""
    if is_url(path):
        scheme, parts = url_parts(path)
        places = (f"{scheme}://{'/'.join(parts[:k])}" for k in range(len(parts), 0, -1))
        return next((place for place in places if place.lower().endswith(_URL_SUFFIXES)
                     and is_store(place)), None)
    real = Path(os.path.realpath(path))
    return next((place for place in (real, *real.parents) if is_store(place)), None)


def is_store(path: str | Path) -> bool:
    """Whether `path` is a flowstore store, recognised as `remove_store` recognises one: it
    opens, however damaged."""
    try:
        open_store(path, "r", check_whole=False).close()
    except StoreError:
        return False
    return True


def backend_for(path: str | Path) -> type[Store]:
    """The backend class for a store path, chosen by its suffix (and by whether it is a URL).

    Raises:
        StoreError: no backend claims the suffix, or the one that does takes no URLs, or the
            location is a URL's near miss or a URL its store could not be read back by
            (`check_url_form`).
    """
    return _registered(path).load()


def _registered(path: str | Path) -> Backend:
    """`backend_for`'s registry entry."""
    check_url_form(path)
    name = str(path).rstrip("/").lower()
    for backend in BACKENDS:
        if name.endswith(backend.suffixes):
            if is_url(path) and not backend.urls:
                raise StoreError(f"{backend.label} stores must be local files; use a "
                                 f"{_url_suffix()} URL, got {str(path)!r}")
            return backend
    suffixes = " or ".join(f"{'/'.join(b.suffixes)} ({b.label})" for b in BACKENDS)
    raise StoreError(f"store path must end in {suffixes}, got {str(path)!r}")


def _url_suffix() -> str:
    return next(b.suffixes[0] for b in BACKENDS if b.urls)


def capabilities(path: str | Path) -> Capabilities:
    """What the backend of `path` offers there (`Capabilities`)."""
    return backend_for(path).capabilities(_as_location(path))


@contextlib.contextmanager
def remote_errors(path: str | Path) -> Iterator[None]:
    """Turn an object-store failure (no bucket, bad credentials, no endpoint) into one line."""
    if not is_url(path):
        yield
        return
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:  # botocore and fsspec raise many unrelated types
        raise StoreError(f"cannot access {str(path)!r}: {remote_reason(exc)}") from None


#: The object-store clients' exceptions (module, class) that mean the store could not be
#: reached, timed out or refused what was asked (botocore's EndpointConnectionError and
#: ReadTimeoutError, its ClientError of a service's answer, missing credentials; aiohttp's
#: ServerDisconnectedError): none a bug of flowstore's. Named, not imported (the clients are
#: the `s3` extra's), and named one by one: a whole package's exceptions included botocore's
#: ParamValidationError, a bad argument flowstore would have passed, a bug (found by review).
OBJECT_STORE_FAILURES = frozenset({
    ("botocore.exceptions", "ConnectionError"), ("botocore.exceptions", "HTTPClientError"),
    ("botocore.exceptions", "ClientError"), ("botocore.exceptions", "NoCredentialsError"),
    ("botocore.exceptions", "PartialCredentialsError"),
    ("aiohttp.client_exceptions", "ClientError")})


def object_store_failure(exc: BaseException) -> bool:
    """Whether `exc`, raised while reading or writing an object store, is the store's failure:
    a lost connection or a timeout (`OBJECT_STORE_FAILURES`, or Python's own)."""
    return isinstance(exc, (ConnectionError, TimeoutError)) or any(
        (cls.__module__, cls.__qualname__) in OBJECT_STORE_FAILURES for cls in type(exc).__mro__)


def remote_reason(exc: Exception) -> str:
    """An object store's failure in one line: its type (botocore's and fsspec's say what
    failed: NoCredentialsError) and its message's first line."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {reason}"


def store_exists(path: str | Path) -> bool:
    """Whether a store is at `path`.

    Raises:
        StoreError: it cannot be told: an object store's failure, or a local path the system
            refuses to look at (a folder on it that cannot be searched, a name too long),
            which `Path.exists` raises where it answers False only for a missing one.
    """
    path = _as_location(path)
    backend = backend_for(path)
    with remote_errors(path):
        try:
            return backend.exists(path)
        except OSError as exc:
            if is_url(path):
                raise
            raise StoreError(f"cannot access store {str(path)!r}: "
                             f"{exc.strerror or exc}") from None


def _missing_bucket(location: str | Path) -> str:
    """", whose bucket 'B' does not exist" where an object store's URL names a bucket that is
    not there (the build said so, the reader and `inspect` said only "no store at"), else ""."""
    if not is_url(location):
        return ""
    # (a hint only: the refusal stands without it; `exists` is no test, as it answers False
    # for an endpoint that stopped answering too, which this called a missing bucket)
    with contextlib.suppress(Exception):
        filesystem, root = url_filesystem(location)
        bucket = root.split("/", 1)[0]
        # (a file system whose paths keep their URL, as http's do, has no bucket: a store at
        # `http://localhost:1/x.zarr` was said to be in a bucket 'http:' that does not exist)
        if bucket and "://" not in root:
            try:
                filesystem.info(bucket)
            except FileNotFoundError:
                return f", whose bucket {bucket!r} does not exist"
    return ""


def _as_location(path: str | Path) -> str | Path:
    """A URL without its trailing slashes (not those of its `://`: `s3://` alone was refused
    as `'s3:'`, where `build --store` named it `'s3://'`; found by review), else a Path."""
    if not is_url(path):
        return Path(path)
    scheme, separator, rest = str(path).partition("://")
    return scheme + separator + rest.rstrip("/")


def _real_place(path: str | Path) -> str | Path:
    """Where a store named through a symlink really lies: what `--overwrite` deletes and
    replaces, as its writer lock is the real store's (`lock.lock_path`). Renamed aside and
    made anew at the link's own place, the store was the link: its Zarr folder was left as
    it was, hidden under another name, and an HDF5 store lost its link, which became a
    second store with a lock of its own."""
    if not (isinstance(path, Path) and path.is_symlink()):
        return path
    real = Path(os.path.realpath(path))
    suffixes = _registered(path).suffixes
    if not real.name.lower().endswith(suffixes):  # (every later step opens the real place)
        raise StoreError(f"store {str(path)!r} is a link to {str(real)!r}, whose name does not "
                         f"end in {suffixes[0]}: link to a path that does")
    return real


def _refused(path: str | Path, mode: str, exc: OSError) -> StoreError:
    """The system refused to open a store (a read-only file opened to write, a file another
    process holds): said as such, not as "not a readable flowstore store", which sends users
    to --overwrite a store that is fine."""
    doing = "for writing" if mode != "r" else "for reading"
    if isinstance(exc, IsADirectoryError):
        return StoreError(f"{str(path)!r} is a folder, not a flowstore store (an HDF5 store is "
                          f"one file)")
    if isinstance(exc, BlockingIOError):
        return StoreError(f"cannot open store {str(path)!r} {doing}: another process holds "
                          f"its file lock (h5py.File with its default locking; open it with "
                          f"locking=False, or close it)")
    return StoreError(f"cannot open store {str(path)!r} {doing}: {os.strerror(exc.errno)}")


def open_store(path: str | Path, mode: str = "r", *, check_whole: bool = True) -> Store:
    """Open an existing flowstore store read-only ("r") or for appending ("r+").

    Reads a fixed number of metadata objects whatever the store's size (the root's, and each
    array's when it is first used): nothing here lists chunks.

    `check_whole` also refuses a damaged store (a required column missing, a root attribute of
    the wrong type); without it only "is this a flowstore store at all" is asked, as
    `remove_store` asks before `--overwrite` deletes one, however damaged.

    Raises:
        StoreError: the path is missing, is not a flowstore store, or has another format.
    """
    path = _as_location(path)
    backend = backend_for(path)
    if not store_exists(path):
        raise StoreError(f"no store at {str(path)!r}{_missing_bucket(path)}")

    def refuse_unreadable(exc: Exception) -> NoReturn:
        """Any backend failure to parse: not a store; unless the system ran out of memory,
        threads or files (`resource_exhaustion`), no damage of the store's, or the backend
        said in its own words what is wrong (a StoreError), each raised as it is."""
        if resource_exhaustion(exc) or isinstance(exc, StoreError):
            raise exc
        raise StoreError(f"{str(path)!r} is not a readable flowstore store "
                         f"({type(exc).__name__}: {exc})") from exc

    from flowstore.store.lock import reader_lock, release_reader_lock, remove_made_lock_file

    caps = backend.capabilities(path)
    # a backend that cannot be read while it is written holds the lock shared while open:
    # refused in one line naming the build, and a build is refused while it is held
    held = reader_lock(path) if mode == "r" and not caps.reads_during_build else None
    try:
        store = backend.open(path, mode)
    except BaseException as exc:
        if isinstance(exc, (IsADirectoryError, NotADirectoryError)) or (
                isinstance(exc, Exception) and not isinstance(exc, StoreError)
                and getattr(exc, "errno", None) is None):  # (not the system's refusal)
            remove_made_lock_file(held)  # a file of another kind, or a folder: no store
        release_reader_lock(held)
        if isinstance(exc, StoreError) or not isinstance(exc, Exception):
            raise
        if isinstance(exc, OSError) and exc.errno is not None and not resource_exhaustion(exc):
            raise _refused(path, mode, exc) from exc  # the system's refusal of this store
        refuse_unreadable(exc)
    store.reader_lock = held
    try:
        version = store.format
    except Exception as exc:
        store.close()  # (and with it an HDF5 reader's hold on the store lock)
        refuse_unreadable(exc)
    if version is None:
        half_created = store.attrs.get(CREATING_ATTR)
        if not half_created:
            remove_made_lock_file(held)
        store.close()
        if half_created:
            raise HalfCreatedStoreError(
                f"{str(path)!r} is a store whose making stopped before it was one (a build "
                f"killed while creating it, or one creating it now); --overwrite deletes it")
        raise StoreError(f"{str(path)!r} is not a flowstore store (no {FORMAT_ATTR!r} attribute)")
    if version not in READABLE_FORMATS:
        store.close()
        raise StoreError(f"{str(path)!r} has store format {version!r}; this flowstore reads "
                         f"format {' and '.join(map(str, READABLE_FORMATS))}")
    wrong = _mistyped_attribute(store.attrs) if check_whole else None
    if wrong:
        store.close()
        raise StoreError(f"store {str(path)!r} is damaged: its attribute {wrong}; delete it or "
                         f"rebuild it with --overwrite")
    if check_whole:
        try:  # (parses each array's metadata: a truncated zarr.json fails here)
            names = set(store.array_names())
        except Exception as exc:
            store.close()
            refuse_unreadable(exc)
        missing = [name for name in REQUIRED[version] if name not in names]
        if missing:
            store.close()
            raise StoreError(f"store {str(path)!r} is damaged: it has no {missing[0]!r} array; "
                             f"delete it or rebuild it with --overwrite")
        if mode != "r":
            try:
                refused = layout_write_error(store, path)
            except Exception as exc:
                store.close()
                refuse_unreadable(exc)
            if refused is not None:
                store.close()
                raise refused
    return store


def layout_write_error(store: Store, path: str | Path) -> StoreError | None:
    """Why flowstore must not write into `store` (opened to write: a build resuming it,
    `verify --repair`, a `--reuse-from` target), or None: an array laid out as flowstore never
    lays it out, which another tool (zarr-python, h5py) rewrote, and which flowstore's writes
    would corrupt without a word. Both backends, from the arrays' metadata alone:

    - a per-sample array (every array but the layout's columns) must hold one sample a chunk,
      written alone (no Zarr shard around it): the build's workers write samples in parallel,
      each its own chunks, and two samples in one chunk (or one shard) were each written by
      reading the chunk, changing one sample and writing it back, one worker's sample lost to
      the other's write while the ledger recorded both done (`verify` found them bad);
    - a ledger text column (`checksum`, `failure`, `source_hash`) must take values of any
      length, or at least as long as flowstore's own fixed width (`layout.Column.width`, which
      new HDF5 stores have): in a narrower one Zarr cut every digest to its width without a
      word (every sample then failed `verify`), and HDF5 refused the write as an internal error,
      the samples extracted lost.

    Reading such a store is fine (zarr and h5py read any layout): only writing is refused,
    before anything is written, so the store is left as it was, byte for byte.
    """
    remedy = ("build it anew (--overwrite), or copy its samples into a new store with "
              "--reuse-from")
    for name in store.array_names():
        info = store.info(name)
        if name in COLUMN_NAMES:
            column, width = BY_NAME[name], info.text_width
            if (name in LEDGER and column.dtype == STRING and width is not None
                    and (column.width is None or width < column.width)):
                return StoreError(
                    f"store {str(path)!r}: array {name!r} holds text of a fixed width of "
                    f"{width} (rewritten by another tool?); flowstore writes {name!r} values of "
                    f"any length there: {remedy}")
            continue
        if not info.shape or info.shape[0] == 0 or info.one_sample_a_chunk:
            continue  # (no sample, nothing a build writes; or flowstore's own layout)
        if info.shards is not None:  # (a shard is rewritten whole, whatever its chunks)
            what = (f"is sharded, {info.shards[0]} samples a shard" if info.shards[0] != 1
                    else "is sharded")
        else:
            what = (f"holds {info.chunks[0]} samples a chunk" if info.chunks[0] != 1 else
                    f"holds a sample in several chunks (chunks {tuple(info.chunks)})")
        return StoreError(f"store {str(path)!r}: array {name!r} {what} (rewritten by another "
                          f"tool?); flowstore writes one sample a chunk: {remedy}")
    return None


#: The root attributes commands read, and what each must be where present: a store whose
#: attributes were edited by hand (or written by another tool) into another type is damaged,
#: said in one line when it opens, not a TypeError deep inside `inspect`, `verify` or `show`.
ROOT_ATTRIBUTES = {"dataset": (str, "text"), "classes": (list, "a list of class names"),
                   "params": (dict, "an object of parameters"),
                   "options": (dict, "an object of options"),
                   # (hexadecimal digits: a run folder's name holds its first 8; "/../../x"
                   # trained a whole model, then failed to write it, found by review)
                   "fingerprint": (str, "hexadecimal digits"),
                   SOFTWARE: (dict, "an object of versions")}


#: Root attributes a null stands for "not recorded" in (stores written before `software` was
#: recorded hold null there, and every reader takes a null as none).
NULLABLE_ATTRIBUTES = (SOFTWARE, "options", "fingerprint")


def _mistyped_attribute(attrs: Mapping[str, Any]) -> str | None:
    """What is wrong with the first root attribute of the wrong type, or None."""
    for name, (kind, what) in ROOT_ATTRIBUTES.items():
        if name not in attrs or attrs[name] is None and name in NULLABLE_ATTRIBUTES:
            continue
        value = attrs[name]
        if not isinstance(value, kind) or (name == "classes" and not all(
                isinstance(c, str) for c in value)) or (
                name == "fingerprint" and not re.fullmatch("[0-9a-f]*", value)):
            shown = repr(value)
            return f"{name!r} is not {what} ({shown if len(shown) <= 40 else shown[:37] + '...'})"
    return None


def check_array_shapes(store: Store, specs: Sequence[ArraySpec], path: str | Path,
                       hint: str = "", *, num_samples: int | None = None) -> None:
    """Refuse a store whose arrays are not one entry per sample each (`num_samples`: the
    manifest's; by default the `id` column's length), or whose features named in `specs` are
    not of their shape: a hand-edited or damaged `zarr.json` (or HDF5 header) that declares
    another shape. Read as declared, such an array raised numpy's and zarr's errors deep in
    `inspect`, `verify` and `show`, or passed `verify` while a build called it damaged.

    The same holds for each array's type (`array_type_error`): the layout's columns always,
    the features named in `specs`. A `zarr.json` edited to another `data_type` reads every
    chunk as bytes of another type (`verify` then called each sample unreadable, and a build
    recorded each as failed, in the damaged store); an HDF5 column rewritten as another type
    reads back converted (a float `label` stopped `inspect` with a TypeError, `done` as text
    counted every sample done).

    Raises:
        StoreError: naming the first such array, its shape or type and the one expected
            (`hint` appended: what to do about it).
    """
    names = store.array_names()
    if num_samples is None:
        num_samples = store.num_samples
    wanted = {spec.name: (num_samples, *spec.sample_shape) for spec in specs}
    types = {spec.name: spec.dtype for spec in specs}
    for name in [*wanted, *(n for n in names if n not in wanted)]:
        found = store.info(name).shape if name in names else None
        fits = (found == wanted[name] if name in wanted
                else found is not None and found[:1] == (num_samples,)
                and (name not in COLUMN_NAMES or len(found) == 1))
        if not fits:
            expected = (str(wanted[name]) if name in wanted
                        else f"({num_samples},)" if name in COLUMN_NAMES
                        else f"({num_samples}, ...)")
            what = "has no" if found is None else f"has shape {found} for"
            raise StoreError(f"store {str(path)!r} is damaged: it {what} array {name!r} "
                             f"{expected}{hint}")
        wrong = array_type_error(store, name, path, types.get(name), hint)
        if wrong is not None:
            raise wrong


def _type_name(dtype: str) -> str:
    """A dtype as messages name it: `STRING` as "text"."""
    return "text" if dtype == STRING else dtype


def array_type_error(store: Store, name: str, path: str | Path, expected: str | None = None,
                     hint: str = "") -> StoreError | None:
    """Why array `name` is not of the type the store's layout gives it (`expected`; by default
    its column's, `flowstore.store.layout.COLUMNS`; no type is expected of a feature without
    one), or None where it is. Text is text however stored (Zarr's strings, HDF5's variable or
    fixed width); a number of the other byte order is the same type (every backend's `info`
    names it in native order, as it hands out its values)."""
    if expected is None:
        if name not in BY_NAME:
            return None
        expected = BY_NAME[name].dtype
    found = store.info(name).dtype
    if found == expected:
        return None
    return StoreError(f"store {str(path)!r} is damaged: its array {name!r} holds "
                      f"{_type_name(found)}, not {_type_name(expected)}{hint}")


def create_store(path: str | Path, *, attrs: Mapping[str, Any], specs: list[ArraySpec],
                 columns: Mapping[str, Any], num_samples: int) -> Store:
    """Create a store and return it open for writing: every column of the layout (`columns`
    gives `id`, `label`, `split`; the ledger starts empty), an empty array per spec.

    Published atomically: where the backend can rename, the store is made under a temporary
    name beside `path` and renamed into place, so a half-created store never exists there;
    elsewhere (object storage) it is made in place with its root attributes, which mark it as
    a flowstore store, written last.

    Raises:
        StoreError: the folder is missing, or the store cannot be written (one line).
    """
    path = _real_place(_as_location(path))
    backend = backend_for(path)
    if isinstance(path, Path) and not path.parent.exists():
        raise StoreError(f"the folder of store {str(path)!r} does not exist")
    attrs = {FORMAT_ATTR: FORMAT, **attrs}
    values = all_columns(num_samples, columns)
    if backend.capabilities(path).rename:
        temporary: str | Path = _beside(path, "creating")
        _remove_leftovers(path)
    else:
        temporary = path
        scheme, parts = url_parts(path)
        if len(parts) == 1:  # (any bucket "exists": read as objects there already)
            bucket = parts[0]
            raise StoreError(f"cannot create store {str(path)!r} at the root of the bucket "
                             f"{bucket!r}: name it under the bucket "
                             f"({scheme}://{bucket}/NAME.zarr)")
        if store_exists(path):
            raise StoreError(f"cannot create store {str(path)!r}: something is there already")
        if _holds_objects(path):  # (zarr's own refusal read as another build's race)
            raise StoreError(f"cannot create store {str(path)!r}: objects are there already, "
                             f"and they are no flowstore store (no zarr.json); delete them or "
                             f"choose another --store")
    try:
        backend.create(temporary, attrs=attrs, specs=specs, columns=values,
                       num_samples=num_samples).close()
        if temporary != path:
            os.replace(temporary, path)
    except BaseException as exc:
        if temporary == path and _created_elsewhere(exc):
            # an object store: another process created the root first (zarr's mode "w-"), and
            # the place is its store now, half written: removing it ruined both builds
            raise StoreError(f"cannot create store {str(path)!r}: another process created it "
                             f"at the same moment (one build per store)") from None
        # never leave a half-created store (or its bytes) behind; the place was empty before
        with contextlib.suppress(Exception):
            # whatever is there, a valid store or not: a disk that filled up before the root
            # metadata was written leaves array folders that `exists` does not call a store
            if is_url(temporary) and backend.exists(temporary) or os.path.lexists(temporary):
                backend.remove(temporary)
        if resource_exhaustion(exc):
            raise  # (no descriptor or memory left: the system's limit, no fault of the store's)
        remote = is_url(path) and isinstance(exc, Exception)
        missing = _missing_bucket(path) if remote else ""
        if missing:  # (said as the readers say it, not in botocore's words)
            raise StoreError(f"cannot create store {str(path)!r}{missing}") from None
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc).splitlines()[0]
            raise StoreError(f"cannot create store {str(path)!r}: {reason}") from None
        if remote:  # (as `remote_errors` says it, once: it named the store a second time)
            raise StoreError(f"cannot create store {str(path)!r}: {remote_reason(exc)}") \
                from None
        raise
    return open_store(path, "r+")


def _holds_objects(location: str) -> bool:
    """Whether anything lies under an object-store prefix (a URL store is made in place)."""
    with remote_errors(location):
        fs, root = url_filesystem(location)
        return bool(fs.exists(root))


def _created_elsewhere(exc: BaseException) -> bool:
    """Whether `exc` (or an error it was raised from) is zarr's FileExistsError for a root
    that appeared after the place was checked empty."""
    return any(isinstance(seen, FileExistsError) for seen in raised_with(exc))


def failures(store: Store) -> dict[str, str]:
    """Sample id -> why its last extraction failed, for a store of either format."""
    if store.format == 1:
        from flowstore.store import format1

        return format1.failures(store)
    return failures_named(store.read("id"), store.read("failure"), store.read("done"))


def failures_named(ids: Sequence[str], reasons: Any, done: Any) -> dict[str, str]:
    """Sample id -> failure reason, from a format-2 store's `id`, `failure` and `done` columns;
    a done sample's reason is stale (a build killed between writing `done` and clearing it,
    before the ledger cleared failures first), not a failure."""
    import numpy as np

    reasons = np.asarray(reasons)
    failed = (reasons != "") & ~np.asarray(done, dtype=bool)
    return {str(ids[i]): str(reasons[i]) for i in np.flatnonzero(failed)}


def remove_store(path: str | Path) -> None:
    """Delete a store, but only one that is recognisably a flowstore store.

    `--overwrite` must never delete a folder a user pointed at by mistake.
    """
    path = _real_place(_as_location(path))
    if not store_exists(path):
        return
    try:  # raises unless it is a flowstore store, or one whose making stopped
        open_store(path, "r", check_whole=False).close()
    except HalfCreatedStoreError:
        pass
    backend = backend_for(path)
    if not backend.capabilities(path).rename:
        with remote_errors(path):
            backend.remove(path)
        return
    # moved aside in one step, then deleted: a delete stopped halfway (a kill, a folder it may
    # not delete) in place left part of a store that no longer reads as one, which every
    # command, `--overwrite` too, then refused to touch
    aside = _beside(path, "removing")
    try:
        os.replace(path, aside)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # an overlay mount (a container's image) renames no folder of its lower layer: the
        # store is deleted where it is, as it cannot be moved (`--overwrite` failed there,
        # "Invalid cross-device link"; found by review)
        aside = path
    try:
        backend.remove(aside)
    except OSError as exc:
        done = (f"moved the old store {str(path)!r} aside to {str(aside)!r} but could not "
                f"delete it" if aside != path else f"could not delete the old store {str(path)!r}")
        raise StoreError(f"{done} ({exc.strerror or exc}); delete it by hand") from None


def _beside(path: Path, doing: str) -> Path:
    """Where a store is made (`doing` "creating") or deleted ("removing") beside its place:
    hidden, named for it and this process."""
    return path.with_name(f".{_beside_stem(path)}.{doing}-{os.getpid()}{path.suffix}")


#: The most bytes a file name has (NAME_MAX on Linux and macOS file systems).
NAME_MAX = 255


def name_within(name: str, room: int) -> str:
    """`name` where it takes at most `room` bytes, else a digest of it (32 characters): the
    part of a name made beside a store (its lock, its hidden work names) that stands for the
    store's own, so that a name the system takes never makes one it refuses ("File name too
    long")."""
    if len(os.fsencode(name)) <= room:
        return name
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:32]


def _beside_stem(path: Path) -> str:
    """The store's stem in `_beside`'s names: they add a dot, ".removing-", a pid (at most 7
    digits on Linux) and the suffix (a name of 240 bytes could not be built before a digest
    stood for it)."""
    return name_within(path.stem, NAME_MAX - len(".") - len(".removing-") - 7
                       - len(os.fsencode(path.suffix)))


def _remove_leftovers(path: Path) -> None:
    """Delete what killed processes left beside a store's place while making or deleting it
    (`_beside`). Only a build of this store makes them, under its writer lock, which the
    caller holds: none is in use."""
    for doing in ("creating", "removing"):
        for leftover in path.parent.glob(f".{glob.escape(_beside_stem(path))}.{doing}-*"
                                         f"{path.suffix}"):
            with contextlib.suppress(OSError):
                backend_for(leftover).remove(leftover)
