"""The benchmarks that drive the trainers, at the tiniest size: they call the trainers' public
API (`open_samples`, `StoreSamples.split`, `make_dataset`), whose changes broke both once
without a test noticing (`samples.task`, `samples.read_batch`, `trainers.data.AUTOTUNE`)."""

from __future__ import annotations

import math

import pytest

from tests.conftest import (assert_one_line_error, benchmark_cli,
                            benchmark_output, benchmark_rows, load_benchmark)

pytest.importorskip("tensorflow")


def _table_rows(out: str, first_cell: str) -> list[list[str]]:
    """The cells of the markdown table rows of `out` whose first cell is `first_cell`."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in out.splitlines() if line.startswith(f"| {first_cell} |")]


def _rate(cell: str) -> float:
    """A samples/s cell ("123.4", or "123.4 (56%)" in the profile table) as a float."""
    return float(cell.split()[0])


def test_input_pipeline_benchmark_measures_every_side_at_a_tiny_size(tmp_path, capsys):
    bench = load_benchmark("input_pipeline")
    bench.main(["--size", "32", "--steps", "2", "--videos-per-class", "4", "--repeats", "1",
                "--min-seconds", "0.05", "--backends", "zarr", "--models", "tvhi_flow",
                "--profile", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "## Training input pipeline vs bare read" in out
    rows = _table_rows(out, "zarr")
    main = [r for r in rows if r[2] == "tvhi_flow (flow)"]
    assert [r[1] for r in main] == ["default presets", "none"]
    for row in main:
        bare, pipeline, before = _rate(row[4]), _rate(row[5]), _rate(row[7])
        for rate in (bare, pipeline, before):
            assert math.isfinite(rate) and rate > 0, row
        for ratio in (row[6], row[8]):  # "NN%", bold below 80%
            assert float(ratio.strip("*%")) > 0, row
    # the profile table: bare, the four steps in between, pipeline (the table of every
    # measurement has three sides)
    profile = [r for r in rows if r[2] == "tvhi_flow" and len(r) == 9]
    assert [r[1] for r in profile] == ["default presets", "none"]
    for row in profile:
        rates = [_rate(cell) for cell in row[3:]]
        assert all(math.isfinite(r) and r > 0 for r in rates), row
    every = [r for r in rows if r[2] == "tvhi_flow" and len(r) == 6]
    assert len(every) == 2 and all("s, others" in cell for r in every for cell in r[3:])
    assert "tf.data alone (no store" in out


def test_stanford40_dead_units_benchmark_trains_and_probes_a_tiny_store(tmp_path, capsys):
    from trainers.testing import make_tiny_store

    bench = load_benchmark("stanford40_dead_units")
    store = make_tiny_store(tmp_path / "s40.zarr", dataset="stanford40", size=32,
                            per_class=(3, 1, 1))
    bench.main(["--store", str(store), "--lr", "1e-3", "--steps", "3"])
    out = capsys.readouterr().out
    assert "learning rate 0.001" in out
    steps = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0].isdigit():
            steps[int(cells[0])] = [float(cell) for cell in cells[1:]]
    assert sorted(steps) == [1, 3]  # the checkpoints before --steps, and --steps itself
    for step, (loss, *dead) in steps.items():
        assert math.isfinite(loss) and loss > 0, step
        assert len(dead) >= 2 and all(0.0 <= d <= 1.0 for d in dead), step  # convs + dense_0


def test_train_memory_measures_both_loaders_at_a_tiny_size():
    """Each side is a fresh process that imports TensorFlow: two of them, the least it takes."""
    out = benchmark_output("train_memory", "--videos", "6", "--size", "16", "--steps", "2")
    (row,) = benchmark_rows(out, "4")  # a quarter a class: 6 asked is 4 built
    streamed, streamed_s, whole, whole_s = (float(cell) for cell in row[2:])
    assert streamed > 0 and whole > 0 and streamed_s > 0 and whole_s > 0


def test_train_memory_refuses_fewer_videos_than_classes():
    """`--videos 3` built a store with no training video, then a child died with a traceback."""
    result = benchmark_cli("train_memory", "--videos", "3")
    assert "--videos 3" in assert_one_line_error(result)


def test_flow_encoding_accuracy_trains_both_chains_on_a_tiny_source(tiny_tvhi_source, tmp_path):
    """Two `trainers run two_stream` chains, one epoch each, on the tests' tiny TV-HI source:
    the script's commands, the runs' metrics.json and `flowstore inspect --json` as it reads
    them. Reused on a second call (documented), with --epochs naming its own runs."""
    args = ["--source", tiny_tvhi_source, "--size", "32", "--steps", "2", "--epochs", "1",
            "--workdir", tmp_path]
    out = benchmark_output("flow_encoding_accuracy", *args, timeout=600)
    assert f"--source {tiny_tvhi_source}" in out
    rows = {row[0]: row for row in benchmark_rows(out) if row[0] in ("float16", "uint8")}
    assert sorted(rows) == ["float16", "uint8"]
    assert rows["float16"][3] == "1.00x" and float(rows["uint8"][3].rstrip("x")) < 1
    for row in rows.values():
        accuracies = [float(row[i]) for i in (4, 6, 8)]  # frames, flow, two-stream
        assert all(0 <= a <= 1 for a in accuracies), row
    assert "Two-stream test accuracy, uint8 minus float16: seed 0:" in out
    assert sorted(p.name for p in tmp_path.glob("runs-*")) == [
        "runs-float16-epochs1-seed0", "runs-uint8-epochs1-seed0"]
