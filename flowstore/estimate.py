"""`flowstore estimate`: how long a build will take and how much disk it needs, before it runs.

A build's cost is per item: each item is one build task (decode, extract, hash the source file,
compress and write its chunks, checksum them), and items of one dataset differ (clip lengths,
resolutions, how well the flow compresses). So the estimate runs exactly that work on a small
random sample of the source, here, and scales the sample's means up to the items the build
would select; the spread of the sample gives the uncertainty (a bootstrap interval of the mean).
A sample that is every item the build selects is no sample: its totals are the build's, without
an interval; one measured item has no spread, so it gets none either (not a zero-width one).

What is measured, per sampled item:
- CPU seconds of one build task with the given parameters (`time.process_time`, every thread
  of this process), written into a scratch Zarr store created the way a build creates one;
- stored bytes per flow encoding: the item's float32 flow encoded as each encoding would store
  it, written with that encoding's own codecs into its own scratch store, and the bytes it added
  on disk counted. Each scratch store has the full build's rows, so its fixed part (metadata,
  the id/label/split columns) is measured too and added once.

Wall time assumes the tasks spread evenly over min(workers, cores) cores, as the threaded build
does (one task per worker, OpenCV single-threaded); on a machine other processes keep busy the
build takes longer, never less.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from flowstore.datasets import get_dataset
from flowstore.build import check_workers
from flowstore.errors import FlowstoreError, ParameterError, StoreError
from flowstore.leftovers import remove_dead_work_folders
from flowstore.parallel import usable_cores
from flowstore.params import FLOW_DTYPES, check_seed
from flowstore.store import create_store
from flowstore.store.base import tree_bytes
from flowstore.store.checksum import file_digest, sample_digest
from flowstore.worker import DATA_ERRORS

#: Items measured by default: on the 200 TV-HI clips, 95% intervals of +-2% (float16 store
#: size), +-4% (uint8) and +-8% (CPU), each holding the real build (benchmarks/README.md,
#: "Issue 17"), for about 10 CPU-s of work.
DEFAULT_SAMPLE_SIZE = 20
#: Bootstrap resamples behind each interval.
BOOTSTRAP_RESAMPLES = 2000
#: The encoding named for a dataset without flow (still images): its one way of storing.
NO_FLOW = "-"
#: The scratch folder's name in the temporary folder, before its process's pid.
SCRATCH_PREFIX = "flowstore-estimate-"


@dataclass(frozen=True)
class Interval:
    """A predicted quantity and its confidence interval."""

    value: float
    low: float
    high: float

    def scaled(self, factor: float, offset: float = 0.0) -> "Interval":
        return Interval(self.value * factor + offset, self.low * factor + offset,
                        self.high * factor + offset)

    @property
    def known(self) -> bool:
        """Whether the bounds say anything (a single measured item has no spread)."""
        return not (np.isnan(self.low) or np.isnan(self.high))


@dataclass
class Estimate:
    """What `estimate` measured and what it predicts for the whole build."""

    dataset: str
    items: int  # items the build would select
    workers: int
    cores: int
    confidence: float
    sampled: list[str] = field(default_factory=list)  # ids measured
    failed: dict[str, str] = field(default_factory=dict)  # sampled ids that failed, and why
    cpu_seconds: list[float] = field(default_factory=list)  # per measured item
    item_bytes: dict[str, list[int]] = field(default_factory=dict)  # encoding -> per item
    fixed_bytes: dict[str, int] = field(default_factory=dict)  # encoding -> store overhead
    store_bytes: dict[str, Interval] = field(default_factory=dict)  # encoding -> prediction
    cpu_hours: Interval | None = None
    wall_seconds: Interval | None = None
    #: The encoding the given build options choose (NO_FLOW for datasets without flow).
    encoding: str = NO_FLOW

    @property
    def every_item(self) -> bool:
        """Whether the sample was every item the build selects (its totals are the build's)."""
        return len(self.sampled) + len(self.failed) == self.items


def estimate(dataset_name: str, source: str | Path, params: Any, *,
             options: Mapping[str, Any] | None = None,
             sample_size: int = DEFAULT_SAMPLE_SIZE, seed: int = 0,
             workers: int | None = None, max_per_split: int | None = None,
             confidence: float = 0.95, progress: bool = True) -> Estimate:
    """Measure `sample_size` random items of `source` and predict the build of all of them
    (`options`: the dataset's split options, which choose the items, as for a build).

    Raises:
        flowstore.errors.FlowstoreError: a bad source layout or option, or every sampled item
            failed (nothing to scale up).
    """
    from flowstore.progress import progress_bar

    if sample_size < 2:
        raise ParameterError(f"--sample must be at least 2 (a spread needs two items), "
                             f"got {sample_size}")
    if not 0.0 < confidence < 1.0:
        raise ParameterError(f"confidence must be in (0, 1), got {confidence}")
    check_seed(seed)
    if max_per_split is not None and max_per_split < 1:
        raise ParameterError(f"--max-per-split must be at least 1, got {max_per_split}")
    cores = usable_cores()
    workers = cores if workers is None else workers
    check_workers(workers)
    dataset = get_dataset(dataset_name, options)
    source = Path(source)
    manifest = dataset.manifest(source)
    dataset.check_some_present(source, manifest)
    selected = manifest.first_per_split(max_per_split)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(selected), size=min(sample_size, len(selected)),
                               replace=False).tolist())
    rows = [manifest.rows[int(selected[i])] for i in chosen]

    flow_dtype = getattr(params, "flow_dtype", None)
    encodings = FLOW_DTYPES if flow_dtype is not None else (NO_FLOW,)
    result = Estimate(dataset=dataset.name, items=len(selected), workers=workers, cores=cores,
                      confidence=confidence, encoding=flow_dtype or NO_FLOW)
    columns = manifest.store_columns(selected)
    # named by this process, for the next estimate to remove if it is killed (`leftovers`)
    remove_dead_work_folders(Path(tempfile.gettempdir()), SCRATCH_PREFIX)
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    try:
        stores = {}
        for encoding in encodings:
            path = scratch / f"{encoding if encoding != NO_FLOW else 'store'}.zarr"
            stores[encoding] = (path, create_store(
                path, attrs={}, specs=dataset.specs(_with_encoding(params, encoding)),
                columns=columns, num_samples=len(selected)))
            result.fixed_bytes[encoding] = tree_bytes(path)
            result.item_bytes[encoding] = []
        # The clips by their absolute path, as the build reads them: FFmpeg takes a relative
        # `data:/x/clip.avi`, from `--source ./data:/x`, for a protocol's URL.
        root = Path(os.path.realpath(source))
        try:
            for position, row in zip(progress_bar(chosen, enabled=progress, unit="item",
                                                  desc=f"estimate {dataset.name}"), rows):
                path = dataset.source_file(root, row.id)
                try:
                    cpu = _build_task_cpu(dataset, path, params, stores[result.encoding][1],
                                          position, scratch)
                    if flow_dtype is not None:
                        raw = dataset.extract(path, _with_encoding(params, "float32"))
                except ScratchWriteError:
                    raise
                except DATA_ERRORS as exc:  # the build records these as the item's failure
                    result.failed[row.id] = str(exc) if isinstance(exc, FlowstoreError) \
                        else f"{type(exc).__name__}: {exc}"
                    continue
                result.sampled.append(row.id)
                result.cpu_seconds.append(cpu)
                for encoding, (store_path, store) in stores.items():
                    if encoding != result.encoding:
                        arrays = dict(raw, flow=_encoded(raw["flow"], encoding, params))
                        with _scratch_writes(scratch):
                            store.write_sample(position, arrays)
                    result.item_bytes[encoding].append(
                        tree_bytes(store_path) - result.fixed_bytes[encoding]
                        - sum(result.item_bytes[encoding]))
        finally:
            for _path, store in stores.values():
                store.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not result.sampled:
        first = next(iter(result.failed.items()))
        raise FlowstoreError(f"every sampled item failed to extract (e.g. {first[0]}: "
                             f"{first[1]}); nothing to estimate from")
    _predict(result, rng)
    return result


def _build_task_cpu(dataset, path: Path, params: Any, store, index: int,
                    scratch: Path) -> float:
    """CPU seconds of what one build task does for one item (`worker.extract_and_write`)."""
    start = time.process_time()
    arrays = dataset.extract(path, params)
    file_digest(path)
    with _scratch_writes(scratch):
        store.write_sample(index, arrays)
    sample_digest(arrays)
    return time.process_time() - start


class ScratchWriteError(FlowstoreError):
    """The estimate's own scratch store could not be written (a full temporary folder)."""


@contextlib.contextmanager
def _scratch_writes(scratch: Path) -> Iterator[None]:
    """A write into the scratch store that fails is the estimate's failure, not the item's: as
    the item's, a full temporary folder made every later item "fail" and the prediction
    shrink by their share, printed with exit 0."""
    try:
        yield
    except (OSError, StoreError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScratchWriteError(f"cannot write the estimate's scratch store in "
                                f"{str(scratch.parent)!r} ({reason}); point TMPDIR at a folder "
                                f"with room for a few samples") from None


def _with_encoding(params: Any, encoding: str) -> Any:
    return params if encoding == NO_FLOW else dataclasses.replace(params, flow_dtype=encoding)


def _encoded(flow: np.ndarray, encoding: str, params: Any) -> np.ndarray:
    from flowstore.flow_encoding import encode_flow

    return encode_flow(flow, encoding, params.flow_bound)


def bootstrap_mean(values: list[float], rng: np.random.Generator, confidence: float) -> Interval:
    """The mean of `values` and its percentile-bootstrap interval (unknown bounds, NaN, for a
    single value: resampling one value says nothing of the spread)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return Interval(float(data.mean()), float("nan"), float("nan"))
    means = data[rng.integers(0, data.size, size=(BOOTSTRAP_RESAMPLES, data.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(data.mean()), float(low), float(high))


def _predict(result: Estimate, rng: np.random.Generator) -> None:
    """Scale the sample's means up to the build's items. Failed items are counted as failing
    in the build too: they cost little and store nothing, so each is a 0 among the sample's
    values, and the interval, resampling them with the rest, holds how unsure the sample is
    of how many fail (the share of failures taken as exact gave 133 KiB [132, 135] for a
    190 KiB build, 4 of 6 sampled items failing)."""
    failed = [0.0] * len(result.failed)

    def mean(values: list[float]) -> Interval:
        every = values + failed
        if result.every_item:  # the build's own items: the mean is the build's, exactly
            return Interval(*[float(np.mean(every))] * 3)
        if len(values) < 2:  # (one item measured: no spread to resample)
            return Interval(float(np.mean(every)), float("nan"), float("nan"))
        return bootstrap_mean(every, rng, result.confidence)

    items = result.items
    for encoding, sizes in result.item_bytes.items():
        result.store_bytes[encoding] = mean(sizes).scaled(items, result.fixed_bytes[encoding])
    cpu = mean(result.cpu_seconds).scaled(items)
    result.cpu_hours = cpu.scaled(1 / 3600)
    result.wall_seconds = cpu.scaled(1 / min(result.workers, result.cores))


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{n:.0f} B"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def format_estimate(result: Estimate) -> str:
    """The estimate as `flowstore estimate` prints it: value [low, high] per quantity, the value
    alone where there is no interval to give."""
    percent = f"{result.confidence * 100:g}%"
    if result.every_item:
        how = "every item measured (no sample, so no interval)"
    elif len(result.sampled) == 1:
        how = "no interval: one item has no spread"
    else:
        how = f"[{percent} interval]"
    lines = [f"estimate for a {result.dataset} build of {result.items} item(s), from "
             f"{len(result.sampled)} measured here ({len(result.failed)} of the sample failed); "
             f"{how}"]

    def bounds(interval: Interval, show, gap: str = " ") -> str:
        if result.every_item or not interval.known:
            return ""
        return f"{gap}[{show(interval.low)}, {show(interval.high)}]"

    lines.append("store size (zarr), per flow encoding:" if result.encoding != NO_FLOW
                 else "store size (zarr):")
    for encoding, size in result.store_bytes.items():
        chosen = "  <- --flow-dtype" if encoding == result.encoding != NO_FLOW else ""
        name = encoding if encoding != NO_FLOW else "store"
        lines.append(f"  {name:<8} {_bytes(size.value):>10}{bounds(size, _bytes, '  ')}{chosen}")
    cpu, wall = result.cpu_hours, result.wall_seconds
    per_item = float(np.mean(result.cpu_seconds))
    lines.append(f"CPU time: {cpu.value:.3g} CPU-hours{bounds(cpu, '{:.3g}'.format)} "
                 f"({per_item:.2f} CPU-s per item)")
    lines.append(f"wall time with --workers {result.workers} on {result.cores} core(s): "
                 f"{_duration(wall.value)}{bounds(wall, _duration)} "
                 f"(an idle machine; other load makes it longer)")
    for sample, reason in result.failed.items():
        lines.append(f"  failed: {sample}: {reason}")
    return "\n".join(lines)
