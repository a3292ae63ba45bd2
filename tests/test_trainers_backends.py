"""`trainers` on Keras' other backends: on PyTorch (and JAX) a run streams through the reader's
Keras `PyDataset` and TensorFlow is not needed, so a machine without it trains."""

from __future__ import annotations

import csv
import io
import json
import re
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import flowstore
from flowstore.reader.batches import epoch_order
from flowstore.store import open_store
from trainers import data
from trainers.backend import configured_backend
from trainers.errors import MissingTrainingExtraError, require_training_extra
from trainers.samples import StoreSamples
from trainers.testing import make_tiny_store

from tests.conftest import without_modules_env


def _trainers_without_tensorflow(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed `trainers` on Keras' PyTorch backend, in a Python where TensorFlow is
    not installed (`without_modules_env`)."""
    pytest.importorskip("torch")
    command = shutil.which("trainers") or pytest.fail("the `trainers` console script is missing")
    env = {**os.environ, "KERAS_BACKEND": "torch",
           **without_modules_env(tmp_path / "no-tensorflow", "tensorflow")}
    return subprocess.run([command, *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)


def test_a_tuned_run_trains_on_the_torch_backend_without_tensorflow(tmp_path):
    store = make_tiny_store(tmp_path / "s.zarr", size=16, steps=2, per_class=(3, 1, 1))
    proc = _trainers_without_tensorflow(tmp_path, "run", "tvhi_flow", "--store", str(store),
                                        "--runs-dir", "runs", "--recipe", "tuned",
                                        "--epochs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training on CPU (no GPU found)" in proc.stderr
    (run,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["keras_backend"] == "torch" and metrics["device"] == "CPU"
    assert metrics["recipe"]["recipe_set"] == "tuned" and metrics["epochs_run"] == 2
    assert metrics["test"]["samples"] == 4 and 0 <= metrics["test"]["accuracy"] <= 1
    # the BatchNorm statistics were recomputed on the training split (`FirstBatches`)
    assert metrics["bn_recalibration_samples"] == 12
    assert (run / "model.keras").stat().st_size > 0
    # and the run predicts there too: a CSV row per test sample, probabilities summing to 1
    proc = _trainers_without_tensorflow(tmp_path, "predict", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 4
    probabilities = [[float(row[key]) for key in row if key.startswith("p_")] for row in rows]
    assert all(len(p) == 4 and abs(sum(p) - 1) < 1e-3 for p in probabilities), rows


def test_a_damaged_store_on_the_torch_backend_is_one_line(tmp_path):
    """A store's error met by a PyDataset's reading thread reaches the user as the error it is
    (no TensorFlow op error to unwrap), and no run is written."""
    store = make_tiny_store(tmp_path / "s.zarr", size=16, steps=2, per_class=(3, 1, 1))
    with flowstore.open(store) as ds:
        train = ds.split("train")
        (store / "flow" / ds.store.chunk_key("flow", int(train.indices[1]))).unlink()
    proc = _trainers_without_tensorflow(tmp_path, "run", "tvhi_flow", "--store", str(store),
                                        "--runs-dir", "runs", "--epochs", "1", "--quiet")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "missing" in lines[-1], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_calibration_batches_are_a_new_epoch_each_time_on_a_pydataset(tmp_path, monkeypatch):
    """The BatchNorm recalibration's subset: the first batches of a new seeded order each
    time it is read, as `.take` of a tf.data pipeline gives."""
    monkeypatch.setattr(data, "uses_tf_data", lambda: False)
    store = make_tiny_store(tmp_path / "s.zarr", size=16, steps=2, per_class=(4, 1, 1))
    with open_store(store) as opened:
        samples = StoreSamples(opened, "flow")
        dataset = data.make_dataset(samples, "train", data.InputOptions(
            batch_size=2, shuffle=True, seed=5))
        first = data.FirstBatches(dataset, 2)
        labels = samples.labels[samples.indices("train")]
        for epoch in range(3):
            batches = list(first)
            order = epoch_order(len(labels), shuffle=True, seed=5, epoch=epoch)
            assert len(batches) == 2
            assert np.concatenate([label for _, label in batches]).tolist() == \
                labels[order[:4]].tolist()
        assert len(list(data.FirstBatches(dataset, 100))) == 8  # no more than an epoch


def test_the_backend_checked_is_the_one_keras_is_set_to(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert configured_backend() == "tensorflow"  # no keras.json: Keras' default
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax", "floatx": "float32"}))
    assert configured_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert configured_backend() == "torch"  # the variable wins, as in Keras
    # without KERAS_HOME: ~/.keras, where the home folder can be written (as Keras reads it)
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.delenv("KERAS_HOME")
    home = tmp_path / "home"
    (home / ".keras").mkdir(parents=True)
    (home / ".keras" / "keras.json").write_text(json.dumps({"backend": "jax"}))
    monkeypatch.setenv("HOME", str(home))
    assert configured_backend() == "jax"


@pytest.mark.parametrize("backend,missing,message", [
    ("torch", "matplotlib", "error: trainers needs matplotlib for Keras' torch backend: pip "
                            "install 'flowstore[keras]' torch"),
    ("tensorflow", "tensorflow", "error: trainers needs TensorFlow: pip install "
                                 "'flowstore[train]'"),
])
def test_what_training_needs_is_named_for_the_backend(backend, missing, message, monkeypatch):
    """(The installed command's lines for JAX missing and a backend that cannot train are in
    tests/test_flowstore_bad_inputs.py.)"""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setenv("KERAS_BACKEND", backend)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == missing else find_spec(name, *a))
    with pytest.raises(MissingTrainingExtraError) as caught:
        require_training_extra()
    assert f"error: {caught.value}" == message


def test_a_keras_json_that_is_not_an_object_is_one_line(tmp_path, monkeypatch):
    """Keras' import fails on a keras.json holding a list (`_config.get`): the command ended in
    a traceback and 'internal error: a bug in trainers'."""
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "keras.json").write_text('{"backend": ')  # not JSON: Keras skips it, as here
    assert configured_backend() == "tensorflow"
    (tmp_path / "keras.json").write_text('["jax"]')
    for backend in (None, "tensorflow"):  # (Keras reads the file whatever the variable says)
        if backend:
            monkeypatch.setenv("KERAS_BACKEND", backend)
        with pytest.raises(MissingTrainingExtraError, match=r"keras\.json' is not a JSON "
                                                            r"object, and Keras cannot start"):
            require_training_extra()


@pytest.mark.parametrize("settings, said", [
    ({"floatx": "nonsense"}, "sets floatx 'nonsense'; trainers' models need 'float32' "
                             "(--mixed-precision computes in float16): remove the setting"),
    ({"floatx": "float16"}, "sets floatx 'float16'; trainers' models need 'float32'"),
    ({"image_data_format": "channels_first"}, "sets image_data_format 'channels_first'; "
                                              "trainers' models need 'channels_last': remove"),
    ({"epsilon": "abc"}, "sets epsilon 'abc', not a number, and Keras cannot start with it"),
    ({"epsilon": True}, "sets epsilon True, not a number"),
    ({"floatx": "float32", "image_data_format": "channels_last", "epsilon": 1e-07}, None)])
def test_keras_json_settings_the_models_cannot_train_with_are_one_line(tmp_path, monkeypatch,
                                                                       settings, said):
    """Keras refused a floatx or an epsilon it does not know as it was imported, and the report's
    models cannot be built channels_first: each was "internal error: a bug in trainers"
    (found by review); float16 everywhere trained silently, its runs taken as float32 ones."""
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "keras.json").write_text(json.dumps(settings))
    if said is None:
        assert configured_backend() == "tensorflow"
        return
    with pytest.raises(MissingTrainingExtraError, match=re.escape(said)):
        configured_backend()


def test_a_backend_installed_but_failing_to_import_is_one_line(tmp_path):
    """`find_spec` finds jax without jaxlib (or a jaxlib of another release), which fails as
    Keras imports it: 77 lines of traceback and 'a bug in trainers', exit 3."""
    broken = tmp_path / "site" / "jax"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        'raise ModuleNotFoundError("jax requires jaxlib to be installed. See '
        'https://github.com/jax-ml/jax#installation for installation instructions.")\n')
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *filter(None, [
               os.environ.get("PYTHONPATH")])])}
    result = subprocess.run(["trainers", "summary", "flow"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: Keras cannot start its jax backend, installed but failing to import (jax "
        "requires jaxlib to be installed. See https://github.com/jax-ml/jax#installation for "
        "installation instructions.): pip install --force-reinstall 'flowstore[keras]' jax")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("exc, why", [
    (ImportError("\n  libcudnn.so.9: cannot open shared object file\nsee the install notes\n"),
     "libcudnn.so.9: cannot open shared object file"),
    (ImportError(""), "ImportError")])
def test_a_backend_import_error_is_said_by_its_first_line(exc, why, monkeypatch):
    """The CLI prints the refusal as one `error:` line: an import error of several lines (a
    torch missing a library it was built with) is said by its first, an empty one by its type."""
    from trainers.errors import backend_import_failed

    monkeypatch.setenv("KERAS_BACKEND", "torch")
    message = str(backend_import_failed(exc))
    assert message == (f"Keras cannot start its torch backend, installed but failing to import "
                       f"({why}): pip install --force-reinstall 'flowstore[keras]' torch")


_ONEDNN_ON = "oneDNN custom operations are on"


def test_the_device_line_says_tensorflow_started_without_onednn_before_trainers_asked():
    """A notebook that imported TensorFlow before `trainers` keeps what TensorFlow decided then
    (without oneDNN on a CPU without AVX-512, stood in for here by the variable at 0 while
    TensorFlow starts): the variable `trainers` then find set says nothing of it, the device
    line does."""
    pytest.importorskip("tensorflow")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("TensorFlow's oneDNN switch is that of its x86 builds")
    script = ("import os; os.environ['TF_ENABLE_ONEDNN_OPTS'] = '0'; import tensorflow; "
              "os.environ['TF_ENABLE_ONEDNN_OPTS'] = '1'; import trainers, keras; "
              "from trainers.quiet import _device_line; print(_device_line(0))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == (
        "training on CPU (no GPU found), without TensorFlow's oneDNN kernels (TensorFlow "
        "started without them: imported before trainers, or built without them; they train "
        "2.5-3x faster on a CPU without AVX-512)")


@pytest.mark.parametrize("setting, on", [(None, True), ("0", False)])
def test_tensorflow_starts_with_onednn_kernels_unless_the_user_turned_them_off(setting, on):
    """`import trainers` asks TensorFlow for its oneDNN CPU kernels, which TensorFlow turns on by
    itself only on CPUs with AVX-512 (on an AVX2-only CPU its own Conv3D filter gradient on
    small batches is hundreds of times slower: `trainers.backend.use_onednn_kernels`); a user's
    `TF_ENABLE_ONEDNN_OPTS=0` is kept. TensorFlow says at import which it took, and a run's
    device line says it too (a run without them is slow for a reason the user can see)."""
    pytest.importorskip("tensorflow")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("TensorFlow's oneDNN switch and its note are those of its x86 builds")
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    done = subprocess.run(
        [sys.executable, "-c", "import trainers, os, tensorflow, keras; "
                               "from trainers.quiet import _device_line; "
                               "print(_device_line(0)); "
                               "print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"],
        capture_output=True, text=True, env={**env, "KERAS_BACKEND": "tensorflow"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    device, setting = done.stdout.splitlines()[-2:]
    assert setting == ("1" if on else "0")
    assert (_ONEDNN_ON in done.stderr) == on, done.stderr[-2000:]
    assert device == ("training on CPU (no GPU found), TensorFlow's oneDNN kernels" if on else
                      "training on CPU (no GPU found), without TensorFlow's oneDNN kernels "
                      "(TF_ENABLE_ONEDNN_OPTS=0; they train 2.5-3x faster on a CPU without "
                      "AVX-512)"), device
