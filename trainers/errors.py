"""Errors the trainers raise on purpose, inside flowstore's one hierarchy.

Deriving from `flowstore.errors.FlowstoreError` lets the trainers CLI treat a bad model name, a
store of the wrong dataset and a bad store path alike: one line on stderr, exit code 2. Each class
also derives from the builtin it resembles so that plain `except ValueError` keeps working.
"""

from __future__ import annotations

import importlib.util

from flowstore.errors import FlowstoreError


class TrainerError(FlowstoreError):
    """Base class of every error the trainers raise on purpose."""


class UnknownModelError(TrainerError, KeyError):
    """A model name that is not one of the four of the report."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class ModelConfigError(TrainerError, ValueError):
    """A model factory, recipe or run option got a value it cannot use."""


class WrongDatasetError(TrainerError, ValueError):
    """A store holds another dataset (or other features) than the model trains on."""


class NoSamplesError(TrainerError, ValueError):
    """A split the run needs has no finished (`done`) sample in the store."""


class RunNotFoundError(TrainerError, FileNotFoundError):
    """A runs directory, or a run that a model builds on, is missing or incomplete."""


class DamagedRunError(TrainerError, ValueError):
    """A run directory's file is there but cannot be read (a copy cut short, a full disk while
    it was written): said as damage, since "not found" would send a user looking for a file
    that is there."""


class TrainingDivergedError(TrainerError, ArithmeticError):
    """Every epoch of a training ended with weights that are not all finite (NaN or infinite):
    no epoch is worth keeping, and such a model still scores (a constant output at chance), so
    it would be published as if it had learnt nothing."""


class RunInterruptedError(KeyboardInterrupt):
    """`trainers run` was stopped by Ctrl-C; the message says which runs were written (each
    run is written whole at the end of its training, so a stopped one left nothing), so a user
    knows what running the command again redoes. A KeyboardInterrupt still, not a
    FlowstoreError: code that catches those must not carry on after a Ctrl-C."""


class RunsFolderError(TrainerError, OSError):
    """A runs folder, or a run's file, that the system refuses to look into or read (another
    user's, a name too long): not damage."""


class RunWriteError(TrainerError, OSError):
    """A trained run cannot be written into `--runs-dir` (a full disk, a folder made read-only
    during training); nothing of it is left there."""


class ReportOutputError(TrainerError, OSError):
    """A report file (`trainers report --html FILE`) cannot be written."""


class MissingTrainingExtraError(TrainerError, ImportError):
    """Keras, its backend or matplotlib is not installed: the `train` extra (TensorFlow) or the
    `keras` extra and a backend (JAX, PyTorch) is missing; or Keras is set to a backend that
    cannot train, or cannot start it (a backend installed but broken, a keras.json that is not
    a JSON object): the user's set-up, not a bug in trainers."""


#: The modules every backend's training needs beside the backend's own, and how a user knows them.
_KERAS_EXTRA_MODULES = {"keras": "Keras", "matplotlib": "matplotlib"}


def require_training_extra() -> None:
    """Refuse with one actionable line when what training needs is not installed.

    flowstore installs without TensorFlow (`pip install flowstore` builds stores on machines
    that never train), so its absence is the user's set-up, not a bug. It is checked before any
    work (and without importing TensorFlow, which takes seconds) so that a run does not start
    training its prerequisites and then end in an import traceback. The backend checked is the
    one Keras is set to (`trainers.backend.configured_backend`): TensorFlow, from the `train`
    extra, unless `KERAS_BACKEND` (or keras.json) names JAX or PyTorch.

    Raises:
        MissingTrainingExtraError: a module of the extra cannot be found, or the backend is
            not one that trains.
    """
    from trainers.backend import TRAINING_BACKENDS, configured_backend

    backend = configured_backend()
    if backend not in TRAINING_BACKENDS:
        names = ", ".join(TRAINING_BACKENDS)
        raise MissingTrainingExtraError(
            f"trainers train on Keras' {names} backends, not {backend!r} (KERAS_BACKEND or "
            f"keras.json): KERAS_BACKEND=tensorflow, for one")
    module, package = TRAINING_BACKENDS[backend]
    for name, label in {module: package, **_KERAS_EXTRA_MODULES}.items():
        if importlib.util.find_spec(name) is None:
            raise MissingTrainingExtraError(
                f"trainers needs {label}" + ("" if backend == "tensorflow" else
                                             f" for Keras' {backend} backend")
                + f": {install_command(backend)}")


def install_command(backend: str, *, again: bool = False) -> str:
    """The pip command that installs what training on `backend` needs (`again`: over a broken
    installation)."""
    from trainers.backend import TRAINING_BACKENDS

    force = "--force-reinstall " if again else ""
    if backend == "tensorflow":
        return f"pip install {force}'flowstore[train]'"
    return f"pip install {force}'flowstore[keras]' {TRAINING_BACKENDS[backend][0]}"


def backend_import_failed(exc: ImportError) -> MissingTrainingExtraError:
    """The one-line refusal for a backend that is installed (`require_training_extra` found it)
    but fails to import as Keras starts (jax without jaxlib, a jaxlib of another jax release,
    a torch missing a library it was built with): it was a traceback and "a bug in trainers"."""
    from trainers.backend import configured_backend

    backend = configured_backend()
    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return MissingTrainingExtraError(
        f"Keras cannot start its {backend} backend, installed but failing to import ({why}): "
        f"{install_command(backend, again=True)}")
