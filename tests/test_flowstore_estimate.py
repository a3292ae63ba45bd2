"""`flowstore estimate`: predictions per flow encoding that hold the real build's size."""

from __future__ import annotations

import re

import numpy as np

import pytest

from flowstore.errors import ParameterError
from flowstore.estimate import Estimate, _predict, bootstrap_mean, estimate, format_estimate
from flowstore.params import VideoParams
from flowstore.store.base import tree_bytes
from tests.conftest import TINY_BUILD, assert_one_line_error, flowstore_cli


def test_the_interval_holds_the_real_store_size_of_each_encoding(tiny_tvhi_source, tmp_path):
    """8 of the 16 tiny clips measured; each encoding's 95% interval holds the size of the
    store a real build of all 16 writes (bytes of every file, what the estimate counts)."""
    predicted = estimate("tvhi", tiny_tvhi_source, VideoParams(size=32, steps=4), sample_size=8,
                         workers=2, progress=False)
    assert predicted.items == 16 and len(predicted.sampled) == 8 and not predicted.failed
    for encoding in ("float16", "float32", "uint8"):
        store = tmp_path / f"{encoding}.zarr"
        built = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                              *TINY_BUILD, "--flow-dtype", encoding, "-q")
        assert built.returncode == 0, built.stderr
        size, interval = tree_bytes(store), predicted.store_bytes[encoding]
        assert interval.low <= size <= interval.high, (encoding, size, interval)
    cpu, wall = predicted.cpu_hours, predicted.wall_seconds
    assert 0 < cpu.low <= cpu.value <= cpu.high
    assert wall.value == pytest.approx(cpu.value * 3600 / min(2, predicted.cores))


def test_the_command_prints_each_encoding_cpu_and_wall_time(tiny_tvhi_source):
    out = flowstore_cli("estimate", "tvhi", "--source", tiny_tvhi_source, *TINY_BUILD,
                        "--sample", "4", "--workers", "1", "--flow-dtype", "uint8")
    assert out.returncode == 0, out.stderr
    for encoding in ("float16", "float32", "uint8"):
        assert re.search(rf"^  {encoding} +[\d.]+ KiB  \[[\d.]+ KiB, [\d.]+ KiB\]", out.stdout,
                         re.MULTILINE), out.stdout
    assert re.search(r"uint8 .*<- --flow-dtype", out.stdout)
    assert "CPU-hours [" in out.stdout and "wall time with --workers 1" in out.stdout


def test_max_per_split_estimates_the_items_the_build_would_take(tiny_tvhi_source):
    """`--max-per-split 1` of the 16 tiny clips is a build of 3 (one a split): ignored, the
    estimate was of all 16, five times the store the build makes."""
    predicted = estimate("tvhi", tiny_tvhi_source, VideoParams(size=32, steps=4), sample_size=2,
                         workers=1, progress=False, max_per_split=1)
    assert predicted.items == 3 and len(predicted.sampled) == 2
    out = flowstore_cli("estimate", "tvhi", "--source", tiny_tvhi_source, *TINY_BUILD,
                        "--sample", "2", "--workers", "1", "--max-per-split", "1")
    assert out.returncode == 0 and "build of 3 item(s)" in out.stdout, out.stderr


def test_a_source_whose_relative_path_reads_as_a_url_is_measured_as_the_build_reads_it(
        tiny_tvhi_source, tmp_path, monkeypatch):
    """`--source ./data:/x` (how a folder named `data:` is given): the clips were handed to
    FFmpeg as `data:/x/...`, a protocol's URL to it, so every item failed ("every sampled item
    failed to extract"), where the build, which reads them by their absolute path, built."""
    import shutil

    shutil.copytree(tiny_tvhi_source, tmp_path / "data:" / "x")
    monkeypatch.chdir(tmp_path)
    predicted = estimate("tvhi", "./data:/x", VideoParams(size=32, steps=4), sample_size=2,
                         workers=1, progress=False)
    assert len(predicted.sampled) == 2 and not predicted.failed


def test_a_bootstrap_resample_is_as_large_as_the_sample():
    """Resamples of n - 1 values made every interval wider than its confidence says, and no
    test saw it (a mutation review): of two values, the size-2 resample means are 0, 0.5 and
    1 with chances 1/4, 1/2, 1/4, so the 30th to 70th percentiles are both 0.5 (of size-1
    resamples, 0 and 1)."""
    narrow = bootstrap_mean([0.0, 1.0], np.random.default_rng(0), 0.4)
    assert narrow.low == narrow.value == narrow.high == 0.5


def test_the_seed_chooses_which_items_are_measured(tvhi_source):
    """`estimate --seed` reached no draw of the items (a mutation review: `default_rng(0)` in
    its place passed every test, the command's own test replacing `estimate`)."""
    params = VideoParams(size=16, steps=2)
    drawn = {seed: estimate("tvhi", tvhi_source, params, sample_size=3, seed=seed,
                            progress=False).sampled for seed in (0, 1)}
    assert drawn[0] != drawn[1]
    assert estimate("tvhi", tvhi_source, params, sample_size=3, seed=1,
                    progress=False).sampled == drawn[1]


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_agreement():
    spread = bootstrap_mean([1.0, 2.0, 3.0, 10.0], np.random.default_rng(0), 0.95)
    assert spread.low < spread.value == 4.0 < spread.high
    same = bootstrap_mean([5.0, 5.0, 5.0], np.random.default_rng(0), 0.95)
    assert same.low == same.value == same.high == 5.0


def test_a_sample_of_every_item_is_printed_as_totals_without_an_interval(tiny_tvhi_source,
                                                                       tmp_path):
    """--sample at least the build's items measures all of them: no sampling error to bound,
    so no bootstrap interval (it was one of resamples of the build's own items), and the total
    is the real build's size within its metadata."""
    out = flowstore_cli("estimate", "tvhi", "--source", tiny_tvhi_source, *TINY_BUILD,
                        "--sample", "40", "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "of 16 item(s), from 16 measured here (0 of the sample failed); every item measured" \
        in out.stdout, out.stdout
    assert "[" not in out.stdout, out.stdout
    built = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store",
                          tmp_path / "s.zarr", *TINY_BUILD, "-q")
    assert built.returncode == 0, built.stderr
    printed = re.search(r"^  float16 +([\d.]+) KiB", out.stdout, re.MULTILINE)
    assert float(printed.group(1)) * 1024 == pytest.approx(tree_bytes(tmp_path / "s.zarr"),
                                                           rel=0.01)


def test_one_measured_item_has_no_interval_rather_than_a_zero_width_one():
    """One item measured of three (the other failed): a resample of one value is that value,
    which printed as [x, x] claimed a certainty the estimate does not have."""
    assert not bootstrap_mean([5.0], np.random.default_rng(0), 0.95).known
    result = Estimate(dataset="tvhi", items=3, workers=1, cores=1, confidence=0.95,
                      sampled=["a"], failed={"b": "unreadable"}, cpu_seconds=[2.0],
                      item_bytes={"-": [1000]}, fixed_bytes={"-": 24})
    _predict(result, np.random.default_rng(0))
    assert result.store_bytes["-"].value == pytest.approx(1.5 * 1000 + 24)
    text = format_estimate(result)
    assert "no interval: one item has no spread" in text and "[" not in text, text
    assert "nan" not in text, text


def test_the_interval_holds_how_unsure_the_sample_is_of_how_many_items_fail():
    """The share of failures in the sample was taken as exact and only the sizes of the items
    that built were resampled: 2 of 6 built (about a third) printed [132, 135] KiB for a build
    where half the items built, 190 KiB. The failures are resampled with the rest now."""
    result = Estimate(dataset="clips", items=18, workers=1, cores=1, confidence=0.95,
                      sampled=["a", "b"], failed={name: "unreadable" for name in "cdef"},
                      cpu_seconds=[2.0, 2.2], item_bytes={"-": [20_000, 21_000]},
                      fixed_bytes={"-": 7_000})
    _predict(result, np.random.default_rng(1))
    size = result.store_bytes["-"]
    assert size.value == pytest.approx(18 * 2 / 6 * 20_500 + 7_000)
    half_built = 9 * 20_500 + 7_000  # (as likely as not, from 2 built of 6 sampled)
    assert size.low < half_built / 2 and half_built < size.high, size
    assert result.cpu_hours.low < result.cpu_hours.value / 2


def test_the_wall_time_divides_the_cpu_time_by_the_workers_that_get_a_core():
    """--workers above the cores runs no faster than one worker a core: 8 workers on 2 cores
    divide the CPU time by 2, not 8 (and 1 worker on 4 cores by 1)."""
    for workers, cores, parallel in [(8, 2, 2), (1, 4, 1)]:
        result = Estimate(dataset="tvhi", items=10, workers=workers, cores=cores,
                          confidence=0.95, sampled=["a", "b"], cpu_seconds=[2.0, 2.2],
                          item_bytes={"-": [1000, 1000]}, fixed_bytes={"-": 0})
        _predict(result, np.random.default_rng(0))
        assert result.wall_seconds.value == pytest.approx(10 * 2.1 / parallel), (workers, cores)


def test_a_90_percent_interval_is_about_1645_standard_errors_either_side():
    """The percentile interval leaves (1 - confidence) / 2 in each tail: for 90% the 5th to
    95th percentiles of the resampled means, about 1.645 standard errors either side of the
    mean on a large sample (the 10th to 90th, 1.28 of them, claimed more certainty)."""
    values = np.random.default_rng(3).normal(100.0, 10.0, size=400)
    interval = bootstrap_mean(values.tolist(), np.random.default_rng(0), 0.90)
    error = values.std(ddof=1) / np.sqrt(values.size)
    assert (interval.high - interval.low) / 2 == pytest.approx(1.645 * error, rel=0.08)


def test_bad_input_is_one_line(tiny_tvhi_source, tmp_path):
    assert "does not exist" in assert_one_line_error(
        flowstore_cli("estimate", "tvhi", "--source", tmp_path / "none"))
    assert "--sample" in assert_one_line_error(
        flowstore_cli("estimate", "tvhi", "--source", tiny_tvhi_source, "--sample", "1"))
    assert "unknown dataset" in assert_one_line_error(
        flowstore_cli("estimate", "nope", "--source", tiny_tvhi_source))
    assert assert_one_line_error(flowstore_cli(
        "estimate", "tvhi", "--source", tiny_tvhi_source, "--max-per-split", "0")) == \
        "error: --max-per-split must be at least 1, got 0"
    for confidence in (0.0, 1.0):  # (the library's: the command line keeps to 0.9)
        with pytest.raises(ParameterError, match=r"confidence must be in \(0, 1\)"):
            estimate("tvhi", tiny_tvhi_source, VideoParams(size=32, steps=4),
                     confidence=confidence, progress=False)


def test_a_sampled_item_that_fails_is_reported_and_scales_as_a_failure(tvhi_source):
    (tvhi_source / "hug_0003.avi").write_bytes(b"not a video" * 100)
    predicted = estimate("tvhi", tvhi_source, VideoParams(size=32, steps=4), sample_size=16,
                         progress=False)
    assert list(predicted.failed) == ["hug_0003"] and len(predicted.sampled) == 15
    per_item = float(np.mean(predicted.item_bytes["float16"]))
    assert predicted.store_bytes["float16"].value == pytest.approx(
        15 * per_item + predicted.fixed_bytes["float16"])
    # every item measured, one of them failing: the build's own totals, no interval
    size = predicted.store_bytes["float16"]
    assert predicted.every_item and size.low == size.value == size.high
    assert "every item measured" in format_estimate(predicted)
    for clip in tvhi_source.glob("*.avi"):
        clip.write_bytes(b"")
    out = flowstore_cli("estimate", "tvhi", "--source", tvhi_source, *TINY_BUILD, "--sample", "3")
    assert "every sampled item failed" in assert_one_line_error(out)


def test_a_full_scratch_folder_is_the_estimates_error_not_the_items(tiny_tvhi_source,
                                                                     monkeypatch):
    """A write into the scratch store that failed (ENOSPC) was counted as the sampled item's
    failure: with the temporary folder full, every later item "failed" and the prediction shrank
    by their share (18 times too small, exit 0), or the other encodings' write ended in a
    traceback."""
    import errno

    from flowstore.estimate import ScratchWriteError
    from flowstore.store._zarr import ZarrStore

    def full(self, index, arrays, durable=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ZarrStore, "write_sample", full)
    with pytest.raises(ScratchWriteError, match="No space left on device.*TMPDIR"):
        estimate("tvhi", tiny_tvhi_source, VideoParams(size=32, steps=4), sample_size=3,
                 progress=False)


def test_the_cores_are_those_this_process_may_use(tiny_tvhi_source, monkeypatch):
    """Under taskset, a cpuset or a Slurm allocation the host's core count was used: the
    default --workers oversubscribed the allowed cores, and the wall time was too short."""
    import os

    from flowstore.build import BuildConfig

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    predicted = estimate("tvhi", tiny_tvhi_source, VideoParams(size=32, steps=4), sample_size=2,
                         progress=False)
    assert (predicted.cores, predicted.workers) == (1, 1)
    assert predicted.wall_seconds.value == pytest.approx(predicted.cpu_hours.value * 3600)
    assert BuildConfig("tvhi", tiny_tvhi_source, "s.zarr", VideoParams()).workers == 1


def test_a_system_error_reading_the_source_is_one_line_as_for_build(tmp_path, monkeypatch):
    """estimate caught flowstore's own errors alone: an OSError listing the source (a symlink
    loop's ELOOP, an I/O error) was an internal error, a traceback and exit 3, where build
    said it on one line, exit 2 (`command.INPUT_ERRORS`, one place for both)."""
    import errno

    from typer.testing import CliRunner

    import flowstore.estimate
    from flowstore.cli import app

    def unreadable(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", "vf/a/clip.mp4")

    monkeypatch.setattr(flowstore.estimate, "estimate", unreadable)
    result = CliRunner().invoke(app, ["estimate", "videofolder", "--source", str(tmp_path)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.output == "error: Input/output error: 'vf/a/clip.mp4'\n"

@pytest.mark.parametrize(("dataset", "split_seed"), [("videofolder", 5), ("tvhi", None)])
def test_seed_draws_the_split_the_build_of_that_seed_would(dataset, split_seed, tmp_path,
                                                           monkeypatch):
    """`--seed` is estimate's own flag (its sample of items): a dataset drawing its val split
    with one never got it, so `estimate --seed 5` measured other samples than `build --seed 5`
    holds. A dataset without a split seed takes the flag as the sample's seed alone."""
    from typer.testing import CliRunner

    import flowstore.estimate
    from flowstore.cli import app
    from flowstore.errors import FlowstoreError

    given = {}

    def recorded(dataset, source, params, *, options, seed, **kwargs):
        given.update(options=options, seed=seed)
        raise FlowstoreError("recorded")

    monkeypatch.setattr(flowstore.estimate, "estimate", recorded)
    result = CliRunner().invoke(app, ["estimate", dataset, "--source", str(tmp_path),
                                      "--seed", "5"])
    assert "recorded" in result.output, result.output
    assert given["seed"] == 5
    assert given["options"].get("seed") == split_seed, given


def test_scratch_folders_of_killed_estimates_are_removed_by_the_next(tiny_tvhi_source,
                                                                    tmp_path, monkeypatch):
    """An estimate killed (SIGKILL, the out-of-memory killer) left its scratch stores in the
    temporary folder for good. Scratch folders are named by their process; the next estimate
    removes those whose process is gone, and leaves a running one's and anything else."""
    import os
    import subprocess
    import sys
    import tempfile

    from flowstore.estimate import SCRATCH_PREFIX

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead, alive = int(ended.stdout), os.getppid()
    names = [f"{SCRATCH_PREFIX}{dead}-x1", f"{SCRATCH_PREFIX}{alive}-x2",
             f"{SCRATCH_PREFIX}{dead}", f"{SCRATCH_PREFIX}abc-x3", f"other-{dead}-x4",
             f"{SCRATCH_PREFIX}\u00b2-x5",  # (a digit to `str.isdigit`, and int() refuses it)
             # a name of the prefix's length, then a dead process's number: not a scratch
             "x" * len(SCRATCH_PREFIX) + f"{dead}-x6"]
    for name in names:
        (tmp_path / name / "store.zarr").mkdir(parents=True)
    estimate("tvhi", tiny_tvhi_source, VideoParams(size=32, steps=4), sample_size=2,
             progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
