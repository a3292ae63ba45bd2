"""Benchmarks that build or plan stores, each run through its `main` at the tiniest size: they
run to their table, and leave alone what they did not create."""

from __future__ import annotations

import pytest

from tests.conftest import (REPO, assert_one_line_error, benchmark_cli,
                            benchmark_output, benchmark_rows, load_benchmark)


def test_estimate_accuracy_keeps_the_workdirs_other_files_and_prints_its_real_command(
        tiny_tvhi_source, tmp_path, capsys):
    estimate_accuracy = load_benchmark("estimate_accuracy")
    workdir = tmp_path / "shared-folder"
    workdir.mkdir()
    (workdir / "someone-elses.txt").write_text("keep me")
    argv = ["--source", str(tiny_tvhi_source), "--workdir", str(workdir), "--workers", "1",
            "--size", "32", "--steps", "4", "--sample", "2", "--encodings", "float16"]
    estimate_accuracy.main(argv)
    out = capsys.readouterr().out
    assert (workdir / "someone-elses.txt").read_text() == "keep me"
    assert sorted(p.name for p in workdir.iterdir()) == ["someone-elses.txt"]  # its own: gone
    command = next(line for line in out.splitlines() if line.startswith("- command:"))
    assert "--encodings float16" in command and "--size 32" in command
    assert "--sample 2" in command and f"--workdir {workdir}" in command
    assert "| store size, float16 flow (MiB) |" in out


def test_plan_scale_plans_ucf101_at_a_small_fraction_into_a_new_workdir(tmp_path, capsys):
    from tests.conftest import SHARED

    plan_scale = load_benchmark("plan_scale")
    lists = SHARED / "data" / "ucf101" / "ucfTrainTestlist"
    if not (lists / "trainlist01.txt").is_file():
        pytest.skip(f"no UCF101 lists at {lists}")
    workdir = tmp_path / "not" / "yet"  # absent: the script makes it
    plan_scale.main(["--workdir", str(workdir), "--data", str(SHARED / "data"),
                     "--ucf-fractions", "0.02", "--kinetics-rows", "400"])
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    # 2% of each of the 101 classes, at least one clip a class: 2 train + 1 test each; Kinetics:
    # 400 generated train rows and the 19,906 of val.csv (the real one or a generated one)
    assert rows == {"dataset": "rows", "ucf101": "297", "kinetics": "20,306"}
    assert workdir.is_dir() and not any(workdir.iterdir())  # its own temp folder: removed


def test_build_scale_builds_on_a_local_cluster(tmp_path, capsys, monkeypatch):
    import json
    import sys

    pytest.importorskip("dask.distributed")
    build_scale = load_benchmark("build_scale")
    rows_file = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", [
        "build_scale.py", "--samples", "20", "--workers", "1", "--cluster",
        "--workdir", str(tmp_path / "work"), "--json", str(rows_file)])
    build_scale.main()
    (row,) = json.loads(rows_file.read_text())
    assert row["samples"] == 20 and row["resume_pending"] >= 1
    assert row["build_wall_s"] > 0 and row["root_metadata_bytes"] > 0
    assert "| 20 |" in capsys.readouterr().out


def test_train_step_time_table_heads_its_ratio_column_with_what_it_holds():
    step_time = load_benchmark("train_step_time")  # (its table needs no Keras)
    row = {"model": "flow", "batch": 2, "store_ms": 200.0, "ceiling_ms": 150.0,
           "of_ceiling": 150.0 / 200.0, "samples_per_s": 10.0, "epoch_s": 9.0,
           "peak_device_mb": None}
    head, _rule, line = step_time.table([row]).splitlines()
    columns = dict(zip([c.strip() for c in head.split("|")], [c.strip() for c in line.split("|")]))
    assert columns["ceiling / store"] == "0.75"  # what measure() puts there: ceiling_ms / store_ms
    assert "store / ceiling" not in head


# -- the build benchmarks run as users run them (a subprocess), at their smallest sizes ---------


def _numbers(cells: list[str]) -> list[float]:
    """The leading number of each cell ("1.5", "120 [117]", "0.1 MiB", "1.00x")."""
    return [float(cell.split()[0].rstrip("x%")) for cell in cells]


def test_build_memory_measures_a_tiny_build(tmp_path):
    args = ["--videos-per-class", "2", "--size", "32", "--steps", "2", "--workers", "1",
            "--workdir", tmp_path]
    out = benchmark_output("build_memory", *args)
    (row,) = benchmark_rows(out, "8 (2/class)")
    peak, maxrss = _numbers(row[1:3])
    assert 0 < maxrss and 0 < peak
    assert len(row[3].split(",")) == 4  # the median RSS of each quarter of the run
    wall, rate, cpu = _numbers(row[4:7])
    assert wall > 0 and rate == pytest.approx(8 / wall, rel=0.05) and cpu > 0


def test_build_memory_and_build_workers_refuse_a_source_too_small_to_generate(tmp_path):
    """The synthetic TV-HI needs 2 clips a class (one per set): 1 was a traceback."""
    for name in ("build_memory", "build_workers"):
        result = benchmark_cli(name, "--videos-per-class", "1", "--workdir", tmp_path)
        assert "--videos-per-class 1" in assert_one_line_error(result)
        assert not list(tmp_path.glob("synth-tvhi-1per-class*"))


def test_build_memory_resolution_measures_a_tiny_source(tmp_path):
    out = benchmark_output("build_memory_resolution", "--heights", "360", "--frames", "12",
                           "--clips-per-class", "1", "--size", "32", "--steps", "2",
                           "--workdir", tmp_path)
    (row,) = benchmark_rows(out, "640x360 (360p)")
    frame_mb, peak, cpu = _numbers(row[1:4])
    assert frame_mb == pytest.approx(640 * 360 * 3 / 2**20, abs=0.05) and peak > 0 and cpu > 0
    assert "this checkout: 360p -> 360p peak RSS" in out


def test_build_throughput_measures_build_baseline_and_limit_of_a_tiny_source(
        tiny_tvhi_source, tmp_path):
    out = benchmark_output("build_throughput", "--source", tiny_tvhi_source, "--limit", "8",
                           "--size", "32", "--steps", "2", "--workers", "1",
                           "--workdir", tmp_path)
    assert "on 8 real TV-HI clips" in out
    rows = benchmark_rows(out)[1:]  # (after the head)
    assert [row[0][:3] for row in rows] == ["(a)", "(b)", "(c)"]
    for row in rows:
        seconds, rate = _numbers(row[2:4])
        assert seconds >= 0 and rate > 0, row
    assert _numbers([rows[0][4]]) == [1.0]  # (a) against itself


def test_build_throughput_refuses_a_limit_below_one_clip_per_class_and_set(
        tiny_tvhi_source, tmp_path):
    """`--limit 4` wrote a readme with an empty set, then died on it with a traceback."""
    result = benchmark_cli("build_throughput", "--source", tiny_tvhi_source, "--limit", "4",
                           "--workdir", tmp_path)
    assert "--limit 4" in assert_one_line_error(result) and "at least 8" in result.stderr


def test_build_workers_compares_worker_counts_and_profiles_a_tiny_source(tmp_path):
    out = benchmark_output("build_workers", "--videos-per-class", "2", "--repeats", "1",
                           "--size", "32", "--steps", "2", "--profile", "2",
                           "--workdir", tmp_path)
    table = [row for row in benchmark_rows(out) if len(row) == 8]  # (not the runs')
    one, two = [row for row in table if row[0] == "1"], [row for row in table if row[0] == "2"]
    assert len(one) == len(two) == 1
    assert _numbers(one[0][1:2])[0] > 0 and _numbers(two[0][1:2])[0] > 0
    assert one[0][3] in ("1.00x", "1.00")  # the baseline's speedup over itself
    total = benchmark_rows(out, "**total**")
    assert len(total) == 1 and total[0][3] == "100%"  # the profile's phases add up


def test_store_bytes_builds_each_flow_encoding_and_removes_its_stores(tiny_tvhi_source, tmp_path):
    """Without --workdir its stores went in a temporary folder that was never removed."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    out = benchmark_output("store_bytes", "--source", tiny_tvhi_source, "--clips-per-split", "1",
                           "--size", "32", "--steps", "2", env={"TMPDIR": str(temporary)})
    encodings = {row[0]: row for row in benchmark_rows(out)
                 if row[0] in ("float32", "float16", "uint8")}
    assert list(encodings) == ["float32", "float16", "uint8"]
    assert encodings["float32"][-1] == "1.00"
    assert float(encodings["uint8"][-1]) < float(encodings["float16"][-1]) < 1
    assert len(benchmark_rows(out, "flow uint8")) == 6  # one row per candidate codec
    assert list(temporary.iterdir()) == []


def test_fsync_cost_times_plain_and_durable_writes_of_both_backends(tmp_path):
    from trainers.testing import make_tiny_store

    store = make_tiny_store(tmp_path / "t.zarr", per_class=(2, 0, 0))
    work = tmp_path / "work"
    work.mkdir()
    out = benchmark_output("fsync_cost", store, "--samples", "4", "--workdir", work)
    rows = {(row[0], row[1]): _numbers(row[2:]) for row in benchmark_rows(out)
            if row[0] in ("Zarr", "HDF5")}
    assert sorted(rows) == [("HDF5", "no"), ("HDF5", "yes"), ("Zarr", "no"), ("Zarr", "yes")]
    assert all(wall > 0 and ledger > 0 for wall, _, _, ledger in rows.values())
    assert list(work.iterdir()) == []  # its stores: removed


# -- a path a benchmark cannot measure: one `error:` line, exit code 2, before any work --------
# (benchmarks/README.md; a missing store or source was a flowstore traceback and exit code 1)

MISSING = "nope"  # a name under tmp_path, made by no one


@pytest.mark.parametrize("name, args", [
    ("build_memory_resolution", ["--baseline", MISSING]),
    ("build_throughput", ["--source", MISSING]),
    ("build_workers", ["--no-scaling", "--profile", "1", "--profile-source", MISSING]),
    ("estimate_accuracy", ["--source", MISSING, "--workdir", "work"]),
    ("flow_encoding_accuracy", ["--source", MISSING, "--workdir", "work"]),
    ("flow_features", ["--store", f"{MISSING}.zarr"]),
    ("flow_methods", ["--source", MISSING, "--size", "56", "--clips", "1"]),
    ("flow_methods", ["--source", "source", "--size", "56", "--skimage-wheel", MISSING]),
    ("frames_transfer_features", ["--store", f"{MISSING}.zarr", "--base", MISSING]),
    ("fsync_cost", [f"{MISSING}.zarr"]),
    ("plan_scale", ["--data", MISSING, "--workdir", "work"]),
    ("read_into_overhead", [f"{MISSING}.zarr"]),
    ("stanford40_dead_units", ["--store", f"{MISSING}.zarr"]),
    ("store_bytes", ["--source", MISSING]),
])
def test_every_benchmark_refuses_a_missing_store_or_source_in_one_line(name, args, tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "a.avi").touch()  # (a source folder flowstore takes)
    result = benchmark_cli(name, *[tmp_path / arg if arg.split(".")[0] in (MISSING, "work",
                                                                           "source") else arg
                                   for arg in args])
    assert MISSING in assert_one_line_error(result)
    assert result.stdout == ""  # refused before its header: nothing was measured
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("name, dataset, args", [
    ("flow_features", "stanford40", []),  # was the reader's ValueError "has no feature 'flow'"
    ("stanford40_dead_units", "tvhi", []),  # was trainers' WrongDatasetError
    ("read_into_overhead", "tvhi", ["--array", "flows"]),  # was zarr's KeyError
])
def test_benchmarks_refuse_a_store_without_the_arrays_they_read_in_one_line(
        name, dataset, args, tmp_path):
    from trainers.testing import make_tiny_store

    store = make_tiny_store(tmp_path / "s.zarr", dataset=dataset, per_class=(2, 1, 1))
    result = benchmark_cli(name, *(["--store", store] if name != "read_into_overhead" else [store]),
                           *args)
    assert str(store) in assert_one_line_error(result) and result.stdout == ""


def test_every_benchmark_entry_point_refuses_what_flowstore_refuses_on_purpose():
    """One shared wrapper turns a FlowstoreError (bad input, the CLIs' exit code 2) into one
    line, and lets anything else (a bug) through with its traceback."""
    missing = [path.name for path in sorted((REPO / "benchmarks").glob("*.py"))
               if "\n@refusing_bad_input\ndef main(" not in path.read_text()]
    assert missing == []
    from flowstore.errors import StoreError

    wrap = load_benchmark("build_workers").refusing_bad_input

    def bad_input() -> None:
        raise StoreError("no store at 'x.zarr'")

    def bug() -> None:
        raise ValueError("a bug")

    with pytest.raises(SystemExit) as refused:
        wrap(bad_input)()
    assert refused.value.code == 2
    with pytest.raises(ValueError, match="a bug"):
        wrap(bug)()
