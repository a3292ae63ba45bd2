"""`trainers run`: train a model on a store, training or finding the runs it builds on first.

Which runs a model builds on is its catalogue entry's (`trainers.catalogue`): a model it
`transfers_from` (`frames` from `image`) is the latest run of that model with the same input
size on any store (Stanford-40 features for UCF101 frames, say), and without one it trains from
scratch with a warning; a model it `requires` (`two_stream` freezes `frames` and `flow`) is a run
of the same store (same fingerprint), trained on the way when missing. Prerequisite runs are
found in the runs directory by their `metrics.json`. A run found there is reused
only when it was trained as this command would train it now (same recipe, seed, augmentation
and precision: `trainers.runs.TRAINING_FIELDS`): a quick `--epochs 1` try must not stand in for
the report's recipe later, nor the other way round. A transfer base is the exception to the
seed: it is a pretrained model, like ImageNet weights, that any seed of the model built on it
may start from (one real Stanford-40 run costs an hour on a CPU), so its seed is not compared.
`--base RUN` names the transfer base outright, however it was trained; prerequisites of the
same store are then reused only if they started from that base. Each reused run is named on
the output. A prerequisite that another command is training at that moment (two chains of one
store sharing a stream, started together) is waited for and then reused, not trained twice.

The store is opened and checked before TensorFlow is imported, so a bad `--store` costs
milliseconds, not TensorFlow's start-up.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from flowstore.store import Store, enclosing_store
from trainers.catalogue import get_model, model_names, recipe_of
from trainers.errors import (DamagedRunError, ModelConfigError, RunInterruptedError,
                             RunNotFoundError, require_training_extra)
from trainers.quiet import start_keras_quietly
from trainers.recipes import Recipe
from trainers.report import results_table
from trainers.runs import (PARTIAL_PREFIX, DoneSamples, RunRecord, enclosing_run, find_run,
                          require_model_file, require_run, split_counts, Training,
                          training_lock)
from trainers.samples import StoreSamples, open_samples

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunConfig:
    """Everything `trainers run` was asked to do.

    `recipe_set`, `epochs`, `seed`, `augment`, `mixed_precision`, `ema_momentum`, `dropout`,
    `scale_jitter`, `segment_views` (to the models that read per-step arrays), `frame_views`
    (to the models that read a middle frame) and `subtract_mean_flow` (to the models that read
    flow) also apply to prerequisite runs trained on the way (a quick `--epochs 1` try stays
    quick end to end, a tuned two-stream model fuses tuned streams); `batch_size` and
    `learning_rate` only to `model`, since the recipes differ per model. `None` means "the
    recipe's".
    """

    model: str
    store: Path | str  # a local path, or a Zarr URL (s3://bucket/x.zarr)
    runs_dir: Path = Path("runs")
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    recipe_set: str = "report"  # `trainers.recipes.RECIPE_SETS`
    seed: int = 0
    augment: bool = False
    mixed_precision: bool = False
    reuse: bool = True
    quiet: bool = False  # no per-epoch lines, no step progress
    verbose: bool = False  # TensorFlow's start-up notes as they come (`trainers.quiet`)
    base: Path | None = None  # the run to transfer from, instead of the latest matching one
    segment_views: bool | None = None  # None: the recipe's; for every model that reads steps
    frame_views: bool | None = None  # None: the recipe's; for every model that reads a frame
    subtract_mean_flow: bool | None = None  # None: the recipe's; for every model that reads flow
    ema_momentum: float | None = None  # None: the recipe's; for every model trained
    dropout: float | None = None  # None: the recipe's; for every model trained
    scale_jitter: float | None = None  # None: the recipe's; for every model trained

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", get_model(self.model).name)  # an alias: its model
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2 ** 32):  # (numpy's seeds)
            raise ModelConfigError(f"seed must be an integer in 0..{2 ** 32 - 1}, got "
                                   f"{self.seed!r}")
        entry = get_model(self.model)
        if self.segment_views and not entry.reads_steps:
            raise ModelConfigError(f"--segment-views: {self.model} reads "
                                   f"{', '.join(entry.arrays)}, no per-step array to view by "
                                   f"segment")
        if self.frame_views and not entry.reads_frame:
            raise ModelConfigError(f"--frame-views: {self.model} reads "
                                   f"{', '.join(entry.arrays)}, no middle frame to view as "
                                   f"the clip's frames")
        if self.subtract_mean_flow and not entry.reads_flow:
            raise ModelConfigError(f"--subtract-mean-flow: {self.model} reads "
                                   f"{', '.join(entry.arrays)}, no flow")
        self.recipe_for(self.model)  # bad overrides fail before any work

    def training_for(self, model: str) -> dict[str, Any]:
        """How this run trains `model`, as its `metrics.json` records it
        (`trainers.runs.TRAINING_FIELDS`): what a found run must match to be reused."""
        from trainers.fit import computed_as

        return {"recipe": self.recipe_for(model).to_dict(), "seed": self.seed,
                "augment": self.augment_for(model), **computed_as(self.mixed_precision)}

    def augment_for(self, model: str) -> bool:
        """`--augment` (flips) as it trains `model`: a recipe that flips already (every tuned
        one) trains the same weights with it or without, so it is recorded off there, and a
        run trained without it is reused (it was retrained, and a tuned Stanford-40 base
        without it passed over)."""
        return self.augment and not self.recipe_for(model).flip

    def recipe_for(self, model: str) -> Recipe:
        """The recipe `model` trains with in this run, overrides applied."""
        own = model == self.model
        entry = get_model(model)
        return recipe_of(model, self.recipe_set).override(
            epochs=self.epochs,
            segment_views=self.segment_views if entry.reads_steps else None,
            frame_views=self.frame_views if entry.reads_frame else None,
            subtract_mean_flow=self.subtract_mean_flow if entry.reads_flow else None,
            ema_momentum=self.ema_momentum,
            dropout=self.dropout,
            scale_jitter=self.scale_jitter,
            batch_size=self.batch_size if own else None,
            learning_rate=self.learning_rate if own else None,
        )


@dataclass(frozen=True)
class Outcome:
    """One run that `trainers run` trained, or found and reused."""

    record: RunRecord
    trained: bool


@dataclass
class _Session:
    config: RunConfig
    store: Store
    echo: Echo
    base: RunRecord | None = None  # --base
    outcomes: list[Outcome] = field(default_factory=list)
    device: str | None = None  # "training on CPU (no GPU found)", once TensorFlow is imported
    #: The model in training and the folder of its resume points (`trainers.resume`), if any.
    training: tuple[str, Path | None] | None = None


def run(config: RunConfig, *, echo: Echo = print) -> list[Outcome]:
    """Train `config.model` (and whatever it builds on) and print a results table.

    Returns:
        The runs involved, prerequisites first; the last one is `config.model`'s.

    Raises:
        flowstore.errors.StoreError: `--store` is missing or not a store.
        WrongDatasetError: the store lacks an array the model reads.
        NoSamplesError: the store has no finished training sample.
        MissingTrainingExtraError: TensorFlow, Keras or matplotlib is not installed.
        RunInterruptedError: Ctrl-C; the message says which runs were written.
    """
    _check_runs_dir(config.runs_dir)
    base = _named_base(config)
    samples = open_samples(config.store, config.model)
    session = _Session(config, samples.store, echo, base)
    try:
        samples.require_classes()
        samples.require("train")
        samples.check_recipe(config.recipe_for(config.model))
        require_training_extra()  # before any prerequisite search or training starts
        _train(session, samples)
    except KeyboardInterrupt:
        raise RunInterruptedError(_interrupted(session)) from None
    finally:
        samples.store.close()
    echo("")
    echo(results_table(session.outcomes))
    return session.outcomes


def _train(session: _Session, samples: StoreSamples, *,
           training: Training | None = None) -> RunRecord:
    config, model = session.config, samples.model
    if session.device is None:
        # Keras (TensorFlow) starts here, quietly, before the runs to reuse are looked for:
        # how a run computes (`RunConfig.training_for`) asks Keras for its backend and device,
        # and Keras started unquieted printed TensorFlow's start-up notes twice
        session.device = start_keras_quietly(config.verbose)
        print(session.device, file=sys.stderr)
    bases: dict[str, RunRecord | None] = {}
    for base in samples.entry.transfers_from:
        size = samples.info.size
        bases[base] = _transfer_base(session, base, size, model)
        if bases[base] is None:
            print(f"warning: no {base} run with {size}px inputs and the same recipe in "
                  f"{str(config.runs_dir)!r}; training {model} from scratch "
                  f"(the part it would take from {base} trains too; --base RUN names one "
                  f"trained otherwise)", file=sys.stderr)
    for need in samples.entry.requires:
        bases[need] = _prerequisite(session, samples, need)

    from trainers.backend import store_errors_raised
    from trainers.fit import TrainOptions, train_model

    # (a prerequisite's lock is held already; this run's own is taken without waiting, for a
    # command that would wait for it to reuse it)
    required = {need: bases[need] for need in samples.entry.requires}
    lock = (contextlib.nullcontext(training) if training is not None else
            training_lock(config.runs_dir, model,
                          _trained_run_key(session, samples, model, required=required),
                          on_wait=None))
    with lock as held, store_errors_raised():
        session.training = (model, held.resume_folder)
        record = train_model(model, samples, config.recipe_for(model),
                             TrainOptions(seed=config.seed, augment=config.augment_for(model),
                                          mixed_precision=config.mixed_precision,
                                          progress=not config.quiet,
                                          resume_folder=held.resume_folder,
                                          resume=config.reuse),
                             config.runs_dir, bases=bases, echo=session.echo)
    session.echo(f"{model}: run written to {record.path}")
    session.outcomes.append(Outcome(record, trained=True))
    return record


def _interrupted(session: _Session) -> str:
    """What Ctrl-C left: a run is written only once its training has ended (`RunWriter`, a
    hidden folder renamed into place), so the run in training left nothing but its resume
    point (`trainers.resume`), and the prerequisites trained before it are kept."""
    written = [f"{outcome.record.model} run {outcome.record.path}"
               for outcome in session.outcomes if outcome.trained]
    said = ("interrupted; no run was written" if not written else
            f"interrupted; no further run was written (written before: {', '.join(written)})")
    model, folder = session.training or (None, None)
    point = None
    if folder is not None:
        from trainers import resume  # (Keras: imported by then, as training began)

        point = resume.load(folder)
    if point is not None:
        said += (f"; the same command goes on after epoch {point.epochs} of "
                 f"{session.config.recipe_for(model).epochs} (kept in {str(folder)!r})")
    return said


def _prerequisite(session: _Session, samples: StoreSamples, model: str) -> RunRecord:
    """A finished run of `model` on the same store, found in the runs directory or trained.

    Another command may be training that very run now (two chains of one store that share a
    stream, started together): this one then waits for it and reuses its run, rather than
    train the same weights twice (`trainers.runs.training_lock`)."""
    config = session.config
    if not config.reuse:
        session.echo(f"{config.model} needs {_a_run(model)} of this store; training it first")
        return _train(session, samples.for_model(model))
    found = _found_prerequisite(session, samples, model)
    if found is not None:
        return found
    waited: list[str] = []

    def wait(holder: str) -> None:
        waited.append(holder)
        session.echo(f"waiting for {holder}, which is training the {model} run that "
                     f"{config.model} needs (same store, same recipe)")

    with training_lock(config.runs_dir, model, _trained_run_key(session, samples, model),
                       on_wait=wait) as training:
        if waited:  # (none found if that process was stopped before it wrote its run)
            found = _found_prerequisite(session, samples, model, quiet=True)
            if found is not None:
                session.echo(f"reusing {model} run {found.path} (same store, same recipe), "
                             f"trained meanwhile by {waited[0]}")
                return found
        session.echo(f"{config.model} needs {_a_run(model)} of this store; training it first")
        return _train(session, samples.for_model(model), training=training)


def _found_prerequisite(session: _Session, samples: StoreSamples, model: str, *,
                        quiet: bool = False) -> RunRecord | None:
    """The run of `model` in the runs directory that this chain reuses, if any (its outcome
    recorded); unless `quiet`, said, or why the latest runs of `model` are not reused."""
    config = session.config
    started_from = _current_bases(session, model, samples.info.size)
    done = samples.done_samples()
    found = _reusable(session, model, "same store", "pass --retrain to train it anew",
                      quiet=quiet, fingerprint=samples.info.fingerprint,
                      bases=started_from, samples=done)
    if found is not None:
        session.outcomes.append(Outcome(found, trained=False))
        return found
    if quiet:
        return None
    fingerprint, training = samples.info.fingerprint, config.training_for(model)
    other = find_run(config.runs_dir, model, fingerprint=fingerprint, training=training)
    if other is not None:
        session.echo(f"not reusing {model} run {other.path} (same store and recipe, but "
                     f"{_not_this_chains(other, started_from, done)})")
    elif find_run(config.runs_dir, model, fingerprint=fingerprint, bases=started_from,
                  samples=done) is None:  # (else `_reusable` named it)
        latest = find_run(config.runs_dir, model, fingerprint=fingerprint)
        if latest is not None:  # trained otherwise and on another chain or other samples
            session.echo(f"not reusing {model} run {latest.path} (same store, but trained "
                         f"with {'; '.join(latest.training_differences(training))}; and "
                         f"{_not_this_chains(latest, started_from, done)})")
    return None


def _trained_run_key(session: _Session, samples: StoreSamples, model: str, *,
                     required: Mapping[str, RunRecord] | None = None) -> dict[str, Any]:
    """All that makes a run of `model` on this store the one this command would train, and
    would reuse: two commands training runs of one identity train the same weights
    (`trainers.runs.training_lock`), and a stopped one's resume point is that identity's.

    `required`: the runs it is built on (a two-stream run's streams, which it holds frozen),
    found or trained by then. They are who it is too: without them, a two-stream run stopped,
    then its frames stream trained anew (from a Stanford-40 run since), went on from the
    stopped point, whose weights hold the old stream, and recorded the new one."""
    done = samples.done_samples()
    bases = _current_bases(session, model, samples.info.size)
    bases.update({name: str(record.path.resolve()) for name, record in (required or {}).items()})
    return {"fingerprint": samples.info.fingerprint,
            "training": session.config.training_for(model),
            "bases": bases, "samples": done.digest, "columns": done.columns}


def _transfer_base(session: _Session, base: str, size: int | None, model: str, *,
                   quiet: bool = False) -> RunRecord | None:
    """The `base` run `model` transfers from: `--base`, or the latest run of `base` with the
    same input size trained as this command would train it, any seed (None: none, so from
    scratch); said on the output unless `quiet`."""
    named = session.base
    if named is not None and named.model == base:
        _require_size(named, size, model)
        if not quiet:
            session.echo(f"transferring from {base} run {named.path} (--base)")
        return named
    # (a pretrained model, like ImageNet weights: whichever seed and backend trained it)
    return _reusable(session, base, "same input size", "name another run with --base",
                     size=size,
                     ignore=("seed", "keras_backend"), quiet=quiet)


def _current_bases(session: _Session, model: str, size: int | None) -> dict[str, str | None]:
    """The runs `model` would transfer from if trained now (`_transfer_base`), which a
    prerequisite run must have started from to be reused: after a new Stanford-40 run, a frames
    run transferred from the old one is not the frames run this chain asks for."""
    bases: dict[str, str | None] = {}
    for base in get_model(model).transfers_from:
        current = _transfer_base(session, base, size, model, quiet=True)
        bases[base] = str(current.path.resolve()) if current is not None else None
    return bases


def _not_this_chains(run: RunRecord, bases: dict[str, str | None],
                     done: DoneSamples) -> str:
    """Why `run`, of this store and trained with this recipe, is still not the prerequisite
    this chain asks for: it started from other base runs, or it trained while the store held
    other `done` samples (a build since resumed, or a sample since repaired or failed)."""
    reasons = []
    if not run.started_from(bases):
        then = _started(run.metrics.get("bases") or {})
        reasons.append(f"it started from {then}, not {_started(bases)}" if any(bases.values())
                       else f"it started from {then}, and this chain has {_started(bases)}")
    if not run.same_columns(done):
        reasons.append("it trained on a store of the same fingerprint with other ids, labels "
                       "or splits (a dataset's split file edited since?)")
    elif not run.trained_on(done):
        reasons.append(
            f"it trained on other done samples of the store: as many, "
            f"{split_counts(done.counts)}, but not the same ones (built or repaired since, "
            f"others failed)" if run.samples == dict(done.counts) else
            f"it trained when the store held {split_counts(run.samples)} done samples, and it "
            f"now holds {split_counts(done.counts)}")
    return "; ".join(reasons)


def _started(bases: dict[str, Any]) -> str:
    return ", ".join(f"{model} run {Path(path).name}" if path else f"no {model} run"
                     for model, path in bases.items()) or "no base"


def _reusable(session: _Session, model: str, same: str, remedy: str, *,
              ignore: tuple[str, ...] = (), quiet: bool = False,
              **criteria: Any) -> RunRecord | None:
    """The latest run of `model` meeting `criteria` and trained as this run would train it
    (`ignore`: training fields not compared). A run found whose model file is not whole is
    refused (`remedy`: what else to do), before anything trains.

    Says which run is reused and why (`same` names what `criteria` ask for), or, when the
    latest run meeting `criteria` was trained otherwise, which one is not reused and what
    differs, so that a user never wonders which weights a model started from; `quiet` says
    nothing (a lookup, not a choice).
    """
    config = session.config
    training = {name: value for name, value in config.training_for(model).items()
                if name not in ignore}
    found = find_run(config.runs_dir, model, training=training, **criteria)
    if found is not None:  # (a damaged model found only when loaded, after other training)
        try:
            require_model_file(found.model_file)
        except (DamagedRunError, RunNotFoundError) as exc:
            raise type(exc)(f"{model} run {found.path}, which this run would reuse ({same}, "
                            f"same recipe), cannot be read: {exc}; remove it, or {remedy}") \
                from None
    if quiet:
        return found
    if found is not None:
        session.echo(f"reusing {model} run {found.path} ({same}, same recipe)")
        return found
    latest = find_run(config.runs_dir, model, **criteria)
    if latest is not None:
        session.echo(f"not reusing {model} run {latest.path} ({same}, but trained with "
                     f"{'; '.join(latest.training_differences(training))})")
    return None


#: How many times `_check_runs_dir` makes and tries a runs folder that vanishes under it.
RUNS_DIR_TRIES = 5


def _check_runs_dir(runs_dir: Path) -> None:
    """Refuse a `--runs-dir` that cannot hold runs before anything trains: it is made only
    when the first run is written, after training (a file there, or a folder that cannot be
    made or written, raised then: a traceback, and the training lost).

    Permissions do not tell (root passes every check, and a read-only mount or /proc still
    refuses), so the folder is made and a run's hidden work folder made in it, as `RunWriter`
    will; both are removed again, so a command refused later leaves no runs folder behind.
    """
    path = Path(runs_dir)
    nearest = next(p for p in (path, *path.parents) if p.exists())
    if not nearest.is_dir():
        where = "is a file" if nearest == path else f"lies under the file {str(nearest)!r}"
        raise ModelConfigError(f"--runs-dir {str(path)!r} {where}, not a folder")
    # runs written inside a store are lost to it (`trainers report` refuses a store, `flowstore
    # build --overwrite` deletes them with it)
    inside = enclosing_store(nearest)  # (a link into a store, a relative path from inside one)
    if inside is not None:
        where = ("is a store" if inside == path.resolve()
                 else f"lies inside the store {str(inside)!r}")
        raise ModelConfigError(f"--runs-dir {str(path)!r} {where}, not a runs folder")
    # runs written inside a run directory are lost to every report of the folder holding it
    # (`trainers report` reads one level), and `predict`/`--base` take it for that one run
    run = enclosing_run(nearest)
    if run is not None:
        where = ("is a run directory" if run == path.resolve()
                 else f"lies inside the run directory {str(run)!r}")
        raise ModelConfigError(f"--runs-dir {str(path)!r} {where}, not a runs folder: give "
                               f"the folder that holds the runs ({str(run.parent)!r})")
    made: list[Path] = []  # deepest first
    try:
        for attempt in range(RUNS_DIR_TRIES):
            made = [p for p in (path, *path.parents) if p in made or not p.exists()]
            try:
                path.mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryDirectory(prefix=PARTIAL_PREFIX, dir=path).cleanup()
                break
            except FileNotFoundError:
                # another command's check, started at once on a new folder, took it away
                # again as empty between the two steps (found by review: 38 in 1,200 of four
                # processes at once): looked at again
                if attempt == RUNS_DIR_TRIES - 1:
                    raise
    except OSError as exc:
        raise ModelConfigError(f"--runs-dir {str(path)!r} cannot be created or written "
                               f"({exc.strerror or exc})") from None
    finally:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break  # not made here after all, or no longer empty: another command's


def _named_base(config: RunConfig) -> RunRecord | None:
    """The `--base` run, checked to be one that `config.model` or a prerequisite transfers
    from, before any store is opened or TensorFlow imported."""
    if config.base is None:
        return None
    record = require_run(config.base, "--base")  # a damaged one said now, not after TF's start-up
    entry = get_model(config.model)
    takers = {name for name in (config.model, *entry.requires)
              if record.model in get_model(name).transfers_from}
    if not takers:
        raise ModelConfigError(
            f"--base {str(config.base)!r} is {_a_run(record.model or 'unknown')}, which "
            f"{config.model} does not transfer from (only "
            f"{', '.join(_transfer_takers()) or 'no model'} take a --base)")
    return record


def _a_run(model: str) -> str:
    """"an image run", "a flow run": a model's runs in a sentence."""
    return f"{'an' if model[:1] in tuple('aeiou') else 'a'} {model} run"


def _transfer_takers() -> list[str]:
    """Each model that takes a --base, and how: for its own weights ("frames (from image)") or
    for a prerequisite it trains ("two_stream (for frames)")."""
    takers = []
    for entry in (get_model(name) for name in model_names()):
        if entry.transfers_from:
            takers.append(f"{entry.name} (from {', '.join(entry.transfers_from)})")
        through = [name for name in entry.requires if get_model(name).transfers_from]
        if through:
            takers.append(f"{entry.name} (for {', '.join(through)})")
    return takers


def _require_size(record: RunRecord, size: int, model: str) -> None:
    if record.input_size != size:
        raise ModelConfigError(
            f"--base {str(record.path)!r} was trained on {record.input_size}px inputs; "
            f"{model} here reads {size}px")
