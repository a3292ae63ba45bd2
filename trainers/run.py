"""`trainers run`: train a model on a store, training or finding the runs it builds on first.

Which runs a model builds on is its catalogue entry's (`trainers.catalogue`): a model it
`transfers_from` (`frames` from `image`) is the latest run of that model with the same input
size on any store (Stanford-40 features for UCF101 frames, say), and without one it trains from
scratch with a warning; a model it `requires` (`two_stream` freezes `frames` and `flow`) is a run
of the same store (same fingerprint), trained on the way when missing. Prerequisite runs are
found in the runs directory by their `metrics.json`. A run found there is reused
only when it was trained as this command would train it now (same recipe, seed, augmentation
and precision: `trainers.runs.TRAINING_FIELDS`): a quick `--epochs 1` try must not stand in for
the report's recipe later, nor the other way round. Each reused run is named on the output.

The store is opened and checked before TensorFlow is imported, so a bad `--store` costs
milliseconds, not TensorFlow's start-up.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from flowstore.store import Store
from trainers.catalogue import get_model, recipe_of
from trainers.errors import ModelConfigError, require_training_extra
from trainers.quiet import import_tensorflow_quietly
from trainers.recipes import Recipe
from trainers.report import results_table
from trainers.runs import RunRecord, find_run
from trainers.samples import StoreSamples, open_samples

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunConfig:
    """Everything `trainers run` was asked to do.

    `recipe_set`, `epochs`, `seed`, `augment` and `mixed_precision` also apply to prerequisite
    runs trained on the way (a quick `--epochs 1` try stays quick end to end, a tuned two-stream
    model fuses tuned streams); `batch_size` and `learning_rate` only to `model`, since the
    recipes differ per model. `None` means "the recipe's".
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", get_model(self.model).name)  # an alias: its model
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ModelConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        self.recipe_for(self.model)  # bad overrides fail before any work

    def training_for(self, model: str) -> dict[str, Any]:
        """How this run trains `model`, as its `metrics.json` records it
        (`trainers.runs.TRAINING_FIELDS`): what a found run must match to be reused."""
        return {"recipe": self.recipe_for(model).to_dict(), "seed": self.seed,
                "augment": self.augment, "mixed_precision": self.mixed_precision}

    def recipe_for(self, model: str) -> Recipe:
        """The recipe `model` trains with in this run, overrides applied."""
        own = model == self.model
        return recipe_of(model, self.recipe_set).override(
            epochs=self.epochs,
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
    outcomes: list[Outcome] = field(default_factory=list)
    device: str | None = None  # "training on CPU (no GPU found)", once TensorFlow is imported


def run(config: RunConfig, *, echo: Echo = print) -> list[Outcome]:
    """Train `config.model` (and whatever it builds on) and print a results table.

    Returns:
        The runs involved, prerequisites first; the last one is `config.model`'s.

    Raises:
        flowstore.errors.StoreError: `--store` is missing or not a store.
        WrongDatasetError: the store lacks an array the model reads.
        NoSamplesError: the store has no finished training sample.
        MissingTrainingExtraError: TensorFlow, Keras or matplotlib is not installed.
    """
    samples = open_samples(config.store, config.model)
    try:
        samples.require("train")
        require_training_extra()  # before any prerequisite search or training starts
        session = _Session(config, samples.store, echo)
        _train(session, samples)
    finally:
        samples.store.close()
    echo("")
    echo(results_table(session.outcomes))
    return session.outcomes


def _train(session: _Session, samples: StoreSamples) -> RunRecord:
    config, model = session.config, samples.model
    bases: dict[str, RunRecord | None] = {}
    for base in samples.entry.transfers_from:
        size = samples.info.size
        bases[base] = _reusable(session, base, "same input size", size=size)
        if bases[base] is None:
            print(f"warning: no {base} run with {size}px inputs and the same recipe in "
                  f"{str(config.runs_dir)!r}; training {model} from scratch "
                  f"(the part it would take from {base} trains too)", file=sys.stderr)
    for need in samples.entry.requires:
        bases[need] = _prerequisite(session, samples, need)

    if session.device is None:  # TensorFlow starts here, not earlier, and quietly
        session.device = import_tensorflow_quietly(config.verbose)
        print(session.device, file=sys.stderr)
    from trainers.fit import TrainOptions, train_model

    record = train_model(model, samples, config.recipe_for(model),
                         TrainOptions(seed=config.seed, augment=config.augment,
                                      mixed_precision=config.mixed_precision,
                                      progress=not config.quiet),
                         config.runs_dir, bases=bases, echo=session.echo)
    session.echo(f"{model}: run written to {record.path}")
    session.outcomes.append(Outcome(record, trained=True))
    return record


def _prerequisite(session: _Session, samples: StoreSamples, model: str) -> RunRecord:
    """A finished run of `model` on the same store, found in the runs directory or trained."""
    config = session.config
    if config.reuse:
        found = _reusable(session, model, "same store", fingerprint=samples.info.fingerprint)
        if found is not None:
            session.outcomes.append(Outcome(found, trained=False))
            return found
    session.echo(f"{config.model} needs a {model} run of this store; training it first")
    return _train(session, StoreSamples(session.store, model))


def _reusable(session: _Session, model: str, same: str, **criteria: Any) -> RunRecord | None:
    """The latest run of `model` meeting `criteria` and trained as this run would train it.

    Says which run is reused and why (`same` names what `criteria` ask for), or, when the
    latest run meeting `criteria` was trained otherwise, which one is not reused and what
    differs, so that a user never wonders which weights a model started from.
    """
    config = session.config
    training = config.training_for(model)
    found = find_run(config.runs_dir, model, training=training, **criteria)
    if found is not None:
        session.echo(f"reusing {model} run {found.path} ({same}, same recipe)")
        return found
    latest = find_run(config.runs_dir, model, **criteria)
    if latest is not None:
        session.echo(f"not reusing {model} run {latest.path} ({same}, but trained with "
                     f"{'; '.join(latest.training_differences(training))})")
    return None
