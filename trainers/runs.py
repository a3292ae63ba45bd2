"""Run directories: where a training run's results live, and how later runs find them.

A run directory `RUNS_DIR/<model>-<fingerprint[:8]>-<YYYYmmdd-HHMMSS>[-k]` holds `model.keras`,
`history.json`, `metrics.json` and `curves.png`. It is written under a hidden `.partial-` name
and renamed when complete, so a run that crashed or was killed never looks like a finished one;
`metrics.json` is what later runs and `trainers report` read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import secrets
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from flowstore.leftovers import process_gone
from flowstore.store.base import tree_bytes
from flowstore.store.lock import held_by_a_live_process, work_lock
from trainers.catalogue import canonical_name
from trainers.errors import (DamagedRunError, ModelConfigError, RunNotFoundError, RunsFolderError,
                             RunWriteError)
from trainers.recipes import recorded_recipe

#: The `metrics.json` fields that say how a run was trained, beyond the store it trained on.
#: Each changes the weights a run ends with: the recipe (epochs, batch size, learning rate and
#: its schedule; a tuned recipe's set, regularization and augmentation too), the seed (initial
#: weights, shuffling, flips), augmentation, the dtype policy (the numbers the weights are
#: computed in: `--mixed-precision` gives float16 on a GPU, bfloat16 on a CPU) and the Keras
#: backend (its seeded shuffles are its own). The device otherwise, timings and the input
#: pipeline do not, so they are not here. A run stands in for one that would be trained now
#: only when all of these are equal (`trainers.fit.computed_as` gives the last two).
TRAINING_FIELDS = ("recipe", "seed", "augment", "dtype_policy", "keras_backend")
#: What a run from before a field was recorded trained with: every run before 447ca91
#: (2026-12-03) on TensorFlow, the one backend then.
UNRECORDED_TRAINING = {"keras_backend": "tensorflow"}

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
PARTIAL_PREFIX = ".partial-"
#: What every `.keras` file holds (Keras 3's saving format), each under one of its names: its
#: architecture and its weights.
MODEL_MEMBERS = (("config.json",), ("model.weights.h5", "model.weights.npz"))


@dataclass(frozen=True)
class DoneSamples:
    """Which samples of a store were `done` when a run trained: how many per split
    (`metrics.json`'s `samples`) and a digest of which (`samples_digest`,
    `trainers.samples.StoreSamples.done_samples`). The counts alone do not tell two states of
    a store apart when a sample was repaired while another failed."""

    counts: Mapping[str, int]
    digest: str
    #: The store's `columns_digest` (`flowstore.reader.dataset.StoreDataset`): the digest
    #: above is of positions, and two stores of one fingerprint may hold other clips at them
    #: (a dataset's own split files enter the fingerprint by name and size only).
    columns: str = ""


@dataclass(frozen=True)
class RunRecord:
    """A finished run directory and its `metrics.json`."""

    path: Path
    metrics: dict[str, Any]

    @property
    def model(self) -> str:
        """The model's catalogue name: a run recorded under the report's name (`tvhi_flow`)
        is the same model's (`flow`)."""
        return canonical_name(str(self.metrics.get("model", "")))

    @property
    def created(self) -> str:
        return str(self.metrics.get("created", ""))

    @property
    def store(self) -> dict[str, Any]:
        return dict(self.metrics.get("store", {}))

    @property
    def fingerprint(self) -> str:
        return str(self.store.get("fingerprint", ""))

    @property
    def dataset(self) -> str:
        """The dataset of the run's store ("tvhi"); "" where the run did not record it."""
        return str(self.store.get("dataset", ""))

    @property
    def samples(self) -> dict[str, int] | None:
        """The store's `done` samples per split when the run trained (`metrics.json`)."""
        recorded = self.metrics.get("samples")
        return dict(recorded) if isinstance(recorded, Mapping) else None

    def started_from(self, bases: Mapping[str, str | None]) -> bool:
        """Whether the runs it started from (`metrics.json`'s `bases`, model name to resolved
        run path) include `bases`. A run is known by its directory's name, which is unique in
        its runs folder: `metrics.json` records the path it had then, and a runs folder moved
        or copied since still holds the same runs."""
        recorded = self.metrics.get("bases") or {}
        return all(run_dir_name(recorded.get(name)) == run_dir_name(path)
                   for name, path in bases.items())

    def base_run(self, model: str) -> "RunRecord | None":
        """The recorded base run of `model` this run started from: where `metrics.json` says,
        or, where that path is gone (a runs folder moved or copied since), the run of that name
        beside this one."""
        path = (self.metrics.get("bases") or {}).get(model)
        if not path:
            return None
        return read_run(path) or read_run(self.path.parent / run_dir_name(path))

    @property
    def samples_digest(self) -> str | None:
        """The digest of the store's `done` samples when the run trained (`DoneSamples`);
        None for a run from before it was recorded."""
        recorded = self.metrics.get("samples_digest")
        return recorded if isinstance(recorded, str) else None

    @property
    def columns_digest(self) -> str | None:
        """The digest of its store's classes and id, label and split columns when it trained
        (`DoneSamples.columns`); None for a run from before it was recorded."""
        recorded = self.metrics.get("columns_digest")
        return recorded if isinstance(recorded, str) else None

    def same_columns(self, done: "DoneSamples") -> bool:
        """Whether its store listed the same samples in the same splits as the one `done` is
        of, where the run recorded it."""
        return self.columns_digest in (None, done.columns)

    def trained_on(self, done: "DoneSamples") -> bool:
        """Whether it trained while the store held these `done` samples: as many per split
        and, where the run recorded their digests, the same ones, listed alike."""
        return (self.samples == dict(done.counts)
                and self.samples_digest in (None, done.digest) and self.same_columns(done))

    def as_many_but_others(self, done: "DoneSamples") -> bool:
        """Whether the store holds as many `done` samples per split as when the run trained
        but not the same ones (its recorded digest differs: repaired or failed since), so
        that a score on it is not the one the run recorded though every count agrees."""
        return self.samples == dict(done.counts) and not self.trained_on(done)

    @property
    def input_size(self) -> int | None:
        size = self.store.get("params", {}).get("size")
        return None if size is None else int(size)

    @property
    def training(self) -> dict[str, Any]:
        """How the run was trained (`TRAINING_FIELDS`); a field it lacks reads as
        `UNRECORDED_TRAINING` has it, else `None`."""
        return {name: self.metrics.get(name, UNRECORDED_TRAINING.get(name))
                for name in TRAINING_FIELDS}

    def training_differences(self, training: Mapping[str, Any]) -> list[str]:
        """What in this run's training differs from `training`, as "epochs 1, not 20" phrases
        (recipe fields by their own names) in `TRAINING_FIELDS` order; empty when it matches.
        Only the fields `training` names are compared (a transfer base ignores the seed)."""
        ran = self.training
        differences = []
        for name in (n for n in TRAINING_FIELDS if n in training):  # a caller may ask fewer
            wanted, got = training[name], ran[name]
            if got is None and wanted is not None:  # a run from before it was recorded
                differences.append(f"no recorded {name}")
            elif name == "recipe" and isinstance(wanted, Mapping) and isinstance(got, Mapping):
                # A key only one side records (a tuned recipe's `recipe_set`, weight decay...)
                # differs too: a report recipe records none of them. A field added later reads
                # as its default where unrecorded ("segment_views False, not True").
                wanted, got = recorded_recipe(wanted), recorded_recipe(got)
                differences += [f"{key} {got.get(key)!r}, not {wanted.get(key)!r}"
                                for key in [*wanted, *(k for k in got if k not in wanted)]
                                if got.get(key) != wanted.get(key)]
            elif got != wanted:
                differences.append(f"{name} {got!r}, not {wanted!r}")
        return differences

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def curves_file(self) -> Path:
        return self.path / CURVES_FILE

    def whole_curves(self) -> bytes | None:
        """Its curves.png where that decodes as a whole PNG (None: missing, or cut short,
        emptied, not a PNG: a report copied such a file as it was)."""
        from PIL import Image

        try:
            data = self.curves_file.read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "PNG":
                    return None
                image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            return None  # (PIL: OSError when cut short or no image, SyntaxError: a bad chunk)
        return data

    def history(self) -> dict[str, list[float]] | None:
        """Its history.json (metric name -> a number per epoch, some epoch there) where it is
        one: None where it is missing, unreadable, empty, hand-edited or foreign."""
        try:
            history = json.loads((self.path / HISTORY_FILE).read_text())
        except (OSError, ValueError):
            return None
        if isinstance(history, dict):  # (an epoch's figure that was no number: `write_json`)
            history = {key: [math.nan if value is None else value for value in values]
                       if isinstance(values, list) else values
                       for key, values in history.items()}
        usable = isinstance(history, dict) and any(history.values()) and all(
            isinstance(values, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            for values in history.values())
        return history if usable else None  # ({}: empty axes were drawn for it)

    def curves_unavailable(self) -> str:
        """Why it has no curves to show, file by file: missing, or there but unusable (a
        damaged file is never said to be missing, as `DamagedRunError` says of a run)."""
        history = self.path / HISTORY_FILE
        return " and ".join([
            f"its {CURVES_FILE} is not a whole PNG" if self.curves_file.exists()
            else f"no {CURVES_FILE}",
            f"its {HISTORY_FILE} is not a training history" if history.exists()
            else f"no {HISTORY_FILE}"])


def _entries(runs_dir: str | Path) -> list[Path]:
    """What `runs_dir` holds, sorted; nothing where it is missing or not a folder.

    Raises:
        RunsFolderError: the system refuses to look into it (a folder of another user's, a
            name too long), which `Path.is_dir` raises where it answers False only for a
            missing path: a traceback and "internal error" from `trainers report` and `run`.
    """
    runs_dir = Path(runs_dir)
    try:
        return sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []
    except OSError as exc:
        raise RunsFolderError(f"cannot read runs folder {str(runs_dir)!r}: "
                              f"{exc.strerror or exc}") from None


def list_runs(runs_dir: str | Path) -> list[RunRecord]:
    """Every finished run under `runs_dir`, oldest first; a missing folder has none."""
    records = []
    for path in _entries(runs_dir):
        if path.name.startswith(".") or not path.is_dir():
            continue
        record = read_run(path)
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda r: (r.created, r.path.name))


def read_run(path: str | Path) -> RunRecord | None:
    """The record of a finished run directory, or `None` if `path` is not one: no
    `model.keras`, or a `metrics.json` that is not JSON or not of a run's types
    (`_well_formed`)."""
    found = _run_or_why(Path(path))
    return found if isinstance(found, RunRecord) else None


def _run_or_why(path: Path) -> "RunRecord | str":
    """The record of the finished run directory `path`, or why it is not one."""
    try:
        metrics = json.loads((path / METRICS_FILE).read_text())
    except FileNotFoundError:
        return f"no {METRICS_FILE}"
    except OSError as exc:  # (another user's run: "Permission denied", not damage)
        return f"its {METRICS_FILE} cannot be read: {exc.strerror or exc}"
    except (ValueError, RecursionError):  # (RecursionError: nested too deep)
        return f"its {METRICS_FILE} cannot be read as JSON"
    if not _well_formed(metrics):
        return f"its {METRICS_FILE} is not a run's"
    if not (path / MODEL_FILE).is_file():
        return f"no {MODEL_FILE} file"
    return RunRecord(path=path, metrics=metrics)


def unreadable_runs(runs_dir: str | Path, *,
                    resume_points: bool = True) -> list[tuple[Path, str]]:
    """The folders of `runs_dir` that hold a run's files (`metrics.json` or `model.keras`) but
    do not read as a finished run (`read_run`), each with why: `list_runs` leaves them out,
    and a report that does not say so lets a damaged run vanish from its tables unnoticed.
    And the work folders of runs killed while they were written (`_dead_writer`), and, with
    `resume_points`, the resume points of stopped runs that no training holds
    (`_stopped_run`)."""
    found = []
    for path in _entries(runs_dir):
        writer = _dead_writer(path)
        if writer is not None:
            found.append((path, f"the work folder of a run killed while it was written: pid "
                                f"{writer} is not running on this machine; delete it"))
            continue
        stopped = _stopped_run(path)
        if stopped is not None:
            if resume_points:
                found.append((path, stopped))
            continue
        if path.name.startswith(".") or not holds_run_files(path):
            continue  # (hidden, a file, or not a run's folder at all)
        why = _run_or_why(path)
        if isinstance(why, str):
            found.append((path, why))
    return found


def stopped_runs(runs_dir: str | Path) -> list[tuple[Path, str]]:
    """The resume points in `runs_dir` of stopped runs that no training holds, each with what
    it is (`_stopped_run`): those of `unreadable_runs` alone."""
    return [(path, why) for path in _entries(runs_dir)
            if (why := _stopped_run(path)) is not None]


def _stopped_run(path: Path) -> str | None:
    """What a `RESUME_PREFIX` folder is where no training holds it: a stopped run's resume
    point (`trainers.resume`), some three models' size, kept for the same command to go on
    from. One whose command is never run again (another --epochs, the store rebuilt) stayed
    unseen and unremoved forever (found by review). None for anything else, and for one that
    a running training holds (its lock file names a live process here, or another host's)."""
    if not path.name.startswith(RESUME_PREFIX) or not path.is_dir():
        return None
    lock = path.with_name(f"{TRAINING_LOCK_PREFIX}{path.name[len(RESUME_PREFIX):]}.lock")
    if held_by_a_live_process(lock):
        return None
    try:
        size = f"{tree_bytes(path) / 2**20:.0f} MiB"
    except OSError:  # (another user's: its size cannot be told)
        size = "size unknown"
    if not (path / RESUME_STATE_FILE).exists():  # (a stop while its first point was saved)
        return (f"a stopped run's resume point never finished, {size}: nothing goes on from "
                f"it (its command trains from the first epoch); delete it")
    return (f"a stopped run's resume point, {size}: the same `trainers run` command goes on "
            f"from it, --retrain discards it; delete it where that command will not run again")


#: The file that makes a resume folder a point to go on from (its commit point: `trainers.resume`,
#: which imports Keras, takes the name from here).
RESUME_STATE_FILE = "state.json"


def holds_run_files(path: str | Path) -> bool:
    """Whether `path` is a folder holding a run's files (`metrics.json` or `model.keras`): a
    run directory, finished or damaged, not a folder of runs."""
    path = Path(path)
    try:
        return path.is_dir() and ((path / METRICS_FILE).exists()
                                  or (path / MODEL_FILE).exists())
    except OSError:  # (a folder that cannot be searched: taken as a run, which says why)
        return True


def _dead_writer(path: Path) -> int | None:
    """The pid in the name of `RunWriter`'s work folder `path` (`.partial-<run>-<pid>-<hex>`)
    where no process of it runs here: a run killed (SIGKILL, a power cut) while it was written
    left it, a whole model, unseen (its name is hidden); None for anything else, and for a
    writer that may still be writing (its pid alive, or the folder not its own to tell)."""
    parts = path.name.rsplit("-", 2)
    if not path.name.startswith(PARTIAL_PREFIX) or len(parts) != 3 or not parts[1].isdigit():
        return None
    pid = int(parts[1])
    return pid if process_gone(pid) else None


def enclosing_run(path: str | Path) -> Path | None:
    """The finished run directory (any, not only those of one runs folder) that `path` is or
    lies inside, links resolved; None where there is none. A file written there can replace
    its record (`--out runs/flow-x/metrics.json`: the run gone from every later report)."""
    target = Path(os.path.realpath(path))
    return next((place for place in (target, *target.parents) if read_run(place) is not None),
                None)


def require_run(path: str | Path, what: str) -> RunRecord:
    """The record of the finished run directory at `path`, which a command takes as `what`
    (`--base`, `run`), its model file checked to be whole before TensorFlow starts.

    Raises:
        ModelConfigError: `path` is not a finished run directory.
        RunNotFoundError, DamagedRunError: its `model.keras` is gone or damaged
            (`require_model_file`).
    """
    record = read_run(path)
    if record is None:
        raise ModelConfigError(f"{what} {str(path)!r} is not a finished run directory (no "
                               f"readable metrics.json and model.keras)")
    require_model_file(record.model_file)
    return record


def _well_formed(metrics: Any) -> bool:
    """Whether `metrics` has the types that run lookups and reports read without further
    checks, where it records the field at all (older runs lack some): a hand-edited or foreign
    `metrics.json` (`"best": []`, `"store": "tvhi"`) is then not a run, as an unparsable one
    is not, where it was a traceback wherever a field was read. Its `model` must be a plain
    name (`_plain_name`): reports name rows and write figure files by it; its `created` and
    its store's `dataset` text (`"created": null` sorted as the latest run, and a dataset
    `["x"]` named a row `['x']`); its store's `classes` a list of names (a number was a
    traceback of `predict`, a string named the classes by its letters); its `samples` counts
    by split (`predict --split all` summed them)."""
    if not isinstance(metrics, dict) or not _plain_name(metrics.get("model")):
        return False
    store, best, recipe = (metrics.get(name, {}) for name in ("store", "best", "recipe"))
    test, bases = metrics.get("test") or {}, metrics.get("bases") or {}
    if not all(isinstance(part, Mapping) for part in (store, best, recipe, test, bases)):
        return False
    params = store.get("params", {})
    classes, samples = store.get("classes"), metrics.get("samples") or {}
    if not (classes is None or isinstance(classes, list)
            and all(isinstance(name, str) for name in classes)):
        return False
    if not (isinstance(samples, Mapping) and all(
            isinstance(count, int) and not isinstance(count, bool) and count >= 0
            for count in samples.values())):
        return False
    return (isinstance(params, Mapping) and isinstance(params.get("size"), (int, type(None)))
            and isinstance(store.get("path", ""), str)
            and isinstance(store.get("dataset", ""), str)  # a row's name ("TV-HI flow")
            and isinstance(metrics.get("created", ""), str)  # the order runs are found in
            and isinstance(recipe.get("recipe_set", ""), str)
            and all(_number(value) for value in (
                *best.values(), test.get("loss"), metrics.get("model_size_gb")))
            and all(value is None or _number(value) and 0 <= value <= 1 for value in (
                test.get("accuracy"),
                *(value for name, value in best.items() if name.endswith("accuracy"))))
            and all(isinstance(value, (str, type(None))) for value in bases.values())
            and all(value is None or isinstance(value, int) and not isinstance(value, bool)
                    for value in (metrics.get("seed"), metrics.get("best_epoch"))))


def _number(value: Any) -> bool:
    """A recorded figure or None: JSON's `true` is a Python int, printed "True" as a seed. A
    loss may be NaN (a run that diverged is still a run); an accuracy is a fraction of clips,
    so `_well_formed` also holds it to 0..1, which NaN fails."""
    return value is None or isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain_name(name: Any) -> bool:
    """Whether a recorded model name is one a file may be named by (`MODEL_curves.png`): a
    non-empty string that is no path (`"../escape"` wrote a figure outside `--out`) and no
    blank (a foreign folder's `{}` was a blank-named row in every table)."""
    return (isinstance(name, str) and name.strip() == name and name not in ("", ".", "..")
            and "/" not in name and "\\" not in name and Path(name).name == name)


def require_model_file(path: str | Path) -> Path:
    """`path`, checked to be a whole `.keras` file before anything loads it.

    A `.keras` file is a zip archive, whose directory comes last: one cut short has none, and
    Keras then says "File not found" of a file that is there. This reads only that directory,
    so `--base` is checked before TensorFlow starts.

    Raises:
        RunNotFoundError: there is no file at `path`.
        DamagedRunError: the file is not a whole zip archive, or one without a Keras model's
            members (`MODEL_MEMBERS`).
        RunsFolderError: the system refuses to read it (Permission denied).
    """
    path = Path(path)
    if not path.is_file():
        raise RunNotFoundError(f"no model file at {str(path)!r}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
    except OSError as exc:  # (another user's file: not said to be cut short)
        raise RunsFolderError(f"cannot read model file {str(path)!r}: "
                              f"{exc.strerror or exc}") from None
    except zipfile.BadZipFile:
        raise DamagedRunError(f"model file {str(path)!r} is damaged or unreadable (not a whole "
                              f".keras file: cut short?)") from None
    lacking = [names for names in MODEL_MEMBERS if not members & set(names)]
    if lacking:
        raise DamagedRunError(f"model file {str(path)!r} is damaged or unreadable (a whole zip "
                              f"archive without {' or '.join(lacking[0])}: not a Keras model "
                              f"file)")
    return path


def latest_runs(runs_dir: str | Path) -> list[RunRecord]:
    """The most recent finished run of each model on each store under `runs_dir` (by model and
    store fingerprint), oldest first. One run per model hid the rest: a UCF101 flow run took
    the TV-HI flow run's place in the tables, beside a two-stream run that fuses the hidden one.

    Raises:
        RunNotFoundError: `runs_dir` does not exist, or is a file, a store or a run directory.
    """
    from flowstore.store import is_store

    if is_store(runs_dir):  # a store passed where its runs were meant: say so, not "no runs"
        raise RunNotFoundError(f"{str(runs_dir)!r} is a store, not a runs directory (the "
                               f"--runs-dir of trainers run, default runs)")
    # one run passed for the folder of them: not "no runs" either (a finished one, as
    # `enclosing_run` tells it: a runs folder may hold a model.keras copied beside its runs)
    if read_run(runs_dir) is not None:
        parent = os.path.dirname(os.path.abspath(runs_dir))  # (of "." too: "..")
        parent = parent if Path(runs_dir).is_absolute() else os.path.relpath(parent)
        raise RunNotFoundError(f"{str(runs_dir)!r} is a run directory, not a runs directory: "
                               f"pass the folder that holds it ({str(parent)!r})")
    if not Path(runs_dir).is_dir():
        raise RunNotFoundError(f"{str(runs_dir)!r} is a file, not a runs directory"
                               if Path(runs_dir).exists()
                               else f"no runs directory at {str(runs_dir)!r}")
    latest: dict[tuple[str, str], RunRecord] = {}
    for record in list_runs(runs_dir):  # oldest first, so later ones win
        latest.pop((record.model, record.fingerprint), None)  # (kept in the order of the latest)
        latest[record.model, record.fingerprint] = record
    return list(latest.values())


def find_run(runs_dir: str | Path, model: str, *, fingerprint: str | None = None,
             dataset: str | None = None, size: int | None = None,
             training: Mapping[str, Any] | None = None,
             bases: Mapping[str, str] | None = None,
             samples: DoneSamples | None = None) -> RunRecord | None:
    """The most recent finished run of `model` matching every given criterion.

    Args:
        runs_dir: where to look.
        model: model name (catalogue name; runs recorded under an alias match too).
        fingerprint: the run's store fingerprint must equal this.
        dataset: the run's store dataset must equal this.
        size: the run's input frame size must equal this.
        training: the run's `TRAINING_FIELDS` must equal this (see
            `RunRecord.training_differences`).
        bases: the runs the run started from (`metrics.json`'s `bases`, model name to
            resolved run path) must include these.
        samples: the store's `done` samples when the run trained must be these: a run
            trained while the store was partly built is not a run of the finished store,
            though its fingerprint is the same.
    """
    model = canonical_name(model)
    matches = [
        r for r in list_runs(runs_dir)
        if r.model == model
        and (fingerprint is None or r.fingerprint == fingerprint)
        and (dataset is None or r.dataset == dataset)
        and (size is None or r.input_size == size)
        and (training is None or not r.training_differences(training))
        and (bases is None or r.started_from(bases))
        and (samples is None or r.trained_on(samples))
    ]
    return matches[-1] if matches else None


def split_counts(counts: Mapping[str, int] | None) -> str:
    """Samples per split as messages and report labels say them: `12 train / 4 val / 8 test`."""
    if counts is None:
        return "an unrecorded number of"
    return " / ".join(f"{counts.get(split, 0)} {split}" for split in ("train", "val", "test"))


def run_name(model: str, fingerprint: str, when: float | None = None) -> str:
    """`<model>-<fingerprint[:8]>-<YYYYmmdd-HHMMSS>`: sorts by model, then store, then time."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    return f"{model}-{(fingerprint or 'nofp')[:8]}-{stamp}"


class RunWriter:
    """Writes one run into a hidden folder and publishes it by renaming when it is complete.

    Used as a context manager, it removes the hidden folder when writing it fails or is
    interrupted (a full disk, Ctrl-C while the model is saved): nothing reads it, and it holds
    a whole model (about 95 MB for the flow model at 224 px).
    """

    def __init__(self, runs_dir: str | Path, model: str, fingerprint: str) -> None:
        runs_dir = Path(runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        base = run_name(model, fingerprint)
        self.final = _unique(runs_dir, base)
        # (a folder of its own even for two runs of one name in one process and second; made
        # by mkdir, not mkdtemp, for the umask's mode, not 0700)
        self.work = runs_dir / (f"{PARTIAL_PREFIX}{self.final.name}-{os.getpid()}-"
                                f"{secrets.token_hex(4)}")
        self.work.mkdir()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, kind: type | None, *_: Any) -> None:
        if kind is not None:
            shutil.rmtree(self.work, ignore_errors=True)

    def publish(self) -> Path:
        """Rename the finished run into place; returns its final path.

        Two runs of one model on one store may finish in the same second (two shells, or two
        seeds in parallel): the name both chose is taken by whichever renames first, and the
        other takes the next free name (`<name>-2`). Checking first and renaming after would
        leave a window between the two; the rename itself is the check (a published run is
        never empty, so renaming onto it fails)."""
        for final in _names(self.final.parent, self.final.name):
            try:
                self.work.rename(final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue  # published by another run since this one chose its name
                raise
            return final
        raise RunWriteError(f"no free run name left beside {self.final}")


#: Where a run being trained is said to be: `.training-<model>-<digest>.lock` in the runs folder,
#: the digest of all that makes a run the one another command would reuse (`training_lock`).
TRAINING_LOCK_PREFIX = ".training-"
#: Where a run being trained keeps what it needs to go on after a stop (`trainers.resume`):
#: `.resume-<model>-<digest>/`, the same digest.
RESUME_PREFIX = ".resume-"


@dataclass(frozen=True)
class Training:
    """A run being trained, as `training_lock` holds it."""

    #: Whether this process holds the lock: no other trains the same run meanwhile.
    held: bool
    #: Where this run's resume points go (`trainers.resume`); only its lock's holder writes
    #: there, so None where the lock is not held.
    resume_folder: Path | None


@contextlib.contextmanager
def training_lock(runs_dir: str | Path, model: str, identity: Mapping[str, Any], *,
                  on_wait: Callable[[str], None] | None) -> Iterator[Training]:
    """Say, for the block, that this process trains the run of `model` that `identity`
    describes (the store's fingerprint and done samples, the training fields, the bases it
    starts from: what a run must match to be reused) into `runs_dir`.

    With `on_wait` (a prerequisite, which this process would reuse if another had trained it):
    first wait for whoever trains the same run (`on_wait` is told who, before the wait), so
    that two commands needing one prerequisite train it once. Without (the run a command was
    asked for, trained anew whoever else trains the same): held unless another holds it, never
    waiting.

    Raises:
        RunWriteError: the lock's file cannot be made in `runs_dir`.
    """
    digest = hashlib.sha256(json.dumps({"model": model, **identity}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:16]
    path = Path(runs_dir) / f"{TRAINING_LOCK_PREFIX}{model}-{digest}.lock"
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(work_lock(path, on_wait=on_wait))
        except OSError as exc:
            raise RunWriteError(f"cannot make the lock file {str(path)!r} that says a {model} "
                                f"run trains ({exc.strerror or exc})") from None
        yield Training(held, Path(runs_dir) / f"{RESUME_PREFIX}{model}-{digest}" if held
                       else None)


def run_dir_name(path: str | os.PathLike | None) -> str | None:
    """The name a run is known by, from a recorded path (`metrics.json`'s `bases`)."""
    return Path(path).name if path else None


def _names(folder: Path, base: str) -> Iterator[Path]:
    """`base`, then `base-2`, `base-3`, ...: the names a run may take in `folder`."""
    return (folder / (base if k == 1 else f"{base}-{k}") for k in range(1, 10_000))


def _unique(folder: Path, base: str) -> Path:
    return next(p for p in _names(folder, base) if not p.exists())


def write_json(path: Path, value: Any) -> None:
    """Pretty, key-sorted JSON (diff-friendly; humans read these files), strict: a figure that
    is no finite number (a loss of a run that diverged) is written `null`. Python's `NaN`,
    which json writes by default, is no JSON: JavaScript's and Go's parsers refused the run's
    files (found by review); `RunRecord.history` reads such a null back as NaN."""
    path.write_text(json.dumps(_finite_or_null(value), indent=2, sort_keys=True,
                               allow_nan=False) + "\n")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value
