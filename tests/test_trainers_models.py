"""The four architectures against the report's model summaries, the recipes, and the model
catalogue that names them."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from trainers.errors import ModelConfigError, UnknownModelError
from trainers.catalogue import array_shapes, get_model, model_names
from trainers.models import (FLOW_SCALE, build_default, build_stanford40, build_tvhi_flow,
                             build_tvhi_frames, build_two_stream, parameter_counts)
from trainers.recipes import Recipe

MODEL_NAMES = model_names()
RECIPES = {name: get_model(name).recipe for name in MODEL_NAMES}

# Section 5 and 6 of the report, at 224 x 224 frames and 16 flow steps.
REPORT_COUNTS = {
    "image": {"total": 6_578_424, "trainable": 6_575_672, "non_trainable": 2_752},
    "frames": {"total": 6_550_588, "trainable": 16_444, "non_trainable": 6_534_144},
    "flow": {"total": 7_932_536, "trainable": 7_930_744, "non_trainable": 1_792},
    "two_stream": {"total": 274_628 + 14_276_766, "trainable": 274_628,
                   "non_trainable": 14_276_766},
}


@pytest.mark.parametrize("model", REPORT_COUNTS)
def test_parameter_counts_equal_the_report(model):
    assert parameter_counts(build_default(model, size=224, steps=16)) == REPORT_COUNTS[model]


def test_layer_shapes_follow_the_report_summary():
    s40 = build_stanford40()
    # Output shapes as printed in the report's Stanford-40 summary (padding="same").
    expected = {"conv_0": (112, 112, 96), "pool_0": (56, 56, 96), "conv_1": (19, 19, 256),
                "pool_1": (10, 10, 256), "conv_2": (4, 4, 512), "pool_2": (2, 2, 512),
                "conv_3": (1, 1, 512), "pool_4": (1, 1, 512), "flatten": (512,)}
    for name, shape in expected.items():
        assert tuple(s40.get_layer(name).output.shape[1:]) == shape, name
    flow = build_tvhi_flow()
    assert tuple(flow.get_layer("conv3d_1").output.shape[1:]) == (2, 19, 19, 256)
    assert tuple(flow.get_layer("flatten").output.shape[1:]) == (2048,)


def _layers(model: keras.Model):
    """Every layer of `model`, those of the models nested in it (a stream, a base) too."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_hidden_layer_is_relu_and_the_inputs_scaled_as_the_report_has_them(model):
    """What the parameter counts and shapes above cannot see: a convolution or hidden Dense
    layer without its ReLU (the report's models are ReLU throughout), linear logits, and the
    input scaling (frames by 1/255 to [0, 1]; flow in pixels by `FLOW_SCALE`). Either changed
    passed every test."""
    built = build_default(model, size=32, steps=4)
    weighted = [layer for layer in _layers(built)
                if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D,
                                      keras.layers.Dense))]
    assert weighted
    for layer in weighted:
        want = "linear" if layer.name == "logits" else "relu"
        assert layer.activation.__name__ == want, (layer.name, layer.activation.__name__)
    scales = {(layer.scale, layer.offset) for layer in _layers(built)
              if isinstance(layer, keras.layers.Rescaling)}
    # (pixels by 1/255, flow by FLOW_SCALE: one scaling for each kind of array it reads)
    want = {(FLOW_SCALE if array == "flow" else 1 / 255, 0.0)
            for array in get_model(model).arrays}
    assert scales == want
    if model in REPORT_COUNTS:  # (the table above, by hand: the entries' inputs checked too)
        assert want == {"image": {(1 / 255, 0.0)}, "frames": {(1 / 255, 0.0)},
                        "flow": {(FLOW_SCALE, 0.0)},
                        "two_stream": {(1 / 255, 0.0), (FLOW_SCALE, 0.0)}}[model]


@pytest.mark.parametrize("size,steps", [(32, 4), (48, 8), (64, 4)])
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_models_build_and_run_at_small_sizes(model, size, steps):
    built = build_default(model, size=size, steps=steps)
    shapes = array_shapes(size, steps)
    inputs = {name: np.zeros((2, *shapes[array]), np.float32)
              for name, array in get_model(model).inputs.items()}
    logits = built(inputs if len(inputs) > 1 else next(iter(inputs.values())), training=False)
    assert tuple(logits.shape) == (2, get_model(model).report_classes)
    if model in REPORT_COUNTS:
        assert get_model(model).report_classes == {"image": 40}.get(model, 4)


def test_input_layers_are_named_after_what_they_take():
    assert [t.name for t in build_stanford40(input_shape=(32, 32, 3)).inputs] == ["image"]
    assert [t.name for t in build_tvhi_frames(input_shape=(32, 32, 3)).inputs] == ["frame"]
    assert [t.name for t in build_tvhi_flow(input_shape=(4, 32, 32, 2)).inputs] == ["flow"]
    two = build_two_stream(frame_shape=(32, 32, 3), flow_shape=(4, 32, 32, 2))
    assert sorted(t.name for t in two.inputs) == ["flow", "frame"]


def test_transfer_reuses_and_freezes_the_base_weights():
    base = build_stanford40(input_shape=(32, 32, 3))
    frames = build_tvhi_frames(input_shape=(32, 32, 3), base=base)
    features = frames.get_layer("stanford40_features")
    assert not features.trainable
    np.testing.assert_array_equal(features.get_layer("conv_0").kernel.numpy(),
                                  base.get_layer("conv_0").kernel.numpy())
    # From scratch the conv part trains too.
    scratch = build_tvhi_frames(input_shape=(32, 32, 3), freeze_base=False)
    assert parameter_counts(scratch)["trainable"] > 6_000_000


def test_two_stream_freezes_both_streams():
    two = build_two_stream(frame_shape=(32, 32, 3), flow_shape=(4, 32, 32, 2))
    assert not two.get_layer("frame_stream").trainable
    assert not two.get_layer("flow_stream").trainable
    # The frame stream ends at the frames model's first head dense + dropout (30 units).
    assert tuple(two.get_layer("frame_stream").output.shape[1:]) == (30,)


def test_two_stream_refuses_streams_trained_at_other_shapes():
    """Streams trained at another size or step count than the store the fusion reads (a base
    run picked by hand) are one error, not Keras' shape error deep in the fused graph."""
    from trainers.errors import ModelConfigError

    frames = build_tvhi_frames(input_shape=(32, 32, 3))
    flow = build_tvhi_flow(input_shape=(4, 32, 32, 2))
    with pytest.raises(ModelConfigError, match=r"^frames model takes inputs of shape "
                                               r"\(32, 32, 3\), got \(48, 48, 3\)$"):
        build_two_stream(frame_shape=(48, 48, 3), flow_shape=(4, 32, 32, 2),
                         frames_model=frames, flow_model=flow)
    with pytest.raises(ModelConfigError, match=r"^flow model takes inputs of shape "
                                               r"\(4, 32, 32, 2\), got \(8, 32, 32, 2\)$"):
        build_two_stream(frame_shape=(32, 32, 3), flow_shape=(8, 32, 32, 2),
                         frames_model=frames, flow_model=flow)


def test_logits_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_tvhi_flow(input_shape=(4, 32, 32, 2))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("conv3d_0").compute_dtype == "float16"
    assert model.get_layer("logits").compute_dtype == "float32"


@pytest.mark.parametrize("call", [
    lambda: build_stanford40(input_shape=(32, 32)),
    lambda: build_stanford40(input_shape=(32, 32, 1)),
    lambda: build_stanford40(num_classes=1),
    lambda: build_tvhi_flow(input_shape=(4, 32, 32, 3)),
    lambda: build_tvhi_frames(input_shape=(64, 64, 3), base=build_stanford40(
        input_shape=(32, 32, 3))),
    lambda: build_default("resnet"),
])
def test_factories_check_their_inputs_first(call):
    with pytest.raises((ModelConfigError, UnknownModelError)) as info:
        call()
    assert "got" in str(info.value) or "known models" in str(info.value)


def test_catalogue_names_models_by_what_they_are_and_keeps_the_reports_names():
    assert MODEL_NAMES[:4] == ("image", "frames", "flow", "two_stream")  # (then any added)
    for alias, name in [("stanford40", "image"), ("tvhi_frames", "frames"),
                        ("tvhi_flow", "flow"), ("two_stream", "two_stream")]:
        assert get_model(alias) is get_model(name)
    assert get_model("two_stream").inputs == {"frame": "middle_frame", "flow": "flow"}
    assert get_model("two_stream").requires == ("frames", "flow")
    assert get_model("frames").transfers_from == ("image",)
    with pytest.raises(UnknownModelError, match=f"known models: {', '.join(MODEL_NAMES)} "
                       r"\(aliases: stanford40 = image, tvhi_frames = frames"):
        get_model("resnet")


def test_recipes_are_the_reports():
    # The report's Stanford-40 learning rate is 1e-3; at that rate the network dies (README).
    assert RECIPES["image"] == Recipe(1e-4, 8, 15, lr_halve_every=4)
    assert RECIPES["frames"] == Recipe(1e-4, 2, 20)
    assert RECIPES["flow"] == Recipe(1e-3, 2, 20)
    assert RECIPES["two_stream"] == Recipe(1e-4, 1, 20)
    s40 = RECIPES["image"]
    assert [s40.learning_rate_at(e) for e in (0, 3, 4, 8, 14)] == [1e-4, 1e-4, 5e-5, 2.5e-5,
                                                                    1.25e-5]


def test_recipe_overrides_are_validated():
    assert RECIPES["flow"].override(epochs=2, batch_size=None).epochs == 2
    assert RECIPES["flow"].override(epochs=2, batch_size=None).batch_size == 2
    with pytest.raises(ModelConfigError, match="got 0"):
        RECIPES["flow"].override(epochs=0)
    with pytest.raises(ModelConfigError, match="learning rate"):
        RECIPES["flow"].override(learning_rate=-1.0)


def test_a_float16_model_is_read_back_in_float32_where_float16_cannot_compute(tmp_path):
    """A GPU run's mixed_float16 model read on TensorFlow without a GPU (a report of the runs
    made on a lent GPU): `predict` and `report` stopped with "a bug in trainers" (no float16
    CPU kernel for MaxPool3D). It loads with float32 compute and its weights as saved."""
    from trainers.backend import computes_float16
    from trainers.models import load_trained

    if computes_float16():
        pytest.skip("this machine computes float16 (a GPU, or a backend other than TensorFlow)")
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_tvhi_flow(input_shape=(4, 16, 16, 2), num_classes=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.save(tmp_path / "model.keras")
    loaded = load_trained(tmp_path / "model.keras")
    assert loaded.get_layer("conv3d_0").compute_dtype == "float32"
    for saved, read in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(saved),
                                      keras.ops.convert_to_numpy(read))
    flow = np.random.default_rng(0).normal(size=(2, 4, 16, 16, 2)).astype("float32")
    scores = loaded.predict(flow, verbose=0)
    assert scores.shape == (2, 3) and np.isfinite(scores).all()


@pytest.mark.parametrize("kernel, stride", [(7, 2), (5, 3), (3, 3), (3, 1), (4, 2)])
def test_explicit_same_padding_computes_what_padding_same_does(kernel, stride):
    from trainers.models import _same_padding

    rng = np.random.default_rng(0)
    for n in range(1, 13):
        x = rng.normal(size=(1, n, 3)).astype("float32")
        w = rng.normal(size=(kernel, 3, 2)).astype("float32")
        ((before, after),) = _same_padding((n,), kernel, stride)
        same = keras.ops.conv(x, w, strides=stride, padding="same")
        padded = keras.ops.conv(np.pad(x, ((0, 0), (before, after), (0, 0))), w,
                                strides=stride, padding="valid")
        np.testing.assert_allclose(np.asarray(padded), np.asarray(same), rtol=1e-5, atol=1e-5,
                                   err_msg=f"n={n}")


_FLOW_GRADIENTS = """
import sys
import numpy as np
import tensorflow as tf
import keras
from trainers.models import build_tvhi_flow

gradients = {}
for steps in (5, 7):
    keras.utils.set_random_seed(0)  # the same weights in both processes
    model = build_tvhi_flow(input_shape=(steps, 16, 16, 2), num_classes=4)
    x = np.random.default_rng(0).normal(size=(2, steps, 16, 16, 2)).astype("float32")
    kernel = model.get_layer("conv3d_0").kernel
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(x, training=True)))
    gradients[str(steps)] = tape.gradient(loss, kernel).numpy()
np.savez(sys.argv[1], **gradients)
"""


def test_flow_model_gradients_on_short_clips_are_the_reference_kernels(tmp_path):
    """TensorFlow 2.21's oneDNN backward pass of a "same" Conv3D (kernel 7, stride 2) aborted
    the process on 5 flow steps (heap corruption: a segments store's default) and gave filter
    gradients of 1e34 on 7. The flow model pads explicitly (`_same_padding`); its gradient
    must equal TensorFlow's reference kernels' (oneDNN off). (On a CPU whose oneDNN path has
    no such bug this passes either way.)"""
    import os
    import subprocess
    import sys

    script = tmp_path / "gradients.py"
    script.write_text(_FLOW_GRADIENTS)
    grads = {}
    for onednn in ("1", "0"):
        out = tmp_path / f"grad-{onednn}.npz"
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([sys.executable, str(script), str(out)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (onednn, done.returncode, done.stderr[-2000:])
        grads[onednn] = dict(np.load(out))
    for steps in ("5", "7"):
        assert np.isfinite(grads["1"][steps]).all(), steps
        np.testing.assert_allclose(grads["1"][steps], grads["0"][steps], rtol=1e-3,
                                   atol=1e-4 * float(np.abs(grads["0"][steps]).max()),
                                   err_msg=f"{steps} flow steps")
