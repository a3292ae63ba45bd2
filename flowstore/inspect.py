"""What is in a store: parameters, counts, failures and arrays, as data and as text.

Opening and summarizing reads the root metadata, each array's metadata and the small columns:
a fixed number of metadata objects at any size. Bytes on disk (`count_bytes`, `inspect
--bytes`) need a listing of every chunk, so they are counted only when asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from flowstore.console import one_line
from flowstore.errors import StoreError
from flowstore.manifest import SPLITS, class_label
from flowstore.store import array_type_error, backend_for, failures_named, format1, open_store
from flowstore.store.base import (ledger_remedy, read_column, unreadable_part,
                                  unrecorded_sources)
from flowstore.store.checksum import check_manifest_columns
from flowstore.store.layout import SOFTWARE


def _written_bytes(array: Any, samples: int, done: int) -> int:
    """The logical bytes of what `array` holds on disk: a per-sample array (one chunk a
    sample) only its `done` samples' (a partly built store's `ratio` compared the whole
    array's size with the few samples written: 35x for flow that compresses 1.06x), a column
    (written whole when the store is made) all of it."""
    if len(array.shape) > 1 and array.shape[0] == samples and samples:
        return array.nbytes * done // samples
    return array.nbytes


def summarize(path: str | Path, *, count_bytes: bool = False) -> dict[str, Any]:
    """Everything `flowstore inspect` shows, as a JSON-ready dict. Opens the store read-only.

    With `count_bytes`, each array's bytes on disk too (`bytes_stored`, `ratio`; None without),
    which lists every chunk of the store.
    """
    from flowstore.build import duplicate_sources  # (the build's modules: only when run)
    from flowstore.verify import check_dataset_arrays

    with open_store(path, "r") as store:
        attrs = store.attrs
        classes = attrs.get("classes", [])
        # shown, not refused: inspect is where one looks at a store that went wrong
        problems: list[str] = []
        ids = _column(store, "id", problems)
        # (every other column read as long as `id`: one whose declared length is another, a
        # damaged zarr.json, is named by `check_dataset_arrays` below)
        labels, splits = (_column(store, name, problems, len(ids)) for name in ("label", "split"))
        # (a manifest column's stand-in is no edit, and is named already: not compared then)
        manifest_read = not problems
        done = _column(store, "done", problems, len(ids)).astype(bool)
        checks = [lambda: check_dataset_arrays(store, path)]
        if manifest_read:
            checks.insert(0, lambda: check_manifest_columns(attrs, ids, labels, splits, path))
        for check in checks:
            try:
                check()
            except StoreError as exc:
                problems.append(str(exc))
        failures = _failures(store, ids, done, problems)
        if store.format != 1:  # (format 1 kept the sizes by source file name, in an attribute)
            sizes = _column(store, "source_size", problems, len(ids))
            problems.extend(str(unreadable_part(store.path, chunk.describe(), chunk.error,
                                                sample=False, remedy=ledger_remedy(chunk.name)))
                            for chunk in unrecorded_sources(done, sizes))
        # (a damaged store's label may name no class, its split no split: each is counted
        # under what it holds, in a row or column of its own)
        split_names = [split if split in SPLITS else
                       UNREADABLE_SPLIT if split == UNREADABLE_FILL["split"] else
                       f"(split {split!r})" for split in splits.tolist()]
        columns = [*SPLITS, *sorted(set(split_names) - set(SPLITS))]
        counts = {split: {name: 0 for name in classes} for split in columns}
        done_counts = {split: {name: 0 for name in classes} for split in columns}
        for label, split, finished in zip(labels.tolist(), split_names, done.tolist()):
            name = (UNREADABLE_CLASS if label == UNREADABLE_FILL["label"]
                    else class_label(classes, label))
            for table in counts, done_counts:
                for row in table.values():
                    row.setdefault(name, 0)
            counts[split][name] += 1
            done_counts[split][name] += finished
        names = store.array_names()
        # (format 1 kept the hashes by source file name, not by sample: not compared there)
        # (a damaged chunk's stand-in named as the counts name it, without their brackets:
        # a duplicate's split is put in brackets as it is listed)
        listed = [UNREADABLE_SPLIT[1:-1] if split == UNREADABLE_FILL["split"] else split
                  for split in splits.tolist()]
        duplicates = (duplicate_sources(ids, np.array(listed),
                                        _column(store, "source_hash", problems, len(ids)))
                      if "source_hash" in names else None)
        arrays = [store.info(name) for name in names]
        damaged = "\n".join(dict.fromkeys(problems)) or None  # (one problem a line, once)
        stored = {a.name: store.storage_size(a.name) if count_bytes else None for a in arrays}
    return {
        "path": str(path),
        "backend": backend_for(path).name,
        "format": attrs.get("flowstore.format"),
        "dataset": attrs.get("dataset"),
        "fingerprint": attrs.get("fingerprint"),
        "params": attrs.get("params", {}),
        "options": attrs.get("options", {}),
        "software": attrs.get(SOFTWARE) or {},
        "classes": classes,
        "samples": int(len(done)),
        "done": int(done.sum()),
        "failed": len(failures),
        "pending": int(len(done) - done.sum() - len(failures)),
        "damaged": damaged,
        # every split `counts` has, 0 where none is done (a script reading ["train"] of a
        # store whose train split had no done sample met a KeyError)
        "done_per_split": {split: sum(row.values()) for split, row in done_counts.items()},
        "counts": counts,
        "done_counts": done_counts,
        "failures": failures,
        "duplicates": duplicates,
        "arrays": [
            {"name": a.name, "shape": list(a.shape), "dtype": a.dtype, "chunks": list(a.chunks),
             "bytes": a.nbytes, "bytes_stored": stored[a.name],
             # variable-length text has no logical size (nbytes 0) to compare its bytes with
             "ratio": round(_written_bytes(a, len(done), int(done.sum())) / stored[a.name], 3)
             if count_bytes and a.nbytes and stored[a.name] and done.any() else None}
            for a in arrays
        ],
        "bytes_stored": int(sum(stored.values())) if count_bytes else None,
    }


#: What stands in for each value of a column's damaged chunk (`_column`): a label of no
#: class nor `NO_CLASS` (counted as `UNREADABLE_CLASS`), a split no manifest writes (counted
#: as `UNREADABLE_SPLIT`), not done, a source size that is not the fill value (its samples named
#: once, as unreadable, not again as unrecorded), no source hash nor failure, each shown as such
#: (the DAMAGED line says why); an id is `UNREADABLE_ID`.
UNREADABLE_FILL = {"label": np.iinfo(np.int32).min, "done": False, "split": "\x00unreadable",
                   "source_size": np.iinfo(np.int64).min}
#: How a label of a damaged chunk is counted: not "(no class)", which a clips store's are.
UNREADABLE_CLASS = "(unreadable)"
#: How a split of a damaged chunk is counted: not "(split '')", which a lost chunk reads as.
UNREADABLE_SPLIT = "(unreadable)"
#: How a sample whose id is in a damaged chunk is named (in failures, duplicates): by position.
UNREADABLE_ID = "(sample {index}: id unreadable)"


def _column(store, name: str, problems: list[str], length: int | None = None) -> np.ndarray:
    """A per-sample column of `store`, read chunk by chunk where it is damaged: each damaged
    chunk's samples get a stand-in (`UNREADABLE_FILL`, `UNREADABLE_ID`, else empty text) and
    one problem in `problems` naming them, so that one bad chunk of a large store's `done`
    costs its 4,096 samples, not the column, and inspect still shows the rest. With `length`,
    cut or filled with stand-ins to it (a column declaring another length than `id`'s).
    A column of another type than the layout's (`array_type_error`: a float `label`, a `done`
    of text) is all stand-ins, named as `check_dataset_arrays` names it: its values read
    converted would be counted as what they are not (every text `done` as done)."""
    def stand_in(start: int, stop: int) -> np.ndarray:
        if name == "id":
            return np.array([UNREADABLE_ID.format(index=k) for k in range(start, stop)])
        return np.full(stop - start, UNREADABLE_FILL.get(name, ""))

    wrong = array_type_error(store, name, store.path)
    if wrong is not None:
        problems.append(str(wrong))
        values, unreadable = stand_in(0, store.info(name).shape[0]), []
    else:
        values, unreadable = read_column(store, name, stand_in)
    problems.extend(str(unreadable_part(store.path, chunk.describe(), chunk.error, sample=False,
                                        remedy=ledger_remedy(name))) for chunk in unreadable)
    if length is not None and len(values) != length:
        values = (values[:length] if len(values) > length
                  else np.concatenate([values, stand_in(len(values), length)]))
    return values


def _failures(store, ids: np.ndarray, done: np.ndarray, problems: list[str]) -> dict[str, str]:
    """Sample id -> why its extraction failed, named by the ids inspect already read (a damaged
    id chunk's by `UNREADABLE_ID`, not lost with them); a damaged failure chunk is a problem."""
    if store.format == 1:  # (kept by sample id in an attribute: no column to read)
        return format1.failures(store, ids=ids, done=done)
    return failures_named(ids, _column(store, "failure", problems, len(ids)), done)


#: Groups of duplicates `inspect` lists before it says "and N more" (`--json` has them all).
SHOWN_DUPLICATES = 10


def _duplicate_lines(groups: list[list[dict[str, str]]]) -> list[str]:
    from flowstore.build import duplicate_line, spans_splits

    across = sum(map(spans_splits, groups))
    lines = ["", f"byte-identical source files ({len(groups)} groups, {across} across splits)"]
    lines += ["  " + duplicate_line(group) for group in groups[:SHOWN_DUPLICATES]]
    if len(groups) > SHOWN_DUPLICATES:
        lines.append(f"  ... and {len(groups) - SHOWN_DUPLICATES} more groups (--json lists all)")
    return lines


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable form of `summarize`'s result."""
    s = summary
    lines = [
        f"store        {s['path']} ({s['backend']}, flowstore format {s['format']})",
        f"dataset      {s['dataset']}  ({len(s['classes'])} classes)",
        f"fingerprint  {s['fingerprint']}",
        "parameters   " + json.dumps(s["params"], sort_keys=True),
        *(["options      " + json.dumps(s["options"], sort_keys=True)]
          if s.get("options") else []),
        *(["extracted by " + ", ".join(f"{name} {version}"
                                       for name, version in sorted(s["software"].items()))]
          if s.get("software") else []),
        f"samples      {s['samples']}: {s['done']} done, {s['failed']} failed, "
        f"{s['pending']} pending; "
        + (f"on disk {_size(s['bytes_stored'])}" if s["bytes_stored"] is not None
           else "bytes on disk: --bytes (lists every chunk)"),
        *[f"DAMAGED      {problem}" for problem in (s.get("damaged") or "").splitlines()],
        "",
        "split counts (done/all)",
    ]
    splits = list(s["counts"])  # the three, and a damaged store's stray split values
    # the classes (escaped before the column is sized), and a damaged store's stray labels
    rows = [(one_line(name), [f"{s['done_counts'][sp][name]}/{s['counts'][sp][name]}"
                              for sp in splits])
            for name in s["counts"][SPLITS[0]]]
    rows.append(("total", [f"{s['done_per_split'].get(sp, 0)}/{sum(s['counts'][sp].values())}"
                           for sp in splits]))
    width = max(len(name) for name, _ in rows)
    cell = max(8, *(len(text) + 2 for _, cells in rows for text in cells + splits))
    lines.append("  " + "class".ljust(width) + "".join(f"{sp:>{cell}}" for sp in splits))
    lines += ["  " + name.ljust(width) + "".join(f"{text:>{cell}}" for text in cells)
              for name, cells in rows]
    lines += ["", "arrays"]
    counted = s["bytes_stored"] is not None
    lines.append(f"  {'name':<13}{'shape':<24}{'dtype':<9}{'chunks':<22}"
                 + (f"{'on disk':>11}{'ratio':>8}" if counted else ""))
    for a in s["arrays"]:
        lines.append(f"  {a['name']:<13}{str(tuple(a['shape'])):<24}{a['dtype']:<9}"
                     f"{str(tuple(a['chunks'])):<22}"
                     + (f"{_size(a['bytes_stored']):>11}"
                        + (f"{a['ratio']:>7.2f}x" if a["ratio"] is not None else f"{'-':>8}")
                        if counted else ""))
    if s.get("duplicates"):
        lines += _duplicate_lines(s["duplicates"])
    if s["failures"]:
        lines += ["", f"failures ({len(s['failures'])})"]
        from flowstore.build import failure_lines

        lines += failure_lines(dict(sorted(s["failures"].items())))
    # one line each, whatever a class folder or a path holds (a newline, an ESC)
    return "\n".join(map(one_line, lines))
