"""The four networks of the report (sections 5 and 6) as Keras 3 functional models.

Every factory takes keyword arguments with defaults (the report's 224 x 224 frames and 16 flow
steps), checks them before building, names its layers, and pads as `padding="same"` everywhere
(the flow convolutions with their zero padding made explicit: `_same_padding`), so that the
parameter counts at the defaults equal the report's model summaries:

    image (stanford40)    6,578,424 total
    frames (tvhi_frames)  6,550,588 total, 16,444 trainable (frozen Stanford-40 conv part)
    flow (tvhi_flow)      7,932,536 total
    two_stream            274,628 trainable, 14,276,766 non-trainable

(catalogue names, the report's in parentheses; `trainers.catalogue` says which factory is
which model).

Transfer is done by reusing the layers of an earlier model as a nested, frozen sub-model
(`stanford40_features`, `frame_stream`, `flow_stream`): the stored weights stay untouched and the
summary shows at a glance which part is frozen. Outputs are logits; the loss applies the softmax.
The last Dense layer is always float32 so that mixed precision keeps the logits exact.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Any, Sequence

import keras
from keras import layers

from trainers.backend import computes_float16
from trainers.catalogue import array_shapes, check_sizes, get_model
from trainers.errors import DamagedRunError, ModelConfigError
from trainers.runs import require_model_file

#: Stanford-40 conv stack: (filters, kernel, stride, batch-normalised); every conv is followed
#: by a 3x3 max-pool of stride 2. The report's text says "5 x 3" for conv 1, its summary's
#: 614,656 parameters say 5 x 5.
STANFORD40_CONVS = ((96, 7, 2, True), (256, 5, 3, True), (512, 3, 3, True),
                    (512, 3, 3, True), (512, 3, 3, False))
#: Flow conv stack, the same idea in 3D (section 5.3); every conv is batch-normalised.
FLOW_CONVS = ((128, 7, 2), (256, 5, 3), (512, 3, 3))

#: Divisor of the flow input: Farneback displacements are a few pixels, this brings them to
#: roughly unit range, as Rescaling(1/255) does for the frames.
FLOW_SCALE = 0.1

#: Dtype policies that compute in float16 (`_float16_as_float32`).
FLOAT16_POLICIES = ("mixed_float16", "float16")

#: Layer names the transfer steps cut at.
FEATURES_LAYER = "flatten"
FRAME_STREAM_LAYER = "head_dropout_0"


def _check_shape(name: str, shape: Sequence[int], rank: int, channels: int) -> tuple[int, ...]:
    shape = tuple(shape)
    if len(shape) != rank or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ModelConfigError(f"{name} must be {rank} positive integers, got {shape!r}")
    if shape[-1] != channels:
        raise ModelConfigError(f"{name} must end in {channels} channels, got {shape!r}")
    return shape


def _check_classes(num_classes: int) -> None:
    if not (isinstance(num_classes, int) and num_classes >= 2):
        raise ModelConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")


def _same_padding(size: Sequence[int], kernel: int, stride: int) -> tuple[tuple[int, int], ...]:
    """The zeros `padding="same"` adds before and after each axis of `size` (TensorFlow's and
    Keras' split: the odd one after), for a "valid" convolution after `ZeroPadding3D` to
    compute what a "same" one does.

    Why the flow model does not leave it to the convolution: TensorFlow 2.21's oneDNN kernels
    for the backward pass of a "same" 3D convolution write out of bounds on some short clips:
    the flow model's first convolution (kernel 7, stride 2) on 5 flow steps corrupted the heap
    (`free(): invalid size`, the process aborted: `--sampling segments` stores hold 5 a
    segment by default) and on 7 returned filter gradients of 1e34, silently. The same
    convolution on padded inputs matches TensorFlow's reference kernels
    (`TF_ENABLE_ONEDNN_OPTS=0`, 4x slower) on every length tried
    (tests/test_trainers_models.py)."""
    pads = []
    for n in size:
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _logits(x, num_classes: int):
    # float32 even under a mixed_float16 policy: softmax/cross-entropy on float16 logits is lossy.
    return layers.Dense(num_classes, dtype="float32", name="logits")(x)


def build_stanford40(*, input_shape: Sequence[int] = (224, 224, 3), num_classes: int = 40,
                     dropout: float = 0.5, name: str = "stanford40") -> keras.Model:
    """The Stanford-40 image CNN (section 5.1).

    Rescaling -> 5 x (Conv2D -> [BatchNorm] -> MaxPool 3/2) -> Flatten -> Dense 80 -> Dropout
    -> Dense `num_classes`. ReLU everywhere, `padding="same"`.

    Args:
        input_shape: (S, S, 3) uint8-range RGB images.
        num_classes: output logits (40 actions).
        dropout: rate of the dropout after Dense 80.
        name: model name.
    """
    input_shape = _check_shape("input_shape", input_shape, 3, 3)
    _check_classes(num_classes)
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    for i, (filters, kernel, stride, normalise) in enumerate(STANFORD40_CONVS):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", activation="relu",
                          name=f"conv_{i}")(x)
        if normalise:
            x = layers.BatchNormalization(name=f"bn_{i}")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool_{i}")(x)
    x = layers.Flatten(name=FEATURES_LAYER)(x)
    x = layers.Dense(80, activation="relu", name="dense_0")(x)
    x = layers.Dropout(dropout, name="dropout_0")(x)
    return keras.Model(inputs, _logits(x, num_classes), name=name)


def feature_extractor(model: keras.Model, *, upto: str = FEATURES_LAYER,
                      name: str | None = None) -> keras.Model:
    """The part of `model` from its input up to and including layer `upto`, sharing weights."""
    try:
        output = model.get_layer(upto).output
    except ValueError:
        raise ModelConfigError(f"model {model.name!r} has no layer {upto!r} to cut at") from None
    return keras.Model(model.inputs, output, name=name or f"{model.name}_features")


def build_tvhi_frames(*, input_shape: Sequence[int] = (224, 224, 3), num_classes: int = 4,
                      base: keras.Model | None = None, freeze_base: bool = True,
                      dropout: float = 0.5, name: str = "tvhi_frames") -> keras.Model:
    """Transfer of the Stanford-40 CNN to TV-HI middle frames (section 5.2).

    The conv part of `base` up to and including its Flatten is reused (frozen by default);
    a new head Dense 30 -> Dropout -> Dense 30 -> Dropout -> Dense `num_classes` is trained.

    Args:
        input_shape: (S, S, 3) middle frames; must match `base`'s input.
        num_classes: output logits (4 interactions).
        base: a trained Stanford-40 model; `None` builds a freshly initialised one (what a run
            does when no Stanford-40 run exists, together with `freeze_base=False`).
        freeze_base: keep the reused conv part fixed (the report's transfer learning).
        dropout: rate of both head dropouts.
        name: model name.
    """
    input_shape = _check_shape("input_shape", input_shape, 3, 3)
    _check_classes(num_classes)
    if base is None:
        base = build_stanford40(input_shape=input_shape)
    elif tuple(base.input_shape[1:]) != input_shape:
        raise ModelConfigError(f"input_shape must match the base model's input "
                               f"{tuple(base.input_shape[1:])}, got {input_shape}")
    features = feature_extractor(base, name="stanford40_features")
    features.trainable = not freeze_base
    inputs = keras.Input(shape=input_shape, name="frame")
    x = features(inputs)
    x = layers.Dense(30, activation="relu", name="head_dense_0")(x)
    x = layers.Dropout(dropout, name="head_dropout_0")(x)
    x = layers.Dense(30, activation="relu", name="head_dense_1")(x)
    x = layers.Dropout(dropout, name="head_dropout_1")(x)
    return keras.Model(inputs, _logits(x, num_classes), name=name)


def fine_tune_transferred(model: keras.Model) -> None:
    """Make the frozen sub-models `model` transferred from its base runs trainable, but for
    their BatchNorm layers, which keep the base's statistics (a BatchNorm layer that is not
    trainable normalises with its moving statistics, in training too): batches of one or two
    new samples would give noisy statistics.

    A recipe's `fine_tune_base`; the report trains only the new head."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and not layer.trainable:
            layer.trainable = True
            for inner in layer.layers:
                if isinstance(inner, layers.BatchNormalization):
                    inner.trainable = False


@keras.saving.register_keras_serializable(package="trainers")
class SubtractMeanFlow(layers.Layer):
    """Each flow step minus its mean displacement over the frame, per channel (dx, dy).

    A camera pan moves every pixel alike; subtracting the mean leaves the motion of the people
    relative to the scene (Simonyan & Zisserman 2014, section 3.1, "mean flow subtraction").
    No weights, so a model's parameter count is unchanged; computed in float32 (the mean of
    50,000 float16 values would lose the small displacements it is subtracted from).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"dtype": "float32", **kwargs})

    def call(self, flow):
        flow = keras.ops.cast(flow, "float32")
        return flow - keras.ops.mean(flow, axis=(-3, -2), keepdims=True)


def build_tvhi_flow(*, input_shape: Sequence[int] = (16, 224, 224, 2), num_classes: int = 4,
                    dropout: float = 0.5, flow_scale: float = FLOW_SCALE,
                    subtract_mean: bool = False, name: str = "tvhi_flow") -> keras.Model:
    """The 3D CNN on stacked optical flow (section 5.3).

    [SubtractMeanFlow] -> Rescaling -> 3 x (Conv3D -> BatchNorm -> MaxPool3D 3/2) -> Flatten
    -> Dense 100 -> Dropout -> Dense `num_classes`; each Conv3D "same", its padding made
    explicit (`_same_padding`).

    Args:
        input_shape: (T, S, S, 2) flow in pixels, channels (dx, dy).
        num_classes: output logits.
        dropout: rate of the dropout after Dense 100.
        flow_scale: factor applied to the flow before the first conv.
        subtract_mean: subtract each step's mean flow first (a recipe's `subtract_mean_flow`).
        name: model name.
    """
    input_shape = _check_shape("input_shape", input_shape, 4, 2)
    _check_classes(num_classes)
    inputs = keras.Input(shape=input_shape, name="flow")
    x = SubtractMeanFlow(name="subtract_mean_flow")(inputs) if subtract_mean else inputs
    x = layers.Rescaling(flow_scale, name="rescaling")(x)
    for i, (filters, kernel, stride) in enumerate(FLOW_CONVS):
        x = layers.ZeroPadding3D(_same_padding(x.shape[1:4], kernel, stride),
                                 name=f"pad_{i}")(x)
        x = layers.Conv3D(filters, kernel, strides=stride, padding="valid", activation="relu",
                          name=f"conv3d_{i}")(x)
        x = layers.BatchNormalization(name=f"bn_{i}")(x)
        x = layers.MaxPooling3D(3, strides=2, padding="same", name=f"pool_{i}")(x)
    x = layers.Flatten(name=FEATURES_LAYER)(x)
    x = layers.Dense(100, activation="relu", name="dense_0")(x)
    x = layers.Dropout(dropout, name="dropout_0")(x)
    return keras.Model(inputs, _logits(x, num_classes), name=name)


def build_two_stream(*, frame_shape: Sequence[int] = (224, 224, 3),
                     flow_shape: Sequence[int] = (16, 224, 224, 2), num_classes: int = 4,
                     frames_model: keras.Model | None = None,
                     flow_model: keras.Model | None = None, dropout: float = 0.5,
                     name: str = "two_stream") -> keras.Model:
    """Late fusion of the frames and flow models (section 6).

    Both streams are frozen: the frames model up to its first head Dense + Dropout (fine-tuned
    on TV-HI, so kept), the flow model up to its Flatten. Their outputs are concatenated and
    flattened, then Dense 128 -> Dropout -> Dense 64 -> Dropout -> Dense `num_classes` is trained.
    The model takes a dict `{"frame": ..., "flow": ...}`.

    Args:
        frame_shape: (S, S, 3) middle frames.
        flow_shape: (T, S, S, 2) flow.
        num_classes: output logits.
        frames_model: a trained `tvhi_frames` model; `None` builds a fresh one.
        flow_model: a trained `tvhi_flow` model; `None` builds a fresh one.
        dropout: rate of both fusion dropouts.
        name: model name.
    """
    frame_shape = _check_shape("frame_shape", frame_shape, 3, 3)
    flow_shape = _check_shape("flow_shape", flow_shape, 4, 2)
    _check_classes(num_classes)
    if frames_model is None:
        frames_model = build_tvhi_frames(input_shape=frame_shape, num_classes=num_classes)
    if flow_model is None:
        flow_model = build_tvhi_flow(input_shape=flow_shape, num_classes=num_classes)
    for label, model, shape in (("frames", frames_model, frame_shape),
                                ("flow", flow_model, flow_shape)):
        if tuple(model.input_shape[1:]) != shape:
            raise ModelConfigError(f"{label} model takes inputs of shape "
                                   f"{tuple(model.input_shape[1:])}, got {shape}")
    frame_stream = feature_extractor(frames_model, upto=FRAME_STREAM_LAYER, name="frame_stream")
    flow_stream = feature_extractor(flow_model, upto=FEATURES_LAYER, name="flow_stream")
    frame_stream.trainable = False
    flow_stream.trainable = False

    frame = keras.Input(shape=frame_shape, name="frame")
    flow = keras.Input(shape=flow_shape, name="flow")
    x = layers.Concatenate(name="concatenate")([frame_stream(frame), flow_stream(flow)])
    x = layers.Flatten(name="fusion_flatten")(x)
    x = layers.Dense(128, activation="relu", name="fusion_dense_0")(x)
    x = layers.Dropout(dropout, name="fusion_dropout_0")(x)
    x = layers.Dense(64, activation="relu", name="fusion_dense_1")(x)
    x = layers.Dropout(dropout, name="fusion_dropout_1")(x)
    return keras.Model({"frame": frame, "flow": flow}, _logits(x, num_classes), name=name)


def build_default(model: str, *, size: int = 224, steps: int = 16,
                  num_classes: int | None = None) -> keras.Model:
    """Build `model` (a catalogue name or alias) fresh for frames of `size` x `size` and
    `steps` flow steps, its base models built fresh too (and frozen where it freezes them).

    Used by `trainers summary`. `num_classes` defaults to the report's (40 for the image CNN,
    4 for the TV-HI models); base models keep the report's.
    """
    entry = get_model(model)
    check_sizes(size, steps)
    shapes = array_shapes(size, steps)
    bases = {base: build_default(base, size=size, steps=steps) for base in entry.bases}
    return entry.factory({name: shapes[array] for name, array in entry.inputs.items()},
                         entry.report_classes if num_classes is None else num_classes, bases,
                         entry.recipe)


def load_trained(path: Path | str) -> keras.Model:
    """A model a run saved, uncompiled; this module registers the layers of its own that the
    file may name (`SubtractMeanFlow`), so load runs' models through here.

    Raises:
        DamagedRunError: the file is cut short (`trainers.runs.require_model_file`) or a part
            of it is corrupt (a bad checksum, unparsable JSON, unreadable HDF5): one line
            naming the file, not Keras' "File not found" of a file that is there.
    """
    path = require_model_file(path)
    try:
        if not computes_float16() and (config := _float16_as_float32(path)) is not None:
            model = keras.saving.deserialize_keras_object(config)
            model.load_weights(path)
            return model
        return keras.saving.load_model(path, compile=False)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError,
            ValueError) as exc:  # (ValueError: unparsable JSON too; a member missing: KeyError)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DamagedRunError(f"model file {str(path)!r} is damaged or unreadable "
                              f"({reason})") from None


def _float16_as_float32(path: Path) -> dict[str, Any] | None:
    """The architecture a `.keras` file saved, its float16 compute turned to float32 (None: it
    computes in no float16), uncompiled. A GPU run's mixed_float16 model, read back where
    float16 cannot be computed (`trainers.backend.computes_float16`), failed its first
    prediction; its weights are float32 under that policy, so they load as they are, and it
    predicts in float32 (within float16's rounding of what it scored)."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    changed = False

    def to_float32(value: Any) -> None:
        nonlocal changed
        if isinstance(value, dict):
            policy = value.get("config")
            if (str(value.get("class_name", "")).endswith("DTypePolicy")
                    and isinstance(policy, dict) and policy.get("name") in FLOAT16_POLICIES):
                policy["name"], changed = "float32", True
            for item in value.values():
                to_float32(item)
        elif isinstance(value, list):
            for item in value:
                to_float32(item)

    to_float32(config)
    config["compile_config"] = None
    return config if changed else None


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts, as in a Keras summary."""
    trainable = sum(_size(w) for w in model.trainable_weights)
    non_trainable = sum(_size(w) for w in model.non_trainable_weights)
    return {"total": trainable + non_trainable, "trainable": trainable,
            "non_trainable": non_trainable}


def _size(variable) -> int:
    size = 1
    for dim in variable.shape:
        size *= int(dim)
    return size
