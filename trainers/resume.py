"""A run's training goes on where a stopped command of the same run left it.

A run is written only when its training ends (`trainers.runs.RunWriter`), so a long one (the
flow CNN trains 45-80 minutes on a 2-core CPU) stopped by Ctrl-C, a SIGKILL, a reboot or a
preempted cloud machine lost every epoch it had trained. Now, as each epoch after the first
begins, what training needs to go on from there is saved in a hidden folder of the runs folder
(`.resume-<model>-<digest>`, the digest of its training lock: all that makes the run the one a
command trains, so a run of other parameters never starts from it): the weights with the
optimizer's state (its step count, moments, and an average's weights), the best epoch so far
(its value, logs and weights), the history and the seconds trained. The same command run again
goes on from there, each training pipeline moved on by the epochs already trained
(`trainers.data.EpochNumber.go_on_from`), so that every epoch reads the order and augmentation it would
have read, and the run ends on the weights an unstopped one ends on. Saved as an epoch begins,
not as one ends: by then an average's weights are swapped out of the model again
(`keras.callbacks.SwapEMAWeights`) and the last epoch's callbacks have all run.

The folder is removed once the run is written, or when its training fails otherwise than by a
stop (diverged: going on would diverge again), and `--retrain` starts afresh. Only the holder
of the run's training lock writes it (`trainers.runs.Training`).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from flowstore.files import write_whole

STATE_FILE = "state.json"
#: The state's layout; a folder of another is not gone on from, but trained afresh.
STATE_VERSION = 1


@dataclass(frozen=True)
class ResumePoint:
    """What a stopped training left: `epochs` epochs trained, and all that goes on from them."""

    folder: Path
    epochs: int
    history: dict[str, list[float]]
    train_seconds: float
    #: `trainers.fit.BestEpoch.state()`
    best: dict[str, Any]
    weights_file: Path
    best_weights_file: Path | None
    seeds_file: Path


def load(folder: Path) -> ResumePoint | None:
    """The resume point saved in `folder`, or None where there is none (or none whole: a
    stop while the first one was saved); one that cannot be read is said on stderr and
    trained afresh, never half used."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        print(f"warning: cannot read the resume point in {str(folder)!r} ({exc}); training "
              f"from the first epoch", file=sys.stderr)
        return None
    try:
        if state["version"] != STATE_VERSION:
            print(f"warning: the resume point in {str(folder)!r} was saved by another flowstore "
                  f"release (layout {state['version']!r}, this one reads {STATE_VERSION}); "
                  f"training from the first epoch", file=sys.stderr)
            return None
        point = ResumePoint(
            folder=folder, epochs=int(state["epochs"]),
            history={str(k): [float(v) for v in values] for k, values in state["history"].items()},
            train_seconds=float(state["train_seconds"]), best=dict(state["best"]),
            weights_file=folder / state["weights"],
            best_weights_file=folder / state["best_weights"] if state["best_weights"] else None,
            seeds_file=folder / state["seeds"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # (JSON of another shape)
        print(f"warning: the resume point in {str(folder)!r} is not one ({exc!r}); training "
              f"from the first epoch", file=sys.stderr)
        return None
    missing = [path for path in (point.weights_file, point.best_weights_file, point.seeds_file)
               if path is not None and not path.is_file()]
    if missing:
        print(f"warning: the resume point in {str(folder)!r} lacks {missing[0].name}; "
              f"training from the first epoch", file=sys.stderr)
        return None
    return point


def restore(model: keras.Model, point: ResumePoint) -> list[np.ndarray] | None:
    """Load the saved weights and optimizer state into `model` (compiled, as it was); returns
    the best epoch's weights, to give back to `BestEpoch`. The model's optimizer must be built
    (`trainers.fit.compiled` builds it): one not built has no variables to load its state into."""
    model.load_weights(point.weights_file)
    with np.load(point.seeds_file) as saved:
        for k, generator in enumerate(seed_generators(model)):
            generator.state.assign(saved[f"generator_{k}"])
    if point.best_weights_file is None:
        return None
    with np.load(point.best_weights_file) as saved:
        return [saved[f"arr_{k}"] for k in range(len(saved.files))]


def seed_generators(model: keras.Model) -> list[keras.random.SeedGenerator]:
    """The model's random states (a Dropout's), in a fixed order: each moves on at every
    training step, and Keras saves none of them with the weights, so a run going on from
    fresh ones drew other dropout masks than an unstopped one."""
    found: list[keras.random.SeedGenerator] = []

    def walk(layer: Any) -> None:
        found.extend(value for value in vars(layer).values()
                     if isinstance(value, keras.random.SeedGenerator))
        for inner in getattr(layer, "layers", ()):
            walk(inner)

    walk(model)
    return found


def _global_random_states() -> dict[str, np.ndarray]:
    """The random states outside the model that training draws from: on Keras' PyTorch
    backend a Dropout with no seed of its own draws its masks from torch's global generators
    (Keras' torch `dropout`), not from its `SeedGenerator`."""
    if keras.backend.backend() != "torch":
        return {}
    import torch

    states = {"torch_cpu": torch.random.get_rng_state().numpy()}
    if torch.cuda.is_available():
        states.update((f"torch_cuda_{k}", state.numpy())
                      for k, state in enumerate(torch.cuda.get_rng_state_all()))
    return states


def _set_global_random_states(states: dict[str, np.ndarray]) -> None:
    if not states:
        return
    import torch

    torch.random.set_rng_state(torch.from_numpy(states.pop("torch_cpu")))
    for name, state in states.items():
        torch.cuda.set_rng_state(torch.from_numpy(state), int(name.rsplit("_", 1)[1]))


def discard(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


class SaveResumePoints(keras.callbacks.Callback):
    """As each epoch after the first of this `fit` begins, save the point to go on from.

    Args:
        folder: where (made when first saved).
        best: the run's `BestEpoch`, whose state goes with the weights.
        before: the point this `fit` went on from, if any: its history and seconds go on.

    Its `history` and `train_seconds` are the whole run's so far (the point's epochs first),
    which `trainers.fit.train_model` records as the run's.
    """

    def __init__(self, folder: Path, best: Any, before: ResumePoint | None) -> None:
        super().__init__()
        self.folder, self.best, self.before = folder, best, before
        self.history: dict[str, list[float]] = {k: list(v) for k, v in
                                                (before.history if before else {}).items()}
        self.seconds_before = before.train_seconds if before else 0.0
        self._started = time.perf_counter()
        self._first: int | None = None
        self._failed = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._first is None:
            self._first = epoch
            if self.before is not None:
                # Where they were saved, not before `fit`: `fit` draws from them in between
                # (torch: each DataLoader iterator Keras makes draws its seed), as many times
                # as it did before the stop, not before this epoch.
                with np.load(self.before.seeds_file) as saved:
                    _set_global_random_states({name: saved[name] for name in saved.files
                                               if not name.startswith("generator_")})
            return
        if not self._failed:
            self._save(epoch)

    @property
    def train_seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self._started

    def _save(self, epochs: int) -> None:
        """Each epoch's files under their own names, then the state naming them (written whole:
        the commit point), then the earlier epoch's files: a stop at any moment leaves a whole
        point, this epoch's or the last."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            weights = f"epoch-{epochs}.weights.h5"
            self.model.save_weights(self.folder / weights)
            seeds = f"seeds-{epochs}.npz"
            with open(self.folder / seeds, "wb") as file:
                np.savez(file, **_global_random_states(), **{
                    f"generator_{k}": keras.ops.convert_to_numpy(generator.state)
                    for k, generator in enumerate(seed_generators(self.model))})
            best_weights = None
            if self.best.best_weights is not None:
                best_weights = f"best-{epochs}.npz"
                with open(self.folder / best_weights, "wb") as file:
                    np.savez(file, *self.best.best_weights)
            write_whole(self.folder / STATE_FILE, json.dumps({
                "version": STATE_VERSION, "epochs": epochs, "history": self.history,
                "train_seconds": self.train_seconds, "best": self.best.state(),
                "weights": weights, "best_weights": best_weights, "seeds": seeds},
                allow_nan=True))
            for path in self.folder.iterdir():
                if path.name not in (STATE_FILE, weights, best_weights, seeds):
                    path.unlink()
        except OSError as exc:
            self._failed = True
            print(f"warning: cannot save a resume point in {str(self.folder)!r} "
                  f"({exc.strerror or exc}); training goes on, but a stop now loses it",
                  file=sys.stderr)


def going_on_line(model_name: str, point: ResumePoint, epochs: int) -> str:
    """The line that says a run goes on from a stopped one."""
    return (f"{model_name}: going on after epoch {point.epochs} of {epochs}, where a stopped "
            f"command training the same run left it ({point.folder.name} in the runs folder, "
            f"{_minutes(point.train_seconds)} of training kept)")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{math.floor(seconds / 60)} min"
