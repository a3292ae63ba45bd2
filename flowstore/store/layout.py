"""The store format: its version, and the per-sample columns every store has, declared once.

Format 2 (this flowstore writes it; it reads 1 and 2):

- every per-sample bookkeeping value is a column, an array of axis 0 = sample chunked
  `COLUMN_CHUNK` samples per chunk: the build's coordinator rewrites only the chunks holding
  samples that changed since its last write, so its cost per finished sample does not grow with
  the number of samples;
- the root attributes describe the store (dataset, classes, parameters, fingerprint) and hold
  nothing per sample: they stay a few KB at any size.

Format 1 (flowstore before issue 15) held `id`, `label`, `split`, `done` and `checksum` as
one-chunk arrays and the failures, the source files' sizes and hashes and the manifest CSV as
root attributes, all rewritten on every write of the ledger. A format-1 store is read as it is
(`flowstore.store.format1`) and upgraded to format 2 when a build resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: The layout this flowstore writes.
FORMAT = 2
#: Layouts this flowstore reads.
READABLE_FORMATS = (1, 2)
#: The root attribute that names a store's format (and marks a folder or file as a store).
FORMAT_ATTR = "flowstore.format"

#: Samples per chunk of a column. A ledger write touches the chunks of the samples that
#: finished since the last one (a few: tasks finish roughly in order), each at most this many
#: values (4096 checksums: ~170 KB before compression); a reader opening the store reads each
#: column in N / COLUMN_CHUNK chunks (74 for 300,000 Kinetics clips).
COLUMN_CHUNK = 4096

#: dtype marker for variable-length UTF-8 string arrays (Zarr v3 `string`, HDF5 vlen UTF-8:
#: the one text type both zarr-python 3 and h5py write and any reader of either reads).
STRING = "str"


@dataclass(frozen=True)
class Column:
    """One per-sample column: its name, dtype (`STRING` for text) and the value of a sample
    nothing has been recorded for."""

    name: str
    dtype: str
    fill: Any
    #: Given when the store is created (from the manifest), never written after.
    given: bool = False

    def empty(self, num_samples: int) -> np.ndarray:
        """The column of a new store: `fill` for every sample."""
        if self.dtype == STRING:
            return np.full(num_samples, self.fill, dtype=object)
        return np.full(num_samples, self.fill, dtype=self.dtype)


#: Every store's columns, in this order.
COLUMNS = (
    Column("id", STRING, "", given=True),  # the sample id (file stem)
    Column("label", "int32", 0, given=True),  # index into the root attribute `classes`
    Column("split", STRING, "", given=True),  # train, val or test
    Column("done", "bool", False),  # every feature of the sample is completely written
    Column("checksum", STRING, ""),  # "xxh3_128:<hex>" of the arrays written (done samples)
    Column("failure", STRING, ""),  # why the sample's last extraction failed ("" when it did not)
    Column("source_size", "int64", -1),  # bytes of the source file the done sample was read from
    Column("source_hash", STRING, ""),  # "xxh3_128:<hex>" of that file's bytes
)
COLUMN_NAMES = tuple(column.name for column in COLUMNS)
BY_NAME = {column.name: column for column in COLUMNS}
#: Written from the manifest when a store is created.
GIVEN = tuple(column.name for column in COLUMNS if column.given)
#: The build's ledger: written by its coordinator only, as samples finish.
LEDGER = tuple(column.name for column in COLUMNS if not column.given)
#: The columns a store of each format must have to be read (format-1 stores written by
#: `trainers.testing` before issue 15 have no `checksum`; `verify` needs one).
REQUIRED = {1: ("id", "label", "split", "done"), 2: COLUMN_NAMES}


def column_chunk(num_samples: int) -> int:
    """Samples per chunk of a column of a store of `num_samples` samples."""
    return max(1, min(num_samples, COLUMN_CHUNK))
