"""Mean flow subtraction (`trainers run --subtract-mean-flow`, a recipe's `subtract_mean_flow`):
the flow model subtracts each step's mean displacement over the frame, so a camera pan, which
moves every pixel alike, does not change what the model sees."""

from __future__ import annotations

import keras
import numpy as np
from typer.testing import CliRunner

from trainers.cli import app
from trainers.models import (SubtractMeanFlow, build_tvhi_flow, load_trained,
                             parameter_counts)
from trainers.run import RunConfig
from trainers.runs import list_runs
from trainers.testing import TINY_FLOW, make_tiny_store, write_untrained_run

runner = CliRunner()
SHAPE = (3, 16, 16, 2)


def _motion_and_pan(count: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Random float16 motion fields (count, *SHAPE) and a pan: one (dx, dy) per sample and
    step, the same at every pixel."""
    rng = np.random.default_rng(0)
    motion = rng.normal(0, 2, (count, *SHAPE)).astype(np.float16)
    pan = rng.uniform(-6, 6, (count, SHAPE[0], 1, 1, 2)).astype(np.float16)
    return motion, pan


def test_mean_flow_subtraction_leaves_each_step_without_mean_motion():
    motion, _ = _motion_and_pan()
    out = keras.ops.convert_to_numpy(SubtractMeanFlow()(motion))
    assert out.dtype == np.float32  # computed in float32 from float16 flow
    np.testing.assert_allclose(out.mean(axis=(2, 3)), 0, atol=1e-5)
    expected = motion.astype(np.float32) - motion.astype(np.float32).mean(axis=(2, 3),
                                                                         keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_a_flow_model_with_mean_flow_subtraction_does_not_see_a_camera_pan():
    motion, pan = _motion_and_pan()
    panned = (motion + pan).astype(np.float16)
    keras.utils.set_random_seed(0)
    centred = build_tvhi_flow(input_shape=SHAPE, subtract_mean=True)
    np.testing.assert_allclose(centred.predict(panned, verbose=0),
                               centred.predict(motion, verbose=0), atol=1e-3)
    keras.utils.set_random_seed(0)
    plain = build_tvhi_flow(input_shape=SHAPE)  # the report's model sees the pan
    assert not np.allclose(plain.predict(panned, verbose=0), plain.predict(motion, verbose=0),
                           atol=1e-3)
    # No weights: the report's parameter count stays.
    assert parameter_counts(centred) == parameter_counts(plain)


def test_mean_flow_subtraction_applies_only_to_models_that_read_flow(tmp_path):
    config = RunConfig(model="two_stream", store=tmp_path / "x.zarr", recipe_set="tuned",
                       subtract_mean_flow=True)
    assert config.recipe_for("flow").subtract_mean_flow
    assert config.recipe_for("two_stream").subtract_mean_flow
    assert "subtract_mean_flow" not in config.recipe_for("frames").to_dict()
    # Unasked, a recipe records nothing new, so runs from before the field are reused.
    assert "subtract_mean_flow" not in RunConfig(model="flow", store=tmp_path / "x.zarr",
                                                 recipe_set="tuned").recipe_for("flow").to_dict()


def test_mean_flow_subtraction_for_a_model_without_flow_is_one_error_line(tmp_path):
    store = make_tiny_store(tmp_path / "t.zarr")
    result = runner.invoke(app, ["run", "frames", "--store", str(store),
                                 "--subtract-mean-flow"])
    assert result.exit_code == 2
    assert "--subtract-mean-flow: frames reads middle_frame, no flow" in result.output


def _run(store, runs, *extra: str):
    result = runner.invoke(app, ["run", "two_stream", "--store", str(store), "--runs-dir",
                                 str(runs), "--recipe", "tuned", "--epochs", "1", "--quiet",
                                 *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_a_two_stream_chain_with_mean_flow_subtraction_carries_it_in_its_flow_stream(
        tmp_path, monkeypatch):
    import trainers.fit

    store = make_tiny_store(tmp_path / "t.zarr", **TINY_FLOW)
    runs = tmp_path / "runs"
    _run(store, runs, "--subtract-mean-flow")
    records = {record.model: record for record in list_runs(runs)}
    assert set(records) == {"frames", "flow", "two_stream"}
    assert "subtract_mean_flow" not in records["frames"].metrics["recipe"]
    for name in ("flow", "two_stream"):
        assert records[name].metrics["recipe"]["subtract_mean_flow"] is True
    flow = load_trained(records["flow"].model_file)  # the saved layer loads back
    assert isinstance(flow.get_layer("subtract_mean_flow"), SubtractMeanFlow)
    fused = load_trained(records["two_stream"].model_file)
    stream = fused.get_layer("flow_stream")
    assert isinstance(stream.get_layer("subtract_mean_flow"), SubtractMeanFlow)
    # Asked again, the chain is found; asked without, the flow run is not the one to fuse.
    # (Which runs are reused is all that is asked now: they are written, not trained.)
    monkeypatch.setattr(trainers.fit, "train_model", write_untrained_run)
    assert _run(store, runs, "--subtract-mean-flow").output.count("reusing") == 2
    plain = _run(store, runs)
    assert "needs a flow run of this store; training it first" in plain.output
    assert "but trained with subtract_mean_flow True, not False" in plain.output
    newest_flow = max((r for r in list_runs(runs) if r.model == "flow"), key=lambda r: r.created)
    assert "subtract_mean_flow" not in newest_flow.metrics["recipe"]
