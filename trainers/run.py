"""`trainers run`: train a model on a store, training or finding the runs it builds on first.

The dependency chain is the report's: `tvhi_frames` starts from a Stanford-40 run, `two_stream`
freezes a `tvhi_frames` and a `tvhi_flow` run of the same store. A prerequisite run is found in
the runs directory by its `metrics.json` (same store fingerprint; for Stanford-40, any
Stanford-40 store of the same frame size) or trained on the way.

The store is opened and checked before TensorFlow is imported, so a bad `--store` costs
milliseconds, not TensorFlow's start-up.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flowstore.store import Store
from trainers.errors import ModelConfigError, require_training_extra
from trainers.recipes import RECIPES, Recipe, check_model_name
from trainers.report import results_table
from trainers.runs import RunRecord, find_run
from trainers.samples import StoreSamples, open_samples

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunConfig:
    """Everything `trainers run` was asked to do.

    `epochs`, `seed`, `augment` and `mixed_precision` also apply to prerequisite runs trained on
    the way (a quick `--epochs 1` try stays quick end to end); `batch_size` and `learning_rate`
    only to `model`, since the recipes differ per model. `None` means "the recipe's".
    """

    model: str
    store: Path | str  # a local path, or a Zarr URL (s3://bucket/x.zarr)
    runs_dir: Path = Path("runs")
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    seed: int = 0
    augment: bool = False
    mixed_precision: bool = False
    reuse: bool = True

    def __post_init__(self) -> None:
        check_model_name(self.model)
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ModelConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        self.recipe_for(self.model)  # bad overrides fail before any work

    def recipe_for(self, model: str) -> Recipe:
        """The recipe `model` trains with in this run, overrides applied."""
        own = model == self.model
        return RECIPES[model].override(
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


def run(config: RunConfig, *, echo: Echo = print) -> list[Outcome]:
    """Train `config.model` (and whatever it builds on) and print a results table.

    Returns:
        The runs involved, prerequisites first; the last one is `config.model`'s.

    Raises:
        flowstore.errors.StoreError: `--store` is missing or not a store.
        WrongDatasetError: the store is not of the dataset the model trains on.
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
    if model == "tvhi_frames":
        bases["stanford40"] = find_run(config.runs_dir, "stanford40", dataset="stanford40",
                                       size=samples.info.size)
        if bases["stanford40"] is None:
            print(f"warning: no Stanford-40 run with {samples.info.size}px inputs in "
                  f"{str(config.runs_dir)!r}; training tvhi_frames from scratch "
                  "(its conv part trains too)", file=sys.stderr)
        else:
            session.echo(f"tvhi_frames starts from {bases['stanford40'].path}")
    elif model == "two_stream":
        for need in ("tvhi_frames", "tvhi_flow"):
            bases[need] = _prerequisite(session, samples, need)

    from trainers.fit import TrainOptions, train_model  # TensorFlow starts here, not earlier

    record = train_model(model, samples, config.recipe_for(model),
                         TrainOptions(seed=config.seed, augment=config.augment,
                                      mixed_precision=config.mixed_precision),
                         config.runs_dir, bases=bases, echo=session.echo)
    session.echo(f"{model}: run written to {record.path}")
    session.outcomes.append(Outcome(record, trained=True))
    return record


def _prerequisite(session: _Session, samples: StoreSamples, model: str) -> RunRecord:
    """A finished run of `model` on the same store, found in the runs directory or trained."""
    config = session.config
    if config.reuse:
        found = find_run(config.runs_dir, model, fingerprint=samples.info.fingerprint)
        if found is not None:
            session.echo(f"{config.model} uses {model} run {found.path}")
            session.outcomes.append(Outcome(found, trained=False))
            return found
    session.echo(f"{config.model} needs a {model} run of this store; training it first")
    return _train(session, StoreSamples(session.store, model))
