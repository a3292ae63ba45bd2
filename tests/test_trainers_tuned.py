"""`trainers run --recipe tuned` (issue 16): an opt-in recipe set that trains the report's
models differently, recorded in metrics.json, and never mistaken for the report's runs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trainers.catalogue import get_model, model_names, recipe_of
from trainers.cli import app
from trainers.data import recipe_augmentation
from trainers.recipes import TUNED_RECIPES
from trainers.run import RunConfig
from trainers.runs import find_run, list_runs
from trainers.testing import TINY_FLOW, make_tiny_store

runner = CliRunner()


def test_tuned_recipe_trains_on_a_tiny_store_and_is_recorded(tmp_path):
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir", str(runs),
                                 "--recipe", "tuned", "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    record, = list_runs(runs)
    recipe = record.metrics["recipe"]
    tuned = TUNED_RECIPES["flow"]
    assert recipe["recipe_set"] == "tuned"
    assert recipe["epochs"] == 2 and record.metrics["epochs_run"] == 2
    for field in ("weight_decay", "label_smoothing", "cosine_decay", "flip", "scale_jitter",
                  "colour_jitter", "learning_rate", "batch_size"):
        assert recipe[field] == getattr(tuned, field), field
    assert recipe["optimizer"] == "adamw" and "label_smoothing=0.1" in recipe["loss"]
    # The schedule ran, each epoch at the rate of its own index (Keras logs the rate it set;
    # one epoch ahead, `learning_rate_at(epoch + 1)`, passed every test: from the mutation
    # review): at 2 epochs no warm-up (its share of them), the full rate, then the cosine's half.
    history = json.loads((record.path / "history.json").read_text())
    applied = tuned.override(epochs=2)
    assert applied.warmup_epochs == 0
    assert history["learning_rate"] == pytest.approx(
        [applied.learning_rate_at(epoch) for epoch in range(2)], rel=1e-6)
    assert history["learning_rate"] == pytest.approx([1e-4, 0.5e-4], rel=1e-6)
    # The same model, the same parameters as the report's recipe trains.
    assert record.metrics["params"]["total"] > 0

    # A tuned run never stands in for a report request, nor the other way round.
    report = RunConfig(model="flow", store=store, epochs=2).training_for("flow")
    tuned_training = RunConfig(model="flow", store=store, epochs=2,
                               recipe_set="tuned").training_for("flow")
    assert find_run(runs, "flow", training=tuned_training) == record
    assert find_run(runs, "flow", training=report) is None
    assert "recipe_set 'tuned', not 'report'" in record.training_differences(report)


def test_report_recipes_record_what_they_always_did():
    """The default set is unchanged: the same four fields, Adam and the sparse loss."""
    for name in model_names():
        recipe = recipe_of(name)
        assert recipe is get_model(name).recipe
        assert set(recipe.to_dict()) == {"learning_rate", "batch_size", "epochs",
                                         "lr_halve_every", "optimizer", "loss"}
        assert recipe.to_dict()["optimizer"] == "adam"
        assert not recipe.augments
        assert recipe_of(name, "tuned").recipe_set == "tuned"


def test_tuned_schedule_warms_up_then_decays_to_zero():
    recipe = TUNED_RECIPES["flow"]
    rates = [recipe.learning_rate_at(epoch) for epoch in range(recipe.epochs)]
    warm = recipe.warmup_epochs
    assert rates[:warm] == sorted(rates[:warm]) and rates[warm - 1] == recipe.learning_rate
    assert rates[warm:] == sorted(rates[warm:], reverse=True)
    assert 0 < rates[-1] < 0.01 * recipe.learning_rate
    # the half cosine spans the epochs after the warm-up: at full rate right after it, at half
    # halfway through them (it ran over all epochs, already lowered when the warm-up ended)
    assert rates[warm] == recipe.learning_rate
    assert (recipe.epochs - warm) % 2 == 0
    assert rates[warm + (recipe.epochs - warm) // 2] == pytest.approx(recipe.learning_rate / 2)


def test_other_epochs_keep_the_warm_ups_share_of_them():
    """`override(epochs=...)` scales the warm-up with the epochs (rounded, always below
    them), as its docstring has it: keeping the whole warm-up made `--epochs 2` of a tuned
    recipe a warm-up only (a mutation doing so passed every test)."""
    frames, flow = TUNED_RECIPES["frames"], TUNED_RECIPES["flow"]
    assert (frames.epochs, frames.warmup_epochs) == (30, 3)  # the docstring's example
    assert frames.override(epochs=2).warmup_epochs == 0
    assert frames.override(epochs=6).warmup_epochs == 1  # 0.6 epochs (was rounded down to 0)
    assert frames.override(epochs=4).warmup_epochs == 0  # 0.4
    assert (flow.epochs, flow.warmup_epochs) == (40, 4)
    assert flow.override(epochs=2).warmup_epochs == 0
    assert flow.override(epochs=20).warmup_epochs == 2
    assert flow.override(epochs=80).warmup_epochs == 8
    assert TUNED_RECIPES["image"].override(epochs=30).warmup_epochs == 3
    # a warm-up given with the epochs is kept, and no epochs keep the recipe's
    assert flow.override(epochs=20, warmup_epochs=5).warmup_epochs == 5
    assert flow.override(epochs=None).warmup_epochs == 4


def test_the_compiled_optimizer_is_the_one_metrics_json_records():
    """`compiled` gives AdamW the recipe's weight decay (0.5 for the tuned image model, 0.05
    for the others), the report's recipes Adam without decay, and EMA only when asked: AdamW
    without its `weight_decay` decayed at Keras' default 0.004 while metrics.json said 0.5
    (a mutation doing so passed every test)."""
    import keras

    from trainers.fit import compiled

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    for recipe in (TUNED_RECIPES["image"], TUNED_RECIPES["flow"]):
        for policy in ("float32", "mixed_float16"):
            optimizer = compiled(model, recipe, policy).optimizer
            if policy == "mixed_float16":
                optimizer = optimizer.inner_optimizer
            assert type(optimizer) is keras.optimizers.AdamW
            assert optimizer.weight_decay == recipe.weight_decay > 0
            assert recipe.to_dict()["optimizer"] == "adamw"
            assert float(optimizer.learning_rate) == pytest.approx(recipe.learning_rate)
            assert not optimizer.use_ema
    assert TUNED_RECIPES["image"].weight_decay == 0.5
    report = recipe_of("flow")
    optimizer = compiled(model, report, "float32").optimizer
    assert type(optimizer) is keras.optimizers.Adam and optimizer.weight_decay is None
    assert report.to_dict()["optimizer"] == "adam"
    averaged = compiled(model, TUNED_RECIPES["flow"].override(ema_momentum=0.9),
                        "float32").optimizer
    assert averaged.use_ema and averaged.ema_momentum == pytest.approx(0.9)
    assert averaged.weight_decay == TUNED_RECIPES["flow"].weight_decay


def test_a_compiled_model_traces_its_training_step_once():
    """`compiled` builds the optimizer and passes the accuracy metric built: Keras left to
    make their variables inside the first traced step traced it a second time on TensorFlow
    (1-1.5 s a run), with the accuracy by name, or with the optimizer unbuilt, alike."""
    import keras

    from trainers.fit import compiled

    for recipe in (recipe_of("flow"), TUNED_RECIPES["flow"].override(ema_momentum=0.9)):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        compiled(model, recipe, "float32")
        traced = []
        train_step = model.train_step

        def counting(data, train_step=train_step):
            traced.append(1)  # (runs once per trace, not per step)
            return train_step(data)

        model.train_step = counting
        history = model.fit(np.zeros((8, 3), "float32"), np.zeros(8, "int32"), batch_size=4,
                            epochs=2, verbose=0)
        assert len(traced) == 1, recipe
        assert sorted(history.history) == ["accuracy", "loss"]


def test_the_readmes_recipe_table_is_the_recipes():
    """README's table of the `report` and `tuned` recipes ("Using trainers") against the
    catalogue's: a recipe's value changed in the code (the Stanford-40 weight decay, the
    flow learning rate) and not in the table passed every test."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index("| | `report` (default) | `tuned` |")
    rows = {}
    for line in readme[start:].splitlines()[2:]:
        if not line.strip().startswith("|"):
            break
        name, report, tuned = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[name] = (report, tuned)
    models = ("image", "frames", "flow", "two_stream")  # (the table's order)
    report = [recipe_of(model) for model in models]
    tuned = [recipe_of(model, "tuned") for model in models]

    def numbers(text: str) -> list[float]:
        return [float(n) for n in re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?", text)]

    def per_model(values) -> str:
        return " / ".join(values)

    assert rows["learning rate (peak)"][0] == per_model(f"{r.learning_rate:.0e}".replace(
        "e-0", "e-") for r in report)
    assert rows["learning rate (peak)"][1].startswith(per_model(
        f"{r.learning_rate:.0e}".replace("e-0", "e-") for r in tuned))
    assert numbers(rows["optimizer"][1]) == [r.weight_decay for r in tuned]
    assert all(r.weight_decay is None or r.weight_decay == 0 for r in report)
    assert numbers(rows["loss"][1]) == [0.1] and {r.label_smoothing for r in tuned} == {0.1}
    assert numbers(rows["schedule"][1])[:4] == [r.warmup_epochs for r in tuned]
    assert all(r.cosine_decay for r in tuned) and report[0].lr_halve_every == 4
    assert numbers(rows["schedule"][0]) == [4]
    epochs = rows["epochs (best one on validation loss)"]
    assert numbers(epochs[0]) == [r.epochs for r in report]
    assert numbers(epochs[1]) == [r.epochs for r in tuned]
    assert numbers(rows["batch size"][0]) == [r.batch_size for r in report]
    assert all(t.batch_size == r.batch_size for t, r in zip(tuned, report))
    assert {(r.scale_jitter, r.colour_jitter, r.flip) for r in tuned} == {(1.15, 0.2, True)}
    assert numbers(rows["augmentation"][1]) == [1.15, 0.2]


@pytest.mark.parametrize("recipe_set", ["report", "tuned"])
def test_the_trainers_augmentation_negates_dx_of_every_flow_it_mirrors(recipe_set):
    """Whichever recipe flips (`--augment`, or the tuned one with its crop and colour
    jitter), a sample whose frame is mirrored has its flow's dx negated, and one left alone
    keeps it: the trainers' composition once flipped the flow as a picture (no motion keys)
    and every test passed."""
    augmentation = recipe_augmentation(recipe_of("two_stream", recipe_set), motion=("flow",),
                                       flip=True)
    size = 16
    ramp = np.tile((np.arange(32) * 8).astype(np.uint8)[:, None], (1, 3))  # brighter rightwards
    batch = {"frame": np.broadcast_to(ramp, (size, 32, 32, 3)).copy(),
             "flow": np.zeros((size, 3, 32, 32, 2), np.float16),
             "label": np.zeros(size, np.int64), "id": np.array([str(i) for i in range(size)])}
    batch["flow"][..., 0] = 1.0  # every sample moves right
    out = augmentation(batch, np.random.default_rng(0))
    mirrored = []
    for frame, flow in zip(out["frame"].astype(np.float32), out["flow"].astype(np.float32)):
        columns = frame.mean(axis=(0, 2))
        mirrored.append(bool(columns[0] > columns[-1]))
        assert (flow[..., 0] < 0).all() if mirrored[-1] else (flow[..., 0] > 0).all()
    assert 0 < sum(mirrored) < size  # (both cases met)


def test_tuned_augmentation_keeps_the_batch_shape_and_leaves_flow_colours_alone():
    augmentation = recipe_augmentation(TUNED_RECIPES["two_stream"], motion=("flow",))
    rng = np.random.default_rng(0)
    batch = {"frame": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
             "flow": np.full((4, 3, 32, 32, 2), [1.0, 0.5], np.float16),
             "label": np.zeros(4, np.int64), "id": np.array(list("abcd"))}
    out = augmentation({k: v.copy() for k, v in batch.items()}, np.random.default_rng(1))
    assert out["frame"].shape == batch["frame"].shape and out["flow"].shape == batch["flow"].shape
    # A uniform motion stays uniform per sample: |dx| scaled by the resize factor, dy too.
    for sample in out["flow"].astype(np.float32):
        dx, dy = sample[..., 0], sample[..., 1]
        assert np.ptp(np.abs(dx)) < 1e-2 and 1.0 <= np.abs(dx).max() <= 1.15 * 1.01
        np.testing.assert_allclose(np.abs(dx) / dy, 2.0, rtol=2e-2)


def test_an_unknown_recipe_set_is_one_error_line(tmp_path):
    store = make_tiny_store(tmp_path / "tvhi.zarr", size=32, steps=4)
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--recipe", "fancy"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: unknown recipe set 'fancy'")
    assert "Traceback" not in result.output


def test_fine_tune_base_trains_the_transferred_convolutions_but_keeps_its_statistics(
        tmp_path, monkeypatch):
    """`fine_tune_base`: the frames model's Stanford-40 convolutions move, their BatchNorm
    statistics stay the base's, the run records it; the report's frozen transfer moves neither."""
    import keras

    s40 = make_tiny_store(tmp_path / "s40.zarr", dataset="stanford40", size=32)
    tvhi = make_tiny_store(tmp_path / "tvhi.zarr", size=32, steps=4)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "image", "--store", str(s40), "--runs-dir", str(runs),
                                 "--epochs", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    (image,) = list_runs(runs)
    base = keras.saving.load_model(image.model_file, compile=False)

    def frames_run(fine_tune: bool):
        monkeypatch.setitem(TUNED_RECIPES, "frames", dataclasses.replace(
            TUNED_RECIPES["frames"], fine_tune_base=fine_tune))
        result = runner.invoke(app, ["run", "frames", "--store", str(tvhi), "--runs-dir",
                                     str(runs), "--recipe", "tuned", "--epochs", "2",
                                     "--base", str(image.path), "--quiet"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        record = max((r for r in list_runs(runs) if r.model == "frames"), key=lambda r: r.created)
        model = keras.saving.load_model(record.model_file, compile=False)
        return record, model.get_layer("stanford40_features")

    def moved(features, name: str) -> list[bool]:
        return [not np.array_equal(new, old) for new, old in
                zip(features.get_layer(name).get_weights(), base.get_layer(name).get_weights())]

    tuned, features = frames_run(fine_tune=True)
    assert tuned.metrics["recipe"]["fine_tune_base"] is True
    assert tuned.metrics["params"]["trainable"] > 6_000_000  # the convolutions too
    assert all(moved(features, "conv_0")) and all(moved(features, "conv_4"))
    assert not any(moved(features, "bn_0"))  # gamma, beta and the moving statistics

    frozen, features = frames_run(fine_tune=False)
    assert "fine_tune_base" not in frozen.metrics["recipe"]  # the tuned set's first runs match
    assert not any(moved(features, "conv_0")) and not any(moved(features, "bn_0"))
    assert frozen.metrics["params"]["total"] == tuned.metrics["params"]["total"]


def test_fine_tune_base_is_refused_for_a_model_that_transfers_from_nothing(tmp_path, monkeypatch):
    tvhi = make_tiny_store(tmp_path / "tvhi.zarr", size=32, steps=4)
    monkeypatch.setitem(TUNED_RECIPES, "flow", dataclasses.replace(
        TUNED_RECIPES["flow"], fine_tune_base=True))
    result = runner.invoke(app, ["run", "flow", "--store", str(tvhi), "--runs-dir",
                                 str(tmp_path / "runs"), "--recipe", "tuned", "--epochs", "1"])
    assert result.exit_code == 2, result.output
    assert "fine_tune_base: flow transfers from no base model" in result.stderr


def test_ema_momentum_validates_tests_and_saves_the_averaged_weights(tmp_path):
    """With `--ema-momentum` the run's model is the moving average, not the last step's weights.

    At a momentum of nearly 1 the average stays where Keras starts it, at the weights after the
    first step, which Adam moves by at most the learning rate each: so the saved weights are
    within one learning rate of the initial ones, where the last step's are far from them."""
    import keras

    from trainers.fit import build_for_store
    from trainers.samples import open_samples

    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW)
    lr = 0.01
    moved = {}
    for momentum in (None, 0.999999):
        runs = tmp_path / f"runs-{momentum}"
        args = ["run", "flow", "--store", str(store), "--runs-dir", str(runs), "--recipe", "tuned",
                "--epochs", "3", "--lr", str(lr), "--quiet"]
        result = runner.invoke(app, args + (["--ema-momentum", str(momentum)] if momentum else []))
        assert result.exit_code == 0, result.output + repr(result.exception)
        record, = list_runs(runs)
        assert record.metrics["recipe"].get("ema_momentum") == momentum
        saved = keras.saving.load_model(record.path / "model.keras", compile=False)
        # The initial weights, drawn as train_model draws them.
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        recipe = RunConfig(model="flow", store=store, epochs=3, learning_rate=lr,
                           recipe_set="tuned", ema_momentum=momentum).recipe_for("flow")
        initial, _ = build_for_store(open_samples(store, "flow"), {}, recipe)
        moved[momentum] = max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in
                              zip(saved.trainable_weights, initial.trainable_weights, strict=True))
    assert moved[0.999999] <= 1.1 * lr < 3 * lr < moved[None], moved


def test_ema_momentum_without_a_val_split_keeps_the_last_epoch(tmp_path):
    """Without validation the best epoch was chosen by the training loss, which is the last
    steps' weights', not the average's the run saves: the average of the last epoch is kept."""
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(3, 0, 2))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir", str(runs),
                                 "--epochs", "3", "--lr", "0.5", "--ema-momentum", "0.5",
                                 "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert ("warning: no finished 'val' sample; flow keeps its last epoch's averaged weights "
            "(the training loss is not theirs)") in result.stderr
    record, = list_runs(runs)
    assert (record.metrics["selection"], record.metrics["best_epoch"]) == ("last epoch", 3)
    history = json.loads((record.path / "history.json").read_text())
    assert record.metrics["best"]["train_loss"] == history["loss"][-1]


def test_without_a_val_split_the_report_recipe_keeps_its_lowest_training_loss_epoch(tmp_path):
    """No validation, no averaged weights: the epoch of the lowest training loss is kept and
    tested (not the last, which the run would still call chosen by its training loss)."""
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW, per_class=(3, 0, 2))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir", str(runs),
                                 "--epochs", "3", "--lr", "0.5", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    record, = list_runs(runs)
    history = json.loads((record.path / "history.json").read_text())
    assert record.metrics["selection"] == "min loss"
    assert record.metrics["best_epoch"] == int(np.argmin(history["loss"])) + 1
    assert record.metrics["best"]["train_loss"] == min(history["loss"])


def test_augment_under_a_recipe_that_flips_is_recorded_off_so_runs_without_it_are_reused(
        tmp_path):
    """It trained the same weights, but was recorded on: a tuned chain with `--augment`
    retrained every prerequisite and passed over a tuned Stanford-40 base trained without it."""
    store = tmp_path / "t.zarr"
    for recipe_set, flips in (("tuned", False), ("report", True)):
        config = RunConfig(model="two_stream", store=store, recipe_set=recipe_set, augment=True)
        assert config.training_for("flow")["augment"] is flips
        assert config.augment_for("image") is flips
    runs = tmp_path / "runs"
    make_tiny_store(store, **TINY_FLOW)
    args = ["run", "flow", "--store", str(store), "--runs-dir", str(runs), "--recipe", "tuned",
            "--epochs", "1", "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    (run,) = list_runs(runs)
    assert run.metrics["augment"] is False
    with_flag = RunConfig(model="two_stream", store=store, recipe_set="tuned", augment=True,
                          epochs=1)
    assert find_run(runs, "flow", training=with_flag.training_for("flow")) == run  # reused


def test_ema_momentum_outside_0_to_1_is_refused_before_any_work(tmp_path):
    from trainers.errors import ModelConfigError

    for bad in (1.0, -0.1, True):
        with pytest.raises(ModelConfigError, match=r"ema_momentum must be in \[0, 1\)"):
            RunConfig(model="two_stream", store=tmp_path / "x.zarr", ema_momentum=bad)
    # 0 is "no average", recorded as the default (not at all), so older runs are still reused
    assert "ema_momentum" not in RunConfig(model="flow", store=tmp_path / "x.zarr",
                                           recipe_set="tuned",
                                           ema_momentum=0.0).training_for("flow")["recipe"]


@pytest.mark.parametrize("warmup, taken", [(0, True), (1, True), (4, True), (5, False),
                                           (6, False), (-1, False), (1.5, False)])
def test_a_warm_up_is_shorter_than_the_epochs_or_refused(warmup, taken):
    """A warm-up as long as the run never reaches the recipe's learning rate."""
    import dataclasses

    from trainers.errors import ModelConfigError
    from trainers.recipes import TUNED_RECIPES

    recipe = dataclasses.replace(TUNED_RECIPES["flow"], epochs=5, warmup_epochs=0)
    if taken:
        assert dataclasses.replace(recipe, warmup_epochs=warmup).warmup_epochs == warmup
    else:
        with pytest.raises(ModelConfigError, match="warmup_epochs must be an integer in "
                                                   "0..epochs-1"):
            dataclasses.replace(recipe, warmup_epochs=warmup)


@pytest.mark.parametrize("field, value, said", [
    ("lr_halve_every", 0, "lr_halve_every must be an integer >= 1 or None, got 0"),
    ("recipe_set", "fancy", "unknown recipe set 'fancy'; known: report, tuned"),
    ("weight_decay", 1.0, "recipe out of range"),
    ("label_smoothing", -0.1, "recipe out of range"),
    ("colour_jitter", 1.5, "recipe out of range"),
    ("fine_tune_base", 1, "fine_tune_base must be True or False, got 1"),
])
def test_a_recipe_of_values_no_training_takes_is_refused(field, value, said):
    """A recipe registered with a model (a plugin's, as data) is checked as it is made."""
    import dataclasses

    from trainers.errors import ModelConfigError
    from trainers.recipes import TUNED_RECIPES

    with pytest.raises(ModelConfigError, match=re.escape(said)):
        dataclasses.replace(TUNED_RECIPES["flow"], **{field: value})


def _dropout_rates(model) -> list[float]:
    """The rate of every Dropout layer of `model`, nested models included."""
    import keras

    rates = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            rates.append(layer.rate)
        elif isinstance(layer, keras.Model):
            rates += _dropout_rates(layer)
    return rates


def test_dropout_is_trained_recorded_saved_and_never_mixed_with_the_default(tmp_path):
    import keras

    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW)
    runs = tmp_path / "runs"
    base = ["run", "flow", "--store", str(store), "--runs-dir", str(runs), "--recipe", "tuned",
            "--epochs", "1", "--quiet"]
    result = runner.invoke(app, base + ["--dropout", "0.9"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    result = runner.invoke(app, base)  # the default rate: a run of its own, not the 0.9 one
    assert result.exit_code == 0, result.output + repr(result.exception)
    by_rate = {record.metrics["recipe"].get("dropout", 0.5): record for record in list_runs(runs)}
    assert set(by_rate) == {0.9, 0.5}
    for rate, record in by_rate.items():
        saved = keras.saving.load_model(record.path / "model.keras", compile=False)
        assert _dropout_rates(saved) == [rate]
    assert "dropout" not in by_rate[0.5].metrics["recipe"]  # older runs are still reused


@pytest.mark.parametrize("recipe_set", ["report", "tuned"])
def test_batch_size_and_learning_rate_apply_to_the_model_asked_for_alone(tmp_path, recipe_set):
    """`--batch-size` and `--learning-rate` are the named model's (`RunConfig`): its
    prerequisites, whose recipes differ, train with their own, unlike `--epochs`."""
    config = RunConfig(model="two_stream", store=tmp_path / "x.zarr", recipe_set=recipe_set,
                       batch_size=3, learning_rate=0.5, epochs=2)
    assert config.recipe_for("two_stream").batch_size == 3
    assert config.recipe_for("two_stream").learning_rate == 0.5
    for name in ("frames", "flow"):
        own = recipe_of(name, recipe_set)
        recipe = config.recipe_for(name)
        assert (recipe.batch_size, recipe.learning_rate) == (own.batch_size, own.learning_rate)
        assert recipe.epochs == 2


def test_dropout_applies_to_every_model_of_a_chain(tmp_path):
    """`--dropout` sets each model's own Dropout layers, prerequisites' too (as `--epochs`):
    a two-stream model asked for at 0.9 fuses streams trained at 0.9."""
    config = RunConfig(model="two_stream", store=tmp_path / "x.zarr", recipe_set="tuned",
                       dropout=0.9)
    shapes = {"image": (32, 32, 3), "frame": (32, 32, 3), "flow": (4, 32, 32, 2)}
    for name in ("frames", "flow", "two_stream"):
        recipe = config.recipe_for(name)
        assert recipe.dropout == 0.9 and recipe.to_dict()["dropout"] == 0.9
    image = get_model("image").factory(shapes, 40, {}, dataclasses.replace(recipe_of("image"),
                                                                           dropout=0.2))
    assert _dropout_rates(image) == [0.2]
    frames = get_model("frames").factory(shapes, 4, {"image": image}, config.recipe_for("frames"))
    flow = get_model("flow").factory(shapes, 4, {}, config.recipe_for("flow"))
    fused = get_model("two_stream").factory(shapes, 4, {"frames": frames, "flow": flow},
                                            config.recipe_for("two_stream"))
    assert _dropout_rates(frames) == [0.9, 0.9] and _dropout_rates(flow) == [0.9]
    assert _dropout_rates(fused)[-2:] == [0.9, 0.9]  # its own fusion head


def test_dropout_outside_0_to_1_is_refused_in_one_line(tmp_path):
    from trainers.errors import ModelConfigError

    for bad in (1.0, -0.1, True):
        with pytest.raises(ModelConfigError, match=r"dropout must be in \[0, 1\)"):
            RunConfig(model="flow", store=tmp_path / "x.zarr", dropout=bad)
    result = runner.invoke(app, ["run", "flow", "--store", str(tmp_path / "x.zarr"),
                                 "--dropout", "1.5"])
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines() == ["error: dropout must be in [0, 1), got 1.5"]


def test_scale_jitter_is_trained_with_recorded_and_applies_to_every_model_of_a_chain(tmp_path):
    store = make_tiny_store(tmp_path / "tvhi.zarr", **TINY_FLOW)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "flow", "--store", str(store), "--runs-dir", str(runs),
                                 "--recipe", "tuned", "--epochs", "1", "--scale-jitter", "1.5",
                                 "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    record, = list_runs(runs)
    assert record.metrics["recipe"]["scale_jitter"] == 1.5
    # Not reused for the tuned recipe's own 1.15, nor the other way round.
    tuned = RunConfig(model="flow", store=store, epochs=1, recipe_set="tuned")
    assert find_run(runs, "flow", training=tuned.training_for("flow")) is None
    config = RunConfig(model="two_stream", store=store, recipe_set="tuned", scale_jitter=1.5)
    for name in ("frames", "flow", "two_stream"):
        assert config.recipe_for(name).scale_jitter == 1.5
    # What the recipe trains with: crops of 1/1.5 to all of the frame, resized back.
    augment = recipe_augmentation(config.recipe_for("flow"), motion=("flow",))
    flow = np.zeros((1, 2, 30, 30, 2), np.float32)
    flow[..., 0] = 1.0  # one pixel a step to the right, everywhere
    factors = {float(augment({"flow": flow.copy()}, np.random.default_rng(seed))["flow"]
                     [0, 0, 15, 15, 0]) for seed in range(40)}
    # dx is scaled by the resize factor (or negated with it, when flipped)
    assert max(abs(f) for f in factors) > 1.3 and all(1 <= abs(f) <= 1.5 + 1e-6 for f in factors)


def test_scale_jitter_outside_1_to_2_is_refused_in_one_line(tmp_path):
    result = runner.invoke(app, ["run", "flow", "--store", str(tmp_path / "x.zarr"),
                                 "--scale-jitter", "2.5"])
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines() == [
        "error: scale_jitter must be in [1, 2] (1: no resized crop), got 2.5"]
