"""Benchmarks that build or plan stores, each run through its `main` at the tiniest size: they
run to their table, and leave alone what they did not create."""

from __future__ import annotations

from tests.conftest import load_benchmark


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
        import pytest

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

    import pytest

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
