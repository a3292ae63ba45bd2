"""Stores of format 1: read as they are, upgraded to format 2 when a build resumes them.

Format 1 kept the ledger's per-sample values as root attributes: `failures` (sample id ->
reason), `source_files` and `source_hashes` (source file name -> size, content hash), beside
the manifest CSV (`manifest`), and `done` / `checksum` as one-chunk arrays. Everything else
(`id`, `label`, `split`, the features, the other attributes) is as in format 2.

Readers (the reader, trainers, `inspect`, `verify`, `show`) read both formats: the only
format-1 value they need that format 2 keeps elsewhere is the failures
(`flowstore.store.failures`). A build
(or `verify --repair`, which runs one) upgrades a format-1 store in place before it writes
anything (`upgrade`), so the ledger code knows format 2 only.

The upgrade is safe to kill at any moment: until its last step the store is still a valid
format-1 store holding exactly what it held (each column it adds or rechunks holds the values
format 1 already records, and `Store.put_column` never leaves a column missing or torn); its
last step, one write of the root attributes, sets the format to 2 and drops the format-1
attributes together. A killed upgrade is simply run again by the next build.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from flowstore.store.base import Store
from flowstore.store.layout import BY_NAME, FORMAT, FORMAT_ATTR, LEDGER

#: Root attributes of format 1 that format 2 holds as columns (or, the manifest, derives from
#: the `id`, `label` and `split` columns and the `classes` attribute).
ATTRIBUTES = ("failures", "source_files", "source_hashes", "manifest")


def failures(store: Store, *, ids: np.ndarray | None = None,
             done: np.ndarray | None = None) -> dict[str, str]:
    """Sample id -> failure reason, as format 1 kept it (`flowstore.store.failures` reads
    either format), less the samples marked done: a format-1 build wrote `done` before the
    `failures` attribute, so one killed between them left a finished sample listed as failed
    (`ledger` drops them the same way).

    `ids`, `done`: the columns as the caller read them, where a damaged chunk has stand-ins
    (`flowstore inspect`): a reason is then listed unless its sample is among the done ids, so
    that one whose id is unreadable is not lost with it.
    """
    reasons = store.attrs.get("failures", {})
    if ids is None or done is None:
        done = store.read("done").astype(bool)
        return {sample: reasons[sample] for sample, finished in zip(store.read("id").tolist(),
                                                                    done.tolist())
                if not finished and sample in reasons}
    finished = set(np.asarray(ids)[np.asarray(done, dtype=bool)].tolist())
    return {sample: reason for sample, reason in reasons.items() if sample not in finished}


def ledger(store: Store, source_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The ledger columns of a format-1 store, as format 2 holds them.

    Args:
        source_names: each sample's source file, as the format-1 attributes name it (what
            `Dataset.source_name` gives; the store layer knows no dataset).
    """
    attrs = store.attrs
    done = store.read("done").astype(bool)
    ids = store.read("id")
    names = set(store.array_names())
    checksum = (store.read("checksum").astype(object) if "checksum" in names
                else BY_NAME["checksum"].empty(len(done)))
    reasons, sizes = attrs.get("failures", {}), attrs.get("source_files", {})
    hashes = attrs.get("source_hashes", {})
    failure = np.array([reasons.get(str(sample), "") if not is_done else ""
                        for sample, is_done in zip(ids.tolist(), done.tolist())], dtype=object)
    size = np.array([-1 if sizes.get(name) is None else int(sizes[name]) for name in source_names],
                    dtype=np.int64)
    digest = np.array([hashes.get(name, "") for name in source_names], dtype=object)
    return {"done": done, "checksum": checksum, "failure": failure, "source_size": size,
            "source_hash": digest}


def upgrade(store: Store, source_names: Sequence[str]) -> None:
    """Rewrite a format-1 store opened for writing as format 2, in place (see the module
    docstring for why a kill at any moment loses nothing). The caller holds the writer lock."""
    columns = ledger(store, source_names)
    for name in LEDGER:
        store.put_column(name, columns[name])
    store.flush()
    store.update_attrs({FORMAT_ATTR: FORMAT}, remove=ATTRIBUTES)
    store.flush()
