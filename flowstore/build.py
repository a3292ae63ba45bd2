"""Building a store: the manifest, the fingerprint check, and Dask-parallel extraction.

Roles (DESIGN.md, "Build semantics"):
- each Dask task extracts one sample and writes that sample's chunks itself (no big arrays
  travel back through the scheduler): `flowstore.worker`;
- one coordinator (this module) marks samples `done` in the ledger (`flowstore.ledger`), only
  after their task returned, and records failures. So a store killed at any moment holds no
  sample marked done that is not complete, and a re-run computes exactly the samples still
  not done;
- a task sends back a data problem as its sample's failure reason, and a bug in flowstore as an
  internal error (its traceback), which the coordinator logs beside the store and never
  records as a failure of the sample (`flowstore.worker.DATA_ERRORS` draws the line).
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from flowstore import __version__
from flowstore.console import one_line, sample_line
from flowstore.datasets import Dataset, get_dataset
from flowstore.datasets.base import SourceSizes
from flowstore.errors import FlowstoreError, ParameterError, StoreError, StoreMismatchError
from flowstore.ledger import Ledger
from flowstore.manifest import Manifest, class_label
from flowstore.parallel import Cluster, run_on_threads, usable_cores
from flowstore.params import (EXTRACTION_VERSION, canonical_json, fingerprint, shown_value,
                              to_dict)
from flowstore.store import (Store, array_type_error, backend_for, capabilities,
                             check_array_shapes,
                             create_store, enclosing_store, is_url, open_store, remove_store,
                             store_exists, url_parts)
from flowstore.store import format1
from flowstore.store.checksum import (COLUMNS_DIGEST, check_manifest_columns, columns_digest,
                                      file_digest)
from flowstore.store.base import done_revision_of
from flowstore.store.layout import DONE_REVISION, FORMAT, GIVEN, SOFTWARE
from flowstore.store.lock import writer_lock
from flowstore.worker import (StoreKey, TaskArguments, TaskOutcome, extract_and_write,
                              extractor_here, opencv_here, writing_through)

if TYPE_CHECKING:
    from flowstore.reuse import ReuseSource

#: Seconds between two writes of the `done` column (a killed build redoes at most this much).
DONE_FLUSH_SECONDS = 1.0
#: At most this share of the coordinator's time goes to writing the ledger: a ledger whose
#: write takes longer (a slow object store) is written less often than every
#: DONE_FLUSH_SECONDS, else the coordinator would do little but rewrite it while the workers
#: wait for their next task. (A write rewrites only the chunks of the samples that changed
#: since the last one, so its cost does not grow with the store.)
LEDGER_TIME_SHARE = 0.1


@dataclass(frozen=True)
class BuildConfig:
    """Everything one `flowstore build` needs; the CLI only fills this in."""

    dataset: str
    source: Path
    store: Path | str  # a local path, or an fsspec URL for Zarr (s3://bucket/x.zarr)
    params: Any
    #: The dataset's split options by name (`Dataset.options_type`; strings are parsed).
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Threads of this process (None: `usable_cores`); with `scheduler`, the cluster's workers
    #: run the tasks and this is refused rather than ignored.
    workers: int | None = None
    scheduler: str | None = None
    overwrite: bool = False
    max_per_split: int | None = None
    progress: bool = True
    #: Sample ids to extract again even if marked done (what `verify --repair` asks for). When
    #: given, exactly these samples are extracted, and no other pending sample of the store.
    redo: tuple[str, ...] = ()
    #: Make `done` imply durable bytes: each sample's chunks, then the ledger, are fsynced.
    #: Not in the fingerprint: it changes when bytes reach the disk, not which bytes.
    fsync: bool = False
    #: Hash the source files of done samples and refuse one whose content changed (a clip
    #: replaced by another of the same size passes the default, size-only, check).
    check_source: bool = False
    #: Another store to copy samples from instead of extracting them (`flowstore.reuse`).
    reuse_from: Path | str | None = None

    def __post_init__(self) -> None:
        # Every check here is of the options alone, before anything is read or written: a bad
        # --store suffix is a usage error, refused before a --synthetic source is made too
        backend_for(self.store)
        if self.scheduler is not None and not self.scheduler.strip():  # (was: built on threads)
            raise FlowstoreError("--scheduler needs the scheduler's address (tcp://HOST:PORT), "
                                 "got an empty one")
        if self.workers is not None and self.scheduler:
            raise FlowstoreError("--workers does not apply with --scheduler: the cluster's "
                                 "workers run the tasks (`dask worker --nthreads N` sets "
                                 "theirs)")
        object.__setattr__(self, "workers",
                           usable_cores() if self.workers is None else self.workers)
        check_workers(self.workers)
        if self.max_per_split is not None and self.max_per_split < 1:
            raise FlowstoreError(f"--max-per-split must be at least 1, got {self.max_per_split}")

    @property
    def refusal_hint(self) -> str:
        """What a user can do about a store this build refuses (another dataset, parameters,
        manifest or source, or a damaged layout): `flowstore verify --repair`, which builds with
        `redo`, has no --overwrite or --store to offer."""
        if self.redo:
            return ("; --repair re-extracts from the source the store was built from (--source), "
                    "or rebuild it with flowstore build --overwrite")
        return "; use --overwrite to rebuild it, or another --store"


#: The most extraction threads a build or an estimate runs: far above any machine's cores (more
#: threads than that only wait), low enough that a typo is not taken as a thread count.
MAX_WORKERS = 1024


def check_workers(workers: int) -> None:
    if not 1 <= workers <= MAX_WORKERS:
        raise ParameterError(f"--workers must be in 1..{MAX_WORKERS}, got {workers}")


@dataclass
class BuildResult:
    store: Path | str
    fingerprint: str
    selected: int
    computed: int = 0
    already_done: int = 0
    #: Samples copied from `BuildConfig.reuse_from`, not computed.
    reused: int = 0
    #: What was mended, one line each: the store's damage its opening mended (`Store.mended`),
    #: and the ledger chunks that could not be read (`Ledger.unreadable`), whose samples were
    #: taken as never extracted and the chunks written anew.
    mended: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    #: Samples whose task hit a bug in flowstore (sample -> the exception, one line): not
    #: failures of those samples, which stay pending; the tracebacks are in `error_log`.
    internal_errors: dict[str, str] = field(default_factory=dict)
    error_log: Path | None = None
    #: Done samples whose source files are byte-identical (`duplicate_sources`), the whole
    #: store's: told after the build, not refused (it is the user's data to mend or keep).
    duplicates: list[list[dict[str, str]]] = field(default_factory=list)
    #: Lines naming the folders of listed files the source lacks (`Dataset.absent_folders`).
    absent_folders: list[str] = field(default_factory=list)
    #: The store's fingerprint before this build, where the build changed it (a resume whose
    #: source files, names or sizes, are not those of the last build's: a clip not yet built
    #: re-downloaded, TV-HI's readme.txt gone): runs trained on the store before no longer
    #: match it, which was not said.
    fingerprint_was: str | None = None
    seconds: float = 0.0
    #: CPU seconds of the thread that ran `build` (planning, the store, submitting and
    #: collecting tasks, the ledger), apart from extraction on the workers' threads: the part
    #: of a build that must not grow per sample with the store's size.
    coordinator_cpu_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.internal_errors

    @property
    def duplicates_across_splits(self) -> list[list[dict[str, str]]]:
        return [group for group in self.duplicates if spans_splits(group)]


#: A build's summary lists up to this many failures one per line; more are grouped by reason
#: (real Kinetics copies miss thousands of clips: one line each would bury everything else).
FAILURES_LISTED = 10
#: Sample ids named as examples of each reason when failures are grouped.
EXAMPLES_PER_REASON = 3


def group_failures(failures: Mapping[str, str]) -> list[tuple[str, int, list[str]]]:
    """(reason, count, first few sample ids) per kind of failure, the most frequent first.

    A reason names its sample's file ("video file is missing: abc_000010_000020.mp4"); that
    name is replaced by ``<file>`` so that the same problem of many samples is one kind.
    """
    kinds: dict[str, list[str]] = {}
    for sample, reason in failures.items():
        stem = re.escape(sample.rsplit("/", 1)[-1])
        kind = re.sub(rf"(?<![\w.-]){stem}(\.[A-Za-z0-9]+)?(?![\w.-])", "<file>", reason)
        kinds.setdefault(kind, []).append(sample)
    ordered = sorted(kinds.items(), key=lambda item: -len(item[1]))
    return [(kind, len(samples), samples[:EXAMPLES_PER_REASON]) for kind, samples in ordered]


@dataclass(frozen=True)
class Plan:
    """What a build works from, known before any decoding (benchmarks/plan_scale.py times it)."""

    dataset: Dataset
    manifest: Manifest
    params: dict[str, Any]
    source_files: SourceSizes
    fingerprint: str


def plan(config: BuildConfig) -> Plan:
    """The manifest, the source files' sizes and the fingerprint of a build: reads the split
    files and lists the source, decodes nothing, writes nothing."""
    dataset = get_dataset(config.dataset, config.options)
    source = Path(config.source)
    manifest = dataset.manifest(source)
    params = to_dict(config.params)
    source_files = dataset.source_files(source, manifest)
    dataset.check_some_present(source, manifest, source_files)
    fp = fingerprint(dataset=dataset.name, params=params, source_files=source_files,
                     options=dataset.recorded_options())
    return Plan(dataset, manifest, params, source_files, fp)


def open_planned(config: BuildConfig, planned: Plan, opencv: str) -> Store:
    """The store of a planned build, created (or checked, when it exists) and open to write,
    its samples to be extracted with OpenCV `opencv` (`extraction_opencv`). The caller holds
    the writer lock (`build` does)."""
    return _open_or_create(config, planned.dataset, planned.manifest, planned.params,
                           planned.fingerprint, opencv)


def failure_lines(failures: Mapping[str, str]) -> list[str]:
    """How failures are shown (build summary, `flowstore inspect`): one ``  id: reason`` line
    each up to FAILURES_LISTED, else one line per kind of reason with its count and examples;
    each line one line however its file is named (`one_line`)."""
    if len(failures) <= FAILURES_LISTED:
        return [sample_line(sample, reason) for sample, reason in failures.items()]
    return [one_line(f"  {count} x {reason} (e.g. {', '.join(examples)})")
            for reason, count, examples in group_failures(failures)]


def duplicate_sources(ids: Sequence[str], splits: Sequence[str],
                      hashes: np.ndarray) -> list[list[dict[str, str]]]:
    """The samples whose source files are byte-identical (one recorded content hash), in groups
    of two or more, those that span splits first: a test clip that is a copy of a training clip
    is scored on what the model trained on (a clip downloaded twice under two names, a class
    folder copied into another). Only samples extracted have a hash to compare; a re-encoded
    copy has other bytes and is not found. `hashes` as the store or the ledger holds them
    (text, or packed bytes: equal digests are equal either way; empty: none recorded)."""
    hashes = np.asarray(hashes)
    known = np.flatnonzero([bool(value) for value in hashes.tolist()])
    _, group_of, sizes = np.unique(hashes[known], return_inverse=True, return_counts=True)
    groups: dict[int, list[dict[str, str]]] = {}
    for index, group in zip(known.tolist(), group_of.tolist()):
        if sizes[group] > 1:
            groups.setdefault(group, []).append({"id": str(ids[index]),
                                                 "split": str(splits[index])})
    return sorted(groups.values(), key=lambda group: (not spans_splits(group), group[0]["id"]))


def spans_splits(group: list[dict[str, str]]) -> bool:
    """Whether a group of `duplicate_sources` holds samples of more than one split."""
    return len({member["split"] for member in group}) > 1


#: Members of one group of duplicates that a line names (a Kinetics copy may hold hundreds of
#: the same placeholder download: its line named them all, thousands of characters).
SHOWN_DUPLICATE_MEMBERS = 4


def duplicate_line(group: list[dict[str, str]]) -> str:
    """A group of `duplicate_sources` as the build summary and `inspect` show it: at most
    `SHOWN_DUPLICATE_MEMBERS` members, one of each split first (what makes a group one across
    splits is then on the line), and how many there are in all (`inspect --json` lists them)."""
    first_of_split: dict[str, dict[str, str]] = {}
    for member in group:
        first_of_split.setdefault(member["split"], member)
    firsts = list(first_of_split.values())
    ordered = firsts + [member for member in group if member not in firsts]
    line = " = ".join(f"{member['id']} ({member['split']})"
                      for member in ordered[:SHOWN_DUPLICATE_MEMBERS])
    more = len(group) - SHOWN_DUPLICATE_MEMBERS
    return one_line(line if more <= 0 else f"{line} = ... ({len(group)} in all)")


def build(config: BuildConfig) -> BuildResult:
    """Build or resume the store `config.store`; see the module docstring for the guarantees."""
    start, cpu_start = time.perf_counter(), time.thread_time()
    _refuse_a_store_inside_a_store(config.store)
    planned = plan(config)
    if config.scheduler and not capabilities(config.store).parallel_writers:
        raise StoreError(f"a {backend_for(config.store).name.upper()} store is written by one "
                         f"process; use a .zarr store with --scheduler")

    # One connection to a cluster for the whole build: its workers' OpenCV first, then the
    # tasks. Asked before the store's folder and lock are made, so a refusal of the workers'
    # release (several; not OLD's) leaves nothing behind, as a refusal on threads does.
    with (Cluster(config.scheduler) if config.scheduler else contextlib.nullcontext()) as cluster:
        opencv = extraction_opencv(cluster)
        if config.reuse_from is not None:
            _check_reusable(config, planned, opencv)
        _make_store_folder(config.store)
        with writer_lock(config.store):
            result = _build_locked(config, planned, start, cluster, opencv)
    result.coordinator_cpu_seconds = time.thread_time() - cpu_start
    return result


def _refuse_a_store_inside_a_store(store: str | Path) -> None:
    """A store built inside another store is lost to it: `--overwrite` of the outer one
    deleted it without a word, and `inspect --bytes` counted it as the outer one's.

    Raises:
        ParameterError: a folder (or an object-store prefix) above `store` is a flowstore store.
    """
    if is_url(store):
        scheme, parts = url_parts(store)
        outer = enclosing_store(f"{scheme}://{'/'.join(parts[:-1])}")
    else:
        outer = enclosing_store(Path(os.path.realpath(store)).parent)
    if outer is not None:
        raise ParameterError(f"store {str(store)!r} lies inside the store {str(outer)!r}; "
                             f"build it beside that one")


def _make_store_folder(store: str | Path) -> None:
    """Make the folder a local store lies in, as `zarr` and TFDS do (a URL's is the object
    store's business).

    Raises:
        StoreError: a file, not a folder, lies on the way.
    """
    if is_url(store):
        return
    parent = Path(store).parent
    above = next((p for p in (parent, *parent.parents) if os.path.lexists(p)), None)
    if above is not None and not above.is_dir():  # (mkdir said only "File exists: 'x'")
        raise StoreError(f"store {str(store)!r} lies under the file {str(above)!r}, "
                         f"not a folder")
    # The folder the system will look in: `mkdir -p x.zarr/..` made `x.zarr`, which then lay
    # at the place of the store `x.zarr/../x.zarr` and refused every later build of it, as an
    # empty folder that is no store (`--overwrite` too)
    Path(os.path.realpath(parent)).mkdir(parents=True, exist_ok=True)


def _check_reusable(config: BuildConfig, planned: Plan, opencv: str) -> None:
    """Refuse a `--reuse-from` store whose samples are not this build's (`flowstore.reuse`);
    `opencv`: the release this build extracts with (`extraction_opencv`)."""
    from flowstore.reuse import check_reusable

    check_reusable(config.reuse_from, store_path=config.store, params=planned.params,
                   specs=planned.dataset.specs(config.params), opencv=opencv)


def _refuse_unwritable(store: str | Path, pending: str) -> None:
    """Refuse, before anything is extracted, a store folder this user cannot write (a store
    shared read-only, a read-only mount): a reader who ran the build of a shared store's
    pending samples extracted every one, then failed in a bare "Permission denied" on a file of
    the ledger (found by review). The writer's lock is granted there all the same (a reader's
    lock file is opened read-only). An HDF5 file is refused before this, opened to write, and
    an object store at its first write."""
    if is_url(store) or not Path(store).is_dir():
        return
    root = Path(store)
    for folder in (root, *sorted(path for path in root.iterdir() if path.is_dir())):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(f"store {str(store)!r} cannot be written by this user here "
                             f"({str(folder)!r} is not writable, or on a read-only file "
                             f"system), and it has {pending}: ask its owner, or build a store "
                             f"of your own with --reuse-from {str(store)!r}")


def _build_locked(config: BuildConfig, planned: Plan, start: float,
                  cluster: Cluster | None, opencv: str) -> BuildResult:
    dataset, manifest, params = planned.dataset, planned.manifest, planned.params
    source_files, fp = planned.source_files, planned.fingerprint
    store = open_planned(config, planned, opencv)
    fingerprint_was = store.attrs.get("fingerprint")  # (a new store's is the plan's)
    if dataset.store_options is not None:  # (the store's own record of unused options)
        fp = fingerprint(dataset=dataset.name, params=params, source_files=source_files,
                         options=dataset.recorded_options())
    try:
        ledger = Ledger.load(store)
        if ledger.unreadable or config.redo:
            _refuse_unwritable(config.store, "a repair" if config.redo else "its ledger to mend")
        if ledger.unreadable:
            ledger.mend(store, durable=config.fsync)
        _check_sources(ledger, dataset, manifest, source_files, config.store,
                       config.refusal_hint, redo=set(config.redo))
        if config.check_source:
            _check_source_hashes(ledger, dataset, manifest, Path(config.source), config.store,
                                 config.refusal_hint)
        extracted_from: dict[int, tuple[int | None, str]] = {}
        if config.redo:
            position = manifest.positions(config.redo)
            unknown = [sample for sample in config.redo if sample not in position]
            if unknown:
                raise FlowstoreError(f"no sample {unknown[0]!r} in store {str(config.store)!r}")
            for index in position.values():
                # what its task read, for `_not_the_file_it_read`: a done sample's, and one
                # a stopped repair left unmarked (`reset` keeps its record of the file)
                if ledger.done[index] or ledger.repair_unfinished(index):
                    extracted_from[index] = (ledger.recorded_size(index),
                                             ledger.text("source_hash", index))
                ledger.reset(index)
            ledger.write(store, durable=config.fsync)
            _new_done_revision(store)  # (before any task rewrites a sample an open split reads)
            selected = np.array(sorted(position.values()), dtype=np.int64)
        else:
            selected = manifest.first_per_split(config.max_per_split)
        todo = selected[~ledger.done[selected]]
        result = BuildResult(store=config.store, fingerprint=fp, selected=len(selected),
                             already_done=len(selected) - len(todo),
                             absent_folders=dataset.absent_folders(Path(config.source), manifest,
                                                                 source_files),
                             mended=[*store.mended,
                                     *(f"store {str(config.store)!r}: {chunk.describe()} "
                                       f"could not be read ({type(chunk.error).__name__}: "
                                       f"{chunk.error}); its samples were taken as not "
                                       f"extracted and the chunk is written anew"
                                       for chunk in ledger.unreadable)])
        reuse = {}
        if config.reuse_from is not None:
            from flowstore.reuse import plan_reuse

            reuse = plan_reuse(config.reuse_from, params=params, opencv=opencv,
                               specs=dataset.specs(config.params), ids=manifest.ids,
                               sizes=source_files.sizes, todo=todo,
                               absolute=_absolute(config.reuse_from))
        if len(todo):
            _refuse_unwritable(config.store, f"{len(todo)} sample(s) to extract")
            try:
                _run(config, dataset, manifest, store, ledger, todo, result, cluster,
                     extracted_from, reuse)
            except BaseException:
                # Ctrl-C, a lost scheduler: what finished since the last ledger write (up to a
                # second of samples, more on slow storage) is recorded, not computed again;
                # what stopped the build is what is raised (a ledger that cannot be written
                # now, e.g. on the full disk that stopped it, stays as last written)
                with contextlib.suppress(Exception):
                    ledger.write(store, durable=config.fsync)
                    if config.redo:
                        _new_done_revision(store)
                raise
        read = ledger.source_sizes(source_files)
        if read is not source_files:  # (else the fingerprint is the plan's)
            fp = fingerprint(dataset=dataset.name, params=params, source_files=read,
                             options=dataset.recorded_options())
        result.fingerprint = fp
        if fingerprint_was is not None and fingerprint_was != fp:
            result.fingerprint_was = fingerprint_was
        ledger.write(store, durable=config.fsync)
        if config.redo:  # (the samples it marked done again: readers may read them)
            _new_done_revision(store)
        if fingerprint_was != fp:  # (a build with nothing to do writes nothing)
            store.update_attrs({"fingerprint": fp})
        store.flush()
        if config.fsync:
            store.sync_columns()
        result.failures = {manifest.ids[i]: ledger.columns["failure"][i]  # (not a bug's mark)
                           for i in selected.tolist()
                           if ledger.columns["failure"][i] and not ledger.repair_unfinished(i)}
        result.duplicates = duplicate_sources(manifest.ids, manifest.splits(),
                                              ledger.columns["source_hash"])
    finally:
        store.close()
    result.seconds = time.perf_counter() - start
    return result


def _new_done_revision(store: Store) -> None:
    """Tell readers that keep the store open that `done` flags were taken back, or set again
    after that (`flowstore.store.layout.DONE_REVISION`; one that is no number, hand-edited,
    starts again at 1)."""
    store.update_attrs({DONE_REVISION: max(done_revision_of(store.attrs), 0) + 1})


# -- opening ---------------------------------------------------------------------------------
def _open_or_create(config: BuildConfig, dataset: Dataset, manifest: Manifest,
                    params: dict[str, Any], fp: str, opencv: str) -> Store:
    """The store, open to write: checked to be this build's (and upgraded to format 2 when it
    is of format 1), or created."""
    path = config.store
    if config.overwrite:
        remove_store(path)
    if store_exists(path):
        store = open_store(path, "r+")
        try:
            _check_compatible(store, dataset, manifest, params, path, config.refusal_hint)
            _check_software(store, path, opencv, config.refusal_hint)
            _check_arrays(store, dataset.specs(config.params), len(manifest), path,
                          config.refusal_hint)
            if store.format != FORMAT:
                format1.upgrade(store, [dataset.source_name(sample) for sample in manifest.ids])
            if COLUMNS_DIGEST not in store.attrs:  # a store made before the digest: now checked
                store.update_attrs({COLUMNS_DIGEST: _columns_digest(manifest)})
            if canonical_json(store.attrs.get("params")) != canonical_json(params):
                store.update_attrs({"params": params})  # equal values, recorded as now (20.0)
            recorded = store.attrs.get("options") or {}
            if canonical_json(recorded) != canonical_json(dataset.recorded_options()):
                dataset.keep_store_options(recorded)  # (equal in effect: `_check_compatible`)
            if (store.attrs.get("option_paths") or {}) != dataset.option_paths():
                # the same split file (its hash was compared), moved: recorded where it is
                # now, where `verify --repair` reads it
                store.update_attrs({"option_paths": dataset.option_paths()})
        except BaseException:
            store.close()
            raise
        return store
    attrs = {
        "dataset": dataset.name,
        "classes": list(manifest.classes),
        "params": to_dict(config.params),
        "options": dataset.recorded_options(),
        "option_paths": dataset.option_paths(),
        "fingerprint": fp,
        # which store this is, beyond its path: a writer's cached handle is valid for one id
        "store_id": uuid.uuid4().hex,
        COLUMNS_DIGEST: _columns_digest(manifest),
        # what extracted the samples (a store is only resumed with the same OpenCV)
        SOFTWARE: {"flowstore": __version__, "opencv": opencv},
    }
    return create_store(path, attrs=attrs, specs=dataset.specs(config.params),
                        columns=manifest.store_columns(),
                        num_samples=len(manifest))


def _check_compatible(store: Store, dataset: Dataset, manifest: Manifest, params: dict[str, Any],
                      path: Path, hint: str) -> None:
    """Refuse to mix: other dataset, parameters, split options or manifest (`_check_sources`
    refuses a done sample whose source changed). Reads what both formats hold alike; `hint`
    (`BuildConfig.refusal_hint`) ends each refusal. A manifest column of another type than
    the layout's is damage, said as `_check_arrays` says it."""
    attrs = store.attrs
    if attrs.get("dataset") != dataset.name:
        raise StoreMismatchError(f"store {str(path)!r} holds dataset {attrs.get('dataset')!r}, "
                                 f"not {dataset.name!r}{hint}")
    # (compared by value, `params_differences`; `_open_or_create` rewrites the record)
    diffs = params_differences(attrs.get("params") or {}, params)
    if diffs:
        raise StoreMismatchError(f"store {str(path)!r} was built with other parameters "
                                 f"({diffs}){hint}")
    # (an unused option recorded by a store made before `options_in_effect` is not compared)
    stored_options = dataset.options_in_effect(attrs.get("options") or {})
    asked_options = dataset.recorded_options()
    if canonical_json(stored_options) != canonical_json(asked_options):
        stored_paths, asked_paths = attrs.get("option_paths") or {}, dataset.option_paths()
        # (an option unused on one side differs only as its default: `--seed` beside a store's
        # `--val-fraction 0` is not the difference, whatever the two seeds were)
        unused = dataset.unused_in(stored_options) | dataset.unused_in(asked_options)
        diffs = ", ".join(f"--{k.replace('_', '-')}: store "
                          f"{_shown_option(stored_options, stored_paths, k)} vs asked "
                          f"{_shown_option(asked_options, asked_paths, k)}"
                          for k in sorted(stored_options.keys() | asked_options.keys())
                          if stored_options.get(k) != asked_options.get(k) and k not in unused)
        raise StoreMismatchError(f"store {str(path)!r} was built with other split options "
                                 f"({diffs}){hint}")
    for name in GIVEN:  # (read converted, a float `label` was taken for another manifest)
        wrong = array_type_error(store, name, path, hint=hint)
        if wrong is not None:
            raise wrong
    ids, labels, splits = store.read("id"), store.read("label"), store.read("split")
    check_manifest_columns(attrs, ids, labels, splits, path)  # damage, not another manifest
    if not _same_manifest(manifest, attrs, ids, labels, splits):
        raise StoreMismatchError(f"store {str(path)!r} was built from another split manifest "
                                 f"({_manifest_changes(manifest, attrs, ids, labels, splits)})"
                                 f"{hint}")


def params_differences(stored: Mapping[str, Any], asked: Mapping[str, Any]) -> str:
    """How a store's recorded extraction parameters differ from a build's, in words ("steps:
    store 16 vs asked 8"); empty when they are equal by value (20 == 20.0: a store built
    through the API before numbers were normalised records flow_bound 20)."""
    if _as_json(stored) == _as_json(asked):
        return ""
    flat_stored, flat_asked = _flat(dict(stored)), _flat(dict(asked))
    # A section on one side only (another flow algorithm's parameters) is not listed key by
    # key: the entry that names the algorithm (flow_method) already says what differs.
    one_sided = _sections(dict(stored)) ^ _sections(dict(asked))
    return ", ".join(f"{k}: store {shown_value(flat_stored, k)} vs asked {shown_value(flat_asked, k)}"
                     for k in sorted(flat_stored.keys() | flat_asked.keys())
                     if flat_stored.get(k) != flat_asked.get(k)
                     and k.split(".")[0] not in one_sided)


def _check_software(store: Store, path: Path | str, opencv: str, hint: str) -> None:
    """Refuse to resume a store with another OpenCV (`opencv`: `extraction_opencv`) than the
    one that extracted its samples: the same parameters would give other bytes
    (`OPENCV_VERSION`), mixed in one store with nothing to tell them apart. A store made before
    this was recorded is not checked."""
    built_with = _recorded_opencv(store)
    if built_with is not None and built_with != opencv:
        raise StoreMismatchError(
            f"store {str(path)!r} was extracted with OpenCV {built_with} and this build would "
            f"extract with OpenCV {opencv}, which extracts other bytes from the same source: "
            f"resume it where OpenCV {built_with} is installed{hint}")


def _recorded_opencv(store: Store) -> str | None:
    """The OpenCV release a store records it was extracted with (None: made before that)."""
    return (store.attrs.get(SOFTWARE) or {}).get("opencv")


def extraction_opencv(cluster: Cluster | None) -> str:
    """The OpenCV release that extracts this build's samples: this process's on threads; on a
    cluster, its workers' (asked once: a store records the release of the processes that
    extract it, not the coordinator's, which extracts nothing). Workers that join later are
    checked task by task (`extract_and_write`).

    Raises:
        FlowstoreError: the cluster is lost, its workers run a flowstore that extracts
            otherwise than this one (`EXTRACTION_VERSION`: the store would record this one's
            and hold theirs), or they have several releases.
    """
    if cluster is None:
        return opencv_here()
    extractors = cluster.on_each_worker(extractor_here).values()
    others = sorted({extraction for extraction, _ in extractors} - {EXTRACTION_VERSION})
    if others:
        raise FlowstoreError(f"the workers of Dask scheduler {cluster.address!r} run a "
                             f"flowstore that extracts as version {', '.join(others)}, this "
                             f"one as version {EXTRACTION_VERSION}: a store holds one "
                             f"extraction; install this flowstore on the workers")
    releases = sorted({opencv for _, opencv in extractors})
    if len(releases) > 1:
        raise FlowstoreError(f"the workers of Dask scheduler {cluster.address!r} have OpenCV "
                             f"{', '.join(releases)}: a store is extracted with one release, "
                             f"which releases do not share (their bytes differ); give every "
                             f"worker the same")
    return releases[0] if releases else opencv_here()  # (no worker yet: as this process)


def _shown_option(recorded: Mapping[str, Any], paths: Mapping[str, str], key: str) -> str:
    """A split option as a refusal shows it: a file option (`--split-file`) by the path it was
    given as, and its content's hash only where that path is not known (the hash alone, the
    store's record, told a user nothing); otherwise as `shown_value` (an option not given as
    "none", not Python's None)."""
    if key in paths and recorded.get(key) is not None:
        return f"{paths[key]!r} (content {str(recorded[key])[:17]}...)"
    return shown_value(recorded, key)


def _as_json(value: Any) -> Any:
    """`value` as JSON reads it back (tuples as lists), to compare by value: 20 == 20.0."""
    return json.loads(canonical_json(value))


def _same_manifest(manifest: Manifest, attrs: Mapping[str, Any], ids: np.ndarray,
                   labels: np.ndarray, splits: np.ndarray) -> bool:
    """Whether a store of these attributes and columns holds `manifest`: its classes, and each
    sample's id, label and split in order (a manifest row's class is its label's; format 1 also
    kept the CSV, which says no more)."""
    if list(attrs.get("classes", [])) != list(manifest.classes):
        return False
    return (len(ids) == len(manifest) and ids.tolist() == manifest.ids
            and np.array_equal(labels, manifest.labels) and splits.tolist() == manifest.splits())


def _manifest_changes(manifest: Manifest, attrs: Mapping[str, Any], ids: np.ndarray,
                      labels: np.ndarray, splits: np.ndarray, examples: int = 3) -> str:
    """What differs between a store's samples and the manifest a build asks for, in words: a
    user who added, removed or renamed clips (or deleted the one the build reported broken)
    learns which, not only that something did."""
    def some(names: list[str]) -> str:
        shown = ", ".join(repr(n) for n in names[:examples])
        return shown + (", ..." if len(names) > examples else "")

    classes = list(attrs.get("classes", []))
    stored = {sample: (class_label(classes, label), split)
              for sample, label, split in zip(ids.tolist(), labels.tolist(), splits.tolist())}
    asked = {row.id: (class_label(manifest.classes, row.label), row.split)
             for row in manifest.rows}
    added = sorted(asked.keys() - stored.keys())
    gone = sorted(stored.keys() - asked.keys())
    moved = sorted(k for k in asked.keys() & stored.keys() if asked[k] != stored[k])
    # (added or removed by the manifest, which is not always the source's files: a dataset's
    # built-in official lists name clips a copy may lack; "new in the source" said otherwise)
    parts = [f"{len(added)} sample(s) added ({some(added)})" if added else "",
             f"{len(gone)} removed ({some(gone)})" if gone else "",
             f"{len(moved)} in another class or split ({some(moved)})" if moved else ""]
    new_classes = sorted(set(manifest.classes) - set(classes))
    gone_classes = sorted(set(classes) - set(manifest.classes))
    if new_classes:
        parts.append(f"{len(new_classes)} class(es) new ({some(new_classes)})")
    if gone_classes:
        parts.append(f"{len(gone_classes)} class(es) gone ({some(gone_classes)})")
    said = "; ".join(part for part in parts if part)
    return said or ("the same samples in another order: this version of flowstore orders or "
                    "splits the dataset otherwise")


def _columns_digest(manifest: Manifest) -> str:
    return columns_digest(manifest.classes, manifest.ids, manifest.labels, manifest.splits())


def _check_sources(ledger: Ledger, dataset: Dataset, manifest: Manifest,
                   source_files: SourceSizes, path: Path | str, hint: str,
                   redo: set[str] = frozenset()) -> None:
    """Refuse a store whose done sample's source file changed size since it was extracted.

    Samples in `redo` are exempt: `verify --repair` checks each of those apart
    (`_not_the_file_it_read`) and fails only that sample.
    """
    for index in ledger.sizes_changed(source_files):
        if manifest.ids[index] in redo:
            continue
        name = dataset.source_name(manifest.ids[index])
        happened = "is gone" if source_files.row_size(index) is None else "changed"
        raise StoreMismatchError(f"source file {name!r} {happened} since it was written to "
                                 f"store {str(path)!r}{hint}")


def _not_the_file_it_read(extracted_from: tuple[int | None, str] | None,
                          outcome: TaskOutcome, name: str) -> str | None:
    """Why a sample `verify --repair` re-extracted is not mended, or None.

    A repair restores a sample from the file it was extracted from (`extracted_from`: the size
    and content hash its task read, as recorded; None for a sample that was not done, nor
    unmarked by a repair that stopped). If the file is another now (another size, or the same
    size and another hash), what was extracted is another clip's frames under the sample's
    name: the sample is failed with this reason, not marked done and said "repaired".
    Compared when the task ends, from what it read and hashed anyway: no file is read twice.
    A plain build then takes the file as it is, as it does for any failed sample.
    """
    if extracted_from is None:
        return None
    size, digest = extracted_from
    if size is not None and outcome.size is not None and size != outcome.size:
        detail = f"{size} bytes then, {outcome.size} now"
    elif digest and outcome.source_hash and digest != outcome.source_hash:
        detail = "same size, other content"
    else:
        return None
    return (f"source file {name!r} is not the one the sample was extracted from ({detail}); "
            f"`flowstore build` on the store extracts it again, from that file if you put it "
            f"back, else from the file as it is now")


def _check_source_hashes(ledger: Ledger, dataset: Dataset, manifest: Manifest, source: Path,
                         path: Path | str, hint: str) -> None:
    """`--check-source`: refuse a store whose done sample's source file now holds other bytes.

    Costs one read of every done sample's source file (README, "What a build guarantees").
    """
    for index in np.flatnonzero(ledger.done):
        sample = manifest.ids[index]
        name = dataset.source_name(sample)
        recorded = ledger.text("source_hash", index)
        if not recorded:
            raise StoreMismatchError(f"store {str(path)!r} has no recorded hash of source file "
                                     f"{name!r} (an older flowstore wrote none, or the store "
                                     f"lost a chunk of it), so --check-source cannot check "
                                     f"it{hint}")
        try:
            digest = file_digest(dataset.source_file(source, sample))
        except OSError as exc:
            raise StoreMismatchError(f"source file {name!r} of a done sample cannot be read "
                                     f"({exc.strerror}){hint}") from None
        if digest != recorded:
            raise StoreMismatchError(f"source file {name!r} changed since it was written to "
                                     f"store {str(path)!r} (same size, other content){hint}")


def _check_arrays(store: Store, specs: list, num_samples: int, path: Path | str,
                  hint: str) -> None:
    """Refuse a store that lost an array (or holds it in another shape): resuming cannot fix it."""
    if "checksum" not in store.array_names():
        raise StoreError(f"store {str(path)!r} is damaged: it has no array 'checksum'{hint}")
    check_array_shapes(store, specs, path, hint, num_samples=num_samples)


def _sections(d: dict[str, Any]) -> set[str]:
    return {key for key, value in d.items() if isinstance(value, dict)}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# -- running ---------------------------------------------------------------------------------
def error_log_path(store: Path | str) -> Path:
    """Where a build writes the tracebacks of internal errors: `<store>.errors.log` beside a
    local store; in the current folder for a URL store (nothing can be written beside it)."""
    if is_url(store):
        return Path.cwd() / f"{str(store).rstrip('/').rsplit('/', 1)[-1]}.errors.log"
    store = Path(store)
    return store.with_name(f"{store.name}.errors.log")


def _log_internal_error(log: Path, sample: str, source_file: str, trace: str) -> bool:
    """Append one internal error's traceback to the build's error log; where the log cannot be
    written (a full disk), print it on stderr instead, so that the bug is still told as one
    and the build goes on. Returns whether the log holds it."""
    entry = (f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: internal error "
             f"while building sample {sample} from {source_file}\n{trace}\n")
    try:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(entry)
    except OSError as exc:
        print(f"cannot write {str(log)!r} ({exc.strerror or exc}); the traceback:\n{entry}",
              file=sys.stderr)
        return False
    return True


def _run(config: BuildConfig, dataset: Dataset, manifest: Manifest, store: Store,
         ledger: Ledger, todo: np.ndarray, result: BuildResult,
         cluster: Cluster | None,
         extracted_from: Mapping[int, tuple[int | None, str]],
         reuse: Mapping[int, "ReuseSource"]) -> None:
    """Extract and write the samples `todo`, recording each outcome in `ledger` and `result`.

    `extracted_from`: a repair's samples, by index, with the size and hash of the file each was
    extracted from (`_not_the_file_it_read`); empty for a build. `reuse`: the samples another
    store holds (`flowstore.reuse`), copied where their source file is the same.
    """
    from flowstore.progress import progress_bar

    # Tasks name the store and the clips by absolute paths: a dask.distributed worker runs in
    # its own working directory, where a relative path finds nothing (every sample "failed").
    store_key = StoreKey(_absolute(config.store), str(store.attrs.get("store_id", "")))
    last_flush, flush_every = time.monotonic(), DONE_FLUSH_SECONDS
    source_root = Path(_absolute(config.source))

    def source_of(index: int) -> str:
        return str(dataset.source_file(source_root, manifest.ids[index]))

    try:
        with writing_through(store_key, store), \
                progress_bar(total=len(todo), unit="sample", desc=f"build {dataset.name}",
                             enabled=config.progress) as bar:

            def finished(outcome: TaskOutcome) -> None:
                nonlocal last_flush, flush_every
                sample = manifest.ids[outcome.index]
                if outcome.internal_error is not None:
                    # not the sample's failure: it stays pending (an earlier reason of it is
                    # dropped, as nothing is known of the clip now; a repair's mark is kept,
                    # for `verify` to name the sample still), and the bug is told as one
                    if not ledger.repair_unfinished(outcome.index):
                        ledger.forget_failure(outcome.index)
                    log = error_log_path(config.store)
                    if _log_internal_error(log, sample, source_of(outcome.index),
                                           outcome.internal_error):
                        result.error_log = log
                    result.internal_errors[sample] = outcome.internal_error.strip().splitlines()[-1]
                elif outcome.reason is None and (moved := _not_the_file_it_read(
                        extracted_from.get(outcome.index), outcome,
                        dataset.source_name(sample))):
                    ledger.fail(outcome.index, moved)
                elif outcome.reason is None:
                    ledger.complete(outcome.index, outcome.digest)
                    ledger.record_source(outcome.index, outcome.size, outcome.source_hash)
                    if outcome.reused:
                        result.reused += 1
                    else:
                        result.computed += 1
                else:
                    reason = outcome.reason
                    if cluster is not None:
                        reason = _seen_from_a_worker(reason, source_of(outcome.index),
                                                     config.store)
                    ledger.fail(outcome.index, reason)
                bar.update()
                if time.monotonic() - last_flush >= flush_every:
                    began = time.monotonic()
                    ledger.write(store, durable=config.fsync)
                    last_flush = time.monotonic()
                    flush_every = max(DONE_FLUSH_SECONDS,
                                      (last_flush - began) / LEDGER_TIME_SHARE)

            # made as the tasks are handed out: a list of every task's arguments was a few
            # hundred bytes per sample held for the whole build (benchmarks/build_scale.py)
            arguments = (TaskArguments(store_key, dataset.name, config.params, source_of(i), i,
                                       reuse.get(i)) for i in map(int, todo))
            task = functools.partial(extract_and_write, fsync=config.fsync,
                                     opencv=_recorded_opencv(store),
                                     extraction=EXTRACTION_VERSION)
            if cluster is not None:
                cluster.run(task, arguments, finished, failed=TaskOutcome,
                            sample_of=operator.attrgetter("index"))
            else:
                run_on_threads(config.workers, task, arguments, finished)
    finally:
        if reuse:  # (OLD's handles, where the tasks ran: an HDF5 OLD holds its lock)
            from flowstore.reuse import close_readers

            close_readers()
            if cluster is not None:
                with contextlib.suppress(FlowstoreError):  # (a lost cluster is told already)
                    cluster.on_each_worker(close_readers)


def _seen_from_a_worker(reason: str, source_file: str, store: Path | str) -> str:
    """A cluster task's failure reason, with why where a worker did not see a path this
    process sees: every sample of a source or store the workers cannot reach failed as "video
    file is missing" or "no store at ...", which sent users looking for files that are there."""
    if "file is missing" in reason and os.path.exists(source_file):
        unseen = "source"
    elif reason.startswith("no store at") and not is_url(store) and os.path.exists(store):
        unseen = "store"
    else:
        return reason
    return (f"{reason} (on the worker; this process sees it: every worker must see the "
            f"{unseen} at the same path)")


def _absolute(location: Path | str) -> str:
    """A local path made absolute (as this process's working directory reads it); a URL as it
    is."""
    return str(location) if is_url(location) else str(Path(os.path.realpath(location)))
