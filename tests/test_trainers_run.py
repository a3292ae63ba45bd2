"""`trainers run` and `trainers report` end to end on tiny stores, on the CPU."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

import flowstore
from flowstore.store import open_store
from trainers.cli import app
from trainers.data import InputOptions, make_dataset
from trainers.catalogue import ModelEntry, get_model, register, unregister
from trainers.fit import BestEpoch
from trainers.models import build_stanford40
from trainers.recipes import Recipe
from trainers.report import render_report
from trainers.runs import list_runs, read_run
from trainers.samples import StoreSamples
from trainers.testing import TINY_FLOW, make_tiny_store, write_untrained_run

runner = CliRunner()
RUN_FILES = {"model.keras", "history.json", "metrics.json", "curves.png"}


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _fake_training(monkeypatch) -> list[str]:
    """Replace training by a stub that trains nothing and records which models it was asked
    for, so a test of which runs are reused does not pay for the report's 20 epochs."""
    import trainers.fit
    from trainers.runs import RunRecord

    trained: list[str] = []

    def train_model(model, samples, recipe, options, runs_dir, *, bases=None, echo=print):
        trained.append(model)
        return RunRecord(path=Path(runs_dir) / f"not-written-{model}", metrics={"model": model})

    monkeypatch.setattr(trainers.fit, "train_model", train_model)
    return trained


def test_two_stream_trains_end_to_end_then_reuses_its_prerequisites(tmp_path, monkeypatch):
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW)
    runs = tmp_path / "runs"
    first = _invoke("run", "two_stream", "--store", str(store), "--runs-dir", str(runs),
                    "--epochs", "1")
    # No image run exists: frames says so once and trains its conv part too.
    warnings = [line for line in first.stderr.splitlines() if "from scratch" in line]
    assert len(warnings) == 1
    records = {r.model: r for r in list_runs(runs)}
    assert set(records) == {"frames", "flow", "two_stream"}
    for record in records.values():
        assert {p.name for p in record.path.iterdir()} == RUN_FILES
        assert record.path.name.startswith(f"{record.model}-{record.fingerprint[:8]}-")
    fingerprint = open_store(store).attrs["fingerprint"]
    metrics = records["two_stream"].metrics
    assert metrics["store"]["fingerprint"] == fingerprint
    assert metrics["store"]["path"] == str(store.resolve())
    assert metrics["recipe"]["learning_rate"] == 1e-4 and metrics["recipe"]["batch_size"] == 1
    assert metrics["best_epoch"] == 1 and metrics["selection"] == "min val_loss"
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and metrics["test"]["loss"] > 0
    assert metrics["model_size_bytes"] == (records["two_stream"].model_file).stat().st_size
    assert metrics["params"]["trainable"] == 78_020  # the fusion head: 512 flow features at any size
    assert set(metrics["best"]) == {"train_accuracy", "train_loss", "val_accuracy", "val_loss"}
    # as the report names them below: a two-stream run fused on a frame CNN trained from
    # scratch recorded False; a flow run, True
    assert [records[name].metrics["from_scratch"] for name in ("frames", "flow", "two_stream")] \
        == [True, False, True]
    assert metrics["bases"] == {name: str(records[name].path.resolve())
                                for name in ("frames", "flow")}
    history = json.loads((records["two_stream"].path / "history.json").read_text())
    assert history["epoch"] == [1] and len(history["val_loss"]) == 1
    table = first.stdout[first.stdout.index("| Model |"):]
    assert table.count("| trained |") == 3
    # The report names the chain that lacked its Stanford-40 base: not the report's transfer.
    report = _invoke("report", str(runs)).stdout
    for row in ("| TV-HI frame (from scratch) |", "| TV-HI two-stream (from scratch) |",
                "| TV-HI flow |"):
        assert row in report, row

    # A second two-stream run finds both prerequisites by the store's fingerprint.
    second = _invoke("run", "two_stream", "--store", str(store), "--runs-dir", str(runs),
                     "--epochs", "1", "--batch-size", "2")
    assert second.stdout.count("| reused |") == 2 and second.stdout.count("| trained |") == 1
    assert len(list_runs(runs)) == 4
    for name in ("frames", "flow"):
        assert (f"reusing {name} run {records[name].path} (same store, same recipe)"
                in second.stdout.splitlines())

    # Runs trained for one epoch never stand in for the report's recipe, nor for other epochs,
    # seeds, augmentation or precision: each of these trains both prerequisites again.
    for options, differences in [((), "epochs 1, not 20"),
                                 (("--epochs", "2"), "epochs 1, not 2"),
                                 (("--epochs", "1", "--seed", "3"), "seed 0, not 3"),
                                 (("--epochs", "1", "--augment"), "augment False, not True"),
                                 (("--epochs", "1", "--mixed-precision"),
                                  "dtype_policy 'float32', not 'mixed_bfloat16'")]:
        trained = _fake_training(monkeypatch)
        other = _invoke("run", "two_stream", "--store", str(store), "--runs-dir", str(runs),
                        *options)
        assert trained == ["frames", "flow", "two_stream"], options
        assert "reusing" not in other.stdout.replace("not reusing", "")
        assert (f"not reusing flow run {records['flow'].path} (same store, but "
                f"trained with {differences})" in other.stdout.splitlines()), other.stdout
    monkeypatch.undo()

    report = _invoke("report", str(runs)).stdout
    assert "| Model | Recipe | train acc | val acc | train loss | val loss | Epoch |" in report
    assert "| Model | Recipe | Test acc | Test loss | Model size (GB) |" in report
    assert report.count("TV-HI two-stream") >= 2  # one row per table, latest run only
    latest = max((r for r in list_runs(runs) if r.model == "two_stream"), key=lambda r: r.created)
    assert str(latest.curves_file) in report


def test_frames_transfer_from_an_image_run_of_another_dataset_and_keep_the_best_epoch(
        tmp_path, monkeypatch):
    """The report's names (`stanford40`, `tvhi_frames`) are aliases of `image` and `frames`."""
    s40 = make_tiny_store(tmp_path / "s40.h5", dataset="stanford40", size=32)
    tvhi = make_tiny_store(tmp_path / "tvhi.h5", size=32, steps=4)
    runs = tmp_path / "runs"
    _invoke("run", "stanford40", "--store", str(s40), "--runs-dir", str(runs), "--epochs", "1")
    (quick,) = list_runs(runs)
    assert quick.model == "image" and quick.path.name.startswith("image-")
    # A one-epoch image run is no base for a three-epoch chain: named, and not used.
    trained = _fake_training(monkeypatch)
    result = _invoke("run", "tvhi_frames", "--store", str(tvhi), "--runs-dir", str(runs),
                     "--epochs", "3")
    assert trained == ["frames"] and "from scratch" in result.stderr
    assert (f"not reusing image run {quick.path} (same input size, but trained with "
            "epochs 1, not 3)") in result.stdout.splitlines()
    monkeypatch.undo()

    _invoke("run", "image", "--store", str(s40), "--runs-dir", str(runs), "--epochs", "3")
    base = max(list_runs(runs), key=lambda r: r.created)
    result = _invoke("run", "frames", "--store", str(tvhi), "--runs-dir", str(runs),
                     "--epochs", "3", "--lr", "0.05")  # --lr is frames' own: base matches
    assert "from scratch" not in result.stderr
    assert (f"reusing image run {base.path} (same input size, same recipe)"
            in result.stdout.splitlines())
    record = next(r for r in list_runs(runs) if r.model == "frames")
    metrics = record.metrics
    assert metrics["model"] == "frames" and metrics["store"]["dataset"] == "tvhi"
    assert metrics["from_scratch"] is False
    assert metrics["params"]["trainable"] == 16_444  # only the new head trains
    assert metrics["bases"] == {"image": str(base.path.resolve())}  # a Stanford-40 store's run
    assert base.store["dataset"] == "stanford40"
    history = json.loads((record.path / "history.json").read_text())
    assert metrics["best_epoch"] == 1 + int(np.argmin(history["val_loss"]))

    # model.keras holds the best epoch's weights: it reproduces that epoch's validation loss.
    model = keras.saving.load_model(record.model_file)
    with open_store(tvhi) as store:
        val = make_dataset(StoreSamples(store, "frames"), "val", InputOptions(batch_size=2))
        loss = model.evaluate(val, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(metrics["best"]["val_loss"], rel=1e-4)


def _write_run(runs: Path, name: str, created: str, **training) -> Path:
    """A finished run directory of flow on store "fp", recorded under the report's name
    `tvhi_flow` as runs before the catalogue were."""
    from trainers.runs import write_json

    path = runs / name
    path.mkdir(parents=True)
    (path / "model.keras").write_bytes(b"")
    write_json(path / "metrics.json", {"model": "tvhi_flow", "created": created,
                                       "store": {"fingerprint": "fp", "dataset": "tvhi"},
                                       **training})
    return path


def test_find_run_takes_the_latest_run_trained_as_asked_not_the_latest_run(tmp_path):
    from trainers.run import RunConfig
    from trainers.runs import find_run

    runs = tmp_path / "runs"
    default = RunConfig(model="two_stream", store="s.zarr").training_for("flow")
    quick = RunConfig(model="two_stream", store="s.zarr", epochs=1).training_for("tvhi_flow")
    assert default["recipe"]["epochs"] == 20 and quick["recipe"]["epochs"] == 1
    full = _write_run(runs, "a", "2026-01-01", **default)
    _write_run(runs, "b", "2026-01-02", **quick)                   # newer, one epoch
    _write_run(runs, "c", "2026-01-03", **{**default, "seed": 1})  # newer, another seed
    _write_run(runs, "d", "2026-01-04")                            # records no training
    assert find_run(runs, "flow", fingerprint="fp", training=default).path == full
    assert find_run(runs, "tvhi_flow", fingerprint="fp", training=quick).path.name == "b"
    assert find_run(runs, "tvhi_flow", fingerprint="other", training=default) is None
    assert default["dtype_policy"] == "float32" and default["keras_backend"] == "tensorflow"
    for changed in ({"augment": True}, {"dtype_policy": "mixed_bfloat16"}, {"seed": 2},
                    {"keras_backend": "jax"}, {"recipe": {**default["recipe"], "batch_size": 4}}):
        assert find_run(runs, "flow", training={**default, **changed}) is None, changed
    latest = find_run(runs, "flow")  # without `training`: the latest run, however trained
    assert latest.path.name == "d"
    assert latest.training_differences(default) == [
        "no recorded recipe", "no recorded seed", "no recorded augment",
        "no recorded dtype_policy"]  # (and a run before keras_backend was recorded: TensorFlow)
    assert read_run(runs / "b").training_differences(default) == ["epochs 1, not 20"]
    assert read_run(runs / "c").training_differences(default) == ["seed 1, not 0"]
    # Runs recorded under the report's names are the catalogue models' in the report too.
    assert latest.model == "flow"
    assert "| TV-HI flow |" in render_report(runs) and str(latest.path) in render_report(runs)
    # A recipe field only the run records (a release that knows more ways to train wrote it)
    # is a difference too: not the run asked for, though every field asked for agrees.
    newer = _write_run(runs, "e", "2026-01-05",
                       **{**default, "recipe": {**default["recipe"], "mixup": 0.2}})
    assert read_run(newer).training_differences(default) == ["mixup 0.2, not None"]
    assert find_run(runs, "flow", fingerprint="fp", training=default).path == full


def test_best_epoch_restores_the_weights_of_the_lowest_monitored_value():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    best = BestEpoch("val_loss")
    best.set_model(model)
    weights = []
    for epoch, val_loss in enumerate([3.0, 1.0, float("nan"), 2.0, 1.0]):  # (a tie: the first)
        model.set_weights([np.full((2, 1), epoch, np.float32), np.zeros(1, np.float32)])
        weights.append(model.get_weights())
        best.on_epoch_end(epoch, {"val_loss": val_loss, "loss": 0.5})
    best.on_train_end()
    assert best.best_epoch == 2 and best.best_logs["val_loss"] == 1.0
    np.testing.assert_array_equal(model.get_weights()[0], weights[1][0])


def test_best_epoch_never_keeps_weights_that_are_not_finite():
    """A diverged epoch (NaN weights) can still log the lowest loss: it is not kept."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    best = BestEpoch("val_loss")
    best.set_model(model)
    for epoch, (value, val_loss) in enumerate([(1.0, 3.0), (np.nan, 1.0), (np.inf, 0.5)]):
        model.set_weights([np.full((2, 1), value, np.float32), np.zeros(1, np.float32)])
        best.on_epoch_end(epoch, {"val_loss": val_loss, "loss": 0.5})
    best.on_train_end()
    assert best.best_epoch == 1 and best.diverged_at == 2
    np.testing.assert_array_equal(model.get_weights()[0], np.ones((2, 1), np.float32))
    # the usual divergence: the loss NaN too (it was not noticed: no epoch won, none diverged,
    # and the last, NaN, epoch was published)
    nan = BestEpoch("val_loss")
    nan.set_model(model)
    model.set_weights([np.full((2, 1), np.nan, np.float32), np.zeros(1, np.float32)])
    nan.on_epoch_end(0, {"val_loss": float("nan"), "loss": float("nan")})
    assert nan.best_epoch is None and nan.diverged_at == 1


def test_a_run_whose_every_epoch_scored_nan_records_that_it_kept_the_last(tmp_path):
    """Finite weights, NaN val_loss every epoch (a val sample of NaN values): no epoch won, the
    last was kept, and metrics.json said it was chosen by "min val_loss" (found by review)."""
    from trainers.fit import write_run

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    best = BestEpoch("val_loss")
    best.set_model(model)
    for epoch in range(2):
        best.on_epoch_end(epoch, {"val_loss": float("nan"), "loss": 0.5})
    metrics = {"model": "flow", "store": {"dataset": "tvhi", "fingerprint": "f" * 64,
                                          "path": "tvhi.zarr", "params": {}},
               "recipe": {}, "test": None}
    record = write_run(tmp_path / "runs", model, {"loss": [0.5, 0.5],
                                                  "val_loss": [float("nan")] * 2}, best, metrics)
    assert (record.metrics["selection"], record.metrics["best_epoch"]) == (
        "last epoch (no finite val_loss)", 2)
    # its files strict JSON, the NaN figures null (Python's NaN is no JSON: JavaScript's and
    # Go's parsers refused them; found by review), read back by trainers as NaN

    def no_constants(name):
        raise ValueError(f"{name} is no JSON")

    for name in ("metrics.json", "history.json"):
        json.loads((record.path / name).read_text(), parse_constant=no_constants)
    assert record.metrics["best"]["val_loss"] is None
    history = record.history()
    assert history["loss"] == [0.5, 0.5] and np.isnan(history["val_loss"]).all()


def test_predictions_that_are_not_finite_are_refused_not_scored():
    """The argmax of a NaN row is class 0: written as the prediction and counted correct where
    that was the class (on the torch backend; TensorFlow's kernels gave finite outputs for
    the same input) (found by review)."""
    from trainers.errors import ModelConfigError
    from trainers.predict import _check_finite

    logits = np.array([[1.0, 2.0], [np.nan, np.nan], [0.0, np.inf]])
    with pytest.raises(ModelConfigError, match=r"^the model's outputs for 2 sample\(s\) of "
                                               r"split 'test' are not finite \(e.g. 'b'\)"):
        _check_finite(logits, ["a", "b", "c"], "test")
    _check_finite(logits[:1], ["a"], "test")


def test_every_run_of_a_chain_trains_on_the_done_samples_the_command_found(tiny_tvhi_source,
                                                                           tmp_path,
                                                                           monkeypatch):
    """A Zarr store is read while a build appends to it: the prerequisites a two-stream command
    trained read `done` again (a reader of their own), so its streams trained on 12 samples
    a split and the fused model, recorded as trained on 8, on fewer, unsaid (found by review)."""
    import trainers.fit
    from tests.conftest import TINY_BUILD, flowstore_cli

    store, runs = tmp_path / "tvhi.zarr", tmp_path / "runs"
    build = ("build", "tvhi", "--source", tiny_tvhi_source, "--store", store, *TINY_BUILD, "-q")
    assert flowstore_cli(*build, "--max-per-split", "1").returncode == 0
    counts: dict[str, dict[str, int]] = {}

    def train_model(model, samples, recipe, options, runs_dir, *, bases=None, echo=print):
        if not counts:  # the build resumes once the command has read the store
            assert flowstore_cli(*build).returncode == 0
        counts[model] = dict(samples.done_samples().counts)
        from trainers.runs import RunRecord

        return RunRecord(path=Path(runs_dir) / f"not-written-{model}", metrics={"model": model})

    monkeypatch.setattr(trainers.fit, "train_model", train_model)
    _invoke("run", "two_stream", "--store", str(store), "--runs-dir", str(runs))
    assert list(counts) == ["frames", "flow", "two_stream"]
    assert counts["frames"] == counts["flow"] == counts["two_stream"], counts
    assert sum(counts["two_stream"].values()) == 3  # (one a split, as the command found it)
    with flowstore.open(store) as ds:
        assert ds.done.sum() > 3  # (the build did append meanwhile)


def test_run_names_the_damaged_run_it_passes_over(tmp_path, monkeypatch):
    """A frames run whose metrics.json was cut short was passed over without a word, and a new
    one trained in its place; `trainers report` named it (found by review). Both do now."""
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW)
    runs = tmp_path / "runs"
    cut = runs / "frames-cut"
    cut.mkdir(parents=True)
    (cut / "metrics.json").write_text('{"model": "frames", "store": {')
    (cut / "model.keras").write_bytes(b"")
    trained = _fake_training(monkeypatch)
    result = _invoke("run", "frames", "--store", str(store), "--runs-dir", str(runs))
    assert trained == ["frames"]
    assert (f"warning: {cut} left out: not a finished run (its metrics.json cannot be read as "
            f"JSON)") in result.stderr.splitlines(), result.stderr


def _flowstore(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-m", "flowstore", *args], cwd=cwd, env=env, check=True,
                   capture_output=True, timeout=300)


@pytest.fixture
def built_tvhi_store(tmp_path):
    """A store built by flowstore's real pipeline (video decoding, Farneback) from a tiny
    synthetic TV-HI source: 4 clips per class, 12-16 frames of 64x48."""
    _flowstore("synth", "tvhi", "src", "--videos-per-class", "4", "--negatives", "0",
               "--frames", "12:16", "--resolution", "64x48", cwd=tmp_path)
    _flowstore("build", "tvhi", "--source", "src", "--store", "tvhi.h5",
               "--size", str(TINY_FLOW["size"]), "--steps", str(TINY_FLOW["steps"]), "-q",
               cwd=tmp_path)
    return tmp_path / "tvhi.h5"


def _mirrored_flow(flow: np.ndarray) -> np.ndarray:
    mirrored = flow[:, :, ::-1].copy()
    mirrored[..., 0] *= -1  # a motion to the right becomes one to the left
    return mirrored


#: Epochs of each stream `_spy_on_flow_streams` reads: enough that a flip (half the samples)
#: of a sample left uncropped (a third of them at the tuned recipe's 1.15 on 16 px) is seen.
EPOCHS_SPIED = 4


def _spy_on_flow_streams(monkeypatch) -> list[tuple[str, InputOptions, list[str]]]:
    """Each stream of flow batches `trainers run` makes, in order: its split, its options and,
    for each sample of `EPOCHS_SPIED` epochs of it (new coins each, read before the run uses
    it), whether
    it is a stored sample as stored ("stored"), its mirror with dx negated ("mirrored") or
    neither (cropped: "changed")."""
    import trainers.fit

    real_make_dataset = trainers.fit.make_dataset
    streams: list[tuple[str, InputOptions, list[str]]] = []

    def make_dataset(samples, split, options):
        dataset = real_make_dataset(samples, split, options)
        stored = [samples.store.read("flow", i) for i in samples.indices(split)]
        kinds: list[str] = []
        batches = []
        for epoch in range(EPOCHS_SPIED):  # (a training stream reads the epoch it is told:
            # `EpochNumber`)
            if options.epoch is not None:
                options.epoch.assign(epoch)
            batches += list(dataset)
        if options.epoch is not None:
            options.epoch.assign(0)
        for batch, _labels in batches:
            for flow in batch.numpy():
                kinds.append("stored" if any(np.array_equal(flow, s) for s in stored) else
                             "mirrored" if any(np.array_equal(flow, _mirrored_flow(s))
                                               for s in stored) else "changed")
        streams.append((split, options, kinds))
        return dataset

    monkeypatch.setattr(trainers.fit, "make_dataset", make_dataset)
    return streams


def test_tvhi_flow_trains_on_a_store_built_by_flowstore(built_tvhi_store, tmp_path, monkeypatch):
    """`--augment` mirrors some training samples (flow dx negated) and never a val or test one;
    without it none is mirrored."""
    for augment in (True, False):
        runs = tmp_path / f"runs-{augment}"
        streams = _spy_on_flow_streams(monkeypatch)
        _invoke("run", "tvhi_flow", "--store", str(built_tvhi_store), "--runs-dir", str(runs),
                "--epochs", "1", "--augment" if augment else "--no-augment")
        (record,) = list_runs(runs)
        assert record.metrics["augment"] is augment
        seen = {split: [kind for name, _, kinds in streams if name == split for kind in kinds]
                for split in ("train", "val", "test")}
        assert "changed" not in sum(seen.values(), [])  # flips alone: mirrored or as stored
        flips = {split: [kind == "mirrored" for kind in kinds] for split, kinds in seen.items()}
        # two training streams (fit's, and the BatchNorm recalibration's), EPOCHS_SPIED each
        assert len(flips["train"]) == 2 * EPOCHS_SPIED * record.metrics["samples"]["train"] > 0
        if augment:
            assert 0 < sum(flips["train"]) < len(flips["train"]), flips["train"]
        else:
            assert not any(flips["train"])
        assert flips["val"] and flips["test"] and not any(flips["val"] + flips["test"])


def test_batch_norm_recalibration_reads_plain_samples_under_a_tuned_recipe(tmp_path,
                                                                           monkeypatch):
    """The tuned recipe's crops (and flips) shift the BatchNorm statistics that inference on
    plain samples should use: its recalibration stream reads every sample as stored while
    training reads them augmented. Calibrating on augmented batches passed every test (from
    the mutation review)."""
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW)
    runs = tmp_path / "runs"
    streams = _spy_on_flow_streams(monkeypatch)
    _invoke("run", "flow", "--store", str(store), "--runs-dir", str(runs), "--recipe", "tuned",
            "--epochs", "1", "--seed", "3")
    (record,) = list_runs(runs)
    assert record.metrics["bn_recalibration_samples"] > 0
    train = [(options, kinds) for split, options, kinds in streams if split == "train"]
    assert len(train) == 2 and all(options.shuffle for options, _ in train)
    plain, = [kinds for options, kinds in train if options.seed != 3]  # the recalibration's
    augmented, = [kinds for options, kinds in train if options.seed == 3]  # fit's: the run's
    assert len(plain) == len(augmented) == EPOCHS_SPIED * record.metrics["samples"]["train"]
    assert set(plain) == {"stored"}, plain
    assert "changed" in augmented and "mirrored" in augmented, str(augmented)


@pytest.mark.slow
def test_two_stream_with_the_full_recipes_on_a_built_store(built_tvhi_store, tmp_path):
    """The report's recipes unchanged (20 epochs each), from video to two-stream test score."""
    runs = tmp_path / "runs"
    result = _invoke("run", "two_stream", "--store", str(built_tvhi_store),
                     "--runs-dir", str(runs))
    records = {r.model: r for r in list_runs(runs)}
    assert {m: r.metrics["epochs_run"] for m, r in records.items()} == {
        "frames": 20, "flow": 20, "two_stream": 20}
    assert result.stdout.count("| trained |") == 3
    assert records["two_stream"].metrics["test"]["samples"] > 0


def test_precision_policy_is_float16_on_gpu_and_bfloat16_on_cpu():
    from trainers.fit import precision_policy

    assert precision_policy(False, "GPU") == "float32"
    assert precision_policy(True, "GPU") == "mixed_float16"
    assert precision_policy(True, "CPU") == "mixed_bfloat16"


def test_mixed_precision_run_keeps_float32_logits(tmp_path):
    """Under a mixed policy the convolutions compute in 16 bits and the logits in float32.
    bfloat16 training of this CNN on a CPU sometimes diverges within its one epoch here (NaN
    weights, seen in 1 of several CI runs, never alone): such a run is refused in one line
    (`TrainingDivergedError`) and leaves nothing, and the policy is still restored."""
    store = make_tiny_store(tmp_path / "s40.zarr", dataset="stanford40", size=32,
                            per_class=(2, 1, 1))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "stanford40", "--store", str(store), "--runs-dir",
                                 str(runs), "--epochs", "1", "--mixed-precision"])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    if result.exit_code == 2 and "image diverged: " in result.stderr:
        assert not runs.exists() or not list(runs.iterdir())
        assert "--mixed-precision on a CPU computes in bfloat16" in result.stderr
    else:
        assert result.exit_code == 0, result.output + repr(result.exception)
        (record,) = list_runs(runs)
        assert record.metrics["mixed_precision"] is True
        assert record.metrics["dtype_policy"] in ("mixed_float16", "mixed_bfloat16")
        model = keras.saving.load_model(record.model_file, compile=False)
        assert model.get_layer("conv_0").compute_dtype in ("float16", "bfloat16")
        assert model.get_layer("logits").compute_dtype == "float32"
    # and whatever the training did: the models the run builds under the policy
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_stanford40(input_shape=(32, 32, 3), num_classes=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("conv_0").compute_dtype == "bfloat16"
    assert model.get_layer("logits").compute_dtype == "float32"


def test_any_store_with_the_arrays_trains_with_its_own_classes(tmp_path):
    """A video store of another dataset and class count (say UCF101's first three classes)."""
    classes = ("ApplyEyeMakeup", "Archery", "Biking")
    store = make_tiny_store(tmp_path / "ucf101.zarr", dataset="ucf101", classes=classes,
                            per_class=(2, 1, 1), **TINY_FLOW)
    runs = tmp_path / "runs"
    _invoke("run", "flow", "--store", str(store), "--runs-dir", str(runs), "--epochs", "1")
    (record,) = list_runs(runs)
    assert record.model == "flow"
    assert record.store["dataset"] == "ucf101" and record.store["classes"] == list(classes)
    model = keras.saving.load_model(record.model_file, compile=False)
    assert tuple(model.output.shape) == (None, 3)
    assert "| UCF101 flow |" in _invoke("report", str(runs)).stdout


@pytest.fixture
def tiny_model():
    """A model registered in the catalogue by a test, and nowhere else; removed afterwards."""
    def factory(shapes, num_classes, bases, recipe):
        inputs = keras.Input(shape=shapes["frame"], name="frame")
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
        return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x))

    entry = register(ModelEntry(
        name="tiny", factory=factory, recipe=Recipe(learning_rate=1e-3, batch_size=2, epochs=1),
        inputs={"frame": "middle_frame"}, label="{dataset} tiny", report_classes=4,
        aliases=("tiny_alias",)))
    yield entry
    unregister("tiny")


def test_a_model_registered_in_the_catalogue_runs_and_is_reported(tiny_model, tmp_path):
    store = make_tiny_store(tmp_path / "tvhi.zarr", size=32, steps=4, per_class=(2, 1, 1))
    runs = tmp_path / "runs"
    result = _invoke("run", "tiny_alias", "--store", str(store), "--runs-dir", str(runs))
    (record,) = list_runs(runs)
    assert record.model == "tiny" and record.metrics["params"]["trainable"] == 3 * 4 + 4
    assert record.metrics["keras_backend"] == keras.backend.backend()  # (numbers differ by it)
    assert "| TV-HI tiny | trained |" in result.stdout
    assert "| TV-HI tiny |" in _invoke("report", str(runs)).stdout
    assert "tiny at size 16: total 16" in _invoke("summary", "tiny", "--size", "16",
                                                  "--steps", "2").stdout
    assert get_model("tiny_alias") is tiny_model
    # the tuned recipes are the report models': one registered without is refused, not run
    refused = runner.invoke(app, ["run", "tiny", "--store", str(store), "--runs-dir", str(runs),
                                  "--recipe", "tuned"])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.strip().splitlines() == ["error: model 'tiny' has no tuned recipe"]
    assert len(list_runs(runs)) == 1
    with pytest.raises(ValueError, match="'tiny_alias' is already in the catalogue"):
        register(ModelEntry(name="other", factory=tiny_model.factory, recipe=tiny_model.recipe,
                            inputs={}, label="", report_classes=2, aliases=("tiny_alias",)))


def test_a_model_building_on_an_unknown_model_is_refused_and_not_registered():
    """A base that is not in the catalogue (a typo in `transfers_from` or `requires`) is
    refused when the model is registered, not met as a KeyError when a run looks it up."""
    from trainers.catalogue import model_names
    from trainers.errors import ModelConfigError, UnknownModelError

    image = get_model("image")
    for bases in ({"transfers_from": ("imagee",)}, {"requires": ("flow", "nope")}):
        with pytest.raises(ModelConfigError, match="model 'orphan' builds on unknown model"):
            register(ModelEntry(name="orphan", factory=image.factory, recipe=image.recipe,
                                inputs={"image": "image"}, label="", report_classes=2,
                                **bases))
        assert "orphan" not in model_names()
        with pytest.raises(UnknownModelError):
            get_model("orphan")


def test_a_seed_decides_the_training_and_another_seed_trains_otherwise(tiny_model, tmp_path):
    """`--seed` reaches everything random in a run (initial weights, the shuffle, dropout):
    the same seed trains the same weights, another seed other ones. `trainers report`'s
    spread over seeds means nothing if a seed is ignored anywhere."""
    store = make_tiny_store(tmp_path / "tvhi.zarr", size=32, steps=4, per_class=(3, 1, 1))
    weights = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        runs = tmp_path / name
        _invoke("run", "tiny", "--store", str(store), "--runs-dir", str(runs), "--seed", seed)
        (record,) = list_runs(runs)
        model = keras.saving.load_model(record.model_file, compile=False)
        weights[name] = np.concatenate([w.ravel() for w in model.get_weights()])
    np.testing.assert_array_equal(weights["a"], weights["b"])
    assert not np.allclose(weights["a"], weights["c"])


def test_two_stream_trains_end_to_end_on_a_built_ucf101_store(tmp_path):
    """Issue 14's "any store": UCF101 in its real layout (CRLF lists, groups), built by the real
    pipeline, trains the whole two-stream chain with its own classes."""
    _flowstore("synth", "ucf101", "src", "--classes", "3", "--clips-per-class", "6",
               "--min-frames", "6", "--max-frames", "9", "--width", "48", "--height", "32",
               cwd=tmp_path)
    _flowstore("build", "ucf101", "--source", "src", "--store", "ucf101.zarr", "--size", "16",
               "--steps", "2", "-q", cwd=tmp_path)
    store, runs = tmp_path / "ucf101.zarr", tmp_path / "runs"
    _invoke("run", "two_stream", "--store", str(store), "--runs-dir", str(runs), "--epochs", "1")
    records = {r.model: r for r in list_runs(runs)}
    assert set(records) == {"frames", "flow", "two_stream"}
    classes = flowstore.open(store).classes
    assert len(classes) == 3
    for record in records.values():
        assert record.metrics["test"]["samples"] > 0
    model = keras.saving.load_model(records["two_stream"].model_file, compile=False)
    assert model.output_shape[-1] == 3


def test_transfer_base_ignores_the_seed_and_base_names_one_trained_otherwise(
        tmp_path, monkeypatch):
    """A Stanford-40 run is a pretrained base for every seed of the TV-HI chain; `--base`
    names one trained with another recipe (a tuned chain on the report-trained image run)."""
    s40 = make_tiny_store(tmp_path / "s40.h5", dataset="stanford40", size=32)
    tvhi = make_tiny_store(tmp_path / "tvhi.h5", size=32, steps=4)
    runs = tmp_path / "runs"
    _invoke("run", "image", "--store", str(s40), "--runs-dir", str(runs), "--epochs", "1")
    (image,) = list_runs(runs)
    import trainers.fit

    started_from: dict[str, object] = {}

    def train_model(model, samples, recipe, options, runs_dir, *, bases=None, echo=print):
        started_from[model] = {name: run and run.path for name, run in (bases or {}).items()}
        return read_run(image.path)  # any finished record will do: nothing is trained

    monkeypatch.setattr(trainers.fit, "train_model", train_model)
    frames = ("run", "frames", "--store", str(tvhi), "--runs-dir", str(runs), "--epochs", "1")
    result = _invoke(*frames, "--seed", "3")
    assert started_from["frames"] == {"image": image.path}
    assert "from scratch" not in result.stderr

    result = _invoke(*frames, "--recipe", "tuned")  # no tuned image run: from scratch, a hint
    assert started_from["frames"] == {"image": None}
    assert "--base RUN names one trained otherwise" in result.stderr

    result = _invoke(*frames, "--recipe", "tuned", "--base", str(image.path))
    assert started_from["frames"] == {"image": image.path}
    assert f"transferring from image run {image.path} (--base)" in result.stdout.splitlines()

    for args, message in [
            (("run", "flow", "--store", str(tvhi), "--base", str(image.path)),
             "is an image run, which flow does not transfer from (only frames (from image), "
             "two_stream (for frames) take a --base)"),
            ((*frames, "--base", str(tmp_path)), "is not a finished run directory"),
    ]:
        wrong = runner.invoke(app, list(args))
        assert wrong.exit_code == 2 and message in wrong.stderr, wrong.output
        assert len(wrong.stderr.strip().splitlines()) == 1


def test_base_is_taken_by_a_prerequisite_and_refused_at_another_input_size(tmp_path,
                                                                            monkeypatch):
    """`--base` names what `frames` transfers from also when `frames` is a prerequisite
    (`two_stream --base IMAGE-RUN`), and a base of another input size is one error line, not
    a model built on weights of another shape."""
    import trainers.fit

    monkeypatch.setattr(trainers.fit, "train_model", write_untrained_run)
    runs = tmp_path / "runs"
    s40 = make_tiny_store(tmp_path / "s40.zarr", dataset="stanford40", size=32)
    _invoke("run", "image", "--store", str(s40), "--runs-dir", str(runs), "--epochs", "1")
    (image,) = list_runs(runs)
    at_32 = make_tiny_store(tmp_path / "tvhi32.zarr", size=32, steps=2)
    result = _invoke("run", "two_stream", "--store", str(at_32), "--runs-dir", str(runs),
                     "--epochs", "1", "--base", str(image.path))
    assert f"transferring from image run {image.path} (--base)" in result.stdout.splitlines()
    at_16 = make_tiny_store(tmp_path / "tvhi16.zarr", size=16, steps=2)
    wrong = runner.invoke(app, ["run", "frames", "--store", str(at_16), "--runs-dir", str(runs),
                                "--epochs", "1", "--base", str(image.path)])
    assert wrong.exit_code == 2, wrong.output + repr(wrong.exception)
    assert (f"--base {str(image.path)!r} was trained on 32px inputs; frames here reads 16px"
            in wrong.stderr)


def test_prerequisites_are_reused_from_a_relative_runs_dir_and_retrained_on_retrain(
        tmp_path, monkeypatch):
    """A second `trainers run two_stream` reuses the frames and flow runs of the first, also
    with a relative `--runs-dir` (the frames run records the image run it started from as a
    resolved path); `--retrain` trains the whole chain anew."""
    import trainers.fit

    trained: list[str] = []

    def train_model(model, *args, **kwargs):
        trained.append(model)
        return write_untrained_run(model, *args, **kwargs)

    monkeypatch.setattr(trainers.fit, "train_model", train_model)
    monkeypatch.chdir(tmp_path)
    make_tiny_store("s40.zarr", dataset="stanford40", size=32)
    make_tiny_store("tvhi.zarr", size=32, steps=2)
    _invoke("run", "image", "--store", "s40.zarr", "--runs-dir", "runs", "--epochs", "1")
    chain = ("run", "two_stream", "--store", "tvhi.zarr", "--runs-dir", "runs", "--epochs", "1")
    _invoke(*chain)
    assert trained == ["image", "frames", "flow", "two_stream"]
    result = _invoke(*chain)
    assert trained[4:] == ["two_stream"], result.output
    assert "reusing frames run" in result.stdout and "reusing flow run" in result.stdout
    _invoke(*chain, "--retrain")
    assert trained[5:] == ["frames", "flow", "two_stream"]


@pytest.mark.parametrize("first, ends", [("two_stream", "written"), ("flow", "written"),
                                          ("two_stream", "stopped")])
def test_a_prerequisite_another_command_is_training_is_waited_for_then_reused(
        tmp_path, monkeypatch, first, ends):
    """Two commands that need one flow run, started together (two two-stream runs sharing
    their streams, or a flow run and a two-stream run), both trained it: the one that finds
    it in training now waits for it and reuses the run, said on its output. Where the training
    it waited for ends without a run (stopped, diverged), it trains the run itself. Whatever
    happens, no lock file is left in the runs folder."""
    import socket
    import threading

    import trainers.fit
    from trainers.errors import TrainingDivergedError
    from trainers.run import RunConfig, run

    store = make_tiny_store(tmp_path / "tvhi.zarr", size=32, steps=2)
    runs = tmp_path / "runs"
    trained: list[tuple[str, str]] = []
    release = threading.Event()

    def train_model(model, *args, **kwargs):
        trained.append((threading.current_thread().name, model))
        if threading.current_thread().name == "first" and model == "flow":
            assert release.wait(60)
            if ends == "stopped":
                raise TrainingDivergedError("flow diverged")
        return write_untrained_run(model, *args, **kwargs)

    monkeypatch.setattr(trainers.fit, "train_model", train_model)
    said: dict[str, list[str]] = {"first": [], "second": []}
    errors: dict[str, BaseException] = {}
    configs = {"first": RunConfig(first, store, runs, epochs=1),
               # (a learning rate of the fused model only: the same streams)
               "second": RunConfig("two_stream", store, runs, epochs=1, learning_rate=0.01)}

    def command(name: str) -> None:
        try:
            run(configs[name], echo=said[name].append)
        except BaseException as exc:  # noqa: BLE001 (asserted below)
            errors[name] = exc

    def until(condition) -> None:
        for _ in range(600):
            if condition():
                return
            threading.Event().wait(0.05)
        raise AssertionError(f"timed out: {said}, {trained}")

    threads = {name: threading.Thread(target=command, args=(name,), name=name, daemon=True)
               for name in ("first", "second")}
    threads["first"].start()
    until(lambda: ("first", "flow") in trained)
    threads["second"].start()
    until(lambda: any(line.startswith("waiting for") for line in said["second"]))
    release.set()
    for thread in threads.values():
        thread.join(60)
    waiting = next(line for line in said["second"] if line.startswith("waiting for"))
    holder = f"pid {os.getpid()} on {socket.gethostname()}, since "
    assert waiting.startswith(f"waiting for {holder}") and waiting.endswith(
        ", which is training the flow run that two_stream needs (same store, same recipe)")
    (flow,) = [record for record in list_runs(runs) if record.model == "flow"]
    second = [model for thread, model in trained if thread == "second"]
    if ends == "written":
        assert "second" not in errors, errors
        assert second == (["frames", "two_stream"] if first == "flow" else ["two_stream"])
        reused = [line for line in said["second"] if line.startswith("reusing flow run")]
        assert reused == [f"reusing flow run {flow.path} (same store, same recipe), trained "
                          f"meanwhile by {waiting[len('waiting for '):waiting.index(', which')]}"]
    else:
        assert isinstance(errors["first"], TrainingDivergedError)
        assert second == ["flow", "two_stream"]
        assert "two_stream needs a flow run of this store; training it first" in said["second"]
    assert not [path.name for path in runs.iterdir() if path.name.startswith(".")]


def test_a_prerequisite_is_reused_only_if_it_started_from_the_named_base(tmp_path):
    from trainers.runs import find_run

    runs = tmp_path / "runs"
    for name, base in [("frames-a", "/runs/image-1"), ("frames-b", "/runs/image-2")]:
        (runs / name).mkdir(parents=True)
        (runs / name / "model.keras").write_bytes(b"")
        (runs / name / "metrics.json").write_text(json.dumps(
            {"model": "frames", "created": name, "bases": {"image": base}}))
    assert find_run(runs, "frames").path.name == "frames-b"  # the latest
    assert find_run(runs, "frames", bases={"image": "/runs/image-1"}).path.name == "frames-a"
    assert find_run(runs, "frames", bases={"image": "/runs/image-3"}) is None



def test_runs_of_one_name_finishing_together_each_get_a_folder(tmp_path, monkeypatch):
    """Two runs of one model on one store started in the same second choose the same name:
    the one that publishes second takes the next free one, even when the first publishes
    after the second looked (a check, then a rename, had a window between them), and two in
    one process do not share a work folder."""
    from trainers.runs import RunWriter

    runs = tmp_path / "runs"
    monkeypatch.setattr("trainers.runs.run_name", lambda model, fingerprint: "flow-abc")
    first, second = RunWriter(runs, "flow", "abc"), RunWriter(runs, "flow", "abc")
    assert first.work != second.work and first.final == second.final
    for writer, text in [(first, "first"), (second, "second")]:
        (writer.work / "metrics.json").write_text(text)
    assert first.publish() == runs / "flow-abc"
    monkeypatch.setattr(Path, "exists", lambda self: False)  # looked before `first` published
    assert second.publish() == runs / "flow-abc-2"
    monkeypatch.undo()
    assert [(p.name, (p / "metrics.json").read_text()) for p in sorted(runs.iterdir())] == [
        ("flow-abc", "first"), ("flow-abc-2", "second")]

def test_a_prerequisite_from_an_older_transfer_base_is_not_reused(tmp_path, monkeypatch):
    """After a new Stanford-40 run, `two_stream` would transfer its frames model from it, so a
    frames run transferred from the older one is not reused (different parameters never
    silently mix); the flow run, which transfers from nothing, still is."""
    import trainers.fit

    s40 = make_tiny_store(tmp_path / "s40.h5", dataset="stanford40", size=TINY_FLOW["size"])
    tvhi = make_tiny_store(tmp_path / "tvhi.h5", **TINY_FLOW)
    runs = tmp_path / "runs"
    image = ("run", "image", "--store", str(s40), "--runs-dir", str(runs), "--epochs", "1")
    two_stream = ("run", "two_stream", "--store", str(tvhi), "--runs-dir", str(runs),
                  "--epochs", "1")
    started_from: dict[str, object] = {}

    def train_model(model, samples, recipe, options, runs_dir, *, bases=None, echo=print):
        started_from[model] = {name: run and run.path for name, run in (bases or {}).items()}
        return write_untrained_run(model, samples, recipe, options, runs_dir, bases=bases)

    monkeypatch.setattr(trainers.fit, "train_model", train_model)
    _invoke(*image)
    _invoke(*two_stream)
    old_frames = next(r for r in list_runs(runs) if r.model == "frames")
    _invoke(*image)
    newest_image = [r for r in list_runs(runs) if r.model == "image"][-1]
    started_from.clear()
    result = _invoke(*two_stream)
    assert set(started_from) == {"frames", "two_stream"}  # flow reused
    assert started_from["frames"] == {"image": newest_image.path}
    assert (f"not reusing frames run {old_frames.path} (same store and recipe, but it started "
            f"from image run {old_frames.metrics['bases']['image'].split('/')[-1]}, not image "
            f"run {newest_image.path.name})") in result.stdout


def test_a_run_computed_otherwise_is_not_reused_but_a_base_from_another_backend_is(
        tmp_path, monkeypatch):
    """`--mixed-precision` is float16 on a GPU and bfloat16 on a CPU: a CPU run was reused for
    a GPU command (its streams computing in bfloat16 under a fusion recorded as float16), as
    the flag alone was compared. And a run of another Keras backend (its seeded shuffles are
    its own) was reused as the same seed's. The Stanford-40 base is a pretrained model, taken
    whichever backend trained it, as whichever seed did."""
    import json

    import trainers.backend
    import trainers.fit

    s40 = make_tiny_store(tmp_path / "s40.h5", dataset="stanford40", size=TINY_FLOW["size"])
    tvhi = make_tiny_store(tmp_path / "tvhi.h5", **TINY_FLOW)
    runs = tmp_path / "runs"
    monkeypatch.setattr(trainers.fit, "train_model", write_untrained_run)
    _invoke("run", "image", "--store", str(s40), "--runs-dir", str(runs), "--epochs", "1",
            "--mixed-precision")
    two_stream = ("run", "two_stream", "--store", str(tvhi), "--runs-dir", str(runs),
                  "--epochs", "1", "--mixed-precision")
    _invoke(*two_stream)
    cpu = {r.model: r for r in list_runs(runs)}
    assert {r.metrics["dtype_policy"] for r in cpu.values()} == {"mixed_bfloat16"}
    trained = _fake_training(monkeypatch)
    monkeypatch.setattr(trainers.backend, "gpu_count", lambda: 1)  # the same command on a GPU
    result = _invoke(*two_stream)
    assert trained == ["frames", "flow", "two_stream"]  # (the frames from scratch: below)
    assert any(line.startswith(f"not reusing flow run {cpu['flow'].path} (same store, but "
                               f"trained with dtype_policy 'mixed_bfloat16', not "
                               f"'mixed_float16')") for line in result.stdout.splitlines()), \
        result.stdout
    monkeypatch.undo()

    # Every run of the chain recorded as another backend's: the prerequisites are trained
    # again, the Stanford-40 base is still the frames model's.
    for record in cpu.values():
        metrics = json.loads((record.path / "metrics.json").read_text())
        (record.path / "metrics.json").write_text(json.dumps({**metrics, "keras_backend": "jax"}))
    trained = _fake_training(monkeypatch)
    result = _invoke(*two_stream)
    assert trained == ["frames", "flow", "two_stream"]
    assert (f"reusing image run {cpu['image'].path} (same input size, same recipe)"
            in result.stdout.splitlines())
    assert (f"not reusing flow run {cpu['flow'].path} (same store, but trained with "
            f"keras_backend 'jax', not 'tensorflow')") in result.stdout.splitlines()
    # A run from before the backend was recorded is TensorFlow's, and reused here.
    for record in cpu.values():
        metrics = json.loads((record.path / "metrics.json").read_text())
        del metrics["keras_backend"]
        (record.path / "metrics.json").write_text(json.dumps(metrics))
    trained.clear()
    _invoke(*two_stream)
    assert trained == ["two_stream"]


def test_a_prerequisite_trained_on_as_many_but_other_samples_is_not_reused(tmp_path,
                                                                           monkeypatch):
    """One sample built (or repaired) since a flow run trained and another failed: the same
    fingerprint and the same counts per split, other samples. The run records a digest of
    its `done` samples, and it must match too."""
    store, runs = tmp_path / "tvhi.zarr", tmp_path / "runs"

    def two_stream_with_not_done(sample: int) -> list[str]:
        """The store rebuilt with only `sample` not done (the same fingerprint), then a
        two-stream run: the models it trained (none really: `_fake_training`)."""
        shutil.rmtree(store)
        make_tiny_store(store, **TINY_FLOW, not_done=(sample,))
        trained.clear()
        stdout.append(_invoke("run", "two_stream", "--store", str(store), "--runs-dir",
                              str(runs), "--epochs", "1").stdout)
        return list(trained)

    import trainers.fit

    make_tiny_store(store, **TINY_FLOW, not_done=(0,))
    monkeypatch.setattr(trainers.fit, "train_model", write_untrained_run)
    _invoke("run", "flow", "--store", str(store), "--runs-dir", str(runs), "--epochs", "1")
    before = list_runs(runs)[0]
    assert before.samples == {"train": 11, "val": 4, "test": 8}
    trained, stdout = _fake_training(monkeypatch), []

    assert two_stream_with_not_done(1) == ["frames", "flow", "two_stream"]  # 0 built, 1 failed
    assert (f"not reusing flow run {before.path} (same store and recipe, but it trained on "
            f"other done samples of the store: as many, 11 train / 4 val / 8 test, but not the "
            f"same ones (built or repaired since, others failed))"
            ) in stdout[-1].splitlines(), stdout[-1]
    assert two_stream_with_not_done(0) == ["frames", "two_stream"]  # the same samples: reused
    # A run from before the digest was recorded is matched by its counts, as it was.
    metrics = json.loads((before.path / "metrics.json").read_text())
    del metrics["samples_digest"]
    (before.path / "metrics.json").write_text(json.dumps(metrics))
    assert "flow" not in two_stream_with_not_done(1)
    # and one from before the store's columns digest was recorded too
    del metrics["columns_digest"]
    (before.path / "metrics.json").write_text(json.dumps(metrics))
    assert "flow" not in two_stream_with_not_done(1)


def test_a_prerequisite_trained_on_a_partly_built_store_is_not_reused(tmp_path, monkeypatch):
    """A build resumed since a flow run trained (`--max-per-split`, or a sample repaired) keeps
    the store's fingerprint, so the fingerprint alone would reuse a model trained on a part of
    the store: the run records its `done` samples per split, and they must match."""
    store = tmp_path / "tvhi.zarr"
    make_tiny_store(store, **TINY_FLOW, not_done=(0,), failed=(1,))  # two train samples
    runs = tmp_path / "runs"
    flow = ("run", "flow", "--store", str(store), "--runs-dir", str(runs), "--epochs", "1")
    warned = _invoke(*flow).stderr.splitlines()
    assert ("warning: 2 of 24 samples of the store are not built (1 failed (flowstore inspect "
            "names them), 1 not yet extracted (flowstore build resumes them)); flow trains and "
            "is scored on the 22 that are") in warned, warned
    partial = list_runs(runs)[0]
    assert partial.samples == {"train": 10, "val": 4, "test": 8}

    shutil.rmtree(store)
    make_tiny_store(store, **TINY_FLOW)  # as if the build finished: same fingerprint
    assert open_store(store).attrs["fingerprint"] == partial.fingerprint
    trained = _fake_training(monkeypatch)
    result = _invoke("run", "two_stream", "--store", str(store), "--runs-dir", str(runs),
                     "--epochs", "1")
    assert trained == ["frames", "flow", "two_stream"]
    assert (f"not reusing flow run {partial.path} (same store and recipe, but it trained when "
            f"the store held 10 train / 4 val / 8 test done samples, and it now holds "
            f"12 train / 4 val / 8 test)") in result.stdout.splitlines(), result.stdout
    # Trained with another recipe too, it was passed over without a word.
    trained.clear()
    result = _invoke("run", "two_stream", "--store", str(store), "--runs-dir", str(runs),
                     "--epochs", "2")
    assert trained == ["frames", "flow", "two_stream"]
    assert (f"not reusing flow run {partial.path} (same store, but trained with epochs 1, not "
            f"2; and it trained when the store held 10 train / 4 val / 8 test done samples, and "
            f"it now holds 12 train / 4 val / 8 test)") in result.stdout.splitlines(), \
        result.stdout


def test_a_prerequisite_of_other_splits_under_the_same_fingerprint_is_not_reused(
        tiny_tvhi_source, tmp_path, monkeypatch):
    """TV-HI's readme.txt (like every dataset's own split files) enters the fingerprint by its
    name and size: an edit of the same size that moves a clip from set 1 to set 2 and another
    back gives a store of the same fingerprint, the same counts and the same positions per
    split, with other clips in them. A flow run of the first store was reused for a fusion
    on the second, which trains on clips the flow model was tested on (and reported the first
    store's test accuracy as this one's). A run records the digest of its store's id, label
    and split columns, and it must match."""
    import trainers.fit
    from flowstore.build import BuildConfig, build
    from flowstore.params import VideoParams

    stores = {}
    for name, swap in (("before", False), ("after", True)):
        source = Path(shutil.copytree(tiny_tvhi_source, tmp_path / f"source-{name}"))
        if swap:  # handShake_0001 to set 2, handShake_0002 to set 1: the same bytes in all
            readme = source / "readme.txt"
            text = readme.read_text()
            sets = text.split("SET 2:")
            edited = (sets[0].replace("Hand shake\t\t-> {1,3}", "Hand shake\t\t-> {2,3}") +
                      "SET 2:" + sets[1].replace("Hand shake\t\t-> {2,4}",
                                                 "Hand shake\t\t-> {1,4}"))
            assert edited != text and len(edited) == len(text)
            readme.write_text(edited)
        stores[name] = tmp_path / f"{name}.zarr"
        build(BuildConfig(dataset="tvhi", source=source, store=stores[name],
                          params=VideoParams(size=32, steps=4), workers=1))
    before, after = (open_store(stores[name]) for name in ("before", "after"))
    assert before.attrs["fingerprint"] == after.attrs["fingerprint"]  # what this guards
    assert list(before.read("id")) != list(after.read("id"))

    runs = tmp_path / "runs"
    monkeypatch.setattr(trainers.fit, "train_model", write_untrained_run)
    _invoke("run", "flow", "--store", str(stores["before"]), "--runs-dir", str(runs),
            "--epochs", "1")
    flow = list_runs(runs)[0]
    trained = _fake_training(monkeypatch)
    result = _invoke("run", "two_stream", "--store", str(stores["after"]), "--runs-dir",
                     str(runs), "--epochs", "1")
    assert trained == ["frames", "flow", "two_stream"], result.stdout
    assert (f"not reusing flow run {flow.path} (same store and recipe, but it trained on a "
            f"store of the same fingerprint with other ids, labels or splits (a dataset's "
            f"split file edited since?))") in result.stdout.splitlines(), result.stdout
    trained.clear()  # its own store: reused
    _invoke("run", "two_stream", "--store", str(stores["before"]), "--runs-dir", str(runs),
            "--epochs", "1")
    assert trained == ["frames", "two_stream"]


def test_a_reusable_run_whose_model_file_is_damaged_stops_before_anything_trains(
        tmp_path, monkeypatch):
    """A prerequisite was picked by its `metrics.json` alone: with its `model.keras` cut short,
    `two_stream` trained the missing flow run first and only then failed loading the frames
    model, naming neither the run it had picked nor a way out. A transfer base the same."""
    import trainers.fit

    s40 = make_tiny_store(tmp_path / "s40.h5", dataset="stanford40", size=TINY_FLOW["size"])
    tvhi = make_tiny_store(tmp_path / "tvhi.h5", **TINY_FLOW)
    runs = tmp_path / "runs"
    trained: list[str] = []

    def train_model(model, samples, recipe, options, runs_dir, *, bases=None, echo=print):
        trained.append(model)
        return write_untrained_run(model, samples, recipe, options, runs_dir, bases=bases)

    monkeypatch.setattr(trainers.fit, "train_model", train_model)
    two_stream = ("run", "two_stream", "--store", str(tvhi), "--runs-dir", str(runs),
                  "--epochs", "1")
    _invoke("run", "image", "--store", str(s40), "--runs-dir", str(runs), "--epochs", "1")
    _invoke(*two_stream)
    found = {r.model: r for r in list_runs(runs)}
    shutil.rmtree(found["flow"].path)  # (to be trained again: it was, before the failure)
    model_file = found["frames"].model_file
    model_file.write_bytes(model_file.read_bytes()[:-30])  # (its zip directory cut)
    trained.clear()
    result = runner.invoke(app, list(two_stream))
    assert result.exit_code == 2 and trained == [], (result.output, trained)
    assert (f"frames run {found['frames'].path}, which this run would reuse (same store, same "
            f"recipe), cannot be read: model file {str(model_file)!r} is damaged") \
        in " ".join(result.output.split())
    assert "or pass --retrain to train it anew" in " ".join(result.output.split())

    image_file = found["image"].model_file
    image_file.write_bytes(image_file.read_bytes()[:-30])
    result = runner.invoke(app, [*two_stream, "--retrain"])
    assert result.exit_code == 2 and trained == [], (result.output, trained)
    assert f"image run {found['image'].path}, which this run would reuse (same input size" \
        in " ".join(result.output.split())
    assert "or name another run with --base" in " ".join(result.output.split())


def test_a_prerequisite_from_a_base_since_removed_says_the_chain_has_none(tmp_path,
                                                                          monkeypatch):
    """With the image run it started from gone, a frames run was passed over "it started from
    image run X, not no image run"."""
    import trainers.fit

    s40 = make_tiny_store(tmp_path / "s40.h5", dataset="stanford40", size=TINY_FLOW["size"])
    tvhi = make_tiny_store(tmp_path / "tvhi.h5", **TINY_FLOW)
    runs = tmp_path / "runs"
    monkeypatch.setattr(trainers.fit, "train_model", write_untrained_run)
    _invoke("run", "image", "--store", str(s40), "--runs-dir", str(runs), "--epochs", "1")
    frames = ("run", "frames", "--store", str(tvhi), "--runs-dir", str(runs), "--epochs", "1")
    _invoke(*frames)
    image, old = ([r for r in list_runs(runs) if r.model == name][0]
                  for name in ("image", "frames"))
    shutil.rmtree(image.path)
    result = _invoke("run", "two_stream", *frames[2:])
    assert (f"not reusing frames run {old.path} (same store and recipe, but it started from "
            f"image run {image.path.name}, and this chain has no image run)"
            in " ".join(result.stdout.split())), result.stdout


def test_find_run_takes_the_input_size_asked(tmp_path):
    """`frames` transfers from the image run of its own input size, found by size alone: the
    newest image run, of another size, has weights of another input shape."""
    from trainers.runs import find_run

    runs = tmp_path / "runs"
    for second, (name, size) in enumerate((("image-112", 112), ("image-224", 224))):
        folder = runs / name
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"")
        (folder / "metrics.json").write_text(json.dumps({
            "model": "image", "created": f"2026-01-01T00:00:{second:02d}", "seed": 0,
            "recipe": {"learning_rate": 1e-4, "epochs": 1}, "augment": False,
            "mixed_precision": False,
            "store": {"dataset": "stanford40", "fingerprint": "f", "params": {"size": size}},
            "test": {"accuracy": 0.5, "loss": 1.0}}))
    assert find_run(runs, "image").path.name == "image-224"  # (the newest)
    assert find_run(runs, "image", size=112).path.name == "image-112"
    assert find_run(runs, "image", size=64) is None
