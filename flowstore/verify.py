"""`flowstore verify`: re-read every sample, compare with its recorded checksum, and repair.

A sample is reported when its `done` flag is set but its bytes no longer give the checksum
recorded when it was written (a chunk edited or truncated by hand), when a chunk is missing
(deleted, or never copied), or when a chunk cannot be read at all. `repair` re-extracts exactly those samples from the source, through the
normal build (same parameters, same writer lock, same guarantees), verifies them again, and
says of each one it could not mend why: a repair never reports success it did not check.
A store whose manifest columns (`id`, `label`, `split`) no longer match the digest recorded
when it was made is reported as damaged as a whole: no re-extraction mends a label.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from flowstore.build import BuildConfig, build
from flowstore.datasets import get_dataset
from flowstore.errors import (FlowstoreError, MissingChunkError, ObjectStoreError, ParameterError,
                              StoreError)
from flowstore.ledger import REPAIR_FAILED, REPAIR_UNFINISHED
from flowstore.params import SHAPE_FIELDS, from_dict
from flowstore.store import check_array_shapes, open_store
from flowstore.store.base import DAMAGE_ERRORS, never_extracted, read_column
from flowstore.store.checksum import check_manifest_columns, matches
from flowstore.store.layout import COLUMN_NAMES


@dataclass
class VerifyResult:
    store: Path | str
    checked: int = 0
    problems: dict[str, str] = field(default_factory=dict)
    #: Why the store as a whole cannot be trusted (its manifest columns damaged), or None.
    damaged: str | None = None
    #: Samples with a checksum but not marked done: a build stopped within a second of
    #: finishing them (the checksum is written first), or `done` flags lost. Not bad (nothing
    #: reads them, a build recomputes them), but many of them say the `done` column was lost.
    unmarked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and self.damaged is None


def verify(path: str | Path, *, samples: Collection[str] | None = None,
           progress: bool = False) -> VerifyResult:
    """Check every sample marked done against its checksum; opens the store read-only.

    With `samples`, check exactly those, and report one that is not marked done: it was asked
    for by name (`repair` re-checks what it re-extracted).
    """
    from flowstore.progress import progress_bar

    result = VerifyResult(store=path)
    with open_store(path, "r") as store:
        check_dataset_arrays(store, path)
        ids = None
        try:  # a column that no longer reads is damage as one whose digest differs (exit 1)
            ids = store.read("id")
            check_manifest_columns(store.attrs, ids, store.read("label"), store.read("split"),
                                   path)
        except StoreError as exc:
            result.damaged = str(exc)
            if ids is None:  # (no sample can be named)
                return result
        done, lost = read_column(store, "done", never_extracted("done"))
        done = done.astype(bool)
        if "checksum" not in store.array_names():  # format 1 allowed it (trainers' test stores)
            raise StoreError(f"store {str(path)!r} holds no checksums (written before they "
                             f"were recorded), so its samples cannot be verified")
        checksums, lost_sums = read_column(store, "checksum", never_extracted("checksum"))
        # (a power cut can leave a ledger chunk an empty file: its samples cannot be told
        # done or not, so each is a problem, which `--repair` re-extracts)
        readable = np.ones(len(done), bool)
        for chunk in lost + lost_sums:
            readable[chunk.start:chunk.stop] = False
            for index in range(chunk.start, chunk.stop):
                if samples is None or ids[index] in samples:
                    result.problems.setdefault(
                        ids[index], f"its chunk of {chunk.name!r} cannot be read "
                                    f"({type(chunk.error).__name__}: {chunk.error})")
        # (a lost chunk's samples are problems already: neither checked nor counted unmarked)
        done &= readable
        result.unmarked = int(np.count_nonzero((checksums != "") & ~done & readable))
        if samples is None and "failure" in store.array_names():
            # (a lost chunk's samples read as never extracted, "": not marked)
            failures, _ = read_column(store, "failure", never_extracted("failure"))
            # (on a done sample, a kill's stale reason: the next build's `Ledger.load` clears it)
            repairs = ((failures == REPAIR_UNFINISHED)
                       | np.char.startswith(failures.astype(str), REPAIR_FAILED))
            for index in np.flatnonzero(repairs & ~done & readable).tolist():
                result.checked += 1  # (bad, though not done: a repair left it half-way)
                result.problems[ids[index]] = f"not done: {failures[index]}"
        # read as the reader reads them, which tells a missing chunk from zeros
        features = {name: store.layout(name) for name in store.array_names()
                    if name not in COLUMN_NAMES}
        # the bar counts the samples checked: every done one, or those asked (done or not),
        # but for a lost ledger chunk's, problems already, whose reason is that chunk
        if samples is None:
            checked = np.flatnonzero(done)
        else:
            checked = np.flatnonzero(np.isin(ids, list(samples)) & readable)
        for index in progress_bar(checked.tolist(), enabled=progress, unit="sample",
                                  desc="verify"):
            result.checked += 1
            if not done[index]:
                result.problems[ids[index]] = "not marked done"
                continue
            if not checksums[index]:
                result.problems[ids[index]] = "marked done but has no checksum"
                continue
            try:
                arrays = {}
                for name, (shape, dtype) in features.items():
                    arrays[name] = np.empty(shape[1:], dtype)
                    store.read_into(name, index, arrays[name])
            except MissingChunkError:
                result.problems[ids[index]] = f"its chunk of {name!r} is missing"
                continue
            except ObjectStoreError:  # (the store's endpoint gone: no sample's damage)
                raise
            except (FlowstoreError, *DAMAGE_ERRORS) as exc:  # (any other: a bug, not damage)
                result.problems[ids[index]] = f"unreadable: {type(exc).__name__}: {exc}"
                continue
            try:
                if not matches(arrays, checksums[index]):
                    result.problems[ids[index]] = "bytes changed since written (checksum mismatch)"
            except ValueError as exc:
                result.problems[ids[index]] = str(exc)
    return result


def damage_of(store) -> str:
    """Why a store lacks arrays its own dataset writes, as a clause to end a message with ("":
    it does not): an array a reader or a model asks for, deleted from the store, was told as if
    the store's kind never held it ("has no feature 'flow'")."""
    from flowstore.errors import StoreError

    try:
        check_dataset_arrays(store, store.path)
    except StoreError as exc:
        return f": the store is damaged ({exc}); rebuild it with --overwrite"
    return ""


def check_dataset_arrays(store, path: str | Path, *, allow_missing: bool = False) -> None:
    """Refuse a store whose arrays are not those of its own dataset, of their shapes and types
    (`check_array_shapes`), or whose attributes do not say what they are (an unknown dataset,
    parameters that are not its parameters): it cannot be verified sample by sample
    (`verify`), and `inspect` shows it as damaged.

    `allow_missing`: a store that lost an array is not refused for it (the reader and the
    trainers read the arrays that remain, and refuse a model that reads a lost one); what it
    still holds is checked as verify checks it, so that they never train on a store verify
    refuses.
    """
    attrs = store.attrs
    specs = dataset_specs(attrs, path)  # (and so `attrs` name a dataset this release knows)
    expected = {spec.name for spec in specs}
    found = set(store.array_names()) - set(COLUMN_NAMES)
    if allow_missing:
        specs = [spec for spec in specs if spec.name in found]
        expected &= found
    if expected != found:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise StoreError(f"store {str(path)!r} says dataset {attrs['dataset']!r} but "
                         + ("lacks array(s) " + ", ".join(missing) if missing else "")
                         + (" and " if missing and extra else "")
                         + ("has array(s) " + ", ".join(extra) if extra else "")
                         + " of another dataset" * bool(extra))
    check_array_shapes(store, specs, path)


def dataset_specs(attrs: Mapping[str, Any], path: str | Path) -> list:
    """The arrays (`ArraySpec`s) a store's dataset and parameters give it, each of its shape
    and type.

    Raises:
        StoreError: its attributes name no dataset this flowstore knows, or parameters that
            are not its dataset's (it "describes itself wrongly").
    """
    try:
        dataset = get_dataset(attrs.get("dataset"))
        recorded = attrs.get("params", {})
        # (left out, each was its default: a 32 px store "had shape (200, 32, 32, 3) for array
        # 'middle_frame' (200, 224, 224, 3)", found by review)
        unrecorded = [name for name in SHAPE_FIELDS
                      if name in {f.name for f in dataclasses.fields(dataset.params_type)}
                      and name not in recorded]
        if unrecorded:
            raise ValueError(f"its params record no {', '.join(map(repr, unrecorded))}, which "
                             f"every store records")
        params = from_dict(dataset.params_type, recorded)
    except (FlowstoreError, TypeError, AttributeError, ValueError) as exc:  # (hand-edited attrs)
        raise StoreError(f"store {str(path)!r} describes itself wrongly: {exc}") from None
    return dataset.specs(params)


@dataclass
class RepairResult:
    """What `repair` did: each sample asked for is repaired, still bad (with why), or was
    stopped by an internal error."""

    store: Path | str
    asked: list[str]
    #: Re-extracted, written and verified again.
    repaired: list[str] = field(default_factory=list)
    #: Sample -> why it is still not sound. A sample whose re-extraction failed is no longer
    #: marked done (its reason is recorded as a failure, as a build records one).
    still_bad: dict[str, str] = field(default_factory=dict)
    #: Sample -> the exception of a bug in flowstore met while re-extracting it (the sample is
    #: left pending; the traceback is in `error_log`).
    internal_errors: dict[str, str] = field(default_factory=dict)
    error_log: Path | None = None
    #: What opening the store to write mended, one line each (`BuildResult.mended`).
    mended: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.still_bad and not self.internal_errors


def repair_options(path: str | Path, tokens: Sequence[str] = (),
                   also: Sequence[str] = ()) -> dict[str, Any]:
    """The split options a repair builds with: the store's recorded ones, a file option (a
    split file) read from where the build read it, unless `tokens` give it again
    (`--split-file NEW`: the file moved with its dataset; its content must still match the
    recorded hash, which the build checks). `also`: the command's own flags, for the refusal
    of a mistyped one."""
    from flowstore.datasets import parse_option_tokens
    from flowstore.datasets.base import make_options

    with open_store(path, "r") as store:
        attrs = store.attrs
    dataset = get_dataset(attrs["dataset"])
    given = parse_option_tokens(tokens, dataset.options_type, f"dataset {dataset.name!r}",
                                also=also)
    # their values checked as a build checks them, before verify reads every sample (a NaN
    # fraction or an empty path went through unseen where nothing needed repairing)
    make_options(dataset.options_type, given, f"dataset {dataset.name!r}")
    return {**(attrs.get("options") or {}), **(attrs.get("option_paths") or {}), **given}


def _check_option_files(path: str | Path, attrs: Mapping[str, Any],
                        options: Mapping[str, Any]) -> None:
    """Before a repair builds: a recorded file option (a split file) still where the store
    recorded it, unless given again; else one line saying how to give it (the build would
    say only "no split file at ...")."""
    for name, where in (attrs.get("option_paths") or {}).items():
        if options.get(name) == where and not os.path.exists(where):
            flag = "--" + name.replace("_", "-")
            raise ParameterError(f"the {flag} store {str(path)!r} was built with is no longer at "
                                 f"{where!r}: give it where it is now ({flag} FILE)")


def synthetic_source_of(path: str | Path) -> Path:
    """The cached synthetic source a `build --synthetic` of the store at `path` read (its
    dataset's, default settings), written again if it was pruned: what `verify --repair
    --synthetic` re-extracts from, where the cache folder's name (a hash) was the user's to
    find. One written by another flowstore (another folder) or OpenCV (other bytes) holds
    files a repair may refuse sample by sample (not the files they were extracted from)."""
    from flowstore.synth import synthetic_source

    with open_store(path, "r") as store:
        dataset = store.attrs.get("dataset")
    return synthetic_source(str(dataset))


def repair(path: str | Path, source: str | Path, samples: Collection[str], *,
           workers: int | None = None, progress: bool = False, fsync: bool = False,
           options: Mapping[str, Any] | None = None) -> RepairResult:
    """Re-extract exactly `samples` from `source` into the store, with the store's own
    parameters (`fsync`: as `flowstore build --fsync`) and split options (`repair_options`,
    its default), then verify those samples again; no other sample of the store is touched."""
    with open_store(path, "r") as store:
        attrs = store.attrs
    dataset = get_dataset(attrs["dataset"])
    params = from_dict(dataset.params_type, attrs["params"])
    asked = sorted(set(samples))
    options = repair_options(path) if options is None else options
    _check_option_files(path, attrs, options)
    built = build(BuildConfig(dataset=dataset.name, source=Path(source), store=path,
                              params=params, options=options, redo=tuple(asked),
                              progress=progress, fsync=fsync, workers=workers))
    result = RepairResult(store=path, asked=asked, internal_errors=dict(built.internal_errors),
                          error_log=built.error_log, mended=built.mended)
    for sample, reason in built.failures.items():
        reason = reason.removeprefix(f"{REPAIR_FAILED}: ")
        result.still_bad[sample] = f"could not re-extract it: {reason}"
    rechecked = [sample for sample in asked
                 if sample not in result.still_bad and sample not in result.internal_errors]
    problems = verify(path, samples=rechecked).problems if rechecked else {}
    for sample in rechecked:
        if sample in problems:
            result.still_bad[sample] = f"still bad after re-extraction: {problems[sample]}"
        else:
            result.repaired.append(sample)
    return result
