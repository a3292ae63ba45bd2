"""Open, create and remove stores; the suffix picks the backend (`.zarr` or `.h5`).

Readers need nothing else from flowstore: `open_store(path)` gives a `Store` whose `read`,
`attrs` and `info` work the same for both backends.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from flowstore.errors import StoreError
from flowstore.params import STORE_FORMAT
from flowstore.store.base import STRING, ArrayInfo, ArraySpec, Store

__all__ = ["STRING", "ArrayInfo", "ArraySpec", "Store", "backend_for", "create_store",
           "open_store", "remove_store", "store_exists"]

ZARR_SUFFIXES = (".zarr",)
HDF5_SUFFIXES = (".h5", ".hdf5")


def backend_for(path: str | Path) -> type[Store]:
    """The backend class for a store path, chosen by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in ZARR_SUFFIXES:
        from flowstore.store._zarr import ZarrStore
        return ZarrStore
    if suffix in HDF5_SUFFIXES:
        from flowstore.store._hdf5 import HDF5Store
        return HDF5Store
    raise StoreError(f"store path must end in .zarr (Zarr v3) or .h5 (HDF5), got {str(path)!r}")


def store_exists(path: str | Path) -> bool:
    return Path(path).exists()


def open_store(path: str | Path, mode: str = "r") -> Store:
    """Open an existing flowstore store read-only ("r") or for appending ("r+").

    Raises:
        StoreError: the path is missing, is not a flowstore store, or has another format.
    """
    path = Path(path)
    backend = backend_for(path)
    if not path.exists():
        raise StoreError(f"no store at {str(path)!r}")
    try:
        store = backend.open(path, mode)
        attrs = store.attrs
    except Exception as exc:  # any backend failure to parse means: not a (readable) store
        raise StoreError(f"{str(path)!r} is not a readable flowstore store "
                         f"({type(exc).__name__}: {exc})") from exc
    version = attrs.get("flowstore.format")
    if version is None:
        store.close()
        raise StoreError(f"{str(path)!r} is not a flowstore store (no 'flowstore.format' attribute)")
    if version != STORE_FORMAT:
        store.close()
        raise StoreError(f"{str(path)!r} has store format {version!r}; this flowstore reads "
                         f"format {STORE_FORMAT}")
    return store


def create_store(path: str | Path, *, attrs: Mapping[str, Any], specs: list[ArraySpec],
                 columns: Mapping[str, Any], num_samples: int) -> Store:
    """Create a new store with its per-sample arrays empty and `done` all false."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise StoreError(f"the folder of store {str(path)!r} does not exist")
    attrs = {"flowstore.format": STORE_FORMAT, **attrs}
    return backend_for(path).create(path, attrs=attrs, specs=specs, columns=columns,
                                    num_samples=num_samples)


def remove_store(path: str | Path) -> None:
    """Delete a store, but only one that is recognisably a flowstore store.

    `--overwrite` must never delete a folder a user pointed at by mistake.
    """
    path = Path(path)
    if not path.exists():
        return
    open_store(path, "r").close()  # raises unless it is a flowstore store
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
