"""`trainers` command line: summaries, and user errors as one line with exit code 2."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import CTRL_C_WHERE_KERAS_SWALLOWS, REPO, run_python
from trainers.catalogue import model_names
from trainers.cli import app
from trainers.testing import make_tiny_store

runner = CliRunner()


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


def test_trainers_alone_shows_its_help_as_it_reads_and_has_a_version():
    from importlib.metadata import version

    alone = subprocess.run([sys.executable, "-m", "trainers"], capture_output=True, text=True)
    assert alone.returncode == 2 and "error:" not in alone.stderr, alone.stderr
    lines = alone.stderr.splitlines()
    assert lines[0] == "Usage: trainers [OPTIONS] COMMAND [ARGS]..."
    assert {"summary", "run", "report"} <= {line.split()[0] for line in
                                            lines[lines.index("Commands:") + 1:] if line.strip()}
    shown = subprocess.run([sys.executable, "-m", "trainers", "--version"], capture_output=True,
                           text=True)
    assert (shown.returncode, shown.stdout) == (0, f"trainers {version('flowstore')}\n")


def test_summary_prints_the_reports_counts():
    result = runner.invoke(app, ["summary", "two_stream"])
    assert result.exit_code == 0, result.output
    assert "Trainable params: 274,628" in result.stdout
    assert "Non-trainable params: 14,276,766" in result.stdout
    assert "frame_stream" in result.stdout and "flow_stream" in result.stdout
    assert result.stdout.rstrip().endswith(
        "two_stream at size 224, steps 16: total 14,551,394, trainable 274,628, "
        "non-trainable 14,276,766")


@pytest.mark.parametrize("model", ["flow", "tvhi_flow"])
def test_summary_at_small_size(model):
    result = runner.invoke(app, ["summary", model, "--size", "32", "--steps", "4"])
    assert result.exit_code == 0, result.output
    assert "(None, 4, 32, 32, 2)" in result.stdout
    assert "\nflow at size 32, steps 4: total " in result.stdout


def test_summary_of_a_model_without_flow_names_no_steps():
    """The image model reads no per-step array: its counts line said "steps 16" all the same."""
    result = runner.invoke(app, ["summary", "image", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("image at size 32: total ")


def test_summary_expands_nested_models_only_when_asked():
    """--expand-nested lists the layers inside two_stream's frame stream (its pretrained
    stanford40_features, conv_0 in it); without it a nested model is one row. Same counts."""
    args = ["summary", "two_stream", "--size", "32", "--steps", "4"]
    plain, expanded = runner.invoke(app, args), runner.invoke(app, [*args, "--expand-nested"])
    assert plain.exit_code == expanded.exit_code == 0, plain.output + expanded.output
    for inner in ("stanford40_features", "conv_0"):
        assert inner not in plain.stdout and inner in expanded.stdout, inner
    assert plain.stdout.splitlines()[-1] == expanded.stdout.splitlines()[-1]


def test_summary_with_a_stores_number_of_classes():
    """--classes N: the head a store of N classes gets (`trainers run` takes the store's); the
    frozen streams keep the report's. 0 was taken as "the report's"."""
    args = ["summary", "two_stream", "--size", "32", "--steps", "4"]
    report, ucf = runner.invoke(app, args), runner.invoke(app, [*args, "--classes", "101"])
    assert report.exit_code == ucf.exit_code == 0, report.output + ucf.output
    assert "(None, 101)" in ucf.stdout and "(None, 101)" not in report.stdout
    totals = [int(re.search(r"total ([\d,]+),", result.stdout.splitlines()[-1]).group(1)
                  .replace(",", "")) for result in (report, ucf)]
    fan_in = 64  # the logits read the fusion head's Dense 64
    assert totals[1] - totals[0] == (101 - 4) * (fan_in + 1)
    assert ucf.stdout.splitlines()[-1].startswith("two_stream at size 32, steps 4, 101 classes:")
    for classes in ("1", "0"):
        refused = runner.invoke(app, [*args, "--classes", classes])
        assert refused.exit_code == 2, refused.output
        # the option as the command line names it, not the models' `num_classes` (review)
        assert _one_error_line(refused) == f"error: --classes must be at least 2, got {classes}"


@pytest.mark.parametrize("args,expected", [
    (["--size", "100000"], "size must be an integer in 8..4096, got 100000"),
    (["--size", "4097"], "size must be an integer in 8..4096, got 4097"),
    (["--size", "8", "--steps", "1025"], "steps must be an integer in 1..1024, got 1025"),
    (["--steps", "0"], "steps must be an integer in 1..1024, got 0"),
])
def test_summary_refuses_a_size_or_steps_no_store_holds(args, expected):
    """--size 100000 was built, and ran out of memory in a traceback: the bounds are
    flowstore's, what a store can hold."""
    result = runner.invoke(app, ["summary", "flow", *args])
    assert result.exit_code == 2, result.output
    assert _one_error_line(result) == f"error: {expected}"


def test_every_model_name_in_the_readme_is_in_the_catalogue():
    """The README's commands keep working: the report's names are aliases of the catalogue's."""
    from trainers.catalogue import get_model, model_names

    readme = (REPO / "README.md").read_text()
    named = set(re.findall(r"trainers (?:run|summary) (\w+)", readme))
    assert {"stanford40", "two_stream", "tvhi_flow", "image", "frames"} <= named
    assert {get_model(name).name for name in named} <= set(model_names())


@pytest.fixture
def stores(tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    (tmp_path / "text.h5").write_text("this is not HDF5\n")
    return {
        "tvhi": make_tiny_store(tmp_path / "tvhi.zarr", per_class=(1, 1, 1)),
        "stanford40": make_tiny_store(tmp_path / "s40.h5", dataset="stanford40",
                                      per_class=(1, 1, 1)),
        "frames_only": make_tiny_store(tmp_path / "frames.zarr", dataset="hmdb51",
                                       arrays=("middle_frame",), per_class=(1, 1, 1)),
        "missing": tmp_path / "absent.zarr",
        "empty_dir": tmp_path / "empty.zarr",
        "not_hdf5": tmp_path / "text.h5",
        "wrong_suffix": tmp_path / "tvhi.npz",
    }


@pytest.mark.parametrize("model,store,expected", [
    ("tvhi_flow", "missing", "no store at"),
    # (read as a store, not made one: a writable open left an empty store in the user's folder)
    ("tvhi_flow", "empty_dir", "no store at '"),  # (an empty folder holds none)
    ("two_stream", "not_hdf5", "not a readable flowstore store"),
    ("tvhi_flow", "wrong_suffix", "must end in .zarr"),
    ("tvhi_flow", "stanford40", "lacks the array 'flow' that model 'flow' reads"),
    ("flow", "stanford40", "lacks the array 'flow' that model 'flow' reads"),
    ("two_stream", "stanford40", "lacks the arrays 'middle_frame', 'flow' that model"),
    ("stanford40", "tvhi", "(dataset 'tvhi') lacks the array 'image' that model 'image' reads"),
    ("flow", "frames_only", "(dataset 'hmdb51') lacks the array 'flow' that model 'flow' reads"),
    ("two_stream", "frames_only", "lacks the array 'flow' that model 'two_stream' reads"),
    ("resnet", "tvhi", f"unknown model 'resnet'; known models: {', '.join(model_names())} "
                       "(aliases: stanford40 = image, tvhi_frames = frames, tvhi_flow = flow)"),
])
def test_bad_store_or_model_is_one_line_and_exit_2(stores, tmp_path, model, store, expected):
    result = runner.invoke(app, ["run", model, "--store", str(stores[store]),
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert expected in _one_error_line(result)
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_a_store_that_lost_an_array_a_model_reads_is_said_damaged(tmp_path):
    """It read as if stores of its kind never held the array."""
    store = make_tiny_store(tmp_path / "lost.zarr", per_class=(1, 1, 1))
    shutil.rmtree(store / "middle_frame")
    result = runner.invoke(app, ["run", "frames", "--store", str(store),
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert ("lacks the array 'middle_frame' that model 'frames' reads: the store is damaged "
            "(store " in _one_error_line(result))
    assert "rebuild it with --overwrite" in _one_error_line(result)


def test_a_runs_dir_that_cannot_hold_runs_is_refused_before_training(stores, tmp_path):
    """It is made when the first run is written, after training: a file there was a
    FileExistsError traceback at the end of the training."""
    (tmp_path / "afile").write_text("not a folder")
    for runs_dir, expected in ((tmp_path / "afile", "is a file, not a folder"),
                               (tmp_path / "afile" / "runs", "lies under the file")):
        result = runner.invoke(app, ["run", "flow", "--store", str(stores["tvhi"]),
                                     "--runs-dir", str(runs_dir), "--epochs", "1"])
        assert result.exit_code == 2
        assert expected in _one_error_line(result)
        assert "epoch" not in result.output  # nothing trained


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_runs_dir_that_cannot_be_created_or_written_is_refused_before_training(stores,
                                                                                  tmp_path):
    """Root passes every permission check, so it was trained for, then a traceback from
    making it; /proc takes no new folder, as a read-only mount or a folder of another user."""
    for runs_dir in (Path("/proc/flowstore-runs"), Path("/proc/flowstore-a/b/runs")):
        result = runner.invoke(app, ["run", "flow", "--store", str(stores["tvhi"]),
                                     "--runs-dir", str(runs_dir), "--epochs", "1"])
        assert result.exit_code == 2, result.output
        line = _one_error_line(result)
        assert f"--runs-dir '{runs_dir}' cannot be created or written (" in line
        assert "epoch" not in result.output  # nothing trained
    # The folders the check makes are removed again when the command stops later, and a
    # runs dir that was there stays.
    (tmp_path / "kept").mkdir()
    for runs_dir in (tmp_path / "a" / "b" / "runs", tmp_path / "kept"):
        result = runner.invoke(app, ["run", "flow", "--store", str(stores["missing"]),
                                     "--runs-dir", str(runs_dir)])
        assert result.exit_code == 2 and "no store at" in _one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "empty.zarr", "frames.zarr", "kept", "tvhi.zarr"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_a_new_runs_dir_another_command_takes_away_as_empty_is_tried_again(tmp_path,
                                                                           monkeypatch):
    """Several `trainers run` started at once on a new --runs-dir: one's check removed the
    empty folder it had made while another's tried it, which was refused "cannot be created or
    written (No such file or directory)" (found by review: 38 in 1,200)."""
    import tempfile

    import trainers.run

    runs_dir = tmp_path / "new" / "runs"
    temporary = tempfile.TemporaryDirectory
    taken = []

    def another_command_cleans_up_first(*args, **kwargs):
        if not taken:  # (the other's `finally`, between this one's mkdir and its try)
            taken.append(runs_dir)
            runs_dir.rmdir()
        return temporary(*args, **kwargs)

    monkeypatch.setattr(trainers.run.tempfile, "TemporaryDirectory",
                        another_command_cleans_up_first)
    trainers.run._check_runs_dir(runs_dir)
    assert taken == [runs_dir]
    assert list(tmp_path.iterdir()) == []  # (what it made, removed again)


def test_ctrl_c_in_trainers_run_is_one_line_saying_what_was_written(stores, tmp_path,
                                                                    monkeypatch):
    """It exited 130 with no word; a run is written only when its training ends, so the one
    in training left nothing, and the prerequisites trained before it are named."""
    import trainers.fit
    from trainers.runs import RunRecord

    def train_model(model, samples, recipe, options, runs_dir, *, bases=None, echo=print):
        if model in stop_at:
            raise KeyboardInterrupt
        return RunRecord(path=Path(runs_dir) / f"{model}-run", metrics={"model": model})

    monkeypatch.setattr(trainers.fit, "train_model", train_model)
    runs = tmp_path / "runs"
    for stop_at, expected in [
            (("frames",), "error: interrupted; no run was written"),
            (("two_stream",), "error: interrupted; no further run was written (written "
                              f"before: frames run {runs / 'frames-run'}, flow run "
                              f"{runs / 'flow-run'})")]:
        result = runner.invoke(app, ["run", "two_stream", "--store", str(stores["tvhi"]),
                                     "--runs-dir", str(runs), "--epochs", "1", "--retrain"])
        assert result.exit_code == 130, result.output + repr(result.exception)
        *notes, line = result.stderr.strip().splitlines()  # a warning, the device line
        assert line == expected and not any(n.startswith("error") for n in notes)
        assert "Traceback" not in result.output
    # prerequisites reused, not trained, were not written by the command interrupted
    from trainers.testing import write_untrained_run

    def written_then_stopped(model, *args, **kwargs):
        if model == "two_stream":
            raise KeyboardInterrupt
        return write_untrained_run(model, *args, **kwargs)

    monkeypatch.setattr(trainers.fit, "train_model", written_then_stopped)
    args = ["run", "two_stream", "--store", str(stores["tvhi"]), "--runs-dir",
            str(tmp_path / "reused"), "--epochs", "1"]
    assert "written before: frames run" in runner.invoke(app, args).stderr
    result = runner.invoke(app, args)
    assert result.exit_code == 130 and "reusing flow run" in result.stdout, result.output
    assert result.stderr.strip().splitlines()[-1] == "error: interrupted; no run was written"


#: `trainers run` whose SIGTERM (`timeout`, Slurm's `scancel`, `docker stop`) lands while its
#: finished run is being written, in its hidden work folder.
_SIGTERM_WHILE_WRITING = """
import os, signal, sys
from trainers import runs
publish = runs.RunWriter.publish
def stopped(self):
    os.kill(os.getpid(), signal.SIGTERM)
    return publish(self)
runs.RunWriter.publish = stopped
sys.argv = ["trainers", "run", "flow", "--store", sys.argv[1], "--runs-dir", sys.argv[2],
            "--epochs", "1", "--quiet"]
from trainers.cli import main
main()
"""


def test_sigterm_while_a_run_is_written_leaves_no_work_folder(stores, tmp_path):
    """SIGTERM ended the process on the spot: no word, and the run's hidden work folder,
    a whole model, left in the runs directory for good. It is handled as a Ctrl-C now (the
    folder removed, one line) and the process still ends by SIGTERM."""
    import signal

    runs = tmp_path / "runs"
    result = run_python(_SIGTERM_WHILE_WRITING, stores["tvhi"], runs)
    assert result.returncode == -signal.SIGTERM, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "error: interrupted; no run was written"
    assert not runs.exists() or list(runs.iterdir()) == []  # (the lock made it, and removed it)


#: `trainers run` whose Ctrl-C lands where Keras swallows it, in a batch's logs: on the JAX
#: backend nearly every Ctrl-C did.
_CTRL_C_KERAS_SWALLOWS = CTRL_C_WHERE_KERAS_SWALLOWS + """
sys.argv = ["trainers", "run", "flow", "--store", sys.argv[1], "--runs-dir", sys.argv[2],
            "--epochs", "2", "--quiet"]
from trainers.cli import main
main()
"""


def test_a_ctrl_c_that_keras_swallows_still_stops_the_run(stores, tmp_path):
    """The run trained on to its end, wrote its run and exited 0 (found by review, on the JAX
    backend; here on TensorFlow, the interrupt put where Keras swallows it on every
    backend)."""
    import signal

    runs = tmp_path / "runs"
    result = run_python(_CTRL_C_KERAS_SWALLOWS, stores["tvhi"], runs)
    assert result.returncode == -signal.SIGINT, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "error: interrupted; no run was written"
    assert not runs.exists() or [p for p in runs.iterdir() if p.name != ".resume"] == []


def test_report_names_the_work_folder_a_killed_run_left(tmp_path):
    """SIGKILL (or a power cut) while a run is written leaves its hidden work folder, a whole
    model, which nothing named: `trainers report` names it while no process of its pid runs;
    one whose writer is alive (it is being written now) is not named."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    runs = tmp_path / "runs"
    dead = runs / f".partial-flow-0f4c8094-20261205-104417-{int(done.stdout)}-8fd12504"
    alive = runs / f".partial-flow-0f4c8094-20261205-104418-{os.getpid()}-8fd12505"
    other = runs / ".partial-notes-kept-by-hand"  # (no pid in its name: not a writer's)
    for folder in (dead, alive, other):
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"x")
    result = runner.invoke(app, ["report", str(runs)])
    assert result.exit_code == 0
    assert result.stderr.strip().splitlines() == [
        f"warning: {dead} left out: not a finished run (the work folder of a run killed while "
        f"it was written: pid {int(done.stdout)} is not running on this machine; delete it)"]


def test_report_names_no_work_folder_of_another_users_live_run(tmp_path, monkeypatch):
    """A writer's pid that this user may not signal (EPERM: another user's run, being written
    now, in a shared runs folder) is alive: its work folder is not named as left by a killed
    run, which would tell the user to delete a run in the making."""
    import os as os_module

    def not_ours(pid, signal):
        raise PermissionError(1, "Operation not permitted")

    folder = tmp_path / "runs" / ".partial-flow-0f4c8094-20261205-104417-4242-8fd12504"
    folder.mkdir(parents=True)
    monkeypatch.setattr(os_module, "kill", not_ours)
    result = runner.invoke(app, ["report", str(tmp_path / "runs")])
    assert result.exit_code == 0 and "killed" not in result.stderr, result.stderr


def test_a_store_missing_a_chunk_stops_training_with_one_line(stores, tmp_path):
    """A read inside tf.data failing (here a partly copied store) surfaced as TensorFlow's op
    error with the read's traceback as text, about 70 lines."""
    store = stores["tvhi"]
    for chunk in (store / "flow").glob("c.*"):
        chunk.unlink()
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir",
                                 str(tmp_path / "runs"), "--epochs", "1", "--quiet"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    device, error = result.stderr.strip().splitlines()  # "training on CPU ...", then one line
    assert device.startswith("training on ") and "tensorflow" not in error.lower()
    assert error.startswith("error: ") and "of 'flow' is missing (the store is damaged" in error
    assert not (tmp_path / "runs").exists()


def test_bad_override_is_one_line_and_exit_2(stores, tmp_path):
    result = runner.invoke(app, ["run", "tvhi_flow", "--store", str(stores["tvhi"]),
                                 "--epochs", "0", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "epochs must be an integer from 1 to 2147483647, got 0" in _one_error_line(result)
    # (a batch of 2**63 was TensorFlow's ValueError, "a bug in trainers", after TF started)
    result = runner.invoke(app, ["run", "tvhi_flow", "--store", str(stores["tvhi"]),
                                 "--batch-size", str(2 ** 63),
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert (f"batch size must be an integer from 1 to 2147483647, got {2 ** 63}"
            in _one_error_line(result))
    # (numpy's seeds stop at 2**32 - 1: it was Keras's ValueError traceback, after TF started)
    result = runner.invoke(app, ["run", "tvhi_flow", "--store", str(stores["tvhi"]),
                                 "--seed", str(2 ** 32), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert ("seed must be an integer in 0..4294967295, got 4294967296"
            in _one_error_line(result))
    result = runner.invoke(app, ["run", "tvhi_flow", "--store", str(stores["tvhi"]),
                                 "--seed=-1", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "seed must be an integer in 0..4294967295, got -1" in _one_error_line(result)
    assert not (tmp_path / "runs").exists()


def test_report_of_a_missing_runs_dir_is_one_line(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "no runs directory" in _one_error_line(result)


def test_report_of_a_store_instead_of_its_runs_is_one_line(tmp_path):
    store = make_tiny_store(tmp_path / "tiny.zarr")
    result = runner.invoke(app, ["report", str(store)])
    assert result.exit_code == 2
    assert "is a store, not a runs directory" in _one_error_line(result)
    empty = tmp_path / "runs.zarr"  # a folder named like a store is still a runs directory
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty)])
    assert result.exit_code == 0 and "No finished runs" in result.output
    figures = tmp_path / "figures"
    result = runner.invoke(app, ["report", str(empty), "--out", str(figures)])
    assert result.exit_code == 0
    # (it ended "0 figure(s) written to ...:", a colon before nothing)
    assert result.output.splitlines()[-1] == f"0 figure(s) written to {figures} (no runs to draw)"


@pytest.mark.parametrize("model,store", [("tvhi_flow", "missing"),
                                         ("tvhi_flow", "stanford40"),
                                         ("flow", "frames_only"),
                                         ("two_stream", "not_hdf5")])
def test_bad_store_in_a_real_process(stores, tmp_path, model, store):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "trainers", "run", model, "--store",
                           str(stores[store]), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_help_keeps_bracketed_defaults_and_rewraps_paragraphs():
    """Rich markup ate "[recipe's]" (a style tag to it) and kept the docstring's line breaks
    inside re-wrapped lines; help is plain text now, in both CLIs."""
    from flowstore.cli import app as flowstore_app

    trainers_help = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "100"})
    assert trainers_help.exit_code == 0
    assert "Epochs [recipe's]; also for prerequisites." in trainers_help.stdout
    assert "\n frames\n" not in trainers_help.stdout
    build_help = runner.invoke(flowstore_app, ["build", "--help"], env={"COLUMNS": "100"})
    assert "Dask worker threads [cores]." in build_help.stdout


def test_report_table_1_puts_each_figure_in_its_column_and_report_recipes_first(tmp_path):
    """Table 1's and Table 2's cells (only their headers and row names were checked: train and
    val accuracy swapped passed), and the seeds table's report-recipe row before a tuned one
    made earlier."""
    def run(name, recipe_set, created, best):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"")
        (folder / "metrics.json").write_text(json.dumps({
            "model": "flow", "created": created, "seed": 0, "best_epoch": 7, "best": best,
            "recipe": {"learning_rate": 1e-3, "epochs": 20,
                       **({"recipe_set": recipe_set} if recipe_set else {})},
            "augment": False, "mixed_precision": False,
            "store": {"dataset": "tvhi", "fingerprint": "f1"},
            "test": {"accuracy": 0.5, "loss": 1.0}, "model_size_gb": 0.012,
            "model_size_bytes": 12_345_678}))

    run("tuned", "tuned", "2026-01-01T00:00:00", {"train_accuracy": 0.8, "val_accuracy": 0.3,
                                                  "train_loss": 0.2, "val_loss": 1.6})
    run("report", None, "2026-01-02T00:00:00", {"train_accuracy": 0.9, "val_accuracy": 0.4,
                                                "train_loss": 0.1, "val_loss": 1.5})
    text = runner.invoke(app, ["report", str(tmp_path / "runs")]).output
    assert "| TV-HI flow | report | 0.90 | 0.40 | 0.10 | 1.50 | 7 |" in text, text
    # Table 2: the test loss (not the best epoch's val loss) and the size in GB
    assert "| TV-HI flow | report | 0.50 | 1.00 | 0.012 |" in text, text
    seeds = [line.split(" | ")[1] for line in text.splitlines()
             if line.startswith("| TV-HI flow | ") and " | 0 | 0.50 | - |" in line]
    assert len(seeds) == 2 and seeds[0] == "report" and seeds[1].startswith("tuned"), seeds


def test_report_gives_mean_and_spread_over_seeds_of_otherwise_equal_runs(tmp_path):
    """Seeds 0-2 of one recipe are one row (mean, sample SD, range); a tuned run, or a run of
    another store, is a row of its own; two tuned recipes of one model say how they differ;
    report-recipe rows come first."""
    def run(name, seed, accuracy, recipe_set=None, fingerprint="f1", created="2026-01-01",
            epochs=20):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"")
        recipe = {"learning_rate": 1e-3, "epochs": epochs, **({"recipe_set": recipe_set}
                                                              if recipe_set else {})}
        (folder / "metrics.json").write_text(json.dumps({
            "model": "flow", "created": f"{created}T00:00:0{seed}", "seed": seed,
            "recipe": recipe, "augment": False, "mixed_precision": False,
            "store": {"dataset": "tvhi", "fingerprint": fingerprint},
            "test": {"accuracy": accuracy, "loss": 1.0}}))

    run("a", 0, 0.30), run("b", 1, 0.40), run("c", 2, 0.38)
    run("d", 0, 0.50, recipe_set="tuned"), run("e", 0, 0.90, fingerprint="f2")
    text = runner.invoke(app, ["report", str(tmp_path / "runs")]).output
    rows = [line for line in text.splitlines() if line.startswith("| TV-HI flow | ")]
    # The same recipe on another store: another row, which says so.
    assert "| TV-HI flow | report, store f1 | 0, 1, 2 | 0.36 | 0.05 | 0.30-0.40 |" in rows
    # A tuned recipe at another learning rate and epochs than the catalogue's says so; its
    # store is named too, as a row of a model with runs on two stores (one left unnamed
    # could be read as either).
    assert "| TV-HI flow | tuned, epochs 20, learning_rate 0.001, store f1 | 0 | 0.50 | - | 0.50-0.50 |" \
        in rows
    assert "| TV-HI flow | report, store f2 | 0 | 0.90 | - | 0.90-0.90 |" in rows
    run("f", 1, 0.60, recipe_set="tuned", epochs=40)
    text = runner.invoke(app, ["report", str(tmp_path / "runs")]).output
    rows = [line for line in text.splitlines() if line.startswith("| TV-HI flow | ")]
    assert "| TV-HI flow | tuned, epochs 20, learning_rate 0.001, store f1 | 0 | 0.50 | - | 0.50-0.50 |" \
        in rows
    assert "| TV-HI flow | tuned, epochs 40, learning_rate 0.001, store f1 | 1 | 0.60 | - | 0.60-0.60 |" \
        in rows
    assert "| TV-HI flow | report, store f1 | 0, 1, 2 | 0.36 | 0.05 | 0.30-0.40 |" in rows
    # A model's report-recipe rows come before its tuned ones, each set's by first run,
    # though the runs were made report, tuned, report, tuned.
    recipes = [row.split(" | ")[1] for row in rows]
    assert [recipe for recipe in recipes if recipe.startswith(("report", "tuned"))] == [
        "report, store f1", "report, store f2", "tuned, epochs 20, learning_rate 0.001, store f1",
        "tuned, epochs 40, learning_rate 0.001, store f1"]


def _report_rows(runs):
    """The TV-HI rows `trainers report RUNS` prints."""
    text = runner.invoke(app, ["report", str(runs)]).output
    return [line for line in text.splitlines() if line.startswith("| TV-HI ")]


def _fake_run(runs, name, model, seed, accuracy, store="tvhi", bases=None, dataset=None,
              **recipe):
    """A finished run directory as `trainers run` writes it, without the model's weights: a
    tuned recipe (fields in `recipe` added or replaced), its store (fingerprint `store`, of
    `dataset`, the store's name by default) and its bases (names of other fake runs), created
    in the order written."""
    folder = runs / name
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"")
    (folder / "metrics.json").write_text(json.dumps({
        "model": model, "created": f"2026-01-01T00:00:{len(list(runs.iterdir())):02d}",
        "seed": seed, "recipe": {"learning_rate": 1e-4, "epochs": 30, "recipe_set": "tuned",
                                 **recipe},
        "augment": False, "mixed_precision": False,
        "store": {"dataset": dataset or store, "fingerprint": store},
        "bases": {key: str((runs / value).resolve()) for key, value in (bases or {}).items()},
        "test": {"accuracy": accuracy, "loss": 1.0}}))


def test_report_keeps_chains_from_other_pretrained_runs_apart(tmp_path):
    """Runs of one recipe whose chains start from other Stanford-40 runs are other experiments:
    a frames run by its transfer base, a two-stream run by its frames run's base; each row
    names the base it starts from."""
    runs = tmp_path / "runs"

    def run(name, model, seed, accuracy, bases=None, store="tvhi"):
        _fake_run(runs, name, model, seed, accuracy, store, bases)

    run("img-a", "image", 0, 0.27, store="stanford40")
    run("img-b", "image", 0, 0.30, store="stanford40")
    for seed in (0, 1):
        run(f"flow-{seed}", "flow", seed, 0.30)
        for base, accuracy in (("a", 0.30), ("b", 0.20)):
            run(f"frames-{base}{seed}", "frames", seed, accuracy, {"image": f"img-{base}"})
            run(f"two-{base}{seed}", "two_stream", seed, accuracy + 0.1,
                {"frames": f"frames-{base}{seed}", "flow": f"flow-{seed}"})
    rows = _report_rows(runs)
    assert "| TV-HI frame | tuned, from img-a | 0, 1 | 0.30 | 0.00 | 0.30-0.30 |" in rows
    assert "| TV-HI frame | tuned, from img-b | 0, 1 | 0.20 | 0.00 | 0.20-0.20 |" in rows
    # (the fake runs' 30 epochs are not the catalogue's tuned flow or two-stream recipe's)
    assert "| TV-HI two-stream | tuned, epochs 30, from img-a | 0, 1 | 0.40 | 0.00 | 0.40-0.40 |" \
        in rows
    assert "| TV-HI two-stream | tuned, epochs 30, from img-b | 0, 1 | 0.30 | 0.00 | 0.30-0.30 |" \
        in rows
    assert "| TV-HI flow | tuned, epochs 30 | 0, 1 | 0.30 | 0.00 | 0.30-0.30 |" in rows


def test_report_rows_name_an_unrecorded_field_by_its_default_and_tell_stores_apart(tmp_path):
    """A run from before a recipe field existed did not record it: its row shows the field's
    default, not "None"; two groups alike in all but their store (a linspace and a segments
    store of the same clips) are told apart by store."""
    runs = tmp_path / "runs"

    def run(name, model, seed, accuracy, store, **recipe):
        _fake_run(runs, name, model, seed, accuracy, store, dataset="tvhi", epochs=40, **recipe)

    for seed in (0, 1):
        run(f"flow-{seed}", "flow", seed, 0.30, "linspace1")
        run(f"flow-views-{seed}", "flow", seed, 0.40, "segments", segment_views=True)
        run(f"frames-lin-{seed}", "frames", seed, 0.25, "linspace1")
        run(f"frames-seg-{seed}", "frames", seed, 0.26, "segments")
    rows = _report_rows(runs)
    # (told apart by their recipes, and each names its store: the model has runs on two)
    assert ("| TV-HI flow | tuned, segment_views False, store linspace | 0, 1 | 0.30 | 0.00 "
            "| 0.30-0.30 |") in rows
    assert ("| TV-HI flow | tuned, segment_views True, store segments | 0, 1 | 0.40 | 0.00 "
            "| 0.40-0.40 |") in rows
    # (40 epochs are not the catalogue's tuned frames recipe's 30)
    assert "| TV-HI frame | tuned, epochs 40, store linspace | 0, 1 | 0.25 | 0.00 | 0.25-0.25 |" \
        in rows
    assert "| TV-HI frame | tuned, epochs 40, store segments | 0, 1 | 0.26 | 0.00 | 0.26-0.26 |" \
        in rows


def test_table_rows_of_a_model_on_two_stores_each_name_their_store(tmp_path):
    """Two-stream on two stores of TV-HI, one chain from scratch: the rows read "TV-HI
    two-stream" and "TV-HI two-stream (from scratch)", names that differ, so neither said its
    store, where the figures' names did."""
    runs = tmp_path / "runs"
    _fake_run(runs, "two-a", "two_stream", 0, 0.40, "storeaaa1", dataset="tvhi")
    _fake_run(runs, "two-b", "two_stream", 0, 0.30, "storebbb2", dataset="tvhi")
    metrics = runs / "two-b" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "from_scratch": True}))
    _fake_run(runs, "flow-a", "flow", 0, 0.35, "storeaaa1", dataset="tvhi")
    text = runner.invoke(app, ["report", str(runs)]).output
    assert "| TV-HI two-stream, store storeaaa |" in text
    assert "| TV-HI two-stream (from scratch), store storebbb |" in text
    assert "| TV-HI flow |" in text  # (one store: its name alone)


def test_report_names_the_run_folders_it_leaves_out(tmp_path):
    """A run whose metrics.json was cut short, or whose model.keras is gone, vanished from the
    report's tables without a word: each is a warning line now; a folder that holds no run's
    file (notes beside the runs) is not."""
    import json

    metrics = {"model": "flow", "created": "2026-12-05T00:00:00", "seed": 0, "recipe": {},
               "samples": {"train": 1}, "store": {"fingerprint": "fp", "dataset": "tvhi"},
               "test": {"accuracy": 0.5}}
    runs = tmp_path / "runs"
    for name, text, model in (("flow-good", json.dumps(metrics), True),
                              ("flow-cut", json.dumps(metrics)[:20], True),
                              ("flow-nomodel", json.dumps(metrics), False),
                              ("flow-notarun", json.dumps({"best": []}), True),
                              ("flow-unreadable", None, True)):
        (runs / name).mkdir(parents=True)
        if text is None:  # (a file that cannot be read, as another user's: not damage)
            (runs / name / "metrics.json").mkdir()
        else:
            (runs / name / "metrics.json").write_text(text)
        if model:
            (runs / name / "model.keras").write_bytes(b"")
    (runs / "notes").mkdir()
    (runs / "notes" / "README.txt").write_text("what I tried")
    result = runner.invoke(app, ["report", str(runs)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: {runs / 'flow-cut'} left out: not a finished run (its metrics.json cannot "
        f"be read as JSON)",
        f"warning: {runs / 'flow-nomodel'} left out: not a finished run (no model.keras file)",
        f"warning: {runs / 'flow-notarun'} left out: not a finished run (its metrics.json is "
        f"not a run's)",
        f"warning: {runs / 'flow-unreadable'} left out: not a finished run (its metrics.json "
        f"cannot be read: Is a directory)"], result.stderr
    assert "flow-good" in result.stdout


def test_report_names_the_resume_points_no_training_holds(tmp_path):
    """A stopped run keeps its resume point (`.resume-<model>-<digest>/`, three models' size)
    for the same command to go on from; one whose command never runs again (another
    --epochs, the store rebuilt) stayed, unseen, forever (found by review). One a running
    training holds (its lock names a live process) is not named."""
    import json
    import os
    import socket

    runs = tmp_path / "runs"
    for digest, pid in (("aaaa", 2**22 + 12345), ("bbbb", os.getpid())):  # (gone; this one)
        (runs / f".resume-flow-{digest}").mkdir(parents=True)
        (runs / f".resume-flow-{digest}" / "weights.npz").write_bytes(bytes(3 * 2**20))
        (runs / f".resume-flow-{digest}" / "state.json").write_text("{}")  # (its commit point)
        (runs / f".training-flow-{digest}.lock").write_text(json.dumps(
            {"pid": pid, "host": socket.gethostname(), "since": "2026-12-07 00:00:00"}))
    (runs / ".resume-frames-cccc").mkdir()  # (no lock file: the training ended by a kill)
    (runs / ".resume-frames-cccc" / "state.json").write_text("{}")
    result = runner.invoke(app, ["report", str(runs)])
    assert result.exit_code == 0, result.output
    said = ("left out: not a finished run (a stopped run's resume point, {} MiB: the same "
            "`trainers run` command goes on from it, --retrain discards it; delete it where "
            "that command will not run again)")
    assert result.stderr.splitlines() == [
        f"warning: {runs / '.resume-flow-aaaa'} {said.format(3)}",
        f"warning: {runs / '.resume-frames-cccc'} {said.format(0)}"]


def test_run_names_the_resume_points_left_once_it_has_taken_up_its_own(tmp_path):
    """`trainers run` named every resume point before it began, the one it was about to go on
    from among them ("delete it where that command will not run again"; found by review): it
    names those left when its training has ended."""
    from trainers.testing import TINY_FLOW, make_tiny_store

    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(2, 1, 1))
    runs = tmp_path / "runs"
    (runs / ".resume-frames-cccc").mkdir(parents=True)  # another command's, stopped
    (runs / ".resume-frames-cccc" / "state.json").write_text("{}")
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir", str(runs),
                                 "--epochs", "1", "-q"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert [line for line in lines if "resume point" in line] == lines[-1:], lines
    assert lines[-1].startswith(f"warning: {runs / '.resume-frames-cccc'} left out: not a "
                                f"finished run (a stopped run's resume point, 0 MiB"), lines


@pytest.mark.parametrize("command", ["report", "run"])
def test_a_runs_folder_the_system_refuses_to_look_into_is_one_line(tmp_path, command):
    """A runs folder of another user's (or a name too long) was a traceback and "internal
    error", exit 3, from `trainers report` and `run`: `Path.is_dir` raises for it (found by
    review)."""
    runs = tmp_path / ("r" * 300)
    args = (["report", str(runs)] if command == "report" else
            ["run", "flow", "--store", str(tmp_path / "s.zarr"), "--runs-dir", str(runs)])
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: cannot read runs folder {str(runs)!r}: File name too long"]


def test_an_error_of_several_lines_or_control_characters_is_one_printed_line(capsys):
    """`trainers` end on flowstore's `fail`: a message of several lines (an exception's text)
    was printed as it was, several lines, and an ESC in it obeyed by the terminal."""
    import typer

    import trainers.cli

    with pytest.raises(typer.Exit) as ended:
        trainers.cli.fail("first\n  second \x1b[31mred")
    assert ended.value.exit_code == 2
    assert capsys.readouterr().err == "error: first second \\x1b[31mred\n"


def test_a_run_under_warnings_as_errors_trains(tmp_path):
    """PYTHONWARNINGS=error (as some CI runs): numpy 2's note on Keras variables' `__array__`
    (in BatchNorm's recalibration, the learning rate logged each epoch) ended every run as
    "internal error: a bug in trainers" (found by review). Keras' note is passed over, and the
    run trains."""
    store = make_tiny_store(tmp_path / "s.zarr", per_class=(2, 1, 1))
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    result = subprocess.run([sys.executable, "-m", "trainers", "run", "tvhi_flow", "--store",
                             str(store), "--runs-dir", str(tmp_path / "runs"), "--epochs", "1",
                             "--recipe", "tuned"], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
