"""The ledger: a store's record of which samples are complete, and why the others are not.

Only a build's coordinator writes it (`flowstore.build`); `verify` reads the reasons it leaves
(`REPAIR_UNFINISHED`, `REPAIR_FAILED`). Its columns are `flowstore.store.layout.LEDGER`; the
order in which `Ledger.write` writes them is what makes a killed build safe to resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from flowstore.datasets.base import SourceSizes
from flowstore.store import Store
from flowstore.store.base import (UnreadableChunk, ledger_dtype, never_extracted, read_column,
                                  unrecorded_sources)
from flowstore.store.layout import BY_NAME, LEDGER, as_text

#: The failure reason of a sample `verify --repair` unmarked to extract again, until it is
#: done (or fails for a reason of its own): if the repair stops first, `verify` reports the
#: sample and `verify --repair` extracts it.
REPAIR_UNFINISHED = "its re-extraction by verify --repair did not finish"
#: What the failure reason of a sample that a repair unmarked and then failed to extract begins
#: with: `verify` names such a sample, and `verify --repair` takes it again. With the build's
#: reason alone it was a build's failed sample, which verify does not check: a repair stopped
#: by a full disk said "free some and run the same command again", and the same command
#: found nothing to repair (found by review).
REPAIR_FAILED = "its re-extraction by verify --repair failed"


@dataclass
class Ledger:
    """The coordinator's record of which samples are complete; only the coordinator writes it.

    The ledger columns (`flowstore.store.layout.LEDGER`: `done`, `checksum`, `failure`,
    `source_size`, `source_hash`) are held whole in memory and written back changed chunks
    only: `write` costs what changed since the last write, not the store's size.

    Written in this order: `done` of the samples unmarked (`reset`), then checksums and the
    source files' sizes and hashes, then the failure reasons, then `done` of the samples
    completed, so a sample is never marked done without its checksum (with `durable`,
    the checksums are fsynced before `done` is written, and everything after), and a failed
    sample that now succeeded is never left done with its old failure by a kill between the
    two writes (every later build said it failed, and never retried it: it was done). A
    store written before that order may hold such samples: `load` clears their failures.

    A ledger chunk that cannot be read (a power cut can leave one an empty file) costs its
    samples, not the store: they are loaded as never extracted, every ledger column of theirs
    is written again (`mend`, before any task runs), and the build extracts them again.
    """

    columns: dict[str, np.ndarray]
    #: Column -> indices changed since the last `write`.
    changed: dict[str, set[int]] = field(default_factory=lambda: {name: set() for name in LEDGER})
    #: The ledger chunks `load` could not read (their samples loaded as never extracted).
    unreadable: list[UnreadableChunk] = field(default_factory=list)

    @classmethod
    def load(cls, store: Store) -> "Ledger":
        columns, unreadable = {}, []
        for name in LEDGER:
            columns[name], lost = read_column(store, name, never_extracted(name))
            unreadable += lost
        # (a chunk missing is read as the fill value: lost all the same, and named once)
        done = columns["done"].astype(bool)
        for chunk in unreadable:
            done[chunk.start:chunk.stop] = False
        unreadable += unrecorded_sources(done, columns["source_size"])
        changed: dict[str, set[int]] = {name: set() for name in LEDGER}
        for chunk in unreadable:  # its samples as never extracted in every ledger column, each
            for name in LEDGER:   # written whole again at the next `write`
                columns[name][chunk.start:chunk.stop] = BY_NAME[name].fill
                changed[name].update(range(chunk.start, chunk.stop))
        for name, values in columns.items():
            if name in PACKED_TEXT:
                columns[name] = _packed(values)
            else:
                columns[name] = values.astype(ledger_dtype(name))
        ledger = cls(columns, changed=changed, unreadable=unreadable)
        for index in np.flatnonzero(ledger.done & (columns["failure"] != "")).tolist():
            ledger.forget_failure(index)  # (done is the later write: the failure is stale)
        return ledger

    def text(self, name: str, index: int) -> str:
        """One sample's value of a text column."""
        value = self.columns[name][index]
        return _unpack_digest(value) if name in PACKED_TEXT else value

    @property
    def done(self) -> np.ndarray:
        return self.columns["done"]

    def _set(self, name: str, index: int, value: Any) -> None:
        if name in PACKED_TEXT:
            value = _pack_digest(value)
            if len(value) > self.columns[name].itemsize:  # (a longer digest than any so far)
                self.columns[name] = self.columns[name].astype(f"S{len(value)}")
        if self.columns[name][index] != value:
            self.columns[name][index] = value
            self.changed[name].add(index)

    def complete(self, index: int, digest: str) -> None:
        self._set("checksum", index, digest)
        self._set("done", index, True)
        self._set("failure", index, "")

    def record_source(self, index: int, size: int | None, digest: str | None) -> None:
        """The size and content hash of the source file a done sample was extracted from."""
        self._set("source_size", index, -1 if size is None else size)
        self._set("source_hash", index, digest or "")

    def fail(self, index: int, reason: str) -> None:
        if self.repair_unfinished(index):
            reason = f"{REPAIR_FAILED}: {reason}"
        self._set("failure", index, as_text(reason))

    def forget_failure(self, index: int) -> None:
        self._set("failure", index, "")

    def reset(self, index: int) -> None:
        """Unmark a done sample to extract it again, saying why in its failure reason until
        it is done: a repair stopped before it got to the sample left it neither done nor
        failed, which `verify` did not check and `verify --repair` never came back to."""
        self._set("done", index, False)
        self._set("checksum", index, "")
        self._set("failure", index, REPAIR_UNFINISHED)

    def repair_unfinished(self, index: int) -> bool:
        """Whether a repair unmarked the sample (`reset`) and has not extracted it since."""
        return self.text("failure", index) == REPAIR_UNFINISHED

    def recorded_size(self, index: int) -> int | None:
        size = int(self.columns["source_size"][index])
        return None if size < 0 else size

    def source_sizes(self, current: SourceSizes) -> SourceSizes:
        """What the fingerprint hashes: the source files' sizes as they are now, but for a done
        sample the size of the file its task read. `current` itself when they agree (the
        usual case: a build refuses a done sample whose file changed), not a copy of a
        300,000-clip list."""
        differ = self.sizes_changed(current)
        if not len(differ):
            return current
        return current.with_rows({int(i): self.recorded_size(int(i)) for i in differ})

    def sizes_changed(self, current: SourceSizes) -> np.ndarray:
        """Indices of the done samples whose source file's size now is not the size their
        task read."""
        return np.flatnonzero(self.done & (self.columns["source_size"] != current.sizes))

    def mend(self, store: Store, *, durable: bool = False) -> None:
        """Write the ledger as `load` left it, each column with a chunk `load` could not read
        written whole through `Store.rewrite_column`: what stores that chunk cannot be trusted
        to take a write (an HDF5 chunk index that does not read refuses every write through
        it, and every build failed on it at its first ledger write). Called right after `load`,
        before any task: `done` then only unmarks samples, so a whole `done` rewritten at
        `write`'s first step marks none done without its checksum."""
        self.write(store, durable=durable, rewrite=[chunk.name for chunk in self.unreadable])

    def write(self, store: Store, *, durable: bool = False, rewrite: Sequence[str] = ()) -> None:
        """(`rewrite`: columns written whole, `mend`'s.)"""
        rewrite = set(rewrite)

        def put(names: tuple[str, ...], only: set[int] | None = None) -> None:
            """Write the changed entries of `names` (of them, those in `only`); a column of
            `rewrite` whole."""
            for name in names:
                indices = set(self.changed[name]) if only is None else self.changed[name] & only
                column = self.columns[name]
                stored = _Unpacked(column) if name in PACKED_TEXT else column
                if name in rewrite:
                    store.rewrite_column(name, stored[:])
                    rewrite.discard(name)
                    self.changed[name].clear()
                elif indices:
                    store.write_changed(name, stored, sorted(indices))
                    self.changed[name].difference_update(indices)

        # A sample to extract again (`reset`) is unmarked first: clearing its checksum while
        # it is still done would leave, after a kill in between, a done sample with no
        # checksum, which every later build takes as complete and `verify` as damaged. Its
        # failure reason (`REPAIR_UNFINISHED`) goes just before: one left on a done sample
        # by a kill in between is stale, and `load` clears it.
        unmarked = {i for i in self.changed["done"] if not self.columns["done"][i]}
        if unmarked:
            put(("failure", "done"), only=unmarked)
            store.flush()
            if durable:
                store.sync_columns()
        put(("checksum", "source_size", "source_hash"))
        if durable:
            store.flush()
            store.sync_columns()
        put(("failure", "done"))
        store.flush()
        if durable:
            store.sync_columns()


#: Ledger text held as one numpy bytes array per column instead of a `str` per sample: the
#: digests are ASCII of one length, and two `str` objects a sample (with the allocator pages
#: they pin among Dask's short-lived objects) were about 0.4 KB a sample of a build's memory,
#: growing to the end of the build (benchmarks/build_scale.py, 30,000 vs 100,000 tasks).
PACKED_TEXT = ("checksum", "source_hash")
#: A digest of today's form, "xxh3_128:" and 32 lowercase hex digits, is held as this byte and
#: its 16 bytes (17 bytes, not 41: 48 bytes a sample over both columns); any other text (an
#: older store's blake2b hex) as its UTF-8 bytes, which never start with this byte.
_RAW_DIGEST = b"\x01"
_DIGEST_PREFIX = "xxh3_128:"


def _pack_digest(text: str) -> bytes:
    hex_digits = text[len(_DIGEST_PREFIX):]
    if text.startswith(_DIGEST_PREFIX) and len(hex_digits) == 32:
        try:
            raw = bytes.fromhex(hex_digits)
        except ValueError:
            raw = b""
        if raw.hex() == hex_digits:
            return _RAW_DIGEST + raw
    return text.encode()


def _unpack_digest(packed: bytes) -> str:
    if packed[:1] == _RAW_DIGEST:  # (numpy drops trailing NUL bytes: put them back)
        return _DIGEST_PREFIX + packed[1:].ljust(16, b"\0").hex()
    return packed.decode()


def _packed(values: np.ndarray) -> np.ndarray:
    """Text values packed (`_pack_digest`) in one bytes array as wide as the longest
    (`Ledger._set` widens it when a longer value comes)."""
    packed = [_pack_digest(str(value)) for value in np.asarray(values).ravel().tolist()]
    return np.array(packed, dtype=f"S{max([1, *map(len, packed)])}")


class _Unpacked:
    """A packed column as the stores write text: slices of it as `str` objects (the only
    access `Store.write_changed` makes)."""

    def __init__(self, packed: np.ndarray) -> None:
        self.packed = packed

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, key: slice) -> np.ndarray:
        values = self.packed[key]
        out = np.empty(len(values), dtype=object)
        out[:] = [_unpack_digest(value) for value in values.tolist()]
        return out

