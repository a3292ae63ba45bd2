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

import contextlib
import json
import math
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import keras
import numpy as np

from flowstore.console import one_line
from flowstore.files import write_whole
from flowstore.store.base import tree_bytes
from trainers.runs import RESUME_STATE_FILE as STATE_FILE

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
    with _npz(point.seeds_file) as saved:
        for k, generator in enumerate(seed_generators(model)):
            generator.state.assign(saved[f"generator_{k}"])
    if point.best_weights_file is None:
        return None
    with _npz(point.best_weights_file) as saved:
        return [saved[f"arr_{k}"] for k in range(len(saved.files))]


@contextlib.contextmanager
def _npz(path: Path) -> Iterator[Any]:
    """A resume point's `.npz`, opened; one cut short or of other bytes (its files are not
    fsynced: a crash of the machine) is a ValueError naming it, for the caller's one line,
    not zipfile's BadZipFile, an internal error, or numpy's advice to unpickle it (found by
    review)."""
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as saved:
            yield saved  # (numpy's own open leaks its file where the bytes are no .npz)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"{path.name} is not a whole resume file ({type(exc).__name__})") \
            from None


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
                with _npz(self.before.seeds_file) as saved:
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
        point, this epoch's or the last.

        Only where the disk holds it beside the run still to be written (`_room_for`): on a
        disk that filled up, the point took the room the run needed (every rerun then failed
        alike), its files were left cut short, and h5py, whose file Keras leaves half written
        when a write fails, crashed the process at its exit (found by review). What a save
        that fails anyway wrote of this epoch is removed again."""
        weights = f"epoch-{epochs}.weights.h5"
        seeds = f"seeds-{epochs}.npz"
        best_weights = f"best-{epochs}.npz" if self.best.best_weights is not None else None
        try:
            room = self._room_for()
            if room is not None:
                self._failed = True
                print(f"warning: no room for a resume point in {str(self.folder)!r} ({room}); "
                      f"training goes on, but a stop now loses it", file=sys.stderr)
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            self.model.save_weights(self.folder / weights)
            with open(self.folder / seeds, "wb") as file:
                np.savez(file, **_global_random_states(), **{
                    f"generator_{k}": keras.ops.convert_to_numpy(generator.state)
                    for k, generator in enumerate(seed_generators(self.model))})
            if best_weights is not None:
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
            committed = _committed_files(self.folder)
            for name in (weights, seeds, best_weights):
                if name is not None and name not in committed:
                    with contextlib.suppress(OSError):
                        (self.folder / name).unlink()
            print(one_line(f"warning: cannot save a resume point in {str(self.folder)!r} "
                           f"({exc.strerror or exc}); training goes on, but a stop now loses "
                           f"it"), file=sys.stderr)

    def _room_for(self) -> str | None:
        """None where the folder's disk holds a new point and, once the last is removed, the
        run still to be written (each about the model's and its optimizer's variables, Keras'
        `.weights.h5` and `model.keras` alike, the point's best weights besides); else what
        it would need and has, for the warning."""
        state = sum(_bytes(v) for v in (*self.model.variables,
                                         *getattr(self.model.optimizer, "variables", ())))
        best = sum(_bytes(v) for v in self.model.weights) if self.best.best_weights else 0
        needed = 2 * state + best + ROOM_MARGIN
        existing = self.folder if self.folder.is_dir() else self.folder.parent
        kept = tree_bytes(self.folder) if self.folder.is_dir() else 0  # (removed once saved)
        free = shutil.disk_usage(existing).free + kept
        if free >= needed:
            return None
        return (f"it and the run need about {needed / 2**20:.0f} MiB, "
                f"{free / 2**20:.0f} MiB are free")


#: Room kept beyond a resume point's and its run's estimated bytes (their metadata, the run's
#: figures and history).
ROOM_MARGIN = 16 * 2**20


def _bytes(variable: Any) -> int:
    return int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize


def _committed_files(folder: Path) -> set[str]:
    """The files the resume point in `folder` names (its `state.json`), where it has one."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        return {name for name in (state["weights"], state["seeds"], state["best_weights"])
                if isinstance(name, str)}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def going_on_line(model_name: str, point: ResumePoint, epochs: int) -> str:
    """The line that says a run goes on from a stopped one."""
    return (f"{model_name}: going on after epoch {point.epochs} of {epochs}, where a stopped "
            f"command training the same run left it ({point.folder.name} in the runs folder, "
            f"{_minutes(point.train_seconds)} of training kept)")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{math.floor(seconds / 60)} min"
