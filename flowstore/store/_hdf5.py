"""HDF5 backend: one file, the same hierarchy as the Zarr store.

HDF5 attributes cannot hold nested JSON, so every root attribute is stored as its JSON text;
`attrs` decodes it back. Any h5py user reads them with `json.loads(f.attrs[key])`.
h5py serialises all calls behind one lock, so worker threads may write their own samples.

Crash safety: files use HDF5's default (earliest) format on purpose. With ``libver="latest"``
the superblock carries "open for writing" flags, and a writer killed with SIGKILL leaves them
set: every later open then fails until someone runs `h5clear`, so a killed build could not
resume. The writer flushes after every sample.

Readers open without HDF5's OS-level file lock, so `inspect` and trainers can read a store while
a build appends to it; they see the state of the writer's last flush. (`flowstore.store.lock`
is what keeps writers apart.)
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from flowstore.store.base import STRING, ArrayInfo, ArraySpec, Store, check_columns

_STR = h5py.string_dtype("utf-8")


class HDF5Store(Store):
    #: h5py runs one call at a time, holding the GIL: reads from two threads only contend
    #: (benchmarks/input_pipeline.py: 72% of a bare read with two in flight, 97% with one).
    concurrent_reads = False

    def __init__(self, file: h5py.File, path: Path, mode: str) -> None:
        self._file = file
        self._sample_lock = threading.Lock()
        self.path = path
        self.mode = mode

    @classmethod
    def create(cls, path: Path, *, attrs: Mapping[str, Any], specs: list[ArraySpec],
               columns: Mapping[str, Any], num_samples: int) -> "HDF5Store":
        check_columns(num_samples, columns)
        file = h5py.File(path, "w-")
        for name, values in columns.items():
            values = np.asarray(values)
            if values.dtype.kind in "UOT":
                file.create_dataset(name, data=values.astype(object), dtype=_STR)
            else:
                file.create_dataset(name, data=values)
        for spec in specs:
            file.create_dataset(spec.name, shape=(num_samples, *spec.sample_shape),
                                dtype=_STR if spec.dtype == STRING else spec.dtype,
                                chunks=(1, *spec.sample_shape) if num_samples else None,
                                compression="lzf" if num_samples else None, fillvalue=0,
                                # HDF5's byte shuffle is the nearest built-in to bitshuffle
                                # (it only moves bytes of multi-byte values)
                                shuffle=bool(num_samples) and spec.codec == "shuffled-lz4"
                                and spec.dtype != STRING and np.dtype(spec.dtype).itemsize > 1)
        file.create_dataset("done", data=np.zeros(num_samples, dtype=bool))
        store = cls(file, path, "r+")
        store.update_attrs(attrs)
        store.flush()
        return store

    @classmethod
    def open(cls, path: Path, mode: str) -> "HDF5Store":
        return cls(h5py.File(path, mode, locking=False) if mode == "r" else h5py.File(path, mode),
                   path, mode)

    @property
    def attrs(self) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self._file.attrs.items()}

    def array_names(self) -> list[str]:
        return sorted(self._file.keys())

    def read(self, name: str, index: Any = slice(None)) -> np.ndarray:
        dataset = self._file[name]
        if h5py.check_string_dtype(dataset.dtype):
            return np.asarray(dataset.asstr()[index], dtype=str)
        return np.asarray(dataset[index])

    def read_into(self, name: str, index: int, out: np.ndarray) -> None:
        self._file[name].read_direct(out, np.s_[index])

    def info(self, name: str) -> ArrayInfo:
        dataset = self._file[name]
        is_text = h5py.check_string_dtype(dataset.dtype) is not None
        itemsize = 0 if is_text else dataset.dtype.itemsize
        return ArrayInfo(name=name, shape=tuple(dataset.shape),
                         dtype=STRING if is_text else str(dataset.dtype),
                         chunks=tuple(dataset.chunks or dataset.shape),
                         nbytes=int(np.prod(dataset.shape)) * itemsize,
                         nbytes_stored=int(dataset.id.get_storage_size()))

    def write_sample(self, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        # One sample at a time, flush included: a flush writes every dirty chunk in the file, so
        # without this a full disk would fail one thread's flush for another thread's chunks
        # and the sample whose bytes were lost would be marked done.
        with self._sample_lock:
            super().write_sample(index, arrays)

    def write(self, name: str, index: Any, value: np.ndarray) -> None:
        self._file[name][index] = value

    def update_attrs(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            self._file.attrs[key] = json.dumps(value, sort_keys=True)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
