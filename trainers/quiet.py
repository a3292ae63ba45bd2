"""Quiet by default: TensorFlow's start-up notes stay off the user's terminal.

Importing TensorFlow on a machine without a GPU writes a dozen lines to stderr: oneDNN notes,
"Could not find cuda drivers", CPU instruction notes and `E0000 ... failed call to cuInit`,
which reads as a failure although training on the CPU is fine. None of it is for a user who
did not ask. `TF_CPP_MIN_LOG_LEVEL=3` (set unless the user set it) silences TensorFlow's own
C++ log after start-up, but TensorFlow 2.21 writes its first notes through absl before absl's
log is initialised, and those ignore every setting. So the import (and the first device query,
where cuInit runs) happens with file descriptor 2 captured, and of what was captured only the
lines that are not absl/TensorFlow log notes are passed on: an unexpected message (a real
error, a crash's last words) still reaches the user, and all of it does when the import fails.

`--verbose`, or the user's own TF_CPP_MIN_LOG_LEVEL, lets everything through as it is.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import tempfile
import warnings
from typing import Callable

from flowstore.errors import resource_exhaustion

#: Lines of TensorFlow's and absl's C++ log at start-up: `I0000 00:00:1796... 123 port.cc:153]`,
#: the "before absl::InitializeLog" banner, and the CPU-instructions note's second line.
NOISE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\]|WARNING: All log messages "
                   r"before absl::InitializeLog|To enable the following instructions:)")


def filtered(captured: str) -> str:
    """`captured` without TensorFlow's and absl's start-up log lines."""
    return "".join(line for line in captured.splitlines(keepends=True) if not NOISE.match(line))


def start_keras_quietly(verbose: bool = False) -> str:
    """Import Keras (and so its backend: TensorFlow unless Keras is set to JAX or PyTorch,
    `trainers.backend`) and find the training device, keeping start-up notes back.

    Returns:
        The device line: "training on GPU (1 found)" or "training on CPU (no GPU found)",
        on TensorFlow's CPU followed by whether its oneDNN kernels run (`_device_line`).
    """
    # Keras' `convert_to_numpy` of a variable (TensorFlow's, in BatchNorm's recalibration, the
    # optimizer's learning rate, the seed generators) makes numpy 2 warn that its `__array__`
    # takes no `copy`: a note for Keras' authors, which under PYTHONWARNINGS=error (as some CI
    # runs) ended every training run as "a bug in trainers" (found by review).
    warnings.filterwarnings("ignore", category=DeprecationWarning,
                            message="__array__ implementation doesn't accept a copy keyword")
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return _device_line(_import_and_list_gpus())
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        from absl import logging as absl_logging  # TensorFlow's Python-side log

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # (absl comes with TensorFlow; JAX or PyTorch may have none)
        pass
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # Deprecation and "not supported" notes that TensorFlow and Keras raise on import.
        warnings.simplefilter("ignore")
        gpus = _with_stderr_captured(_import_and_list_gpus)
    return _device_line(gpus)


def _import_and_list_gpus() -> int:
    try:
        import keras  # (imported here so that its notes are captured too)
    except ImportError as exc:  # its backend, installed (`require_training_extra`), is broken
        from trainers.errors import backend_import_failed

        if resource_exhaustion(exc):  # (not broken: mapped under `ulimit -v`, and said so)
            raise
        raise backend_import_failed(exc) from None

    from trainers.backend import gpu_count

    if keras.backend.backend() != "tensorflow" and importlib.util.find_spec("tensorflow"):
        # Keras' `set_random_seed`, which seeds every run, imports TensorFlow wherever it is
        # installed, whatever the backend (to seed tf.data): imported here, quietly, instead;
        # one that does not import is passed over there as here.
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            pass
    return gpu_count()


def _device_line(gpus: int) -> str:
    """Where a run trains. On TensorFlow's CPU it says whether TensorFlow runs its oneDNN
    kernels, which train the report's models 2.5-3 times faster than its others on a CPU
    without AVX-512 (`trainers.backend.use_onednn_kernels`): a run without them is slow for a
    reason the user can see, and undo (a `TF_ENABLE_ONEDNN_OPTS=0` of their own, or TensorFlow
    imported before `trainers`)."""
    if gpus:
        return f"training on GPU ({gpus} found)"
    import keras

    from trainers.backend import ONEDNN_VARIABLE, onednn_kernels

    onednn = onednn_kernels() if keras.backend.backend() == "tensorflow" else None
    if onednn is None:
        return "training on CPU (no GPU found)"
    if onednn:
        return "training on CPU (no GPU found), TensorFlow's oneDNN kernels"
    why = (f"{ONEDNN_VARIABLE}=0" if os.environ.get(ONEDNN_VARIABLE) == "0" else
           "TensorFlow started without them: imported before trainers, or built without them")
    return (f"training on CPU (no GPU found), without TensorFlow's oneDNN kernels ({why}; "
            f"they train 2.5-3x faster on a CPU without AVX-512)")


def _with_stderr_captured(work: Callable[[], int]) -> int:
    """Run `work` with fd 2 going to a temporary file; pass on what is not log noise (all of
    it if `work` raises: the noise may explain the failure; not for a Ctrl-C, nor for a limit
    of the system's, which it does not: under `ulimit -v` TensorFlow's start-up lines came
    before the one line that says the limit)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            result = work()
            failed = False
        except BaseException as exc:
            failed = not (isinstance(exc, KeyboardInterrupt) or resource_exhaustion(exc))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            sys.stderr.write(text if failed else filtered(text))
            sys.stderr.flush()
    return result
