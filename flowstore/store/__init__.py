"""Open, create and remove stores; the suffix picks the backend (`.zarr` or `.h5`).

Readers need nothing else from flowstore: `open_store(path)` gives a `Store` whose `read`,
`attrs` and `info` work the same for both backends.

A store is a local path or, for Zarr, an fsspec URL such as ``s3://bucket/prefix/tvhi.zarr``.
Credentials and endpoints come from the environment the usual way (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``~/.aws/``) and are never written anywhere.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

from flowstore.errors import StoreError
from flowstore.params import STORE_FORMAT
from flowstore.store.base import STRING, ArrayInfo, ArraySpec, Store

__all__ = ["STRING", "ArrayInfo", "ArraySpec", "Store", "backend_for", "create_store", "is_url",
           "open_store", "remove_store", "store_exists"]

ZARR_SUFFIXES = (".zarr",)
HDF5_SUFFIXES = (".h5", ".hdf5")


def is_url(path: str | Path) -> bool:
    """True for fsspec URLs (``s3://...``, ``gs://...``, ``memory://...``); False for local paths."""
    return "://" in str(path)


def backend_for(path: str | Path) -> type[Store]:
    """The backend class for a store path, chosen by its suffix."""
    name = str(path).rstrip("/").lower()
    if name.endswith(ZARR_SUFFIXES):
        from flowstore.store._zarr import ZarrStore
        return ZarrStore
    if name.endswith(HDF5_SUFFIXES):
        if is_url(path):
            raise StoreError(f"HDF5 stores must be local files; use a .zarr URL, got {str(path)!r}")
        from flowstore.store._hdf5 import HDF5Store
        return HDF5Store
    raise StoreError(f"store path must end in .zarr (Zarr v3) or .h5 (HDF5), got {str(path)!r}")


@contextlib.contextmanager
def _remote(path: str | Path) -> Iterator[None]:
    """Turn an object-store failure (no bucket, bad credentials, no endpoint) into one line."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:  # botocore and fsspec raise many unrelated types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"cannot access {str(path)!r}: {type(exc).__name__}: {reason}") from None


def store_exists(path: str | Path) -> bool:
    if not is_url(path):
        return Path(path).exists()
    import fsspec

    with _remote(path):
        fs, root = fsspec.core.url_to_fs(str(path))
        return bool(fs.exists(f"{root.rstrip('/')}/zarr.json"))


def _as_location(path: str | Path) -> str | Path:
    return str(path).rstrip("/") if is_url(path) else Path(path)


#: Arrays every flowstore store has, whatever its dataset (a build also checks `checksum`).
COLUMNS = ("id", "label", "split", "done")


def open_store(path: str | Path, mode: str = "r", *, check_columns: bool = True) -> Store:
    """Open an existing flowstore store read-only ("r") or for appending ("r+").

    Raises:
        StoreError: the path is missing, is not a flowstore store, or has another format.
    """
    path = _as_location(path)
    backend = backend_for(path)
    if not store_exists(path):
        raise StoreError(f"no store at {str(path)!r}")

    def unreadable(exc: Exception) -> StoreError:  # any backend failure to parse: not a store
        return StoreError(f"{str(path)!r} is not a readable flowstore store "
                          f"({type(exc).__name__}: {exc})")

    try:
        store = backend.open(path, mode)
    except StoreError:  # e.g. an HDF5 store that a build is writing: its own clear line
        raise
    except Exception as exc:
        raise unreadable(exc) from exc
    try:
        attrs = store.attrs
    except Exception as exc:
        store.close()  # (and with it an HDF5 reader's hold on the store lock)
        raise unreadable(exc) from exc
    version = attrs.get("flowstore.format")
    if version is None:
        store.close()
        raise StoreError(f"{str(path)!r} is not a flowstore store (no 'flowstore.format' attribute)")
    if version != STORE_FORMAT:
        store.close()
        raise StoreError(f"{str(path)!r} has store format {version!r}; this flowstore reads "
                         f"format {STORE_FORMAT}")
    missing = [name for name in COLUMNS if name not in store.array_names()] if check_columns else []
    if missing:
        store.close()
        raise StoreError(f"store {str(path)!r} is damaged: it has no {missing[0]!r} array; "
                         f"delete it or rebuild it with --overwrite")
    return store


def create_store(path: str | Path, *, attrs: Mapping[str, Any], specs: list[ArraySpec],
                 columns: Mapping[str, Any], num_samples: int) -> Store:
    """Create a new store with its per-sample arrays empty and `done` all false."""
    path = _as_location(path)
    if isinstance(path, Path) and not path.parent.exists():
        raise StoreError(f"the folder of store {str(path)!r} does not exist")
    attrs = {"flowstore.format": STORE_FORMAT, **attrs}
    with _remote(path) if is_url(path) else contextlib.nullcontext():
        return backend_for(path).create(path, attrs=attrs, specs=specs, columns=columns,
                                        num_samples=num_samples)


def remove_store(path: str | Path) -> None:
    """Delete a store, but only one that is recognisably a flowstore store.

    `--overwrite` must never delete a folder a user pointed at by mistake.
    """
    path = _as_location(path)
    if not store_exists(path):
        return
    open_store(path, "r", check_columns=False).close()  # raises unless it is a flowstore store
    if is_url(path):
        import fsspec

        with _remote(path):
            fs, root = fsspec.core.url_to_fs(str(path))
            fs.rm(root, recursive=True)
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
