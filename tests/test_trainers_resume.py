"""A stopped run's training goes on where it stopped, and ends as an unstopped one ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from trainers import resume
from trainers.run import RunConfig, run
from trainers.runs import RESUME_PREFIX, list_runs
from trainers.testing import TINY_FLOW, make_tiny_store
from tests.conftest import without_modules_env


def _trained(runs: Path, model: str) -> tuple[np.ndarray, dict, dict]:
    (record,) = [record for record in list_runs(runs) if record.model == model]
    weights = keras.saving.load_model(record.model_file, compile=False).get_weights()
    history = json.loads((record.path / "history.json").read_text())
    return np.concatenate([w.ravel() for w in weights]), history, record.metrics


def _stopped_at(monkeypatch, epochs: int) -> None:
    """Stop (as Ctrl-C does) once the resume point of `epochs` epochs is saved."""
    save = resume.SaveResumePoints._save

    def save_then_stop(self, done: int) -> None:
        save(self, done)
        if done == epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(resume.SaveResumePoints, "_save", save_then_stop)


@pytest.mark.parametrize("model, options", [
    ("flow", {}),
    # an average of the weights (swapped in and out each epoch), a schedule, augmentation
    ("frames", {"recipe_set": "tuned", "ema_momentum": 0.9}),
], ids=["flow-report", "frames-tuned-ema"])
def test_a_stopped_run_goes_on_and_ends_on_the_weights_of_an_unstopped_one(
        tmp_path, monkeypatch, model, options):
    """Its epochs read the orders and augmentations an unstopped run reads (Keras makes two
    tf.data iterators an epoch: moved on by counting them, the third epoch read the fifth's),
    with the optimizer's state, the dropout's random state, the best epoch and the history
    kept: the same weights, history and test scores, and the folder it went on from gone."""
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(2, 1, 1))
    config = {"epochs": 3, **options}
    run(RunConfig(model, store, tmp_path / "unstopped", **config), echo=lambda line: None)
    runs = tmp_path / "runs"
    with monkeypatch.context() as patch:
        _stopped_at(patch, 2)
        with pytest.raises(KeyboardInterrupt, match="interrupted; no run was written; the "
                           f"same command goes on after epoch 2 of 3 .*{RESUME_PREFIX}{model}-"):
            run(RunConfig(model, store, runs, **config), echo=lambda line: None)
    (kept,) = runs.iterdir()
    assert kept.name.startswith(f"{RESUME_PREFIX}{model}-") and not list_runs(runs)
    # the point of epoch 2 alone: epoch 1's files were deleted as it was saved (a long run
    # would pile up every epoch's weights, ~95 MB each for the flow model at 224 px)
    assert {path.name for path in kept.iterdir()} <= {
        resume.STATE_FILE, "epoch-2.weights.h5", "seeds-2.npz", "best-2.npz"}
    assert {resume.STATE_FILE, "epoch-2.weights.h5"} <= {path.name for path in kept.iterdir()}
    said: list[str] = []
    run(RunConfig(model, store, runs, **config), echo=said.append)
    assert f"{model}: going on after epoch 2 of 3, where a stopped command training the same " \
           f"run left it ({kept.name} in the runs folder," in "\n".join(said)
    weights, history, metrics = _trained(runs, model)
    unstopped_weights, unstopped_history, unstopped = _trained(tmp_path / "unstopped", model)
    np.testing.assert_array_equal(weights, unstopped_weights)
    assert history == unstopped_history and len(history["loss"]) == 3
    assert (metrics["best_epoch"], metrics["test"]) == (unstopped["best_epoch"],
                                                        unstopped["test"])
    assert metrics["resumed_at_epoch"] == 2 and "resumed_at_epoch" not in unstopped
    assert not kept.exists() and [p.name for p in runs.iterdir() if p.name[0] == "."] == []


def _a_flow_run_stopped_after_epoch_1(tmp_path, monkeypatch) -> tuple[Path, Path, Path]:
    """(store, runs folder, the resume point kept) of a 2-epoch flow run stopped after one."""
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(2, 1, 1))
    runs = tmp_path / "runs"
    with monkeypatch.context() as patch:
        _stopped_at(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            run(RunConfig("flow", store, runs, epochs=2), echo=lambda line: None)
    (kept,) = runs.iterdir()
    return store, runs, kept


def test_other_parameters_never_go_on_from_it_and_retrain_starts_afresh(tmp_path, monkeypatch):
    store, runs, kept = _a_flow_run_stopped_after_epoch_1(tmp_path, monkeypatch)
    said: list[str] = []
    run(RunConfig("flow", store, runs, epochs=2, seed=1), echo=said.append)  # another run
    assert not any("going on" in line for line in said) and kept.exists()
    (other,) = list_runs(runs)
    assert "resumed_at_epoch" not in other.metrics
    said.clear()  # --retrain: from the first epoch
    run(RunConfig("flow", store, runs, epochs=2, reuse=False), echo=said.append)
    assert not any("going on" in line for line in said) and not kept.exists()
    assert not any("resumed_at_epoch" in record.metrics for record in list_runs(runs))


def test_a_store_of_other_clips_at_the_same_positions_never_goes_on_from_it(tmp_path,
                                                                          monkeypatch):
    """Two stores of one fingerprint with the same samples done may hold other clips at those
    positions (a dataset's split files enter the fingerprint by name and size only): the
    store's columns are part of who a run is, or a run stopped on one went on, trained on the
    other, from weights of the first."""
    import zarr

    store, runs, kept = _a_flow_run_stopped_after_epoch_1(tmp_path, monkeypatch)
    group = zarr.open_group(str(store), mode="r+")
    group["id"][:] = group["id"][:][::-1]  # (the same clips, each at another's position)
    said: list[str] = []
    run(RunConfig("flow", store, runs, epochs=2), echo=said.append)
    assert not any("going on" in line for line in said) and kept.exists(), said
    (other,) = list_runs(runs)
    assert "resumed_at_epoch" not in other.metrics


def test_a_stopped_two_stream_run_goes_on_only_with_the_streams_it_stopped_with(
        tmp_path, monkeypatch):
    """A fused run holds its streams frozen: they are who it is. Stopped, then its frames
    stream trained anew (a Stanford-40 run since, which frames now transfer from), the same
    command went on from the stopped point, whose weights hold the old frames stream, and
    recorded the new one as its base (found by review). It now starts afresh, and the point
    stays for a command that fuses the streams it stopped with."""
    store = make_tiny_store(tmp_path / "tvhi.zarr", size=32, steps=2, per_class=(2, 1, 1))
    runs = tmp_path / "runs"
    save = resume.SaveResumePoints._save

    def save_then_stop(self, done: int) -> None:
        save(self, done)
        if self.folder.name.startswith(f"{RESUME_PREFIX}two_stream-"):
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(resume.SaveResumePoints, "_save", save_then_stop)
        with pytest.raises(KeyboardInterrupt, match="goes on after epoch 1 of 2"):
            run(RunConfig("two_stream", store, runs, epochs=2), echo=lambda line: None)
    (point,) = runs.glob(f"{RESUME_PREFIX}two_stream-*")
    s40 = make_tiny_store(tmp_path / "s40.zarr", dataset="stanford40", size=32)
    run(RunConfig("image", s40, runs, epochs=2), echo=lambda line: None)
    said: list[str] = []
    run(RunConfig("two_stream", store, runs, epochs=2), echo=said.append)
    assert not any("going on" in line for line in said), said
    (image,) = [r for r in list_runs(runs) if r.model == "image"]
    (fused,) = [r for r in list_runs(runs) if r.model == "two_stream"]
    frames = fused.base_run("frames")
    assert frames is not None and frames.base_run("image").path == image.path
    assert "resumed_at_epoch" not in fused.metrics and point.exists()


def test_a_resume_point_that_cannot_be_read_is_said_and_trained_afresh(tmp_path, capsys):
    folder = tmp_path / ".resume-flow-0123"
    folder.mkdir()
    (folder / resume.STATE_FILE).write_text("{not json")
    assert resume.load(folder) is None
    assert "cannot read the resume point in" in capsys.readouterr().err
    (folder / resume.STATE_FILE).write_text(json.dumps({
        "version": resume.STATE_VERSION, "epochs": 2, "history": {}, "train_seconds": 1.0,
        "best": {}, "weights": "epoch-2.weights.h5", "best_weights": None,
        "seeds": "seeds-2.npz"}))
    assert resume.load(folder) is None  # (its weights file is missing)
    assert "lacks epoch-2.weights.h5; training from the first epoch" in capsys.readouterr().err
    state = json.loads((folder / resume.STATE_FILE).read_text())
    for broken in ({k: v for k, v in state.items() if k != "epochs"}, {**state, "epochs": "two"},
                   {**state, "history": [1, 2]}, [state]):  # (JSON, but not a resume point's)
        (folder / resume.STATE_FILE).write_text(json.dumps(broken))
        assert resume.load(folder) is None
        assert "is not one (" in capsys.readouterr().err
    (folder / resume.STATE_FILE).write_text(json.dumps({**state, "version": 0}))
    assert resume.load(folder) is None  # (another release's layout: said, not gone on from)
    assert ("saved by another flowstore release (layout 0, this one reads 1); training from "
            "the first epoch") in capsys.readouterr().err


def test_a_resume_point_that_cannot_be_saved_is_said_once_and_the_run_trains_on(
        tmp_path, monkeypatch, capsys):
    """A full disk under --runs-dir while a resume point is saved: training goes on (the run
    is written, if there is room then), said once, not at every epoch, and not as an error."""
    import errno

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resume, "write_whole", full_disk)
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(2, 1, 1))
    runs = tmp_path / "runs"
    run(RunConfig("flow", store, runs, epochs=3), echo=lambda line: None)
    said = [line for line in capsys.readouterr().err.splitlines() if "resume point" in line]
    assert len(said) == 1 and said[0].startswith("warning: cannot save a resume point in ")
    assert said[0].endswith("(No space left on device); training goes on, but a stop now "
                            "loses it"), said
    (record,) = list_runs(runs)
    assert record.metrics["epochs_run"] == 3


def _saver(folder: Path, best_weights=None) -> resume.SaveResumePoints:
    """A resume-point saver of a small compiled model (its optimizer built), as `fit` makes."""
    from types import SimpleNamespace

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
                              keras.layers.Dropout(0.5)])  # (a random state the point keeps)
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    best = SimpleNamespace(best_weights=best_weights, state=lambda: {})
    saver = resume.SaveResumePoints(folder, best, None)
    saver.set_model(model)
    return saver


def test_a_resume_point_that_fails_midway_leaves_none_of_its_files(tmp_path, monkeypatch,
                                                                   capsys):
    """Its weights written, the disk full at its state: the epoch's files stayed (cut short
    or whole, 125 MB for the flow CNN), taking the room the run needed, and every rerun
    failed alike (found by review). The point saved before stays whole."""
    import errno

    folder = tmp_path / ".resume-flow-0123"
    saver = _saver(folder, best_weights=[np.zeros(3)])
    saver._save(1)
    before = sorted(p.name for p in folder.iterdir())
    assert before == ["best-1.npz", "epoch-1.weights.h5", "seeds-1.npz", resume.STATE_FILE]

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resume, "write_whole", full_disk)
    saver._save(2)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert resume.load(folder).epochs == 1
    assert "cannot save a resume point in" in capsys.readouterr().err


def test_a_resume_point_is_not_saved_where_it_would_leave_no_room_for_the_run(tmp_path,
                                                                              monkeypatch,
                                                                              capsys):
    """A disk that holds the run but not the run and a point beside it: the point is not
    begun (said once), so the run is written at the end; a save that met the full disk
    inside Keras' HDF5 writer also crashed the process at its exit (found by review)."""
    import collections

    folder = tmp_path / ".resume-flow-0123"
    saver = _saver(folder)
    state = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
                for v in (*saver.model.variables, *saver.model.optimizer.variables))
    needed = 2 * state + resume.ROOM_MARGIN
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(resume.shutil, "disk_usage", lambda path: usage(0, 0, needed - 1))
    saver._save(1)
    assert not folder.exists()
    said = capsys.readouterr().err
    assert said.startswith(f"warning: no room for a resume point in {str(folder)!r} (it and the "
                           f"run need about "), said
    saver._failed = False
    monkeypatch.setattr(resume.shutil, "disk_usage", lambda path: usage(0, 0, needed))
    saver._save(1)
    assert resume.load(folder).epochs == 1


@pytest.mark.parametrize("cut", ["seeds-1.npz", "best-1.npz"])
def test_a_resume_file_cut_short_is_said_as_a_damaged_point_not_a_bug(tmp_path, cut):
    """Its files are not fsynced (a crash of the machine): a cut-short `.npz` raised zipfile's
    BadZipFile, an internal error, and one of other bytes numpy's advice to unpickle it
    (found by review). A ValueError naming the file, which `fit` says in one line."""
    folder = tmp_path / ".resume-flow-0123"
    saver = _saver(folder, best_weights=[np.zeros(3)])
    saver._save(1)
    (folder / cut).write_bytes((folder / cut).read_bytes()[:100])
    with pytest.raises(ValueError, match=f"^{cut} is not a whole resume file"):
        resume.restore(saver.model, resume.load(folder))
    (folder / cut).write_bytes(b"other bytes" * 100)
    with pytest.raises(ValueError, match=f"^{cut} is not a whole resume file"):
        resume.restore(saver.model, resume.load(folder))


def test_a_resume_folder_that_never_got_its_state_is_not_called_one_to_go_on_from(tmp_path):
    """A stop while the first point was saved leaves files but no `state.json`: `trainers
    report` said the same command goes on from it, and that command trained afresh without a
    word (found by review)."""
    from trainers.runs import _stopped_run

    folder = tmp_path / ".resume-flow-0123"
    saver = _saver(folder)
    saver._save(1)
    assert "the same `trainers run` command goes on from it" in _stopped_run(folder)
    (folder / resume.STATE_FILE).unlink()
    assert resume.load(folder) is None
    assert _stopped_run(folder).startswith("a stopped run's resume point never finished, ")


def test_a_run_killed_on_the_torch_backend_goes_on_and_ends_as_an_unstopped_one(tmp_path):
    """A real stop: SIGKILL, as a power cut or a preempted machine stops a run, with nothing
    run on the way out; on Keras' PyTorch backend, whose `PyDataset` is told its epoch."""
    pytest.importorskip("torch")
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(2, 1, 1))
    command = [shutil.which("trainers") or pytest.fail("no `trainers` console script"), "run",
               "flow", "--store", str(store), "--epochs", "3", "--quiet", "--runs-dir"]
    env = {**os.environ, "KERAS_BACKEND": "torch",
           **without_modules_env(tmp_path / "no-tensorflow", "tensorflow")}
    subprocess.run([*command, str(tmp_path / "unstopped")], check=True, env=env,
                   capture_output=True, timeout=300)
    runs = tmp_path / "runs"
    with subprocess.Popen([*command, str(runs)], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as stopped:
        deadline = time.monotonic() + 300
        while not list(runs.glob(f"{RESUME_PREFIX}flow-*/{resume.STATE_FILE}")):
            assert stopped.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        stopped.send_signal(signal.SIGKILL)
    assert not list_runs(runs)
    went_on = subprocess.run([*command, str(runs)], env=env, capture_output=True, text=True,
                             timeout=300)
    assert went_on.returncode == 0, went_on.stderr[-2000:]
    assert "flow: going on after epoch " in went_on.stdout
    # and not first warned of as a stopped run's resume point to delete (found by review)
    assert "resume point" not in went_on.stderr, went_on.stderr
    _, history, metrics = _trained(runs, "flow")
    _, unstopped_history, unstopped = _trained(tmp_path / "unstopped", "flow")
    assert history == unstopped_history and metrics["test"] == unstopped["test"]
    assert metrics["resumed_at_epoch"] >= 1
    assert [p.name for p in runs.iterdir() if p.name.startswith(".")] == []
