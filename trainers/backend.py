"""The Keras backend a run trains on, and the few things that differ with it.

`trainers` are Keras 3 code, so they train on whichever backend Keras is set to
(`KERAS_BACKEND`, or `keras.json`'s "backend"; TensorFlow when neither says). On TensorFlow,
the default and what `pip install 'flowstore[train]'` brings, a split streams through `tf.data`
(`Split.to_tf_dataset`). On JAX or PyTorch it streams through the reader's Keras `PyDataset`
(`Split.to_keras_dataset`), and TensorFlow is not needed (where it is installed, Keras' seeding
imports it all the same: `trainers.quiet`): a GPU machine with JAX or PyTorch and no TensorFlow
trains the same models from the same stores (a JAX step of the flow CNN on an H200 is about
130 times this project's 2-core CPU step, benchmarks/README.md).

What differs, and only here: the input pipeline (`uses_tf_data`), how the device is found
(`gpu_count`), and how a store's error met by a read reaches the user (`store_errors_raised`:
TensorFlow wraps it in an op error; a PyDataset raises it as it is).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Iterator

#: The backends `trainers` train on: Keras' name -> (the module it needs, how a user knows it).
TRAINING_BACKENDS = {"tensorflow": ("tensorflow", "TensorFlow"), "jax": ("jax", "JAX"),
                     "torch": ("torch", "PyTorch")}


#: TensorFlow's switch for its oneDNN CPU kernels, and what `trainers` set it to unless the user
#: did (`use_onednn_kernels`).
ONEDNN_VARIABLE, ONEDNN_ON = "TF_ENABLE_ONEDNN_OPTS", "1"


def use_onednn_kernels() -> None:
    """Ask TensorFlow for its oneDNN CPU kernels on every x86 CPU, unless the user set
    `TF_ENABLE_ONEDNN_OPTS` (to 0, to turn them off). Runs as `trainers` is imported, before
    TensorFlow is, which reads the variable once, at its own import.

    Why: TensorFlow 2.21 turns oneDNN on by itself only on CPUs with AVX-512 (an Intel Xeon, a
    recent AMD EPYC). On one with AVX2 alone it falls back to its Eigen kernels, three times
    slower at the report's sizes (a flow training step at 224 px, 16 steps, batch 2: 3.9 s
    against 1.3 s with oneDNN; an image CNN step 0.66 s against 0.26 s) and hundreds of times
    slower on small batches, whose Conv3D filter gradient costs 0.5-1.7 ms a batch voxel there
    (the flow model's first Conv3D: 30 s a step at 64 px, 16 steps, batch 1, against 0.02 s;
    1.7 s at the tests' 16 px, 2 steps, batch 2, against 0.003 s;
    `benchmarks/train_step_time.py`, `benchmarks/conv3d_gradient.py`). With it on, every x86
    CPU trains on the same kernels, and the flow model's workaround of a oneDNN bug
    (`trainers.models._same_padding`) holds on all of them."""
    os.environ.setdefault(ONEDNN_VARIABLE, ONEDNN_ON)


def onednn_kernels() -> bool | None:
    """Whether TensorFlow runs its oneDNN CPU kernels: what it decided as it was imported,
    from `TF_ENABLE_ONEDNN_OPTS` and the CPU (so a TensorFlow imported before `trainers` runs
    without them on a CPU without AVX-512, whatever the variable says now). None where
    TensorFlow is not imported, or does not say: the answer is its internal
    `_pywrap_util_port.IsMklEnabled`, which a later release may move."""
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def configured_backend() -> str:
    """The backend Keras will start on, read as `keras/src/backend/config.py` reads it but
    without importing Keras (which, on TensorFlow, imports TensorFlow: seconds, and start-up
    notes): a non-empty `KERAS_BACKEND`, else the "backend" of `keras.json` in `$KERAS_HOME`
    (or `~/.keras`, `/tmp/.keras` where the home folder cannot be written), else TensorFlow.

    Raises:
        MissingTrainingExtraError: keras.json is JSON but not an object, on which Keras' import
            fails (`_config.get`) whatever `KERAS_BACKEND` says: checked even where the
            variable names the backend.
    """
    if "KERAS_HOME" in os.environ:
        folder = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        folder = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    path = Path(os.path.expanduser(os.path.join(folder, "keras.json")))
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):  # no file, or not JSON: Keras' default (Keras skips it too)
        config = {}
    if not isinstance(config, dict):  # Keras' import fails on it: a traceback, "a bug"
        from trainers.errors import MissingTrainingExtraError

        raise MissingTrainingExtraError(f"{str(path)!r} is not a JSON object, and Keras cannot "
                                        f"start with it: fix it or remove it")
    _check_keras_settings(path, config)
    return os.environ.get("KERAS_BACKEND") or str(config.get("backend", "tensorflow"))


#: The keras.json settings trainers' models need, where the file sets them: Keras refused other
#: values of `floatx` and `epsilon` as it was imported ("Invalid floatx configuration"), and
#: with `channels_first` the report's models could not be built: each was "internal error: a
#: bug in trainers" (found by review). float16 everywhere trained silently, and its runs were
#: taken as float32 runs (`--mixed-precision` is the recorded way to compute in float16).
KERAS_SETTINGS = {"floatx": ("float32",), "image_data_format": ("channels_last",)}


def _check_keras_settings(path: Path, config: dict) -> None:
    from trainers.errors import MissingTrainingExtraError

    for key, allowed in KERAS_SETTINGS.items():
        if key in config and config[key] not in allowed:
            hint = " (--mixed-precision computes in float16)" if key == "floatx" else ""
            raise MissingTrainingExtraError(
                f"{str(path)!r} sets {key} {config[key]!r}; trainers' models need "
                f"{allowed[0]!r}{hint}: remove the setting from the file")
    epsilon = config.get("epsilon", 1e-7)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise MissingTrainingExtraError(f"{str(path)!r} sets epsilon {epsilon!r}, not a number, "
                                        f"and Keras cannot start with it: fix it or remove it")


def uses_tf_data() -> bool:
    """Whether splits stream through `tf.data` (Keras runs on TensorFlow) rather than through
    a Keras `PyDataset`. Keras must be imported already (`trainers.quiet.start_keras_quietly`)."""
    import keras

    return keras.backend.backend() == "tensorflow"


def gpu_count() -> int:
    """The GPUs the running Keras backend trains on (it places the model there)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    return 0


def computes_float16() -> bool:
    """Whether a model can compute in float16 here (a GPU's mixed_float16 run read back): not
    on TensorFlow without a GPU, which has no float16 CPU kernel for MaxPool3D (the flow
    model's pooling); JAX and PyTorch compute it on a CPU too."""
    import keras

    return keras.backend.backend() != "tensorflow" or gpu_count() > 0


def device_name() -> str:
    """"GPU" when the backend trains on one, else "CPU" (recorded in each run's metrics)."""
    return "GPU" if gpu_count() else "CPU"


@contextlib.contextmanager
def store_errors_raised() -> Iterator[None]:
    """Inside, a store's error met by a read while a model trains, is scored or predicts is
    raised as the FlowstoreError it is (a command line prints it as one line): TensorFlow's
    pipeline hands it on inside an op error, which `flowstore.reader.tf.store_errors_raised`
    undoes; a PyDataset's reads raise it unwrapped."""
    if not uses_tf_data():
        yield
        return
    from flowstore.reader.tf import store_errors_raised as tf_store_errors_raised

    with tf_store_errors_raised():
        yield
