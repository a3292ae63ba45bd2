"""The store format: its version, and the per-sample columns every store has, declared once.

Format 2 (this flowstore writes it; it reads 1 and 2):

- every per-sample bookkeeping value is a column, an array of axis 0 = sample chunked
  `COLUMN_CHUNK` samples per chunk: the build's coordinator rewrites only the chunks holding
  samples that changed since its last write, so its cost per finished sample does not grow with
  the number of samples;
- the root attributes describe the store (dataset, classes, parameters, fingerprint) and hold
  nothing per sample: they stay a few KB at any size;
- text a build rewrites is fixed-width in a new HDF5 store (`Column.width`). That is how one
  column is stored, not a new format: readers and writers go by each column's dtype in the
  file, and older HDF5 stores, whose columns are variable-length, are read and resumed as
  they are (an older flowstore reads the new ones too: h5py reads either as text).

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
#: The root attribute of a store while it is made, replaced by the finished store's own (with
#: `FORMAT_ATTR`) in one write: an object store is made in place, and one that has it and no
#: format was left by a build stopped while making it (`--overwrite` deletes it).
CREATING_ATTR = "flowstore.creating"
#: The root attribute a build adds one to when it takes back `done` flags it had set (a
#: `verify --repair`, once it has unmarked the samples it re-extracts and again once it has
#: marked them): a reader that keeps a store open (`flowstore.reader.Split`) reads `done` again
#: when it changes, so as not to read a sample while it is rewritten, or one a repair could not
#: mend. Absent (0) in stores no repair has written.
DONE_REVISION = "done_revision"
#: The root attribute recording what extracted the samples: {"flowstore": version, "opencv":
#: version} (absent from stores made before it was recorded).
SOFTWARE = "software"

#: Samples per chunk of a column. A ledger write touches the chunks of the samples that
#: finished since the last one (a few: tasks finish roughly in order), each at most this many
#: values (4096 checksums: ~170 KB before compression); a reader opening the store reads each
#: column in N / COLUMN_CHUNK chunks (74 for 300,000 Kinetics clips).
COLUMN_CHUNK = 4096

#: dtype marker for UTF-8 text columns: Zarr v3 `string` (variable-length); in HDF5 the ones
#: given at creation are variable-length UTF-8 and those a build rewrites fixed-width UTF-8
#: (`Column.width`). Every reader of either library reads both as text.
STRING = "str"



def as_text(value: str) -> str:
    """`value` as a text column can hold it: the bytes of a file or folder name that is not
    UTF-8 (which Python keeps as surrogates) written as `\\xff`. Such a name met as a sample id
    or class (`videofolder`, `imagefolder`), or inside a failure reason, stopped the build
    with a traceback when the column was written."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


#: Ends a value cut to fit its column's fixed width (`Column.fit`).
CUT_MARK = "\u2026"  # "…"


@dataclass(frozen=True)
class Column:
    """One per-sample column: its name, dtype (`STRING` for text) and the value of a sample
    nothing has been recorded for."""

    name: str
    dtype: str
    fill: Any
    #: Given when the store is created (from the manifest), never written after.
    given: bool = False
    #: Text a build rewrites: bytes of UTF-8 per value where a backend stores it fixed-width.
    #: HDF5 does, for new stores (`flowstore.store._hdf5`): a variable-length string lives in
    #: the file's global heap, and every rewrite of a chunk of them adds heap objects, which a
    #: process killed between HDF5's writes of the chunk and of the heap leaves the chunk
    #: pointing at ("bad heap index"); a fixed-width chunk is overwritten in place.
    width: int | None = None
    #: A longer value is cut (`fit`) rather than refused: for failure reasons, whose start says
    #: what failed; never for digests, which a cut would make fail every check.
    cut: bool = False

    def empty(self, num_samples: int) -> np.ndarray:
        """The column of a new store: `fill` for every sample."""
        if self.dtype == STRING:
            return np.full(num_samples, self.fill, dtype=object)
        return np.full(num_samples, self.fill, dtype=self.dtype)

    def fit(self, text: str, width: int, encoding: str = "utf-8") -> bytes:
        """`text` as at most `width` bytes of `encoding` (the width of the column as stored,
        which for a store made by another flowstore, or rewritten by another tool, may not be
        `self.width`; HDF5 stores UTF-8, a Zarr fixed-width column UTF-32). A longer value of
        a `cut` column keeps its first characters and ends in `CUT_MARK`, cut at a character
        boundary, so it still reads back as text.

        Raises:
            ValueError: the value is longer than `width` and the column is not cut (a digest:
                a flowstore bug).
        """
        encoded = text.encode(encoding)
        if len(encoded) <= width:
            return encoded
        if not self.cut:
            raise ValueError(f"a {self.name!r} value of {len(encoded)} bytes does not fit the "
                             f"column's {width}: {text[:80]!r}")
        mark = CUT_MARK.encode(encoding)
        # the bytes of a character split by the cut are dropped ("ignore" drops nothing else:
        # `encoded` is valid in `encoding`)
        return encoded[:width - len(mark)].decode(encoding, "ignore").encode(encoding) + mark


#: Bytes of a fixed-width digest ("xxh3_128:<32 hex>" is 41): room for a longer algorithm name.
DIGEST_WIDTH = 64
#: Bytes of a fixed-width failure reason: flowstore's reasons (an error and the file it names)
#: are well under it; a longer one is cut, ending in `CUT_MARK`. 512 bytes a sample: 154 MB for
#: 300,000 clips, whose features at Kinetics' shapes take about 1 TB (benchmarks/README.md).
FAILURE_WIDTH = 512

#: Every store's columns, in this order.
COLUMNS = (
    Column("id", STRING, "", given=True),  # the sample id (file stem)
    Column("label", "int32", 0, given=True),  # index into the root attribute `classes`
    Column("split", STRING, "", given=True),  # train, val or test
    Column("done", "bool", False),  # every feature of the sample is completely written
    # "xxh3_128:<hex>" of the arrays written (done samples)
    Column("checksum", STRING, "", width=DIGEST_WIDTH),
    # why the sample's last extraction failed ("" when it did not)
    Column("failure", STRING, "", width=FAILURE_WIDTH, cut=True),
    Column("source_size", "int64", -1),  # bytes of the source file the done sample was read from
    Column("source_hash", STRING, "", width=DIGEST_WIDTH),  # "xxh3_128:<hex>" of its bytes
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
