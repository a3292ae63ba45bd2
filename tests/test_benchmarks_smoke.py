"""The chunk-files benchmark at tiny N: it runs, writes the files and requests its layouts
should, and its request counter counts what a client sent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import (REPO, assert_one_line_error, benchmark_cli,
                            benchmark_output, benchmark_rows, load_benchmark)

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")


chunk_files = load_benchmark("chunk_files")


def test_counting_server_counts_each_request_by_kind():
    import boto3

    with chunk_files.CountingS3Server() as server:
        server.make_bucket("bucket")
        client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="y")
        server.take()
        client.put_object(Bucket="bucket", Key="k/1", Body=b"1")
        client.put_object(Bucket="bucket", Key="k/2", Body=b"2")
        client.list_objects_v2(Bucket="bucket", Prefix="k/")
        assert client.get_object(Bucket="bucket", Key="k/1")["Body"].read() == b"1"
        assert server.take() == {"PUT": 2, "LIST": 1, "GET": 1}
        assert server.take() == {}


def test_chunk_files_benchmark_at_tiny_n(tmp_path, capsys):
    n, k = 10, 4
    results = chunk_files.main(["--samples", str(n), "--s3-samples", str(n), "--shard-samples", str(k),
                                "--size", "8", "--steps", "2", "--batch", "4", "--race-trials", "2",
                                "--workdir", str(tmp_path)])
    shards = math.ceil(n / k)
    metadata = 4  # the group's zarr.json and one per array
    local = {row["layout"]: row for row in results["local"]}
    assert local["nested (today)"]["files"] == 3 * n + metadata
    assert local["nested (today)"]["folders"] > 3 * n  # c/INDEX/0/0... : folders per sample
    assert local["flat keys"]["files"] == 3 * n + metadata and local["flat keys"]["folders"] == 3
    assert local[f"sharded K={k}"]["files"] == 3 * shards + metadata
    s3 = {row["layout"]: row for row in results["s3"]}
    assert s3["nested (today)"]["puts"] == s3["flat keys"]["puts"] == 3 * n
    assert s3[f"sharded K={k}"]["puts"] == 3 * shards
    assert s3[f"sharded K={k}"]["objects"] == 3 * shards + metadata
    race = {row["shard"]: row for row in results["race"]}
    assert race[None]["lost"] == 0  # one chunk file per writer: nothing to lose
    assert race[k]["trials"] == 2
    assert list(tmp_path.iterdir()) == []  # the benchmark removed what it wrote
    out = capsys.readouterr().out
    assert "| nested (today) |" in out and "PUTs / 1,000 samples" in out


def test_flow_methods_runs_on_one_real_clip_at_a_small_size(real_tvhi, tmp_path):
    """The benchmark calls flowstore internals (the decoder, the store layer): a change there
    broke it once without a test noticing."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    out = benchmark_output("flow_methods", "--source", real_tvhi, "--clips", "1", "--size", "64",
                           "--steps", "2", timeout=600, env={"TMPDIR": str(temporary)})
    assert list(temporary.iterdir()) == []  # without --workdir: a temporary folder, removed
    rows = {row[0]: row for row in benchmark_rows(out)}
    assert {"farneback", "tvl1", "dis", "zero flow"} <= set(rows)
    for method in ("farneback", "tvl1", "dis", "zero flow"):
        errors = [float(cell) for cell in rows[method][3:8]]  # each motion family's EPE, and all
        assert all(math.isfinite(error) and error >= 0 for error in errors), rows[method]


def test_flow_methods_refuses_a_size_with_no_interior_to_measure_the_error_in(tmp_path):
    """At --size 32 the 20 px margins left no pixel: every EPE printed was NaN."""
    result = benchmark_cli("flow_methods", "--source", tmp_path, "--clips", "1", "--size", "32")
    assert "--size 32" in assert_one_line_error(result) and "56" in result.stderr


def test_read_into_overhead_measures_both_reads_of_a_tiny_uncompressed_store(tmp_path):
    import zarr

    from trainers.testing import make_tiny_store

    source = zarr.open_group(str(make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))),
                             mode="r")
    plain = zarr.open_group(str(tmp_path / "u.zarr"), mode="w", zarr_format=3)
    for name, arr in source.arrays():
        text = arr.dtype.kind in "OTU"
        plain.create_array(name, shape=arr.shape, chunks=arr.chunks, compressors=None,
                           dtype=str if text else arr.dtype)[:] = arr[:]
    plain.attrs.update(source.attrs.asdict())
    got = load_benchmark("read_into_overhead").measure(str(tmp_path / "u.zarr"), "middle_frame", 50, 2)
    assert got["bytes"] == 32 * 32 * 3
    assert 0 < got["by_hand_us"] and 0 < got["read_into_us"]
    out = benchmark_output("read_into_overhead", tmp_path / "u.zarr", "--reads", "20",
                           "--repeats", "1")
    (row,) = benchmark_rows(out, "middle_frame")
    assert row[1] == str(32 * 32 * 3) and float(row[2]) > 0 and float(row[3]) > 0


@pytest.mark.parametrize("array", ["middle_frame", "flow"])
def test_read_into_overhead_refuses_a_compressed_store(tmp_path, array):
    """Its hand read copies a chunk file's bytes as they are: on a compressed store it timed
    reading fewer bytes than read_into decodes, and printed that as a ratio."""
    from trainers.testing import make_tiny_store

    store = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))  # flowstore's presets
    result = benchmark_cli("read_into_overhead", store, "--array", array, "--reads", "20",
                           "--repeats", "1")
    assert "compressed" in assert_one_line_error(result) and array in result.stderr
    assert result.stdout == ""


def test_every_benchmark_prints_its_command_machine_and_date_through_the_shared_header():
    """benchmarks/README.md promises it of every script; the smoke tests check it printed."""
    missing = [path.name for path in sorted((REPO / "benchmarks").glob("*.py"))
               if "header(__file__" not in path.read_text()]
    assert missing == []


@pytest.mark.parametrize("what", ["ceilings", "split[batch] loop", "DataLoader 0 workers",
                                  "DataLoader 2 workers, no reads", "to_tf_dataset, no reads"])
def test_reader_benchmark_measures_a_cell_of_a_tiny_store(tmp_path, what):
    """One cell of `benchmarks/reader.py` (each reader against its ceiling, in rounds) on a tiny
    store: it runs on the reader as it is, and gives every figure the table prints."""
    pytest.importorskip("torch")
    from trainers.testing import make_tiny_store

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    cell = load_benchmark("reader").measure_cell(path, what, rounds=2, seconds=0.05)
    names = ["ceiling, 1 thread", "ceiling, T threads", "ceiling, 1 thread, batch buffers",
             "ceiling, T threads, batch buffers"] \
        if what == "ceilings" else ["ceiling", "batch buffers", what]
    assert list(cell) == names
    for figures in cell.values():
        assert figures["rate"] > 0 and figures["cores"] > 0
    if what != "ceilings":
        for key in ("ratio", "batch_ratio"):
            low, high = cell[what][f"{key}_range"]
            assert 0 < low <= cell[what][key] <= high


def test_reader_benchmark_repeats_an_epoch_over_the_same_samples(tmp_path):
    """`--epoch-repeat`: epochs N times as long, of the same samples in the same order."""
    import flowstore
    from trainers.testing import make_tiny_store

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    split = flowstore.open(path).split("train")
    longer = load_benchmark("reader").repeated(split, 3)
    assert len(longer) == 3 * len(split)
    np.testing.assert_array_equal(longer[[len(split) + 1]]["flow"], split[[1]]["flow"])
    assert longer.labels.tolist() == 3 * split.labels.tolist()
    bench = load_benchmark("reader")
    unread = bench.unread(split)
    batch = unread[[2, 0]]
    assert batch["flow"].shape == (2, *split.shapes["flow"])
    assert batch["label"].tolist() == split.labels[[2, 0]].tolist()


def test_reader_benchmark_reads_in_batches_of_the_size_asked(tmp_path, monkeypatch):
    """`--batch-size`: every reader and the batch-buffer ceiling read batches of that size."""
    pytest.importorskip("torch")
    import flowstore
    from trainers.testing import make_tiny_store

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    split = flowstore.open(path).split("train")
    bench = load_benchmark("reader")
    sizes: list[int] = []
    read = type(split).read
    monkeypatch.setattr(type(split), "read",
                        lambda self, positions: sizes.append(len(positions)) or read(self,
                                                                                      positions))
    for name in ("split[batch] loop", "DataLoader 0 workers", "batched DataLoader 0 workers",
                 "to_tf_dataset"):
        sizes.clear()
        assert bench.reader_pass(name, split, 3)() == len(split) == 8
        assert sorted(sizes, reverse=True) == [3, 3, 2], name
    made: list[np.ndarray] = []
    aligned = bench.aligned
    monkeypatch.setattr(bench, "aligned", lambda *args: made.append(aligned(*args)) or made[-1])
    bench.ceiling_pass(path, split.indices, 1, bench.ThreadPoolExecutor(1), into_batch=True,
                       batch=3)()
    assert {out.shape[0] for out in made if out.ndim > 1} == {3}
    # (every buffer the ceiling reads into is aligned as the reader's are)
    assert made and all(out.ctypes.data % 64 == 0 for out in made)


def test_reader_benchmark_probes_reads_into_buffers_at_each_offset(tmp_path):
    """`--alignment-probe`: a rate for each offset from a page boundary, the store's flow read
    into a buffer that starts there."""
    from trainers.testing import make_tiny_store

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    rates = load_benchmark("reader").alignment_probe(path, offsets=(0, 16), seconds=0.01)
    assert list(rates) == [0, 16] and all(rate > 0 for rate in rates.values())


def test_conv3d_gradient_benchmark_times_both_paths_of_a_tiny_shape(capsys):
    """`benchmarks/conv3d_gradient.py` on one tiny shape: a row with both timings and the
    reference rate (here its own, the only case)."""
    load_benchmark("conv3d_gradient").main(["--shape", "2x8x8", "--batch", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "oneDNN kernels: TF_ENABLE_ONEDNN_OPTS=1" in out  # (the tests' setting: conftest)
    (row,) = [line for line in out.splitlines() if line.startswith("| 2x8x8")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == ["2x8x8", "1", "128"]
    assert float(cells[3]) > 0 and float(cells[4]) > 0 and cells[6] == "1x"
    assert float(cells[7]) > 0 and float(cells[8]) > 0  # the model's explicit padding


def test_conv3d_onednn_benchmark_compares_both_paddings_with_the_reference(capsys):
    """`benchmarks/conv3d_onednn.py` on one tiny case: a row holding each padding's three
    errors against the reference kernels (both tiny: 2 steps were never wrong)."""
    ((steps, side, same, padded),) = load_benchmark("conv3d_onednn").main(
        ["--steps", "2", "--side", "16"])
    assert (steps, side) == (2, 16)
    for errors in (same, padded):
        assert all(float(error) < 1e-4 for error in errors.split(" / ")), errors
    assert "| 2 | 16 |" in capsys.readouterr().out


def test_train_step_time_benchmark_times_both_loops_of_a_tiny_flow_model(tmp_path, capsys):
    step_time = load_benchmark("train_step_time")
    rows = step_time.main(["--workdir", str(tmp_path), "--size", "32", "--flow-steps", "2",
                           "--models", "flow", "--per-class", "3", "--steps", "2", "--warmup", "1",
                           "--ceiling-batch", "4", "--build-workers", "1"])
    recipe, bigger = rows
    assert (recipe["model"], recipe["batch"], bigger["batch"]) == ("flow", 2, 4)
    assert recipe["store_ms"] > 0 and recipe["ceiling_ms"] > 0
    assert recipe["of_ceiling"] == pytest.approx(recipe["ceiling_ms"] / recipe["store_ms"])
    assert recipe["samples_per_s"] == pytest.approx(2e3 / recipe["store_ms"])
    # TV-HI's 90 training clips: 45 steps of 2, 23 of 4 (the last one short)
    assert recipe["epoch_s"] == pytest.approx(45 * recipe["store_ms"] / 1e3)
    assert bigger["store_ms"] is None and bigger["ceiling_ms"] > 0
    assert bigger["epoch_s"] == pytest.approx(23 * bigger["ceiling_ms"] / 1e3)
    out = capsys.readouterr().out
    assert "backend tensorflow" in out and "| flow | 2 |" in out and "| flow | 4 | - |" in out
